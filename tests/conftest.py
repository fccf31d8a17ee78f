"""`make test` runs the suite in parallel (pytest-xdist `--dist loadgroup --no-loadscope-reorder`; the Makefile sets
the workers): each test file is one group, run whole by one worker, so its module fixtures (a rendered repo, a
server) start once; tests/helm is one group (it renders into the one .dev/helm/<env>/ per environment). Groups are
handed out in the order below as workers free up: the files on tests/local's session stack first (a worker that
runs one starts its own stack, and stops it when its next file does not use it); then the others. Within each, the
longest files (LONGEST) first, so that no worker ends the run alone on one; then the files with slow tests, then
the fast ones, each with the most tests first."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
# The groups with a test on tests/local's stack, as collected (tests/local/conftest.py stops a worker's stack when
# its next test's group is not one of them).
STACK_GROUPS = pytest.StashKey[set[str]]()
# The longest files (minutes of single tests waiting on Dagster's clocks: the daemon's workspace re-read, sensor
# ticks; or rendering and running repos), longest first.
LONGEST = (
    "local/test_previews.py",
    "local/test_locations.py",
    "local/test_ops.py",
    "local/test_stack.py",
    "template/test_dev_loop.py",
    "local/test_upgrade_drill.py",
    "local/test_dev.py",
    "template/test_job_on_derived_instance.py",
    "template/test_update_template.py",
    "template/test_check_errors.py",
    "template/test_bad_answers.py",
)


def group_of(item: pytest.Item) -> str:
    relative = Path(item.fspath).relative_to(TESTS)
    return "helm" if relative.parts[0] == "helm" else relative.as_posix()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into the node ids' @group
def pytest_collection_modifyitems(config, items):
    on_stack = config.stash[STACK_GROUPS] = {
        group_of(item) for item in items if "stack" in getattr(item, "fixturenames", ())
    }
    slow = {group_of(item) for item in items if item.get_closest_marker("slow")}
    sizes = Counter(group_of(item) for item in items)

    def order(item: pytest.Item) -> tuple:
        group = group_of(item)
        longest = LONGEST.index(group) if group in LONGEST else len(LONGEST)
        return (group not in on_stack, longest, group not in slow, -sizes[group])

    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
    items.sort(key=order)
