"""`make test` runs the suite on every core (pytest-xdist `--dist loadgroup`): each test file is one group, run
whole by one worker, so its module fixtures (a rendered repo, a server) start once. Two folders share more than
a file and stay together: tests/local (one session stack: Postgres, daemon, webserver, code servers; its
`stack down` tests run last; the longest group, started first) and tests/helm (renders into the one
.dev/helm/<env>/ per environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
SHARED_FOLDERS = ("local", "helm")


def group_of(path: Path) -> str:
    relative = path.relative_to(TESTS)
    return relative.parts[0] if relative.parts[0] in SHARED_FOLDERS else str(relative)


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(Path(item.fspath))))
    # The longest group first, so that the other workers share out the rest meanwhile.
    items.sort(key=lambda item: group_of(Path(item.fspath)) != "local")
