"""platform/instance/instance.yaml drives the Helm values (generated, never restated), and the
instance config the values describe is checked against Dagster's own config schemas."""

from __future__ import annotations

import copy

import pytest

from dagster_platform import paths
from dagster_platform.helm import checks
from dagster_platform.helm import instance as helm_instance
from dagster_platform.helm import values as helm_values

from .helpers import ENVS, edit_yaml, platform_check_errors, set_in


@pytest.fixture(scope="module")
def instance():
    return helm_values.load_instance()


def test_instance_yaml_is_valid_for_dagster(instance):
    assert helm_instance.dagster_config_errors(instance) == []


@pytest.mark.parametrize("env", ENVS)
def test_values_describe_exactly_instance_yaml_and_dagster_accepts_them(env_values, instance, env):
    assert [str(v) for v in checks.check_instance_config(env, env_values[env], instance)] == []
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


def test_changing_instance_yaml_changes_every_environment(instance):
    changed = copy.deepcopy(instance)
    changed["run_coordinator"]["config"]["max_concurrent_runs"] = 17
    generated = helm_values.generated_values(instance=changed)
    for env in ENVS:
        layers = [*helm_values.values_layers(env)[:2], ("generated", generated)]
        values = helm_values.merge_layers(layers)
        queued = values["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
        assert queued["maxConcurrentRuns"] == 17
        # ...and the committed instance.yaml no longer matches what these values describe.
        drift = checks.check_instance_config(env, values, instance)
        assert "max_concurrent_runs" in "\n".join(map(str, drift))


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
def test_invalid_run_launcher_values_fail_against_dagster_k8s(values_of, instance, edit, expected):
    values = values_of("acceptance")
    edit(values["dagster"]["runLauncher"]["config"]["k8sRunLauncher"])
    found = checks.check_instance_config("acceptance", values, instance)
    assert found and expected in "\n".join(map(str, found))


def test_values_drifting_from_instance_yaml_fail(values_of, instance):
    values = values_of("production")
    values["dagster"]["dagsterDaemon"]["runMonitoring"]["pollIntervalSeconds"] = 5
    values["dagster"]["retention"]["schedule"]["purgeAfterDays"] = 7
    found = checks.check_instance_config("production", values, instance)
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
    assert platform_check_errors(monkeypatch, capsys, "INSTANCE_YAML", copy_) == [expected]


def test_instance_yaml_that_is_not_yaml_is_one_line_of_platform_check(tmp_path, monkeypatch, capsys):
    copy_ = tmp_path / "instance.yaml"
    copy_.write_text(paths.INSTANCE_YAML.read_text() + "telemetry: [\n")
    assert platform_check_errors(monkeypatch, capsys, "INSTANCE_YAML", copy_) == [
        f"platform check: {copy_}: line 58: expected the node content, but found '<stream end>'; fix the YAML there"
    ]


def test_instance_yaml_must_not_hold_storage_or_launcher(instance):
    with pytest.raises(helm_instance.InstanceTranslationError, match="place-specific"):
        helm_values.instance_to_values({**instance, "run_launcher": {"module": "x", "class": "Y"}})


def test_rendered_instance_config_map_is_checked_when_present(env_values, instance):
    """The CI path: the official chart's ConfigMap is parsed, validated and compared."""
    import yaml

    described = helm_instance.values_to_instance(env_values["acceptance"]["dagster"], namespace="n")
    described["run_coordinator"]["config"]["max_concurrent_runs"] = 50
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dagster-instance"},
        "data": {"dagster.yaml": yaml.safe_dump(described)},
    }
    rendered = helm_instance.instance_from_manifests([config_map])
    assert rendered == described
    drift = checks.check_described_instance(instance, rendered, "rendered")
    assert "max_concurrent_runs" in "\n".join(map(str, drift))
