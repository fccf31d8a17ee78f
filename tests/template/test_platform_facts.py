"""The platform facts a user-code repo is rendered with (copier data `platform`: company and environments, never
asked): every environment the platform declares gets its deploy values (copier's `yield` in the file name) and its
place in settings.py, whatever the environments are called and however many there are; `make new-usercode`
refuses a broken platform file before anything is asked or written. The facts are checked once, by the
platform's reader of its files (dagster_platform.platform_config, tests/test_platform_config.py).

Rendering only (no `make`): fast. tests/template/test_render.py runs the rendered repos' own checks."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dagster_platform import paths, platform_config
from dagster_platform.cli import build_parser
from dagster_platform.template.render import platform_context, render

from .helpers import CUSTOM_ANSWERS, OTHER_PLATFORM, deploy_values, other_environments, other_platform


def constants(repo: Path, package: str) -> dict[str, object]:
    """The rendered settings.py's lists of environments (literals: read without importing the repo's code)."""
    tree = ast.parse((repo / "src" / package / "settings.py").read_text())
    wanted = ("ENVIRONMENTS", "DATABASE_DOMAINS", "PREVIEW_ENVIRONMENTS")
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in wanted
    }


def names(text: str, value: str) -> bool:
    """Whether `text` holds `value` as a whole name (not as part of a longer one: `qa` is not in `qa-eu`)."""
    return re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w-]|\.\w)", text) is not None


def assert_deploys_to(repo: Path, location: str, platform: dict) -> None:
    """One deploy/values-<env>.yaml per environment of `platform`, each naming that environment only."""
    envs = platform["environments"]
    values = deploy_values(repo)
    assert list(values) == sorted(env["name"] for env in envs)
    assert sorted(p.name for p in repo.rglob("*{*")) == [], "a templated file name was left behind"
    for env in envs:
        own = values[env["name"]]
        assert own["postgresqlSecretName"] == env["postgres_secret"]
        (deployment,) = own["deployments"]
        assert deployment["name"] == location
        assert deployment["image"]["repository"] == f"{platform['image_registry']}/{location}"
        assert deployment["port"] == platform["grpc_port"]
        assert {"name": "DAGSTER_ENV", "value": env["name"]} in deployment["env"]
        assert deployment["envSecrets"] == [{"name": f"{location}-warehouse-{env['name']}"}]
        if env["tier"] == "production":
            assert deployment["replicaCount"] >= 2, f"{env['name']}: a production tier runs two code servers"
        text = (repo / "deploy" / f"values-{env['name']}.yaml").read_text()
        for other in envs:
            for key in ("namespace", "postgres_secret", "warehouse_domain"):
                if other[key] != env[key]:
                    assert not names(text, other[key]), f"values-{env['name']}.yaml names {other['name']}'s {key}"


def assert_settings_list(repo: Path, package: str, platform: dict) -> None:
    envs = platform["environments"]
    settings = constants(repo, package)
    assert settings["ENVIRONMENTS"] == ("local", *(env["name"] for env in envs))
    assert settings["DATABASE_DOMAINS"] == {env["name"]: env["warehouse_domain"] for env in envs}
    assert settings["PREVIEW_ENVIRONMENTS"] == ("local", *(env["name"] for env in envs if env["previews"]))


# --- the repository's own company and environments --------------------------------------------------------
def test_a_repo_deploys_to_every_platform_environment(rendered):
    platform = platform_context()["platform"]
    assert [env["name"] for env in platform["environments"]] == platform_config.environment_names()
    repo = rendered["default"]
    assert_deploys_to(repo, repo.name, platform)  # the directory is the location's name
    for env in platform_config.environments():
        values = yaml.safe_load((repo / f"deploy/values-{env.name}.yaml").read_text())
        # The platform's own Postgres secret of that environment (its values file, global.postgresqlSecretName).
        assert values["postgresqlSecretName"] == platform_config.get_path(env.values, "global.postgresqlSecretName")


def test_settings_list_the_platform_environments(rendered):
    repo = rendered["default"]
    assert_settings_list(repo, repo.name.replace("-", "_"), platform_context()["platform"])


# --- a company with three environments of other names (the fixture) ----------------------------------------
def test_three_other_environments_give_three_deploy_files_and_settings(rendered):
    repo = rendered["custom"]
    assert_deploys_to(repo, CUSTOM_ANSWERS["location_name"], OTHER_PLATFORM)
    assert_settings_list(repo, CUSTOM_ANSWERS["package_name"], OTHER_PLATFORM)
    readme = (repo / "README.md").read_text()
    for env in OTHER_PLATFORM["environments"]:
        assert f"| `{env['name']}` | PostgreSQL in `*.{env['warehouse_domain']}`" in readme
    assert f"deploys to `{OTHER_PLATFORM['environments'][0]['name']}`" in readme  # the first in promotion order
    ci = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())
    # The platform's component at the pinned release, stated once: no project, ref or PLATFORM_* variables.
    assert ci == {
        "include": [
            {
                "component": f"$CI_SERVER_FQDN/{OTHER_PLATFORM['ci_project']}/usercode@{OTHER_PLATFORM['ci_version']}",
                "inputs": {"location": CUSTOM_ANSWERS["location_name"], "package": CUSTOM_ANSWERS["package_name"]},
            }
        ]
    }
    assert f"EXPOSE {OTHER_PLATFORM['grpc_port']}\n" in (repo / "Dockerfile").read_text()


def lint(repo: Path) -> list[str]:
    """What ruff and yamllint say of the rendered repo, with its own configuration and the platform's copies of
    the tools (fast: no install; the real `make lint`, with the repo's pins, runs in test_render.py)."""
    tools = Path(sys.executable).parent  # the platform's virtualenv
    commands = [
        [tools / "ruff", "check", "--no-cache", "."],
        [tools / "ruff", "format", "--check", "--no-cache", "."],
        [tools / "yamllint", "--strict", "."],
    ]
    failed = []
    for command in commands:
        result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            failed.append(f"{command[1:]}: {result.stdout}{result.stderr}")
    return failed


@pytest.mark.parametrize(
    "environments",
    [
        OTHER_PLATFORM["environments"],
        other_environments()[:1],  # one environment, no previews anywhere
        [{**env, "previews": True} for env in OTHER_PLATFORM["environments"]],
        [
            {**env, "name": f"{env['name']}-with-a-much-longer-environment-name"[:32].rstrip("-")}
            for env in OTHER_PLATFORM["environments"]
        ],
    ],
    ids=["three", "one-without-previews", "previews-everywhere", "long-names"],
)
def test_rendered_settings_and_deploy_values_pass_lint_for_any_environments(tmp_path, environments):
    platform = other_platform(environments=environments)
    repo = render(tmp_path, {"project_name": "Lint Envs", "platform": platform})
    assert_deploys_to(repo, "lint-envs", platform)
    assert_settings_list(repo, "lint_envs", platform)
    assert lint(repo) == []


# --- `make new-usercode` reads the platform's files: a broken one is refused in one line ----------------------
def write_platform(root: Path, platform: dict) -> None:
    """The platform files (platform/company.yaml, platform/values/<env>.yaml) that state `platform`."""
    company = {
        "name": "fixture-company",
        "gitlab": {"host": "gitlab.example.org", "project": platform["ci_project"], "version": platform["ci_version"]},
        "image_registry": platform["image_registry"],
        "label_domain": platform["label_domain"],
        "grpc_port": platform["grpc_port"],
    }
    (root / "values").mkdir(parents=True)
    (root / "company.yaml").write_text(yaml.safe_dump(company))
    (root / "values" / "base.yaml").write_text("previews:\n  enabled: false\n")
    for position, env in enumerate(platform["environments"], start=1):
        values = {
            "global": {"postgresqlSecretName": env["postgres_secret"]},
            "environment": {
                "name": env["name"], "namespace": env["namespace"], "kubeContext": f"fixture-{env['name']}",
                "tier": env["tier"], "promotion": position, "manualDeploy": env["tier"] == "production",
                "warehouseDomain": env["warehouse_domain"],
            },
            "previews": {"enabled": env["previews"]},
        }  # fmt: skip
        (root / "values" / f"{env['name']}.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


@pytest.fixture
def fixture_platform(tmp_path, monkeypatch) -> Path:
    """The fixture company's platform files, read instead of the repository's."""
    root = tmp_path / "platform"
    write_platform(root, OTHER_PLATFORM)
    monkeypatch.setattr(paths, "COMPANY_YAML", root / "company.yaml")
    monkeypatch.setattr(paths, "VALUES_DIR", root / "values")
    return root


def test_the_template_is_rendered_with_whatever_the_platform_files_declare(fixture_platform, tmp_path):
    assert platform_context() == {"platform": OTHER_PLATFORM}
    repo = render(tmp_path / "out", {"project_name": "Fixture Pipelines", **platform_context()})
    assert_deploys_to(repo, "fixture-pipelines", OTHER_PLATFORM)


def new_usercode(out: Path) -> int:
    args = build_parser().parse_args(["template", "new", "--no-input", "--output-dir", str(out)])
    return args.func(args)


BROKEN_FILES = [
    ("undeclared", "values/qa.yaml", lambda text: "previews:\n  enabled: true\n", "environment is missing"),
    ("bad-tier", "values/qa.yaml", lambda text: text.replace("tier: staging", "tier: qa"), "environment.tier: 'qa'"),
    ("not-yaml", "company.yaml", lambda text: text + "grpc_port: [\n", "fix the YAML there"),
    ("no-registry", "company.yaml", lambda text: text.replace("image_registry:", "registry:"), "image_registry"),
    # The platform's reader requires the Postgres Secret every user-code release mounts.
    (
        "no-postgres-secret",
        "values/qa.yaml",
        lambda text: "\n".join(line for line in text.splitlines() if "postgresqlSecretName" not in line),
        "global.postgresqlSecretName: None is not a Secret name",
    ),
]


@pytest.mark.parametrize(("file", "edit", "problem"), [c[1:] for c in BROKEN_FILES], ids=[c[0] for c in BROKEN_FILES])
def test_new_usercode_refuses_a_broken_platform_file_in_one_line(
    fixture_platform, tmp_path, capsys, file, edit, problem
):
    broken = fixture_platform / file
    broken.write_text(edit(broken.read_text()))
    out = tmp_path / "out"
    assert new_usercode(out) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("new-usercode: ") and problem in line, line
    assert str(broken) in line or broken.name in line, line
    assert captured.out == ""
    assert not out.exists()
