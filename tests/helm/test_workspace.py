"""platform/code-locations.yaml is the registry: every location is in each environment's workspace and
NetworkPolicies, and a user-code repo cannot run a newer Dagster than the platform."""

from __future__ import annotations

import copy

import pytest

from dagster_platform import paths
from dagster_platform.ci.version_guard import VersionGuardError, check
from dagster_platform.helm import registry
from dagster_platform.helm import values as helm_values
from dagster_platform.mappings import deep_merge
from dagster_platform.paths import TEMPLATE_DIR, dagster_version

from .helpers import ENVS, objects_of, platform_check_errors


@pytest.fixture(scope="module")
def locations():
    return helm_values.load_code_locations()


def test_registry_is_valid(locations):
    assert locations
    assert registry.check_code_location_registry(locations) == []


@pytest.mark.parametrize("env", ENVS)
def test_every_registered_location_is_in_the_workspace(env_values, rendered, locations, env):
    assert registry.check_workspace(env_values[env], locations, env) == []
    servers = env_values[env]["dagster"]["dagsterWebserver"]["workspace"]["servers"]
    assert [s["name"] for s in servers] == [loc["name"] for loc in locations]
    policies = objects_of(rendered[env], "NetworkPolicy")
    for loc in locations:
        assert f"dagster-code-server-{loc['name']}" in policies


def test_adding_a_location_is_one_registry_entry(locations):
    added = [*locations, {"name": "sales-forecasts", "team": "sales", "image": "r/x", "port": 4001, "module": "m"}]
    workspace = helm_values.workspace_values(added)
    for env in ENVS:
        values = deep_merge(helm_values.environment_values(env), workspace)
        assert registry.check_workspace(values, added, env) == []
        # ...and an environment whose workspace misses it fails.
        found = registry.check_workspace(helm_values.environment_values(env), added, env)
        assert "registered location sales-forecasts (sales-forecasts:4001) is not in the workspace" in "\n".join(
            map(str, found)
        )


def test_workspace_server_that_is_not_registered_fails(env_values, locations):
    values = copy.deepcopy(env_values["acceptance"])
    values["dagster"]["dagsterWebserver"]["workspace"]["servers"].append(
        {"name": "rogue", "host": "rogue", "port": 4000}
    )
    assert "workspace server rogue (rogue:4000) is not registered" in "\n".join(
        map(str, registry.check_workspace(values, locations, "acceptance"))
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "Sales_Pipelines", "team": "t", "image": "r/x", "port": 4000, "module": "m"}, "DNS-1123"),
        ({"name": "sales", "team": "t", "image": "r/x:latest", "port": 4000, "module": "m"}, "without tag"),
        (
            {"name": "sales", "team": "t", "image": "r/x", "port": "4000", "module": "m"},
            "port '4000' is not an integer",
        ),
        ({"name": "sales", "image": "r/x", "port": 4000, "module": "m"}, "lacks ['team']"),
    ],
)
def test_invalid_registry_entry_fails(locations, entry, expected):
    found = registry.check_code_location_registry([*locations, entry])
    assert expected in "\n".join(map(str, found))


def test_registry_port_that_is_not_an_integer_is_one_line_of_platform_check(tmp_path, monkeypatch, capsys):
    copy_ = tmp_path / "code-locations.yaml"
    copy_.write_text(paths.CODE_LOCATIONS_YAML.read_text().replace("port: 4000", "port: abc", 1))
    errors = platform_check_errors(monkeypatch, capsys, "CODE_LOCATIONS_YAML", copy_)
    assert not any("Traceback" in line for line in errors)
    assert errors[:2] == [
        "acceptance: 2 problem(s) [helm-python-sdk (Helm Go SDK), platform templates]",
        "  [registry] platform/code-locations.yaml: example-pipelines: port 'abc' is not an integer; "
        "register it with port: 4000",
    ]


def test_duplicate_location_fails(locations):
    assert "registered twice" in "\n".join(map(str, registry.check_code_location_registry([*locations, locations[0]])))


# -- user-code Dagster version vs the platform's -----------------------------------------------------
def lock_with(tmp_path, version):
    path = tmp_path / "uv.lock"
    path.write_text(f'version = 1\n\n[[package]]\nname = "dagster"\nversion = "{version}"\n')
    return path


def test_template_repo_lock_is_not_newer_than_the_platform():
    check(TEMPLATE_DIR / "{{cookiecutter.project_slug}}" / "uv.lock", dagster_version())


@pytest.mark.parametrize("version", ["1.13.27", "1.13.3", "1.12.9"])
def test_usercode_on_the_platform_version_or_older_passes(tmp_path, version):
    check(lock_with(tmp_path, version), dagster_version())


@pytest.mark.parametrize("version", ["1.13.28", "1.14.0", "2.0.0"])
def test_usercode_on_a_newer_dagster_fails(tmp_path, version):
    with pytest.raises(VersionGuardError, match="newer than the platform"):
        check(lock_with(tmp_path, version), dagster_version())
