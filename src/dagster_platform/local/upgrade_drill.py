"""`dagster-platform upgrade-drill` (`make upgrade-drill`): the upgrade path of docs/upgrade.md, end to end on
this machine, with the cluster path's own commands and instance.

1. a throwaway Postgres and object store (the stack's: services.start_postgres, start_object_store) and an
   older Dagster from the package index in a cached venv (`.dev/upgrade-drill/dagster-<version>/`);
2. the instance is the stack-mode dagster.yaml (config.write_instance: the cluster's, connection values
   substituted); the OLD Dagster creates the schema and runs a small job several times, one run failing;
3. backup: `pg_dump` with the backup Job's flags (helm/upgrade.py: PG_DUMP_FLAGS), uploaded to the bucket
   under the Job's key (backup_location) and downloaded again, as the recovery line does;
4. migrate: the platform's `dagster instance migrate`; the new Dagster reads the same runs and executes one more;
5. restore drill: a NEW database, `pg_restore` with the recovery line's flags (PG_RESTORE_FLAGS); counts and
   run ids equal the backup's, the OLD Dagster reads its history back, and the new one migrates it again.

Each step prints one line with its figures and duration, then a summary table. Everything lives in a temp
dir, torn down by the supervisor even on failure (`--keep` leaves it running). A failure is one line naming
the step and the tail of its error, exit 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dagster_platform import paths
from dagster_platform.helm import upgrade
from dagster_platform.local import config, lifecycle, postgres, services
from dagster_platform.local.supervisor import Component, Supervisor, owned
from dagster_platform.paths import DEV_DIR, dagster_version, uv_executable

# The newest release of the minor before the platform's (1.13): a fast test fails when the platform's pin
# moves to another minor, so this moves with it.
DEFAULT_FROM_VERSION = "1.12.22"
CACHE_DIR = DEV_DIR / "upgrade-drill"  # the old Dagster's venvs, kept between runs (git-ignored)
RESTORED_DB = "dagster_restored"
RUNS = ("ok", "ok", "ok", "fail")  # the old version's history: three successful runs, one failed
TIMEOUT = 900  # any one command; generous on a busy 2-core machine
NEW_PYTHON = Path(sys.executable)  # the platform's .venv: its Dagster is the version upgraded to

# Runs with either Dagster (old or new) from its own venv: reads every run of DAGSTER_HOME's instance (id →
# status), executes the given runs, reads them all again; prints both and the Dagster version as one JSON line.
JOBS = """\
import json
import sys

from dagster import DagsterInstance, __version__, job, op


@op
def extract(context):
    context.log.info("drill: extracted 3 rows")
    return [1, 2, 3]


@op
def load(context, rows):
    context.log.info(f"drill: loaded {len(rows)} rows")


@job
def drill_job():
    load(extract())


@op
def explode():
    raise RuntimeError("drill: this run fails on purpose")


@job
def drill_failing_job():
    explode()


with DagsterInstance.get() as instance:
    before = {run.run_id: run.status.value for run in instance.get_runs()}
    for name in sys.argv[1:]:
        {"ok": drill_job, "fail": drill_failing_job}[name].execute_in_process(instance=instance, raise_on_error=False)
    after = {run.run_id: run.status.value for run in instance.get_runs()}
print(json.dumps({"version": __version__, "before": before, "after": after}))
"""


class DrillFailed(Exception):
    def __init__(self, step: str, detail: str):
        super().__init__(f"step '{step}' failed: {detail}")
        self.step = step


@dataclass(frozen=True)
class Figures:
    """What Postgres holds: runs, event rows, the schema's alembic revision, run ids."""

    runs: int
    events: int
    revision: str
    run_ids: frozenset[str]


@dataclass
class Result:
    old_version: str
    new_version: str
    state_dir: Path
    old_runs: dict[str, str] = field(default_factory=dict)  # run id → status, as the old version wrote them
    backup: Figures | None = None  # the database at backup time
    backup_bytes: int = 0
    backup_key: str = ""
    migrated: Figures | None = None  # after `dagster instance migrate`, before the new version's run
    new_reads: dict[str, str] = field(default_factory=dict)  # the migrated database, read by the new version
    new_run: str = ""  # the run the new version executed on the migrated database
    after_new_run: Figures | None = None
    restored: Figures | None = None  # the new database, straight from pg_restore
    old_reads_restored: dict[str, str] = field(default_factory=dict)
    remigrated: Figures | None = None
    new_reads_restored: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)  # Postgres and the object store, as started


def libraries_version(version: str) -> str:
    """paths.libraries_version, refusing a malformed --from-version."""
    libraries = paths.libraries_version(version)
    if libraries is None:
        raise ValueError(f"--from-version must be a Dagster 1.x release like 1.12.22, got {version!r}")
    return libraries


def say(message: str) -> None:
    print(f"[drill] {message}", flush=True)


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:400] if lines else "(no output)"


def _run(argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> str:
    """Run one command to completion; its output goes to `log`. Returns stdout; raises RuntimeError naming the
    command and its stderr's last line when it fails."""
    try:
        result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`{Path(argv[0]).name}` did not finish within {TIMEOUT}s") from None
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
    if result.returncode != 0:
        raise RuntimeError(f"`{Path(argv[0]).name}` exit {result.returncode}: {_tail(result.stderr or result.stdout)}")
    return result.stdout


class Drill:
    """The drill's temp dir, its services and the commands it runs against them."""

    def __init__(self, state_dir: Path, old_python: Path, result: Result):
        self.state_dir, self.old_python, self.result = state_dir, old_python, result
        self.home = state_dir / "home"
        self.log = state_dir / "logs" / "drill.log"
        self.pg: postgres.PgConnection | None = None
        self.store = None

    def step(self, number: str, name: str, work: Callable[[], str]) -> None:
        """Run one step; print its line with its figures and duration, or raise DrillFailed naming it."""
        started = time.monotonic()
        try:
            figures = work()
        except DrillFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of a step becomes its one line
            raise DrillFailed(name, _tail(str(exc)) if str(exc) else type(exc).__name__) from exc
        took = self.result.durations[name] = time.monotonic() - started
        say(f"{number} {name}: {figures} ({took:.1f}s)")

    # -- commands ---------------------------------------------------------------------------------------
    def pg_env(self, db: str) -> dict[str, str]:
        """libpq's variables, as the backup Job sets them (PGHOST, ..., PGSSLMODE); the password too."""
        pg = self.pg
        return {"PATH": os.environ.get("PATH", ""), "LANG": "C", "PGHOST": pg.host, "PGPORT": str(pg.port),
                "PGUSER": pg.user, "PGPASSWORD": pg.password, "PGDATABASE": db, "PGSSLMODE": pg.sslmode}  # fmt: skip

    def pg_tool(self, tool: str, *args: str, db: str = postgres.DB_NAME) -> str:
        return _run([str(postgres.bin_dir() / tool), *args], self.pg_env(db), self.log)

    def figures(self, db: str) -> Figures:
        def sql(query: str) -> list[str]:
            return self.pg_tool("psql", "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-c", query, db=db).split()

        run_ids = sql("select run_id from runs")
        return Figures(
            runs=int(sql("select count(*) from runs")[0]),
            events=int(sql("select count(*) from event_logs")[0]),
            revision=",".join(sql("select version_num from alembic_version")),
            run_ids=frozenset(run_ids),
        )

    def dagster_env(self, db: str) -> dict[str, str]:
        return lifecycle.base_env(self.home, dataclasses.replace(self.pg, db_name=db), self.store)

    def jobs(self, python: Path, db: str, *runs: str) -> tuple[dict[str, str], dict[str, str]]:
        """Every run (id → status) before and after executing `runs`, with the Dagster of `python` (the old or
        the new version, checked)."""
        out = _run([str(python), str(self.home / "drill_jobs.py"), *runs], self.dagster_env(db), self.log, self.home)
        found = json.loads(out.strip().splitlines()[-1])
        expected = self.result.new_version if python == NEW_PYTHON else self.result.old_version
        if found["version"] != expected:
            raise RuntimeError(f"{python} runs dagster {found['version']}, not {expected}")
        return found["before"], found["after"]

    def migrate(self, db: str) -> None:
        migrate = [str(lifecycle.PLATFORM_BIN / "dagster"), "instance", "migrate"]
        _run(migrate, self.dagster_env(db), self.log, self.home)


def _statuses(runs: dict[str, str]) -> str:
    return ", ".join(f"{n} {status}" for status, n in Counter(runs.values()).most_common())


def _same(expected: set[str] | frozenset[str], got, what: str) -> None:
    if set(got) != set(expected):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        raise RuntimeError(f"{what}: run ids differ (missing {missing[:3]}, unexpected {extra[:3]})")


def ensure_old_dagster(version: str, log: Path) -> tuple[Path, bool]:
    """The old Dagster's venv under .dev/upgrade-drill/dagster-<version>/ (installed once, then reused; a
    lock keeps two drills from installing into it at once). Returns (its python, whether it was cached)."""
    libs = libraries_version(version)
    requirements = [f"dagster=={version}", f"dagster-postgres=={libs}", f"dagster-aws=={libs}"]
    venv = CACHE_DIR / f"dagster-{version}"
    python, marker = venv / "bin" / "python", venv / ".drill-installed"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"dagster-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == " ".join(requirements) and python.exists():
            return python, True
        shutil.rmtree(venv, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in lifecycle.SCRUBBED}
        uv = uv_executable()
        # The platform's interpreter (Python 3.11): the old release must work where the platform runs.
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], env, log)
        _run([uv, "pip", "install", "--quiet", "--python", str(python), *requirements], env, log)
        marker.write_text(" ".join(requirements))
    return python, False


def run(
    from_version: str = DEFAULT_FROM_VERSION,
    keep: bool = False,
    before_restore: Callable[[Path], None] | None = None,
) -> Result:
    """The whole drill; returns its figures or raises DrillFailed (after tearing everything down, unless
    `keep`). `before_restore` gets the downloaded dump's path before pg_restore reads it (tests break it)."""
    libraries_version(from_version)  # refuses a malformed version before anything starts
    postgres.preflight()
    state_dir = Path(tempfile.mkdtemp(prefix="dagster-upgrade-drill-"))
    result = Result(from_version, dagster_version(), state_dir)
    drill = Drill(state_dir, Path(), result)
    finished = False
    with owned(str(state_dir), keep=keep):  # a failure or a stop signal stops the services in any case
        try:
            _steps(drill, before_restore)
            finished = True
            return result
        finally:
            if not keep:
                with contextlib.redirect_stdout(io.StringIO()):
                    lifecycle.down(state_dir, wipe=True, quiet=True, grace=10)
                shutil.rmtree(state_dir, ignore_errors=True)
            elif finished:
                pg, store = drill.pg, drill.store.endpoint_url
                say(f"kept {state_dir}: Postgres still on {pg.host}:{pg.port} (user {pg.user}, databases "
                    f"{postgres.DB_NAME} and {RESTORED_DB}, password in state.json), S3 on {store}; "
                    f"stop and delete: `{_wipe(state_dir)}`")  # fmt: skip
            else:
                say(f"kept {state_dir} (logs/drill.log, the dumps); its services were stopped; delete its data: "
                    f"`{_wipe(state_dir)}`")  # fmt: skip


def _wipe(state_dir: Path) -> str:
    return f"dagster-platform stack --state-dir {state_dir} down --wipe && rm -r {state_dir}"


def _steps(drill: Drill, before_restore: Callable[[Path], None] | None) -> None:
    result, state_dir = drill.result, drill.state_dir
    from_version, new_version = result.old_version, result.new_version
    drill.log.parent.mkdir(parents=True, exist_ok=True)
    old, new = f"dagster {from_version}", f"dagster {new_version}"

    def install() -> str:
        drill.old_python, cached = ensure_old_dagster(from_version, drill.log)
        where = drill.old_python.parent.parent.relative_to(DEV_DIR.parent)
        libs = libraries_version(from_version)
        return f"{'cached' if cached else 'installed'} in {where} (with dagster-postgres/-aws {libs})"

    def services_up() -> str:
        instance = config.write_instance(
            drill.home, env=config.default_env(), mode="stack"
        )  # refuses drift from the cluster's
        (drill.home / "drill_jobs.py").write_text(JOBS)
        sup = Supervisor(state_dir)
        with contextlib.redirect_stdout(io.StringIO()):  # the stack's own [stack] lines
            drill.pg, _ = services.start_postgres(sup, None)
            drill.store, _ = services.start_object_store(sup, instance)
        result.components = list(sup.components.values())
        where = f"Postgres on {drill.pg.host}:{drill.pg.port} (TLS), S3 on {drill.store.endpoint_url}"
        return f"{where}; {config.default_env()}'s derived instance in stack mode"

    def old_history() -> str:
        _, runs = drill.jobs(drill.old_python, postgres.DB_NAME, *RUNS)
        result.old_runs = runs
        result.backup = drill.figures(postgres.DB_NAME)
        _same(runs, result.backup.run_ids, "Postgres vs the old version's runs")
        return (f"{old} created the schema ({result.backup.revision}) and ran {len(runs)} runs ({_statuses(runs)}) "
                f"→ {result.backup.runs} runs, {result.backup.events} event rows")  # fmt: skip

    dump = state_dir / "backup" / "db.dump"

    def backup() -> str:
        dump.parent.mkdir()
        drill.pg_tool("pg_dump", *upgrade.PG_DUMP_FLAGS, f"--file={dump}")
        bucket, key, _ = upgrade.backup_location(config.default_env(), upgrade.backup_name())
        drill.store.client().upload_file(str(dump), bucket, key)
        result.backup_bytes, result.backup_key = dump.stat().st_size, f"s3://{bucket}/{key}"
        flags = " ".join(upgrade.PG_DUMP_FLAGS)
        return f"pg_dump {flags}: {result.backup_bytes / 1024:.1f} KiB, uploaded to {result.backup_key}"

    def migrate() -> str:
        drill.migrate(postgres.DB_NAME)
        result.migrated = drill.figures(postgres.DB_NAME)
        if (result.migrated.runs, result.migrated.events) != (result.backup.runs, result.backup.events):
            raise RuntimeError(f"migration changed the counts: {result.migrated} vs {result.backup}")
        return (f"{new} `dagster instance migrate`: schema {result.backup.revision} → {result.migrated.revision}, "
                f"{result.migrated.runs} runs, {result.migrated.events} event rows")  # fmt: skip

    def new_reads() -> str:
        result.new_reads, after = drill.jobs(NEW_PYTHON, postgres.DB_NAME, "ok")  # reads, then one more run
        _same(result.old_runs, result.new_reads, f"{new} reading the migrated database")
        if result.new_reads != result.old_runs:
            raise RuntimeError(f"{new} reads other statuses than {old} wrote: {result.new_reads}")
        (result.new_run,) = set(after) - set(result.old_runs)
        if after[result.new_run] != "SUCCESS":
            raise RuntimeError(f"the new version's run {result.new_run} ended {after[result.new_run]}")
        result.after_new_run = drill.figures(postgres.DB_NAME)
        return (f"{new} reads the same {len(result.new_reads)} run ids and statuses; its own run {result.new_run[:8]} "
                f"SUCCESS → {result.after_new_run.runs} runs, {result.after_new_run.events} event rows")  # fmt: skip

    restored_dump = state_dir / "restore" / "db.dump"

    def restore() -> str:
        restored_dump.parent.mkdir()
        bucket, key = result.backup_key.removeprefix("s3://").split("/", 1)
        drill.store.client().download_file(bucket, key, str(restored_dump))
        if before_restore is not None:
            before_restore(restored_dump)
        drill.pg_tool("createdb", RESTORED_DB)
        drill.pg_tool("pg_restore", *upgrade.PG_RESTORE_FLAGS, f"--dbname={RESTORED_DB}", str(restored_dump))
        result.restored = drill.figures(RESTORED_DB)
        if (result.restored.runs, result.restored.events) != (result.backup.runs, result.backup.events):
            raise RuntimeError(f"the restored database differs from the backup: {result.restored} vs {result.backup}")
        _same(result.backup.run_ids, result.restored.run_ids, "restored vs backed-up database")
        flags = " ".join(upgrade.PG_RESTORE_FLAGS)
        return (f"downloaded, createdb {RESTORED_DB}, pg_restore {flags}: {result.restored.runs} runs, "
                f"{result.restored.events} event rows, schema {result.restored.revision} (= the backup's)")  # fmt: skip

    def old_reads_restored() -> str:
        result.old_reads_restored, _ = drill.jobs(drill.old_python, RESTORED_DB)
        if result.old_reads_restored != result.old_runs:
            raise RuntimeError(f"{old} reads another history from the restored database: {result.old_reads_restored}")
        return f"{old} reads its {len(result.old_runs)} runs back ({_statuses(result.old_runs)}), same ids"

    def remigrate() -> str:
        drill.migrate(RESTORED_DB)
        result.remigrated = drill.figures(RESTORED_DB)
        result.new_reads_restored, _ = drill.jobs(NEW_PYTHON, RESTORED_DB)
        if result.new_reads_restored != result.old_runs:
            raise RuntimeError(f"{new} reads another history from the re-migrated database")
        return (f"{new} migrates the restored database again ({result.remigrated.revision}) and reads the same "
                f"{len(result.new_reads_restored)} runs")  # fmt: skip

    drill.step("1/5", f"install {old}", install)
    drill.step("1/5", "postgres + object store", services_up)
    drill.step("2/5", "old history", old_history)
    drill.step("3/5", "backup", backup)
    drill.step("4/5", "migrate", migrate)
    drill.step("4/5", "new version reads", new_reads)
    drill.step("5/5", "restore", restore)
    drill.step("5/5", "old version reads the restore", old_reads_restored)
    drill.step("5/5", "migrate the restore", remigrate)


def summary(result: Result) -> str:
    """The figures as a Markdown table (docs/upgrade.md carries one)."""
    old, new, d = result.old_version, result.new_version, result.durations
    rows = [
        ("old history, at backup", old, result.backup, d.get("old history")),
        ("after `dagster instance migrate`", new, result.migrated, d.get("migrate")),
        ("after one more run by the new version", new, result.after_new_run, d.get("new version reads")),
        ("restored into a new database", "-", result.restored, d.get("restore")),
        ("restore read by the old version", old, result.restored, d.get("old version reads the restore")),
        ("restore migrated again", new, result.remigrated, d.get("migrate the restore")),
    ]
    lines = ["| stage | dagster | runs | event rows | schema revision | same run ids as the old history | took |",
             "|---|---|---:|---:|---|---|---:|"]  # fmt: skip
    base = set(result.old_runs)
    for stage, version, figures, took in rows:
        if figures is None:
            continue
        same = "yes" if base <= figures.run_ids else "no"
        same += f" (+{len(figures.run_ids - base)} new)" if figures.run_ids - base else ""
        lines.append(f"| {stage} | {version} | {figures.runs} | {figures.events} | {figures.revision} | {same} | "
                     f"{took or 0:.1f} s |")  # fmt: skip
    lines.append(f"\nbackup: {result.backup_bytes / 1024:.1f} KiB ({result.backup_key}); total "
                 f"{sum(d.values()):.1f} s")  # fmt: skip
    return "\n".join(lines)


def _command(args) -> int:
    try:
        result = run(args.from_version, keep=args.keep)
    except DrillFailed as exc:
        print(f"upgrade-drill: {exc}", file=sys.stderr)
        return 1
    except (ValueError, postgres.PostgresUnavailable) as exc:
        print(f"upgrade-drill: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"upgrade-drill: interrupted ({exc or 'SIGINT'}); stopped what it had started", file=sys.stderr)
        return 130
    say(f"summary: dagster {result.old_version} → {result.new_version}\n{summary(result)}")
    return 0


def register(subparsers) -> None:
    drill = subparsers.add_parser(
        "upgrade-drill",
        help="prove the upgrade path locally: old Dagster's history, pg_dump, migrate, restore drill (docs/upgrade.md)",
    )
    made_with = f"the older Dagster release that makes the history (default {DEFAULT_FROM_VERSION})"
    drill.add_argument("--from-version", default=DEFAULT_FROM_VERSION, help=made_with)
    drill.add_argument("--keep", action="store_true", help="leave the temp dir, Postgres and the object store running")
    drill.set_defaults(func=_command)
