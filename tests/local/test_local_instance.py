"""Every local process runs the cluster's derived dagster.yaml with the named substitutions and nothing else.

No services here: the files `make stack`, `make dev` and the user-code template's `make dev` load are
written (or read) and compared with the derivation; one failing case per rule and per kind of drift.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from dagster_platform.cli import main
from dagster_platform.helm import instance as helm_instance
from dagster_platform.helm.values import load_instance
from dagster_platform.local import config
from dagster_platform.paths import TEMPLATE_INSTANCE
from dagster_platform.platform_config import environment_names, environments

ENVS = environment_names()


@pytest.mark.parametrize("mode", config.MODES)
@pytest.mark.parametrize("env", ENVS)
def test_written_local_instance_is_the_derived_one_with_named_substitutions(tmp_path, env, mode):
    path = config.write_instance(tmp_path, env=env, mode=mode)
    local = yaml.safe_load(path.read_text())
    assert config.parity_errors(local, env, mode) == []
    derived = helm_instance.derive_instance(env)
    assert helm_instance.dagster_config_errors(local) == []
    # What stays the cluster's, whatever the mode: queue, monitoring, retries, retention, threads, telemetry.
    for section in ("run_coordinator", "run_monitoring", "run_retries", "retention", "sensors", "schedules"):
        assert local[section] == derived[section]
    assert local["run_launcher"]["class"] == "DefaultRunLauncher"
    if mode == "stack":
        db = local["run_storage"]["config"]["postgres_db"]
        assert db["scheme"] == "postgresql+psycopg2" and db["params"] == {"sslmode": "require"}
        assert db["hostname"] == {"env": "DAGSTER_PG_HOST"} and db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
        assert local["compute_logs"]["config"]["bucket"] == derived["compute_logs"]["config"]["bucket"]
        assert local["compute_logs"]["config"]["endpoint_url"] == {"env": config.S3_ENDPOINT_ENV}
    else:
        assert not {"run_storage", "event_log_storage", "schedule_storage", "compute_logs"} & set(local)
    # Nothing in a local file can name the environment's real database host or object store endpoint.
    text = path.read_text()
    assert derived["run_storage"]["config"]["postgres_db"]["hostname"] not in text
    assert derived["compute_logs"]["config"]["endpoint_url"] not in text


def test_laptops_run_the_strictest_environment():
    """The last production-tier environment (else the last one): what must not fail there fails on a laptop first."""
    envs = environments()
    production_tier = [env.name for env in envs if env.production]
    assert config.default_env() == (production_tier or [env.name for env in envs])[-1]


def test_the_template_ships_the_derived_dev_instance():
    """usercode-template/.../dagster.yaml is generated (`make template-instance`) and must not drift."""
    assert TEMPLATE_INSTANCE.read_text() == config.instance_text(config.default_env(), "dev"), (
        "usercode-template's dagster.yaml differs from the platform's derived instance: run `make template-instance`"
    )
    local = yaml.safe_load(TEMPLATE_INSTANCE.read_text())
    assert config.parity_errors(local, config.default_env(), "dev") == []


def _set(doc, dotted, value):
    *parents, last = dotted.split(".")
    for part in parents:
        doc = doc[part]
    doc[last] = value


def _drop(doc, dotted):
    *parents, last = dotted.split(".")
    for part in parents:
        doc = doc[part]
    del doc[last]


def _at(doc, dotted):
    for part in dotted.split("."):
        doc = doc[part]
    return doc


# (mode, edit of a correct local file given the environment's derived instance, the one line expected given the
# same) — one case per substitution rule, then drift outside the list (added key, dropped key, changed value). The
# values come from the derivation: the environment's real database host, object store and bucket.
_RUNS = "run_coordinator.config.max_concurrent_runs"
_EVENT_LOG_HOST = "event_log_storage.config.postgres_db.hostname"
_BUCKET = "compute_logs.config.bucket"
CASES = [
    pytest.param(
        "stack",
        lambda d, derived: d.update(run_launcher=derived["run_launcher"]),
        "run_launcher.module is 'dagster_k8s'; substitution 'run-launcher'",
        id="rule-run-launcher",
    ),
    pytest.param(
        "stack",
        lambda d, derived: _set(d, _EVENT_LOG_HOST, _at(derived, _EVENT_LOG_HOST)),
        lambda derived: f"{_EVENT_LOG_HOST} is {_at(derived, _EVENT_LOG_HOST)!r}; substitution 'database-location'",
        id="rule-database-location",
    ),
    pytest.param(
        "stack",
        lambda d, derived: _set(
            d, "compute_logs.config.endpoint_url", _at(derived, "compute_logs.config.endpoint_url")
        ),
        lambda derived: (
            f"compute_logs.config.endpoint_url is {_at(derived, 'compute_logs.config.endpoint_url')!r}; substitution "
            "'object-store-endpoint'"
        ),
        id="rule-object-store-endpoint",
    ),
    pytest.param(
        "dev",
        lambda d, derived: d.update(storage={"sqlite": {"base_dir": "/tmp/x"}}),
        "storage is {'sqlite': {'base_dir': '/tmp/x'}}, the cluster's is <absent>; it is not in the substitution list",
        id="rule-embedded-sqlite-other-key",
    ),
    pytest.param(
        "dev",
        lambda d, derived: d.update(run_storage=derived["run_storage"]),
        ("dagster.yaml: run_storage is {'module': 'dagster_postgres.run_storage'", "substitution 'embedded-sqlite'"),
        id="rule-embedded-sqlite",
    ),
    pytest.param(
        "dev",
        lambda d, derived: d.update(compute_logs=derived["compute_logs"]),
        (
            "dagster.yaml: compute_logs is {'module': 'dagster_aws.s3.compute_log_manager'",
            "substitution 'local-step-logs'",
        ),
        id="rule-local-step-logs",
    ),
    pytest.param(
        "stack",
        lambda d, derived: _drop(d, "run_storage.config.postgres_db.scheme"),
        "run_storage.config.postgres_db.scheme is <absent>, the cluster's is 'postgresql+psycopg2'; it is not in "
        "the substitution list",
        id="drift-dropped-scheme",
    ),
    pytest.param(
        "stack",
        lambda d, derived: _set(d, "schedule_storage.config.postgres_db.params", {}),
        "schedule_storage.config.postgres_db.params.sslmode is <absent>, the cluster's is 'require'",
        id="drift-dropped-tls",
    ),
    pytest.param(
        "dev",
        lambda d, derived: d.pop("retention"),
        "retention is <absent>, the cluster's is {'sensor':",
        id="drift-dropped-section",
    ),
    pytest.param(
        "stack",
        lambda d, derived: d.update(python_logs={"python_log_level": "DEBUG"}),
        "python_logs is {'python_log_level': 'DEBUG'}, the cluster's is <absent>; it is not in the substitution list",
        id="drift-added-key",
    ),
    pytest.param(
        "stack",
        lambda d, derived: _set(d, "run_coordinator.config.max_concurrent_runs", _at(derived, _RUNS) + 45),
        lambda derived: (
            f"run_coordinator.config.max_concurrent_runs is {_at(derived, _RUNS) + 45}, the cluster's is "
            f"{_at(derived, _RUNS)}"
        ),
        id="drift-changed-value",
    ),
    pytest.param(
        "stack",
        lambda d, derived: _set(d, _BUCKET, "my-own-bucket"),
        lambda derived: f"{_BUCKET} is 'my-own-bucket', the cluster's is {_at(derived, _BUCKET)!r}",
        id="drift-changed-bucket",
    ),
]


@pytest.mark.parametrize(("mode", "edit", "expected"), CASES)
@pytest.mark.parametrize("env", ENVS)
def test_local_instance_differing_outside_the_list_fails_with_one_line(env, mode, edit, expected):
    derived = helm_instance.derive_instance(env)
    local = copy.deepcopy(config.local_instance(derived, mode))
    edit(local, copy.deepcopy(derived))
    errors = config.parity_errors(local, env, mode, derived)
    assert errors, "the drift was not noticed"
    expected = expected(derived) if callable(expected) else expected
    fragments = expected if isinstance(expected, tuple) else (expected,)
    assert any(all(f in e for f in fragments) for e in errors), errors
    assert all(e.startswith(f"local {mode} instance vs {env}'s derived dagster.yaml: ") for e in errors)
    assert all("\n" not in e for e in errors)


# -- `--env`: any declared environment, with its instance overrides; anything else refused in one line -------------
@pytest.mark.parametrize("mode", config.MODES)
@pytest.mark.parametrize("env", ENVS)
def test_local_instance_of_an_environment_runs_its_instance_overrides(capsys, env, mode):
    assert main(["local-instance", "--mode", mode, "--env", env]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert config.parity_errors(printed, env, mode) == []
    # platform/instance/instance.yaml with environment.instance of platform/values/<env>.yaml applied.
    assert printed["run_coordinator"]["config"] == load_instance(env)["run_coordinator"]["config"]


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["stack", "--state-dir", "{state}", "up"], "stack up"),
        (["local-instance", "--output", "{state}/dagster.yaml"], "local-instance"),
    ],
    ids=["stack-up", "local-instance"],
)
def test_an_undeclared_environment_is_refused_in_one_line_before_anything_starts(tmp_path, capsys, argv, command):
    state = tmp_path / "state"
    assert main([arg.format(state=state) for arg in argv] + ["--env", "no-such-env"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"{command}: environment 'no-such-env' is not declared; use one of {', '.join(ENVS)} "
        "(or add platform/values/no-such-env.yaml)\n"
    )
    assert not state.exists(), "nothing is started or written for an undeclared environment"
