"""The generated README is a reference a data engineer can follow: it has the how-to sections, and every
`make <target>` and every file it names exists — in the rendered repository, or, where it points at the
platform, in this repository."""

import re
from pathlib import Path

import pytest

from dagster_platform.paths import ROOT
from dagster_platform.template.render import platform_context, render

from .helpers import CUSTOM_ANSWERS

# Heading -> what the section must name to answer its question.
HOW_TO = {
    "## Add assets, a job, a schedule or a sensor": ["defs/", "owners=", "tests/test_definitions.py", "preview"],
    "## Run one asset or one job from the command line": ["dg launch --assets", "dg launch --job", "DAGSTER_HOME"],
    "## Add a secret or an environment variable": [".env", "envSecrets", "`env`", "deploy/values-<env>.yaml",
                                                   "HTTP 500", "is not set", "platform team"],
    "## Add a dependency": ["uv add", "uv.lock", "pyproject.toml", "image", "Dagster version"],
}  # fmt: skip
# Paths the README names that a rendered repository gets only later: made by make, by the developer, by cruft.
CREATED_LATER = {
    ".venv": "make install",
    ".tools": "make install, when uv is not on PATH",
    ".dagster_home": "make dev / make instance (DAGSTER_HOME)",
    "reports": "make test",
    ".env": "the developer, for local variables",
    ".cruft.json": "a repo generated with cruft, before its move to copier",
    "defs/customers.py": "the README's example of a module to add",
}
FILE_SUFFIXES = (".py", ".yaml", ".yml", ".toml", ".md", ".sql", ".lock", ".json", ".csv", ".log", ".jinja")
FILE_NAMES = {"Dockerfile", "Makefile", ".env", ".gitignore", ".dockerignore", ".gitlab-ci.yml"}


@pytest.fixture(scope="module", params=["default", "custom"])
def repo(request, tmp_path_factory) -> Path:
    """A repository rendered (copier only: seconds) from this platform's settings or the fixture company."""
    answers = platform_context() if request.param == "default" else dict(CUSTOM_ANSWERS)
    return render(tmp_path_factory.mktemp(f"readme-{request.param}"), answers)


def code_spans(text: str) -> list[str]:
    """Inline code spans and the lines of fenced code blocks (comments removed)."""
    fenced = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    lines = [line.split(" #")[0].strip() for block in fenced for line in block.splitlines()]
    prose = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.S | re.M)
    return [*re.findall(r"`([^`\n]+)`", prose), *lines]


def make_targets_named(text: str) -> set[str]:
    """Targets of every `make ...` command: the words after `make` up to the first option or variable."""
    targets = set()
    for span in code_spans(text):
        for command in re.findall(r"(?:^|&& |; )make ([^;&|]*)", span):
            for word in command.split():
                if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
                    break
                targets.add(word)
    return targets


def makefile_targets(makefile: Path) -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*)\s*:(?!=)", makefile.read_text(), flags=re.M))


def paths_named(text: str) -> set[str]:
    """Words of code spans that name a file or directory: with a '/', or a file name the repo would have."""
    found = set()
    for span in code_spans(text):
        for word in span.split():
            word = word.strip("()[],;:'\"")
            if not word or any(char in word for char in "=$:@(\"'") or word.startswith(("-", "http")):
                continue
            first, name = word.split("/", 1)[0], word.rstrip("/").rsplit("/", 1)[-1]
            if "/" in word and "." in first[1:] and not first.endswith(FILE_SUFFIXES):
                continue  # an image or a host (registry.example.org/...), not a file
            if "/" in word or name in FILE_NAMES or name.endswith(FILE_SUFFIXES) and "." in name[:-1]:
                found.add(word)
    return found


def exists(repo: Path, package: str, path: str) -> bool:
    """In the repo, in its package (the README says `defs/orders.py` for src/<package>/defs/orders.py), or in
    the platform repository (`ci/README.md`, `platform/code-locations.yaml`); `<env>` and `*` match any."""
    pattern = re.sub(r"<[^>]+>", "*", path.rstrip("/"))
    return any(any(base.glob(pattern)) for base in (repo, repo / "src" / package, ROOT))


def test_readme_has_the_how_to_sections(repo):
    text = (repo / "README.md").read_text()
    for heading, names in HOW_TO.items():
        assert heading in text.splitlines(), f"README has no section {heading!r}"
        section = " ".join(text.split(heading + "\n", 1)[1].split("\n## ", 1)[0].split())
        missing = [name for name in names if name not in section]
        assert not missing, f"{heading}: does not name {missing}"


def test_every_make_target_the_readme_names_exists(repo):
    text = (repo / "README.md").read_text()
    named = make_targets_named(text)
    assert {"dev", "test", "check", "install"} <= named, named  # the parser finds the commands at all
    known = makefile_targets(repo / "Makefile") | makefile_targets(ROOT / "Makefile")  # the platform's: its own
    assert not named - known, f"README names make targets that exist nowhere: {sorted(named - known)}"


def test_every_path_the_readme_names_exists(repo):
    text = (repo / "README.md").read_text()
    package = next(path.name for path in (repo / "src").iterdir() if path.is_dir())
    named = paths_named(text)
    assert {"deploy/values-<env>.yaml", "pyproject.toml", "uv.lock", ".env"} <= named, named  # the parser works
    later = {path for path in named if path.rstrip("/").split("/")[0] in CREATED_LATER or path in CREATED_LATER}
    missing = sorted(path for path in named - later if not exists(repo, package, path))
    assert not missing, f"README names paths that exist neither in the repo nor in the platform: {missing}"


def test_the_commands_to_run_one_asset_or_job_name_real_ones(repo):
    """`dg launch --assets <key>` / `--job <name>` in the README name an asset and a job the repo defines."""
    text = (repo / "README.md").read_text()
    package = next(path.name for path in (repo / "src").iterdir() if path.is_dir())
    source = "\n".join(path.read_text() for path in (repo / "src" / package / "defs").rglob("*.py"))
    assets = set(re.findall(r"dg launch --assets ([\w,]+)", text))
    jobs = set(re.findall(r"dg launch --job (\w+)", text))
    assert assets and jobs
    for key in {key for keys in assets for key in keys.split(",")}:
        assert re.search(rf"^def {key}\(", source, flags=re.M), f"no asset {key} under defs/"
    for job in jobs:
        assert f'name="{job}"' in source, f"no job {job} under defs/"
