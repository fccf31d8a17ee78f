"""`dagster-platform upgrade-drill` (`make upgrade-drill`, docs/upgrade.md "Restore drill"): an old Dagster's
history in a throwaway Postgres, pg_dump, `dagster instance migrate`, and a restore drill into a new database,
with the cluster path's own flags (helm/upgrade.py). The old Dagster's venv stays cached in .dev/upgrade-drill/
(the first run on a fresh clone installs it from the package index)."""

from __future__ import annotations

import functools
import re
import tomllib

import pytest

from dagster_platform import cli
from dagster_platform.helm import upgrade
from dagster_platform.local import config, upgrade_drill
from dagster_platform.local.supervisor import Supervisor, is_alive
from dagster_platform.paths import ROOT, dagster_version

# The newest release of 1.11: its schema revision differs from 1.12's and 1.13's (1.12 → 1.13 changes none),
# so `dagster instance migrate` really migrates the schema.
SCHEMA_CHANGING_VERSION = "1.11.16"


def test_the_default_old_version_is_the_minor_before_the_platforms():
    major, minor, _ = dagster_version().split(".")
    assert upgrade_drill.DEFAULT_FROM_VERSION.startswith(f"{major}.{int(minor) - 1}."), (
        "move DEFAULT_FROM_VERSION in local/upgrade_drill.py to the newest release of the previous minor"
    )
    assert upgrade_drill.libraries_version("1.12.22") == "0.28.22"
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"dagster-postgres=={upgrade_drill.libraries_version(dagster_version())}" in pins


def test_a_malformed_version_is_refused_in_one_line_before_anything_starts(capsys):
    assert cli.main(["upgrade-drill", "--from-version", "2.0"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        "upgrade-drill: --from-version must be a Dagster 1.x release like 1.12.22, got '2.0'"
    ]


def _assert_torn_down(result: upgrade_drill.Result) -> None:
    assert {c.name for c in result.components} == {"postgres", "object-store"}
    assert not [c.name for c in result.components if is_alive(c)], "the drill left a service running"
    assert not result.state_dir.exists(), "the drill's temp dir was not removed"


@pytest.mark.slow
def test_old_history_survives_backup_migrate_and_restore(capsys):
    """From the release whose schema really migrates; the default old version runs the same steps up to the
    restore in the truncated-backup test below."""
    old = SCHEMA_CHANGING_VERSION
    result = upgrade_drill.run(old)
    out = capsys.readouterr().out
    print(out)  # the transcript, for -s and failure reports

    # The old version's history: three successful runs and one failed, all in Postgres.
    assert sorted(result.old_runs.values()) == ["FAILURE", "SUCCESS", "SUCCESS", "SUCCESS"]
    old_ids = set(result.old_runs)
    backup = result.backup
    assert backup.run_ids == old_ids and backup.runs == 4 and backup.events > 4
    # The cluster path's location: the bucket of the environment laptops run (local/config.py default_env()).
    bucket, key, _ = upgrade.backup_location(config.default_env(), "x")
    assert result.backup_bytes > 0 and result.backup_key.startswith(f"s3://{bucket}/{key.rsplit('/', 1)[0]}/")

    # Migrated: same rows, the platform's schema; the new version reads the same runs and runs one more.
    assert (result.migrated.runs, result.migrated.events, result.migrated.run_ids) == (4, backup.events, old_ids)
    assert result.new_reads == result.old_runs
    assert result.after_new_run.run_ids == old_ids | {result.new_run}
    assert result.after_new_run.events > backup.events
    assert result.migrated.revision != backup.revision, f"{old} was chosen because migrating its schema changes it"

    # Restored into a new database: exactly the backup; the old version reads it, the new one migrates it again.
    restored = result.restored
    assert (restored.runs, restored.events, restored.revision, restored.run_ids) == (
        backup.runs, backup.events, backup.revision, old_ids,
    )  # fmt: skip
    assert result.old_reads_restored == result.old_runs
    assert result.remigrated.revision == result.migrated.revision
    assert result.new_reads_restored == result.old_runs

    # The commands are the cluster path's, and every step printed one line with its duration.
    flags = {"backup": upgrade.PG_DUMP_FLAGS, "restore": upgrade.PG_RESTORE_FLAGS}
    for step, step_flags in flags.items():
        assert re.search(rf"^\[drill\] \d/5 {step}: .*{' '.join(step_flags)}.*\(\d+\.\d+s\)$", out, re.MULTILINE)
    assert len(re.findall(r"^\[drill\] \d/5 .*\(\d+\.\d+s\)$", out, re.MULTILINE)) == 9
    assert f"| old history, at backup | {old} | 4 | {backup.events} |" in upgrade_drill.summary(result)
    _assert_torn_down(result)


@pytest.mark.slow
def test_a_truncated_backup_fails_the_restore_step_in_one_line(monkeypatch, capsys):
    """A dump cut short (a broken upload): the real command ends in one line naming the restore step and
    pg_restore's error, exit 1, no traceback; everything is torn down."""
    seen: dict = {}

    def truncate(dump):  # <state dir>/restore/db.dump, downloaded from the bucket
        seen["state_dir"] = dump.parents[1]
        seen["components"] = list(Supervisor(dump.parents[1]).components.values())
        dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])

    monkeypatch.setattr(upgrade_drill, "run", functools.partial(upgrade_drill.run, before_restore=truncate))
    assert cli.main(["upgrade-drill"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("upgrade-drill: step 'restore' failed: `pg_restore` exit 1: pg_restore: error:"), err
    assert "[drill] 4/5 new version reads:" in out and "5/5 restore:" not in out
    assert {c.name for c in seen["components"]} == {"postgres", "object-store"}
    assert not [c.name for c in seen["components"] if is_alive(c)], "the failed drill left a service running"
    assert not seen["state_dir"].exists()
