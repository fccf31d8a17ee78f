"""Validate the answers before cookiecutter keeps anything.

Runs inside the freshly created project directory; a non-zero exit makes cookiecutter delete that
directory again, so a refused answer leaves nothing behind. Each refusal names the answer, says what is
wrong and gives an example of a valid one.
"""

import importlib.metadata
import json
import keyword
import re
import sys

# The answers as JSON inside a raw string: valid Python whatever was typed (Jinja's tojson escapes quotes).
ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

# A DNS-1123 label (it names the Kubernetes Service and Deployment); 53 is Helm's release-name limit.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LOCATION_LENGTH = 53
PACKAGE = re.compile(r"^[a-z_][a-z0-9_]*$")
TEAM = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
DOMAIN = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}$")
# Names the platform itself uses, or that shadow what every code location imports.
RESERVED_LOCATIONS = {"dagster", "dagster-webserver", "dagster-daemon", "dagit", "postgresql", "test", "tests"}
RESERVED_PACKAGES = {"dagster", "dagit", "test", "tests", "src", "setup", "conftest"}


def installed_top_level_names() -> set[str]:
    """Import names of the standard library and of every installed distribution (these would clash)."""
    names = set(sys.stdlib_module_names)
    names.update(importlib.metadata.packages_distributions())
    return {name.lower() for name in names}


def problems(answers: dict[str, str]) -> list[str]:
    found = []
    location = answers["location_name"]
    if not DNS_LABEL.match(location) or len(location) > MAX_LOCATION_LENGTH:
        found.append(
            f"location_name {location!r} is not a Kubernetes DNS-1123 label (lowercase letters, digits and "
            f"'-', starting and ending with a letter or digit, at most {MAX_LOCATION_LENGTH} characters); "
            "example: sales-pipelines"
        )
    elif location in RESERVED_LOCATIONS or location.startswith("dagster-"):
        found.append(f"location_name {location!r} is reserved by the platform; example: sales-pipelines")
    if answers["project_slug"] != location:
        found.append(
            f"project_slug {answers['project_slug']!r} must equal location_name {location!r} (leave it at its default)"
        )

    package = answers["package_name"]
    if not PACKAGE.match(package) or keyword.iskeyword(package):
        found.append(
            f"package_name {package!r} is not a valid Python package name (lowercase letters, digits and "
            "'_', not starting with a digit, not a keyword); example: sales_pipelines"
        )
    elif package in RESERVED_PACKAGES or package.startswith("dagster"):
        found.append(f"package_name {package!r} is reserved (it would shadow Dagster); example: sales_pipelines")
    elif package in installed_top_level_names():
        found.append(
            f"package_name {package!r} clashes with an installed or standard-library package of that name; "
            "example: sales_pipelines"
        )

    if not TEAM.match(answers["owner_team"]):
        found.append(f"owner_team {answers['owner_team']!r} must be a team slug; example: data-platform")
    if not EMAIL.match(answers["owner_email"]):
        found.append(f"owner_email {answers['owner_email']!r} is not an e-mail address; example: team@example.com")
    for key in ("acceptance_namespace", "production_namespace"):
        if not DNS_LABEL.match(answers[key]):
            found.append(f"{key} {answers[key]!r} is not a Kubernetes namespace name; example: dagster-acceptance")
    if answers["acceptance_namespace"] == answers["production_namespace"]:
        found.append("acceptance_namespace and production_namespace must differ")
    for key in ("acceptance_db_domain", "production_db_domain"):
        if not DOMAIN.match(answers[key]):
            found.append(f"{key} {answers[key]!r} is not a DNS domain; example: prod.db.example.internal")
    acc, prod = answers["acceptance_db_domain"], answers["production_db_domain"]
    if acc == prod or acc.endswith("." + prod) or prod.endswith("." + acc):
        found.append("acceptance_db_domain and production_db_domain must be separate domains")
    if answers["image_registry"].endswith("/") or " " in answers["image_registry"] or not answers["image_registry"]:
        found.append(
            f"image_registry {answers['image_registry']!r} must be a registry path without a trailing '/'; "
            "example: registry.gitlab.com/acme/dagster"
        )
    return found


def main() -> int:
    found = problems(ANSWERS)
    for problem in found:
        print(f"ERROR: {problem}", file=sys.stderr)
    if found:
        print("Nothing was generated. Fix the answers above and run the template again.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
