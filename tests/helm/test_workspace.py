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

from .helpers import COMPANY, ENVS, objects_of, platform_check_errors


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
    added = [*locations, {"name": "sales-forecasts", "team": "sales", "port": 4001, "module": "m"}]
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
@pytest.mark.parametrize("env", ENVS)
def test_a_wrong_workspace_is_one_line(values_of, locations, env, edit, expected):
    values = values_of(env)
    edit(values)
    assert [str(v) for v in registry.check_workspace(values, locations, env)] == [f"[workspace] {env}: {expected}"]


def sales(**changes):
    """A valid registry entry of the test's own location, changed as a case says (None: the key left out)."""
    entry = {"name": "sales", "team": "t", "image": COMPANY.image("sales"), "port": COMPANY.grpc_port, "module": "m"}
    return {k: v for k, v in {**entry, **changes}.items() if v is not None}


def test_a_valid_entry_passes(locations):
    assert registry.check_code_location_registry([*locations, sales()]) == []
    assert registry.check_code_location_registry([*locations, sales(image=None)]) == []  # <image_registry>/<name>


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (sales(name="Sales_Pipelines", image=COMPANY.image("x")), "DNS-1123"),
        (sales(image=f"{COMPANY.image('sales')}:latest"), "without tag"),
        (sales(port=str(COMPANY.grpc_port)), f"port '{COMPANY.grpc_port}' is not an integer"),
        (sales(port=COMPANY.grpc_port + 1), f"is not the port user-code repos serve ({COMPANY.grpc_port}"),
        (sales(team=None), "lacks ['team']"),
        (
            sales(image="registry.elsewhere.example/x/sales"),
            f"is not in the company's registry (platform/company.yaml image_registry {COMPANY.image_registry!r}); "
            f"set image: {COMPANY.image('sales')}",
        ),
    ],
    ids=["name", "tag", "port-type", "port", "team", "registry"],
)
def test_invalid_registry_entry_fails_in_one_line(locations, entry, expected):
    found = registry.check_code_location_registry([*locations, entry])
    assert len(found) == 1 and expected in str(found[0]), [str(v) for v in found]


def test_registry_port_that_is_not_an_integer_is_one_line_of_platform_check(tmp_path, monkeypatch, capsys, locations):
    copy_ = tmp_path / "code-locations.yaml"
    edit_yaml_file = paths.CODE_LOCATIONS_YAML.read_text().replace(f"port: {locations[0]['port']}", "port: abc", 1)
    copy_.write_text(edit_yaml_file)
    errors = platform_check_errors(monkeypatch, capsys, "CODE_LOCATIONS_YAML", copy_)
    assert not any("Traceback" in line for line in errors)
    assert errors[0].startswith(f"{ENVS[0]}: ") and "problem(s)" in errors[0]
    assert errors[1] == (
        f"  [registry] platform/code-locations.yaml: {locations[0]['name']}: port 'abc' is not an integer; "
        f"register it with port: {COMPANY.grpc_port}"
    )


def test_duplicate_location_fails(locations):
    assert "registered twice" in "\n".join(map(str, registry.check_code_location_registry([*locations, locations[0]])))


# -- user-code Dagster version vs the platform's -----------------------------------------------------
def lock_with(tmp_path, version):
    path = tmp_path / "uv.lock"
    path.write_text(f'version = 1\n\n[[package]]\nname = "dagster"\nversion = "{version}"\n')
    return path


def test_template_repo_lock_is_not_newer_than_the_platform():
    check(TEMPLATE_DIR / "project" / "uv.lock", dagster_version())


@pytest.mark.parametrize("version", ["1.13.27", "1.13.3", "1.12.9"])
def test_usercode_on_the_platform_version_or_older_passes(tmp_path, version):
    check(lock_with(tmp_path, version), dagster_version())


@pytest.mark.parametrize("version", ["1.13.28", "1.14.0", "2.0.0"])
def test_usercode_on_a_newer_dagster_fails(tmp_path, version):
    with pytest.raises(VersionGuardError, match="newer than the platform"):
        check(lock_with(tmp_path, version), dagster_version())
