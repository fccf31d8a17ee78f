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
import functools
import importlib.metadata
import json
import keyword
import os
import re
import sys
from collections.abc import Callable

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
# A team slug, as in the team's GitLab group and on-call rota; also a Kubernetes label value (`team:` on the
# location's pods), hence starting and ending with a letter or digit and at most 63 characters.
TEAM_SLUG = "lowercase letters, digits, '-' or '_', as in the team's GitLab group or on-call rota"
TEAM = re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$")
MAX_TEAM_LENGTH = 63
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


# --- one check per answer a data engineer gives ----------------------------------------------------------
# FIELDS: answer -> its check (None when valid, else the problem), in the order the questions are asked (the
# platform CLI prompts exactly these). EXAMPLES: the one example of each answer, which the prompt shows and every
# refusal of that answer names.
FIELDS: dict[str, Callable[[str], str | None]] = {}
EXAMPLES: dict[str, str] = {}


def answer(key: str, what: str, example: str):
    """Register the check of the answer `key` in FIELDS: an empty answer is refused as required, saying what is
    expected; any other problem the check finds is followed by the example."""

    def register(check: Callable[[str], str | None]) -> Callable[[str], str | None]:
        @functools.wraps(check)
        def checked(value: str) -> str | None:
            if not value.strip():
                return f"{key} is required: {what}, e.g. {example}"
            problem = check(value)
            return f"{problem}; example: {example}" if problem else None

        FIELDS[key], EXAMPLES[key] = checked, example
        return checked

    return register


def _free_text(key: str, value: str) -> str | None:
    """One line of text that lands inside quoted TOML/YAML strings (no quotes, backslashes or tabs)."""
    if not FREE_TEXT.match(value):
        return f"{key} {value!r} must be one line of at most 120 characters without quotes or backslashes"
    return None


@answer("project_name", "the project's human-readable name", "Sales Pipelines")
def check_project_name(value: str) -> str | None:
    return _free_text("project_name", value)


@answer("location_name", "the code location's name, a Kubernetes DNS-1123 label", "sales-pipelines")
def check_location_name(value: str) -> str | None:
    if not DNS_LABEL.match(value) or len(value) > MAX_LOCATION_LENGTH:
        return (
            f"location_name {value!r} is not a Kubernetes DNS-1123 label (lowercase letters, digits and "
            f"'-', starting and ending with a letter or digit, at most {MAX_LOCATION_LENGTH} characters)"
        )
    if value in RESERVED_LOCATIONS or value.startswith("dagster-"):
        return f"location_name {value!r} is reserved by the platform"
    return None


@answer("package_name", "the Python package's name", "sales_pipelines")
def check_package_name(value: str) -> str | None:
    if not PACKAGE.match(value) or keyword.iskeyword(value):
        return (
            f"package_name {value!r} is not a valid Python package name (lowercase letters, digits and "
            "'_', not starting with a digit, not a keyword)"
        )
    if value in RESERVED_PACKAGES or value.startswith("dagster"):
        return f"package_name {value!r} is reserved (it would shadow Dagster)"
    if value in installed_top_level_names():
        return f"package_name {value!r} clashes with an installed or standard-library package of that name"
    return None


@answer("owner_team", "the owning team's slug", "sales-analytics")
def check_owner_team(value: str) -> str | None:
    if not TEAM.match(value) or len(value) > MAX_TEAM_LENGTH:
        return (
            f"owner_team {value!r} is not a team slug ({TEAM_SLUG}; starting and ending with a letter or "
            f"digit, at most {MAX_TEAM_LENGTH} characters)"
        )
    return None


@answer("owner_email", "the team's e-mail address for alerts", "sales@example.com")
def check_owner_email(value: str) -> str | None:
    if not EMAIL.match(value):
        return f"owner_email {value!r} is not an e-mail address"
    return None


@answer("description", "one line saying what the location does", "Daily sales figures for finance")
def check_description(value: str) -> str | None:
    return _free_text("description", value)


# Platform facts: the private variable `_platform`, generated from the platform's platform/company.yaml and
# platform/values/ by `make generate` (cookiecutter.json's default; `make new-usercode` passes the same). Checked
# in case someone passes other values by hand: each problem is one line naming the key, what is wrong and the
# platform setting it comes from. Key -> where the platform states it.
PLATFORM_KEYS = {
    "image_registry": "platform/company.yaml image_registry",
    "ci_project": "platform/company.yaml gitlab.project",
    "ci_ref": "platform/company.yaml gitlab.ref",
    "grpc_port": "platform/company.yaml grpc_port",
    "label_domain": "platform/company.yaml label_domain",
    "environments": "one file per environment in platform/values/",
}
ENVIRONMENT_KEYS = {
    "name": "the file's name",
    "tier": "environment.tier",
    "namespace": "environment.namespace",
    "postgres_secret": "global.postgresqlSecretName",
    "warehouse_domain": "environment.warehouseDomain",
    "previews": "previews.enabled",
}
# As the platform's own reader (dagster_platform.platform_config) accepts them.
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
RESERVED_ENVIRONMENTS = ("local", "base", "all")  # local: DAGSTER_ENV on a laptop
TIERS = ("production", "staging", "testing", "development", "other")  # GitLab deployment tiers
REGISTRY = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")
PROJECT = re.compile(r"^[a-zA-Z0-9_.-]+(/[a-zA-Z0-9_.-]+)+$")
REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # DNS subdomain


def _keys_problem(what: str, value: object, expected: dict) -> str | None:
    """None when `value` is a mapping with exactly the expected keys, else the problem."""
    if not isinstance(value, dict):
        return f"{what} {value!r} is not a mapping of {', '.join(expected)}"
    missing = [key for key in expected if key not in value]
    unknown = sorted(str(key) for key in value if key not in expected)
    if missing or unknown:
        wrong = [f"missing {', '.join(missing)}"] if missing else []
        wrong += [f"unknown {', '.join(unknown)}"] if unknown else []
        return f"{what} must hold exactly {', '.join(expected)} ({'; '.join(wrong)})"
    return None


def _environment_problems(index: int, env: object) -> list[str]:
    problem = _keys_problem(f"_platform.environments[{index}]", env, ENVIRONMENT_KEYS)
    if problem:
        return [f"{problem}; make generate writes each from platform/values/<env>.yaml"]
    name = env["name"]
    if not isinstance(name, str) or not ENV_NAME.match(name) or name in RESERVED_ENVIRONMENTS:
        return [
            f"_platform.environments[{index}].name {name!r} is not an environment name (lowercase letters, digits "
            f"and '-', 2-32 characters, not {', '.join(RESERVED_ENVIRONMENTS)}); example: staging"
        ]
    where = f"_platform.environments[{name}]"
    source = f"the platform's platform/values/{name}.yaml"
    checks = (
        ("tier", lambda v: v in TIERS, f"a GitLab deployment tier ({', '.join(TIERS)})"),
        ("namespace", lambda v: isinstance(v, str) and bool(DNS_LABEL.match(v)), "a Kubernetes namespace"),
        (
            "postgres_secret",
            lambda v: isinstance(v, str) and len(v) <= 253 and bool(SECRET_NAME.match(v)),
            "a Kubernetes Secret name",
        ),
        ("warehouse_domain", lambda v: isinstance(v, str) and bool(DOMAIN.match(v)), "a DNS domain"),
        ("previews", lambda v: isinstance(v, bool), "true or false"),
    )
    return [
        f"{where}.{key} {env[key]!r} is not {what}; set {ENVIRONMENT_KEYS[key]} in {source}"
        for key, ok, what in checks
        if not ok(env[key])
    ]


def platform_problems(answers: dict) -> list[str]:
    """Every problem of the platform facts `_platform`, one line each."""
    platform = answers.get("_platform")
    problem = _keys_problem("_platform", platform, PLATFORM_KEYS)
    if problem:
        return [f"{problem}; the platform generates it (make generate), run make new-usercode there"]
    found = []
    facts = (
        ("image_registry", REGISTRY, "an image registry path without scheme, tag or trailing '/'"),
        ("ci_project", PROJECT, "a GitLab project path, e.g. data/dagster-platform"),
        ("ci_ref", REF, "a branch or tag, e.g. main"),
        ("label_domain", DOMAIN, "a DNS domain, e.g. platform.example.com"),
    )
    for key, pattern, what in facts:
        value = platform[key]
        if not isinstance(value, str) or not pattern.match(value):
            found.append(f"_platform.{key} {value!r} is not {what}; set {PLATFORM_KEYS[key]}")
    port = platform["grpc_port"]
    if type(port) is not int or not 1024 <= port <= 65535:
        found.append(
            f"_platform.grpc_port {port!r} must be a port number in 1024..65535; set {PLATFORM_KEYS['grpc_port']}"
        )
    envs = platform["environments"]
    if not isinstance(envs, list) or not envs:
        found.append(f"_platform.environments {envs!r} must list at least one environment (platform/values/<env>.yaml)")
        return found
    env_found = [problem for index, env in enumerate(envs) for problem in _environment_problems(index, env)]
    if env_found:
        return found + env_found
    for key in ("name", "namespace", "warehouse_domain"):
        seen: dict[str, str] = {}
        for env in envs:
            if env[key] in seen:
                found.append(
                    f"_platform.environments[{env['name']}].{key} {env[key]!r} is also "
                    f"{seen[env[key]]}'s; every environment needs its own"
                )
            seen.setdefault(env[key], env["name"])
    for env in envs:
        for other in envs:
            if env["warehouse_domain"].endswith("." + other["warehouse_domain"]):
                found.append(
                    f"_platform.environments[{env['name']}].warehouse_domain {env['warehouse_domain']!r} is inside "
                    f"{other['name']}'s {other['warehouse_domain']!r}; warehouse domains must be separate domains"
                )
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
