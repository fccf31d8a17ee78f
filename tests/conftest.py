"""`make test` runs the suite on every core (pytest-xdist `--dist loadgroup`): each test file is one group, run
whole by one worker, so its module fixtures (a rendered repo, a server) start once. Two groups span files: every
test on tests/local's session stack (Postgres, daemon, webserver, code servers; its `stack down` tests run last),
the longest group, started first; and tests/helm (renders into the one .dev/helm/<env>/ per environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
STACK = "local-stack"


def group_of(item: pytest.Item) -> str:
    relative = Path(item.fspath).relative_to(TESTS)
    if "stack" in getattr(item, "fixturenames", ()):
        return STACK
    return "helm" if relative.parts[0] == "helm" else str(relative)


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
    items.sort(key=lambda item: group_of(item) != STACK)
