"""The parallel suite's one rule of its own (tests/conftest.py): a test file runs whole on one worker, so its
module fixtures (a rendered repo, a stack's state) are set up once and never raced by another worker."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

from dagster_platform.paths import ROOT
from tests.conftest import LONGEST

FILES = ["tests/test_docs.py", "tests/test_versions.py"]  # fast files of several tests each


def test_each_file_runs_whole_on_one_worker():
    # The distribution flags make test and make test-fast pass (the Makefile's PYTEST_PARALLEL, from --dist on).
    flags = re.search(r"^PYTEST_PARALLEL = .*?(--dist .+)$", (ROOT / "Makefile").read_text(), re.M)[1].split()
    assert flags[:2] == ["--dist", "loadgroup"], f"this rule is about --dist loadgroup; the Makefile passes {flags}"
    argv = [sys.executable, "-m", "pytest", "-n", "2", *flags, "-p", "no:cacheprovider", "-v", "-m", "not slow",
            *FILES]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    workers = defaultdict(set)
    for worker, nodeid in re.findall(r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (\S+)", done.stdout, re.M):
        workers[nodeid.split("::")[0]].add(worker)
    assert sorted(workers) == FILES, done.stdout[-3000:]
    split = {file: sorted(ws) for file, ws in workers.items() if len(ws) > 1}
    assert not split, (
        f"rule: each test file runs whole on one worker; {split} ran on several. tests/conftest.py marks each "
        "file's group (pytest.mark.xdist_group) before pytest-xdist reads the marks; pytest >= 9.2 drops the "
        "group (pytest-dev/pytest-xdist#1386): keep the pin in pyproject.toml below 9.2 until xdist fixes it"
    )


def test_the_longest_files_named_for_the_schedule_exist():
    missing = [name for name in LONGEST if not (ROOT / "tests" / name).is_file()]
    assert not missing, f"tests/conftest.py LONGEST names files that are gone: {missing}; name the long files again"
