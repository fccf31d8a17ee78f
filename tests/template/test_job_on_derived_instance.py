"""A freshly rendered user-code repo runs its job, in its own locked environment, on each environment's derived
instance (Postgres storage as the chart writes it, step logs to S3), against a real Postgres that accepts TLS
logins only (`sslmode: require`, as production) and a real S3-compatible server, both on loopback.

This is the run worker of the cluster minus Kubernetes: same image contents (the repo's `uv sync --frozen
--no-dev` set plus its dev tools), same dagster.yaml apart from the stack's named substitutions (where the
database and the object store are). The bare-scheme case reproduces the production defect this guards
against: without `postgresql+psycopg2` no run can open the database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from dagster_platform.helm import instance as helm_instance
from dagster_platform.local import config, lifecycle, postgres
from dagster_platform.local.supervisor import Supervisor
from dagster_platform.paths import ROOT
from dagster_platform.platform_config import environment_names, strictest
from dagster_platform.template.render import render

from .helpers import run_make

pytestmark = pytest.mark.slow
JOB = "orders_job"
PROJECT = "Job Pipelines"  # its location job-pipelines, package job_pipelines
MODULE = "job_pipelines.definitions"


@pytest.fixture(scope="module")
def services():
    """Throwaway TLS-only Postgres and the S3 server, started by the same code as `make stack`."""
    (ROOT / ".stack").mkdir(exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="test-job-", dir=ROOT / ".stack"))
    sup = Supervisor(state_dir)
    try:
        instance = config.write_instance(state_dir / "home", env=strictest().name, mode="stack")
        pg, _ = lifecycle.start_postgres(sup, None)
        store, _ = lifecycle.start_object_store(sup, instance)
        # The schema, created as on the cluster (the chart's migrate Job / the stack: `dagster instance migrate`).
        lifecycle.migrate(lifecycle.base_env(instance.parent, pg, store), instance.parent, sup)
        for env in environment_names():  # each environment's home, with the bucket its derived instance names
            local = yaml.safe_load(config.write_instance(state_dir / env, env=env).read_text())
            store.ensure_bucket(local["compute_logs"]["config"]["bucket"])
        yield state_dir, pg, store
    finally:
        lifecycle.down(state_dir, wipe=True, quiet=True)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    # Its own fresh render: the shared `rendered` repos must stay pristine for the leftover checks.
    repo = render(tmp_path_factory.mktemp("job-on-instance"), {"project_name": PROJECT})
    result = run_make(repo, "install")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo


def execute(repo: Path, home: Path, pg: postgres.PgConnection, store) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in lifecycle.SCRUBBED}
    env.update(pg.env())
    env.update(store.env())
    env.update(DAGSTER_HOME=str(home), DAGSTER_ENV="local", WAREHOUSE_SQLITE_PATH=str(home / "warehouse.sqlite"))
    return subprocess.run(
        [str(repo / ".venv/bin/dagster"), "job", "execute", "-m", MODULE, "-j", JOB],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def runs(pg: postgres.PgConnection) -> dict[str, str]:
    return dict(postgres.query(pg, "SELECT run_id, status FROM runs WHERE pipeline_name = %s", (JOB,)))


@pytest.mark.parametrize("env", environment_names())
def test_rendered_repos_job_succeeds_on_the_derived_instance_over_tls(services, repo, env):
    state_dir, pg, store = services
    home = state_dir / env
    instance = yaml.safe_load((home / "dagster.yaml").read_text())
    assert instance["run_storage"]["config"]["postgres_db"]["params"] == {"sslmode": "require"}
    before = runs(pg)
    result = execute(repo, home, pg, store)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    new = {run_id: status for run_id, status in runs(pg).items() if run_id not in before}
    assert list(new.values()) == ["SUCCESS"], new
    (run_id,) = new
    # Step logs of the run went to this environment's bucket under its prefix.
    logs = instance["compute_logs"]["config"]
    assert store.keys(logs["bucket"], f"{logs['prefix']}/storage/{run_id}/")
    # ...and every login of this server is TLS: the derived `sslmode: require` is what made it work.
    assert postgres.query(pg, "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)") == [(True,)]


def _broken_home(state_dir: Path, name: str, edit) -> Path:
    home = state_dir / name
    home.mkdir(exist_ok=True)
    instance = yaml.safe_load((state_dir / strictest().name / "dagster.yaml").read_text())
    for section in ("run_storage", "event_log_storage", "schedule_storage"):
        edit(instance[section]["config"]["postgres_db"])
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    return home


def test_the_charts_default_scheme_cannot_open_the_database(services, repo):
    """What the cluster would have run with an empty postgresqlScheme (the chart's default)."""
    state_dir, pg, store = services
    home = _broken_home(state_dir, "bare-scheme", lambda db: db.pop("scheme"))
    result = execute(repo, home, pg, store)
    assert result.returncode != 0
    assert "No module named 'psycopg'" in result.stdout + result.stderr


def test_a_connection_without_tls_is_refused(services, repo):
    state_dir, pg, store = services
    home = _broken_home(state_dir, "no-tls", lambda db: db.update(params={"sslmode": "disable"}))
    result = execute(repo, home, pg, store)
    assert result.returncode != 0
    assert "no encryption" in result.stdout + result.stderr or "pg_hba.conf" in result.stdout + result.stderr


LOADED_SETTINGS = """
import json
from dagster import DagsterInstance
i = DagsterInstance.get()
print(json.dumps({
    "run_coordinator": [type(i.run_coordinator).__name__, i.run_coordinator.inst_data.config_dict],
    "run_launcher": type(i.run_launcher).__name__,
    "compute_logs": type(i.compute_log_manager).__name__,
    "run_monitoring": i.run_monitoring_settings,
    "retention": i.get_settings("retention"),
}))
"""


def test_rendered_repos_local_loop_loads_the_platforms_instance(repo, tmp_path):
    """`make dev`/`make check` of a user-code repo put the template's dagster.yaml (the strictest environment's
    derived instance, dev mode) in DAGSTER_HOME; the repo's own Dagster loads the platform's queue, limits and
    retention from it."""
    home = tmp_path / "home"
    result = run_make(repo, "instance", f"DAGSTER_HOME={home}")
    assert result.returncode == 0, result.stderr
    loaded = subprocess.run(
        [str(repo / ".venv/bin/python"), "-c", LOADED_SETTINGS],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    settings = json.loads(loaded.stdout.strip().splitlines()[-1])
    derived = helm_instance.derive_instance(config.default_env())
    assert settings["run_coordinator"] == ["QueuedRunCoordinator", derived["run_coordinator"]["config"]]
    assert settings["run_launcher"] == "DefaultRunLauncher"
    assert settings["compute_logs"] == "LocalComputeLogManager"
    assert settings["run_monitoring"] == derived["run_monitoring"]
    assert settings["retention"] == derived["retention"]
