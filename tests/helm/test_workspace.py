"""platform/code-locations.yaml is the registry: each environment's webserver and daemon read the workspace
ConfigMap ci/previews.py writes from it (tests/ci/test_previews.py), their pods roll when it changes, every
location is a NetworkPolicy target, and a user-code repo cannot run a newer Dagster than the platform."""

from __future__ import annotations

import hashlib
import json

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
def test_the_workspace_is_the_configmap_previews_py_writes_and_every_location_a_policy_target(
    env_values, rendered, locations, env
):
    assert registry.check_workspace(env_values[env], locations, env) == []
    web = env_values[env]["dagster"]["dagsterWebserver"]
    # servers: [] explicitly: the chart's default lists an example server and refuses both at once.
    assert web["workspace"] == {"enabled": True, "servers": [], "externalConfigmap": "dagster-workspace"}
    assert env_values[env]["codeLocations"] == [{"name": loc["name"], "port": loc["port"]} for loc in locations]
    policies = objects_of(rendered[env], "NetworkPolicy")
    for loc in locations:
        assert f"dagster-code-server-{loc['name']}" in policies


@pytest.mark.parametrize("env", ENVS)
def test_webserver_and_daemon_pods_carry_the_registrys_hash(env_values, locations, env):
    """The chart's checksum/dagster-workspace hashes its own (now empty) workspace template, so it no longer
    changes; this annotation (on the pod template: the chart copies dagsterWebserver/dagsterDaemon.annotations
    there) rolls both when the registry changes, after the upgrade's sync wrote the new registry."""
    checksum = hashlib.sha256(helm_values.registry_json(locations).encode()).hexdigest()
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert env_values[env]["dagster"][component]["annotations"] == {"checksum/platform-registry": checksum}
    assert json.loads(helm_values.registry_json(locations)) == {
        loc["name"]: {"host": loc["name"], "port": loc["port"]} for loc in locations
    }


def test_adding_a_location_is_one_registry_entry_and_changes_the_hash(locations):
    added = [*locations, {"name": "sales-forecasts", "team": "sales", "image": "r/x", "port": 4001, "module": "m"}]
    workspace = helm_values.workspace_values(added)
    assert workspace["dagster"]["dagsterDaemon"] != helm_values.workspace_values(locations)["dagster"]["dagsterDaemon"]
    for env in ENVS:
        values = deep_merge(helm_values.environment_values(env), workspace)
        assert registry.check_workspace(values, added, env) == []
        # ...and an environment whose values miss it fails: no NetworkPolicy target, pods that would not roll.
        found = "\n".join(map(str, registry.check_workspace(helm_values.environment_values(env), added, env)))
        assert f"[workspace] {env}: location sales-forecasts:4001 has no NetworkPolicy target" in found
        assert "dagster.dagsterDaemon.annotations.checksum/platform-registry is not the registry's hash" in found


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda v: v["dagster"]["dagsterWebserver"]["workspace"].update(externalConfigmap="other"),
            "dagster.dagsterWebserver.workspace.externalConfigmap is 'other'; it must be 'dagster-workspace' "
            "(ci/previews.py writes it)",
        ),
        (
            lambda v: v["dagster"]["dagsterWebserver"]["workspace"].update(servers=[{"host": "h", "port": 4000}]),
            "dagster.dagsterWebserver.workspace.servers must be [] (the chart refuses both at once)",
        ),
        (
            lambda v: v["codeLocations"].append({"name": "rogue", "port": 4000}),
            "NetworkPolicy target rogue:4000 is not registered",
        ),
    ],
)
def test_a_wrong_workspace_is_one_line(values_of, locations, edit, expected):
    values = values_of("acceptance")
    edit(values)
    assert [str(v) for v in registry.check_workspace(values, locations, "acceptance")] == [
        f"[workspace] acceptance: {expected}"
    ]


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
