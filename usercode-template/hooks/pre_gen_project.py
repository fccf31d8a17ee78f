"""Validate the answers before cookiecutter keeps anything — the template's one set of validators.

Two users:
- cookiecutter/cruft run the rendered copy of this file inside the freshly created project directory; a
  non-zero exit makes cookiecutter delete that directory again, so a refused answer leaves nothing behind.
- the platform's `dagster-platform template new` (`make new-usercode`) imports this file unrendered and
  checks each answer with FIELDS as it is typed, so its prompt and this hook never disagree.

Each refusal names the answer, says what is wrong and gives an example of a valid one. No Jinja outside
`rendered_answers()` and `RENDERED`: the file must stay importable as plain Python.
"""

import contextlib
import importlib.metadata
import json
import keyword
import os
import re
import sys

# True only in the copy cookiecutter renders; False when the platform CLI imports the template's own file.
RENDERED = "{{ 'rendered' }}" == "rendered"

if __name__ == "__main__" and RENDERED:
    # cookiecutter writes this rendered copy, answers included, to a temporary file it never deletes
    # (hooks.run_script_with_context, delete=False). Python has read it; remove it before anything else.
    with contextlib.suppress(OSError):
        os.unlink(__file__)

# A DNS-1123 label (it names the Kubernetes Service and Deployment); 53 is Helm's release-name limit.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LOCATION_LENGTH = 53
PACKAGE = re.compile(r"^[a-z_][a-z0-9_]*$")
TEAM = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
DOMAIN = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}$")
# Free text lands in pyproject.toml ("...") and a docstring ("""..."""): one line, no quote or backslash.
FREE_TEXT = re.compile(r'^[^"\\\n\r\t]{1,120}$')
# Names the platform itself uses, or that shadow what every code location imports.
RESERVED_LOCATIONS = {"dagster", "dagster-webserver", "dagster-daemon", "dagit", "postgresql", "test", "tests"}
RESERVED_PACKAGES = {"dagster", "dagit", "test", "tests", "src", "setup", "conftest"}


def installed_top_level_names() -> set[str]:
    """Import names of the standard library and of every installed distribution (these would clash)."""
    names = set(sys.stdlib_module_names)
    names.update(importlib.metadata.packages_distributions())
    return {name.lower() for name in names}


# --- one check per answer a data engineer gives: None when valid, else the problem ----------------------
def _free_text(key: str, value: str, example: str) -> str | None:
    """One line of text that lands inside quoted TOML/YAML strings (no quotes, backslashes or tabs)."""
    if not FREE_TEXT.match(value) or not value.strip():
        return (
            f"{key} {value!r} must be one line of at most 120 characters without quotes or backslashes; "
            f"example: {example}"
        )
    return None


def check_project_name(value: str) -> str | None:
    return _free_text("project_name", value, "Sales Pipelines")


def check_location_name(value: str) -> str | None:
    if not DNS_LABEL.match(value) or len(value) > MAX_LOCATION_LENGTH:
        return (
            f"location_name {value!r} is not a Kubernetes DNS-1123 label (lowercase letters, digits and "
            f"'-', starting and ending with a letter or digit, at most {MAX_LOCATION_LENGTH} characters); "
            "example: sales-pipelines"
        )
    if value in RESERVED_LOCATIONS or value.startswith("dagster-"):
        return f"location_name {value!r} is reserved by the platform; example: sales-pipelines"
    return None


def check_package_name(value: str) -> str | None:
    if not PACKAGE.match(value) or keyword.iskeyword(value):
        return (
            f"package_name {value!r} is not a valid Python package name (lowercase letters, digits and "
            "'_', not starting with a digit, not a keyword); example: sales_pipelines"
        )
    if value in RESERVED_PACKAGES or value.startswith("dagster"):
        return f"package_name {value!r} is reserved (it would shadow Dagster); example: sales_pipelines"
    if value in installed_top_level_names():
        return (
            f"package_name {value!r} clashes with an installed or standard-library package of that name; "
            "example: sales_pipelines"
        )
    return None


def check_owner_team(value: str) -> str | None:
    if not TEAM.match(value):
        return f"owner_team {value!r} must be a team slug; example: data-platform"
    return None


def check_owner_email(value: str) -> str | None:
    if not EMAIL.match(value):
        return f"owner_email {value!r} is not an e-mail address; example: team@example.com"
    return None


def check_description(value: str) -> str | None:
    return _free_text("description", value, "Daily sales figures for finance")


# The questions, in the order they are asked; the platform CLI prompts exactly these.
FIELDS = {
    "project_name": check_project_name,
    "location_name": check_location_name,
    "package_name": check_package_name,
    "owner_team": check_owner_team,
    "owner_email": check_owner_email,
    "description": check_description,
}

# Platform facts (the private variable `_platform`, generated from the platform's company and environment files by
# `make generate`): checked in case someone passes other values by hand.
PLATFORM_KEYS = ("image_registry", "ci_project", "ci_ref", "grpc_port", "label_domain", "environments")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")


def platform_problems(answers: dict) -> list[str]:
    platform = answers.get("_platform")
    if not isinstance(platform, dict) or sorted(platform) != sorted(PLATFORM_KEYS):
        return [f"_platform must hold {', '.join(PLATFORM_KEYS)} (the platform passes it; run make new-usercode there)"]
    found = []
    envs = platform["environments"]
    if not isinstance(envs, list) or not envs:
        return ["_platform.environments must list at least one environment"]
    for env in envs:
        name = str(env.get("name"))
        if not ENV_NAME.match(name) or name == "local":
            found.append(f"_platform.environments: {name!r} is not an environment name; example: staging")
        for key in ("namespace", "postgres_secret"):
            if not DNS_LABEL.match(str(env.get(key))):
                found.append(f"_platform.environments.{name}.{key} {env.get(key)!r} is not a Kubernetes name")
        if not DOMAIN.match(str(env.get("warehouse_domain"))):
            found.append(
                f"_platform.environments.{name}.warehouse_domain {env.get('warehouse_domain')!r} is not a DNS domain"
            )
    for key in ("name", "namespace", "warehouse_domain"):
        values = [str(env.get(key)) for env in envs]
        if len(set(values)) != len(values):
            found.append(f"_platform.environments: two environments share a {key}; each needs its own")
    domains = [str(env.get("warehouse_domain")) for env in envs]
    for one in domains:
        for other in domains:
            if one != other and one.endswith("." + other):
                found.append(
                    f"warehouse domains {one!r} and {other!r} must be separate domains (one is inside the other)"
                )
    registry = str(platform["image_registry"])
    if not registry or registry.endswith("/") or " " in registry:
        found.append(f"_platform.image_registry {registry!r} must be a registry path without a trailing '/'")
    port = platform["grpc_port"]
    if not str(port).isdigit() or not 1024 <= int(port) <= 65535:
        found.append(f"_platform.grpc_port {port!r} must be a port number in 1024..65535")
    return found


def problems(answers: dict) -> list[str]:
    """Every problem of a complete set of answers (cookiecutter's context), all at once."""
    found = [problem for key, check in FIELDS.items() for problem in [check(str(answers[key]))] if problem]
    if answers["project_slug"] != answers["location_name"]:
        found.append(
            f"project_slug {answers['project_slug']!r} must equal location_name {answers['location_name']!r} "
            "(leave it at its default)"
        )
    return found + platform_problems(answers)


def refusal(found: list[str]) -> str:
    """One block: a line per problem, then what happened."""
    lines = [f"ERROR: {problem}" for problem in found]
    lines.append("Nothing was generated. Fix the answers above and run the template again.")
    return "\n".join(lines)


def rendered_answers() -> dict:
    # The answers as JSON inside a raw string: valid Python whatever was typed (Jinja's tojson escapes quotes).
    return json.loads(r"""{{ cookiecutter | tojson }}""")


def main() -> int:
    found = problems(rendered_answers())
    if found:
        print(refusal(found), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
