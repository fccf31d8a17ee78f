"""One production-like stack per test worker (`make test` runs on every core; tests/conftest.py): a throwaway
Postgres, the instance migration, the daemon, the webserver and one gRPC code server per location (example
rendered from the template, platform-ops, the platform canary, and a location whose import is broken), started
by the same code as `make stack` when a test first needs it. tests/conftest.py hands the files that use it out
first, so a worker whose next file does not use it will not need it again: it is stopped then (an idle stack's
daemon, scrapes and code servers cost CPU the other workers need), and started anew should a later test need
it all the same. It is torn down by PID even when a test or the start-up itself fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_platform.local import lifecycle, locations
from tests.conftest import STACK_GROUPS, group_of
from tests.local.helpers import BROKEN, CANARY, EXAMPLE, running_stack

HERE = Path(__file__).parent


def _stack_locations() -> list[locations.Location]:
    stack_locations = locations.default_locations()
    # The example location's health is what the example tests assert, not a precondition of the others.
    next(loc for loc in stack_locations if loc.name == EXAMPLE).required = False
    stack_locations.append(
        locations.Location(
            name=BROKEN,
            module="",
            source="",
            python_file=str(HERE / "fixtures" / "broken_location.py"),
            venv_from=CANARY,
            required=False,
        )
    )
    return stack_locations


class _WorkerStack:
    """This worker's stack: started on first use, stopped on request; a failed start fails every later use at
    once (as a session fixture's error would) instead of starting again."""

    def __init__(self) -> None:
        self._context = None
        self._running: lifecycle.Stack | None = None
        self._failed: BaseException | None = None

    def get(self) -> lifecycle.Stack:
        if self._failed is not None:
            raise self._failed
        if self._running is None:
            context = running_stack("test-", _stack_locations())
            try:
                self._running = context.__enter__()
            except BaseException as exc:
                self._failed = exc
                raise
            self._context = context
        return self._running

    @property
    def running(self) -> bool:
        return self._running is not None

    def stop(self) -> None:
        context, self._context, self._running = self._context, None, None
        if context is not None:
            context.__exit__(None, None, None)


_WORKER_STACK = _WorkerStack()


@pytest.fixture
def stack() -> lifecycle.Stack:
    return _WORKER_STACK.get()


@pytest.fixture
def client(stack):
    return stack.client


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    if _WORKER_STACK.running and (nextitem is None or group_of(nextitem) not in item.config.stash[STACK_GROUPS]):
        _WORKER_STACK.stop()


def pytest_sessionfinish(session):
    _WORKER_STACK.stop()
