"""platform/instance/instance.yaml drives the Helm values (generated, never restated), with each environment's
overrides (environment.instance in its values file) applied to it alone; the instance config the values describe is
checked against Dagster's own config schemas."""

from __future__ import annotations

import copy
import re
import subprocess

import pytest
import yaml

from dagster_platform import paths
from dagster_platform.cli import main
from dagster_platform.helm import checks
from dagster_platform.helm import instance as helm_instance
from dagster_platform.helm import values as helm_values
from dagster_platform.mappings import deep_merge
from dagster_platform.platform_config import PlatformConfigError, get_path

from .helpers import ENVS, declared, edit_yaml, env_file, platform_check_errors, set_in, use_values_dir


@pytest.fixture(scope="module")
def instance():
    """platform/instance/instance.yaml as written: what every environment runs unless it overrides a key."""
    return helm_values.load_instance()


def test_instance_yaml_is_valid_for_dagster(instance):
    assert helm_instance.dagster_config_errors(instance) == []


@pytest.mark.parametrize("env", ENVS)
def test_values_describe_exactly_instance_yaml_with_the_overrides_and_dagster_accepts_them(env_values, env):
    own = helm_values.load_instance(env)
    assert [str(v) for v in checks.check_instance_config(env, env_values[env], own)] == []
    described = helm_instance.values_to_instance(env_values[env]["dagster"], namespace="ns")
    # The run launcher (from base.yaml) is valid for dagster-k8s's K8sRunLauncher too.
    assert described["run_launcher"]["class"] == "K8sRunLauncher"
    assert described["run_launcher"]["config"]["security_context"]["runAsNonRoot"] is True
    assert described["run_launcher"]["config"]["resources"]["limits"]["memory"]


def test_generated_values_come_from_instance_yaml(instance):
    generated = helm_values.generated_values()["dagster"]
    queued = generated["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == instance["run_coordinator"]["config"]["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert (
        generated["dagsterDaemon"]["runMonitoring"]["startTimeoutSeconds"]
        == instance["run_monitoring"]["start_timeout_seconds"]
    )
    assert generated["dagsterDaemon"]["runRetries"]["maxRetries"] == instance["run_retries"]["max_retries"]
    # The chart wants all four tick statuses; unstated ones keep Dagster's default (-1: keep).
    assert generated["retention"]["sensor"]["purgeAfterDays"]["started"] == -1
    assert generated["retention"]["schedule"]["purgeAfterDays"] == instance["retention"]["schedule"]["purge_after_days"]


@pytest.mark.parametrize("env", ENVS)
def test_values_generated_from_another_instance_drift_from_instance_yaml(instance, env):
    changed = copy.deepcopy(helm_values.load_instance(env))
    changed["run_coordinator"]["config"]["max_concurrent_runs"] += 17
    layers = [*helm_values.values_layers(env)[:2], ("generated", helm_values.generated_values(instance=changed))]
    values = helm_values.merge_layers(layers)
    queued = values["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == changed["run_coordinator"]["config"]["max_concurrent_runs"]
    # ...and the committed instance.yaml (with the environment's overrides) no longer matches these values.
    drift = checks.check_instance_config(env, values, helm_values.load_instance(env))
    assert "max_concurrent_runs" in "\n".join(map(str, drift))


def test_changing_instance_yaml_changes_every_environment_that_does_not_override_it(tmp_path, monkeypatch, instance):
    key = ("run_coordinator", "config", "max_concurrent_runs")
    changed = tmp_path / "instance.yaml"
    changed.write_text(paths.INSTANCE_YAML.read_text())
    new = instance["run_coordinator"]["config"]["max_concurrent_runs"] + 17
    edit_yaml(changed, set_in(key, new))
    monkeypatch.setattr(paths, "INSTANCE_YAML", changed)
    for env in ENVS:
        queued = helm_values.environment_values(env)["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]
        override = get_path(declared(env).instance, ".".join(key))
        assert queued["queuedRunCoordinator"]["maxConcurrentRuns"] == (new if override is None else override)


# -- typos and drift fail here, not in the cluster --------------------------------------------------
@pytest.mark.parametrize(
    ("section", "edit", "expected"),
    [
        (
            "run_coordinator",
            lambda i: i["run_coordinator"]["config"].update({"max_concurent_runs": 3}),
            'unexpected config entry "max_concurent_runs"',
        ),
        (
            "run_coordinator",
            lambda i: i["run_coordinator"]["config"]["tag_concurrency_limits"][0].update({"limt": 1}),
            'unexpected config entry "limt"',
        ),
        ("retention", lambda i: i["retention"]["sensor"].update({"purge_after_day": 3}), '"purge_after_day"'),
        ("run_monitoring", lambda i: i["run_monitoring"].update({"start_timeout_seconds": "5m"}), "start_timeout"),
        ("run_retries", lambda i: i["run_retries"].update({"enabled": "yes"}), "enabled"),
    ],
)
def test_typo_in_instance_config_fails_against_dagsters_schema(instance, section, edit, expected):
    broken = copy.deepcopy(instance)
    edit(broken)
    errors = helm_instance.dagster_config_errors(broken)
    assert errors and expected in "\n".join(errors)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda launcher: launcher.update({"imagePullPolicy": 3}), "image_pull_policy"),
        (lambda launcher: launcher.update({"jobNamespace": ["a", "b"]}), "job_namespace"),
        (lambda launcher: launcher["runK8sConfig"].update({"podSpecConfg": {}}), "runK8sConfig keys ['podSpecConfg']"),
    ],
)
def test_invalid_run_launcher_values_fail_against_dagster_k8s(values_of, edit, expected):
    env = ENVS[0]
    values = values_of(env)
    edit(values["dagster"]["runLauncher"]["config"]["k8sRunLauncher"])
    found = checks.check_instance_config(env, values, helm_values.load_instance(env))
    assert found and expected in "\n".join(map(str, found))


@pytest.mark.parametrize("env", ENVS)
def test_values_drifting_from_instance_yaml_fail(values_of, env):
    values = values_of(env)
    values["dagster"]["dagsterDaemon"]["runMonitoring"]["pollIntervalSeconds"] = 5
    values["dagster"]["retention"]["schedule"]["purgeAfterDays"] = 7
    found = checks.check_instance_config(env, values, helm_values.load_instance(env))
    assert {v.rule for v in found} == {"instance-drift"}
    text = "\n".join(map(str, found))
    assert "run_monitoring" in text and "retention" in text


def test_instance_yaml_section_without_a_helm_mapping_fails(instance):
    with pytest.raises(helm_instance.InstanceTranslationError, match="not a section the cluster's values express"):
        helm_values.instance_to_values({**instance, "code_servers": {"local_startup_timeout": 60}})
    broken = copy.deepcopy(instance)
    broken["run_monitoring"]["max_runtime_seconds"] = 10
    with pytest.raises(helm_instance.InstanceTranslationError, match="max_runtime_seconds"):
        helm_values.instance_to_values(broken)


_INSTANCE = "platform check: platform/instance/instance.yaml"
_TEACH = "(or teach dagster_platform.helm.values)"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("run_coordinator", "config", "max_concurrent_runz"), 5,
         f"{_INSTANCE}: run_coordinator.config.max_concurrent_runz: no dagster chart value expresses it; use one of "
         f"max_concurrent_runs, tag_concurrency_limits, dequeue_interval_seconds, dequeue_use_threads, "
         f"dequeue_num_workers {_TEACH}"),
        (("telemetryy",), {"enabled": False},
         f"{_INSTANCE}: telemetryy: not a section the cluster's values express; use one of run_coordinator, "
         f"run_monitoring, run_retries, sensors, schedules, retention, telemetry {_TEACH}"),
        (("compute_logs",), {"module": "x", "class": "Y"},
         f"{_INSTANCE}: compute_logs: place-specific (storage, compute logs and the run launcher come from "
         "platform/values on the cluster); remove it here"),
        (("run_coordinator", "class"), "DefaultRunCoordinator",
         f"{_INSTANCE}: run_coordinator.class: dagster.core.run_coordinator.DefaultRunCoordinator is not what the "
         "platform runs; set module: dagster.core.run_coordinator, class: QueuedRunCoordinator"),
        (("run_retries",), 1, f"{_INSTANCE}: run_retries: 1 is not a mapping; write it as dagster.yaml"),
    ],
)  # fmt: skip
def test_instance_yaml_mistake_is_one_line_of_platform_check(tmp_path, monkeypatch, capsys, path, value, expected):
    copy_ = tmp_path / "instance.yaml"
    copy_.write_text(paths.INSTANCE_YAML.read_text())
    edit_yaml(copy_, set_in(path, value))
    assert platform_check_errors(monkeypatch, capsys, "INSTANCE_YAML", copy_, code=2) == [expected]


def test_instance_yaml_that_is_not_yaml_is_one_line_of_platform_check(tmp_path, monkeypatch, capsys):
    copy_ = tmp_path / "instance.yaml"
    copy_.write_text(paths.INSTANCE_YAML.read_text() + "telemetry: [\n")
    end = len(copy_.read_text().splitlines()) + 1  # the line after the unclosed one
    assert platform_check_errors(monkeypatch, capsys, "INSTANCE_YAML", copy_, code=2) == [
        f"platform check: {copy_}: line {end}: expected the node content, but found '<stream end>'; fix the YAML there"
    ]


def test_instance_yaml_must_not_hold_storage_or_launcher(instance):
    with pytest.raises(helm_instance.InstanceTranslationError, match="place-specific"):
        helm_values.instance_to_values({**instance, "run_launcher": {"module": "x", "class": "Y"}})


@pytest.mark.parametrize("env", ENVS)
def test_rendered_instance_config_map_is_checked_when_present(env_values, env):
    """The CI path: the official chart's ConfigMap is parsed, validated and compared."""
    described = helm_instance.values_to_instance(env_values[env]["dagster"], namespace="n")
    described["run_coordinator"]["config"]["max_concurrent_runs"] = 50
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dagster-instance"},
        "data": {"dagster.yaml": yaml.safe_dump(described)},
    }
    rendered = helm_instance.instance_from_manifests([config_map])
    assert rendered == described
    drift = checks.check_described_instance(helm_values.load_instance(env), rendered, "rendered")
    assert "max_concurrent_runs" in "\n".join(map(str, drift))


# -- per-environment overrides (environment.instance in platform/values/<env>.yaml) ------------------
_QUEUE = ("run_coordinator", "config", "max_concurrent_runs")


@pytest.mark.parametrize("env", ENVS)
def test_every_environment_runs_instance_yaml_with_its_own_overrides(instance, env):
    own = helm_values.load_instance(env)
    assert own == deep_merge(instance, declared(env).instance)
    derived = helm_instance.derive_instance(env)
    assert [str(v) for v in checks.check_described_instance(own, derived, f"{env} derived")] == []


def _override(values_dir, env, overrides):
    edit_yaml(env_file(values_dir, env), set_in(("environment", "instance"), overrides))


def test_an_override_changes_its_environment_alone(values_dir, instance):
    env, *others = ENVS
    runs = instance["run_coordinator"]["config"]["max_concurrent_runs"] + 7
    _override(values_dir, env, {"run_coordinator": {"config": {"max_concurrent_runs": runs}}})
    overridden = helm_values.load_instance(env, values_dir=values_dir)
    assert get_path(overridden, ".".join(_QUEUE)) == runs
    assert overridden == deep_merge(instance, {"run_coordinator": {"config": {"max_concurrent_runs": runs}}})
    for other in others:
        assert helm_values.load_instance(other, values_dir=values_dir) == helm_values.load_instance(other)


def test_platform_instance_shows_the_environments_override(values_dir, monkeypatch, capsys, instance):
    env = ENVS[0]
    runs = instance["run_coordinator"]["config"]["max_concurrent_runs"] + 7
    _override(values_dir, env, {"run_coordinator": {"config": {"max_concurrent_runs": runs}}})
    use_values_dir(monkeypatch, values_dir)
    assert main(["platform", "instance", "--env", env]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert get_path(printed, ".".join(_QUEUE)) == runs


def test_make_platform_instance_prints_each_environments_instance_with_its_overrides():
    for env in ENVS:
        done = subprocess.run(["make", "--no-print-directory", "platform-instance", f"ENV={env}"], cwd=paths.ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        printed = yaml.safe_load(done.stdout)
        assert printed == helm_instance.derive_instance(env)
        own = helm_values.load_instance(env)
        assert printed["run_coordinator"]["config"] == own["run_coordinator"]["config"]


def test_make_platform_instance_refuses_an_undeclared_environment_in_one_line():
    done = subprocess.run(["make", "--no-print-directory", "platform-instance", "ENV=no-such-env"], cwd=paths.ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    # make's own closing line ("make: ***", or "make[1]: ***" when the suite runs under make test) is not ours.
    ours = [line for line in done.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]
    assert ours == [
        f"platform instance: environment 'no-such-env' is not declared; use one of {', '.join(ENVS)} "
        "(or add platform/values/no-such-env.yaml)"
    ]


@pytest.mark.parametrize(
    ("overrides", "unknown", "parent"),
    [
        ({"run_coordinater": {"config": {"max_concurrent_runs": 1}}}, "run_coordinater", ()),
        ({"run_coordinator": {"config": {"max_concurent_runs": 1}}}, "run_coordinator.config.max_concurent_runs",
         ("run_coordinator", "config")),
        ({"code_servers": {"local_startup_timeout": 60}}, "code_servers", ()),
    ],
    ids=["section", "nested-key", "section-instance-yaml-lacks"],
)  # fmt: skip
def test_an_override_of_a_key_instance_yaml_lacks_is_refused_in_one_line(
    values_dir, monkeypatch, capsys, instance, overrides, unknown, parent
):
    env = ENVS[0]
    _override(values_dir, env, overrides)
    known = ", ".join(get_path(instance, ".".join(parent)) if parent else instance)
    expected = (
        f"{env_file(values_dir, env)}: environment.instance.{unknown}: instance.yaml has no such key (it has "
        f"{known}); override one of those, or add it to platform/instance/instance.yaml first"
    )
    with pytest.raises(PlatformConfigError) as refused:
        helm_values.load_instance(env, values_dir=values_dir)
    assert str(refused.value) == expected
    use_values_dir(monkeypatch, values_dir)
    for command in ("instance", "check", "values"):
        assert main(["platform", command, "--env", env]) == 2
        assert capsys.readouterr().err == f"platform {command}: {expected}\n"
