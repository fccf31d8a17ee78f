"""`make test` runs the suite in parallel (pytest-xdist `--dist loadgroup`; the Makefile sets the workers): each
test file is one group, run whole by one worker, so its module fixtures (a rendered repo, a server) start once;
tests/helm is one group (it renders into the one .dev/helm/<env>/ per environment). A worker that runs tests on
tests/local's session stack starts its own stack; the files that use it come first, so that the workers start
on the longest ones."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def group_of(item: pytest.Item) -> str:
    relative = Path(item.fspath).relative_to(TESTS)
    return "helm" if relative.parts[0] == "helm" else str(relative)


def pytest_collection_modifyitems(items):
    on_stack = {group_of(item) for item in items if "stack" in getattr(item, "fixturenames", ())}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
    items.sort(key=lambda item: group_of(item) not in on_stack)
