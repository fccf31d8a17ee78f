"""One derivation: the complete dagster.yaml of each environment, as the official chart writes it, and the
guardrails on what the cluster's images can actually load (driver, compute log manager, bucket)."""

from __future__ import annotations

import copy

import pytest
import yaml

from dagster_platform.cli import main
from dagster_platform.helm import checks
from dagster_platform.helm import instance as helm_instance
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.images import instance_image_errors, usercode_image

from .helpers import ENVS

CHART_SECTIONS = [
    "scheduler",
    "schedule_storage",
    "run_launcher",
    "run_storage",
    "event_log_storage",
    "run_coordinator",
    "compute_logs",
    "run_monitoring",
    "run_retries",
    "sensors",
    "schedules",
    "telemetry",
    "retention",
]


@pytest.mark.parametrize("env", ENVS)
def test_derived_instance_is_complete_valid_and_loadable_by_every_image(env):
    derived = helm_instance.derive_instance(env)
    assert list(derived) == CHART_SECTIONS  # the chart template's sections, in its order
    assert helm_instance.dagster_config_errors(derived) == []
    assert instance_image_errors(env, derived) == []
    values = helm_values.environment_values(env)
    for section in ("run_storage", "event_log_storage", "schedule_storage"):
        db = derived[section]["config"]["postgres_db"]
        assert db["scheme"] == "postgresql+psycopg2"
        assert db["params"] == {"sslmode": "require"}
        assert db["hostname"] == values["dagster"]["postgresql"]["postgresqlHost"]
        assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # never a value
    logs = derived["compute_logs"]
    assert logs["class"] == "S3ComputeLogManager"
    s3 = values["dagster"]["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert logs["config"] == {
        "bucket": s3["bucket"],
        "prefix": s3["prefix"],
        "endpoint_url": s3["endpointUrl"],
        "skip_empty_files": True,
    }
    # The object store's credentials reach every pod that writes or reads step logs.
    secret = [{"name": values["objectStore"]["credentialsSecretName"]}]
    assert values["dagster"]["dagsterWebserver"]["envSecrets"] == secret
    assert values["dagster"]["dagsterDaemon"]["envSecrets"] == secret
    assert derived["run_launcher"]["config"]["env_secrets"] == [secret[0]["name"]]


def test_make_platform_instance_prints_the_derivation(capsys):
    for env in ENVS:
        assert main(["platform", "instance", "--env", env]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith(f"# dagster.yaml of {env}")
        assert yaml.safe_load(printed) == helm_instance.derive_instance(env)


def test_the_user_code_image_ships_the_driver_and_the_log_manager():
    dists = usercode_image()
    assert {"dagster", "dagster-postgres", "psycopg2-binary", "dagster-k8s", "dagster-aws", "boto3"} <= dists
    assert "dagster-webserver" not in dists  # dev dependencies are not in the image


# -- bad input: one line naming the environment, the key and the fix ------------------------------
def _errors_after(env, edit):
    values = copy.deepcopy(helm_values.environment_values(env))
    edit(values["dagster"])
    return [str(v) for v in checks.check_instance_config(env, values, helm_values.load_instance(env))]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            lambda d: d["computeLogManager"]["config"]["s3ComputeLogManager"].pop("bucket"),
            "{env}: dagster.computeLogManager.config.s3ComputeLogManager.bucket is empty; set the "
            "environment's bucket in platform/values/{env}.yaml",
            id="no-bucket",
        ),
        pytest.param(
            lambda d: d["postgresql"].pop("postgresqlScheme"),
            "{env}: dagster.postgresql.postgresqlScheme 'postgresql' needs the psycopg driver, which the "
            "webserver/daemon image (dagster-celery-k8s) does not install",
            id="bare-scheme",
        ),
        pytest.param(
            lambda d: d["postgresql"].update(postgresqlScheme="postgresql+asyncpg"),
            "{env}: dagster.postgresql.postgresqlScheme 'postgresql+asyncpg' is not a Postgres scheme",
            id="unknown-scheme",
        ),
        pytest.param(
            lambda d: d.update(computeLogManager={"type": "NoOpComputeLogManager"}),
            "{env}: computeLogManager is NoOpComputeLogManager: step logs would be lost",
            id="noop-logs",
        ),
    ],
)
@pytest.mark.parametrize("env", ENVS)
def test_a_setting_no_image_can_honour_fails_with_one_line(env, edit, expected):
    errors = _errors_after(env, edit)
    assert [e for e in errors if expected.format(env=env) in e], errors
    assert all("\n" not in e for e in errors)


_IMAGES = ("user-code image (usercode-template runtime dependencies)", "ops image (platform/ops runtime dependencies)")


@pytest.mark.parametrize("env", ENVS)
def test_a_compute_log_manager_the_user_code_image_cannot_import_fails(env):
    derived = helm_instance.derive_instance(env)
    derived["compute_logs"] = {
        "module": "dagster_gcp.gcs.compute_log_manager",
        "class": "GCSComputeLogManager",
        "config": {"bucket": "b"},
    }
    errors = instance_image_errors(env, derived)
    assert errors == [
        f"{env}: compute_logs GCSComputeLogManager comes from dagster-gcp, which the {image} does not install; "
        "add dagster-gcp to that image (template: usercode-template pyproject.toml + `make template-lock`) or choose "
        "another class"
        for image in _IMAGES
    ]


def test_an_ops_image_without_the_run_launchers_package_fails(tmp_path, monkeypatch):
    """platform/ops's run workers load the cluster's instance too: its lock must bring dagster-k8s."""
    import shutil

    from dagster_platform import paths
    from dagster_platform.helm import images

    env = ENVS[0]
    ops = tmp_path / "platform" / "ops"
    ops.mkdir(parents=True)
    lock = (paths.PLATFORM_DIR / "ops" / "uv.lock").read_text()
    root = lock.index('name = "platform-ops"')
    lock = lock[:root] + lock[root:].replace('    { name = "dagster-k8s" },\n', "", 1)
    (ops / "uv.lock").write_text(lock)
    shutil.copy(paths.PLATFORM_DIR / "ops" / "pyproject.toml", ops)
    monkeypatch.setattr(paths, "PLATFORM_DIR", tmp_path / "platform")
    images.locked_image.cache_clear()
    try:
        errors = instance_image_errors(env, helm_instance.derive_instance(env))
    finally:
        images.locked_image.cache_clear()
    assert errors == [
        f"{env}: run_launcher K8sRunLauncher comes from dagster-k8s, which the ops image (platform/ops runtime "
        "dependencies) does not install; add dagster-k8s to that image (template: usercode-template pyproject.toml "
        "+ `make template-lock`) or choose another class"
    ]


@pytest.mark.parametrize("env", ENVS)
def test_a_chart_type_the_derivation_does_not_know_is_refused_not_guessed(env):
    values = helm_values.environment_values(env)["dagster"]
    with pytest.raises(helm_instance.InstanceTranslationError, match="GCSComputeLogManager"):
        helm_instance.values_to_instance(
            {**values, "computeLogManager": {"type": "GCSComputeLogManager"}}, namespace="n"
        )


# -- platform-verify (CI): the chart's rendered ConfigMap vs the derivation, key by key -------------
def _config_map(env, instance):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dagster-instance", "namespace": env_namespace(env)},
        "data": {"dagster.yaml": yaml.safe_dump(instance)},
    }


def env_namespace(env):
    return helm_values.environment_values(env)["environment"]["namespace"]


@pytest.mark.parametrize("env", ENVS)
def test_verify_accepts_a_rendered_instance_equal_to_the_derivation(env_values, env):
    derived = helm_instance.derive_instance(env)
    found = checks.check_manifests(env, [_config_map(env, derived)], env_values[env])
    assert [str(v) for v in found if v.rule in ("instance-derivation", "instance-drift", "instance-config")] == []


@pytest.mark.parametrize("env", ENVS)
def test_verify_names_every_key_where_the_chart_and_the_derivation_differ(env_values, env):
    derived = helm_instance.derive_instance(env)
    rendered = copy.deepcopy(derived)
    rendered["run_storage"]["config"]["postgres_db"].pop("scheme")
    rendered["compute_logs"]["config"]["prefix"] = "elsewhere"
    found = [str(v) for v in checks.check_manifests(env, [_config_map(env, rendered)], env_values[env])]
    derivation = [line for line in found if line.startswith("[instance-derivation]")]
    scheme, prefix = (
        derived["run_storage"]["config"]["postgres_db"]["scheme"],
        derived["compute_logs"]["config"]["prefix"],
    )
    assert derivation == [
        f"[instance-derivation] {env} rendered dagster.yaml: run_storage.config.postgres_db.scheme: the chart "
        f"renders <absent>, the derivation says {scheme!r}; fix helm_instance.values_to_instance",
        f"[instance-derivation] {env} rendered dagster.yaml: compute_logs.config.prefix: the chart renders "
        f"'elsewhere', the derivation says {prefix!r}; fix helm_instance.values_to_instance",
    ]
