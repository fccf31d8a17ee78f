"""Files of the local runtime that hold a password or key are 0600 from their first byte, whatever the
umask, and a stale file with a wider mode is replaced (no services; the session stack's files are checked
in test_stack.py)."""

import os

from dagster_platform.local.supervisor import Supervisor, write_private


def test_state_file_and_private_files_are_0600_whatever_the_umask(tmp_path):
    for stale in ("state.json", "state.tmp", "pwfile"):
        (tmp_path / stale).write_text("{}")
        (tmp_path / stale).chmod(0o644)
    previous = os.umask(0)
    try:
        sup = Supervisor(tmp_path)
        sup.meta["postgres"] = {"password": "secret"}
        sup.save()
        write_private(tmp_path / "pwfile", "secret\n")
    finally:
        os.umask(previous)
    for name in ("state.json", "pwfile"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o600", name
    assert Supervisor(tmp_path).meta["postgres"]["password"] == "secret"
    assert (tmp_path / "pwfile").read_text() == "secret\n"
