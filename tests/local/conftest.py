"""One production-like stack per test worker (`make test` runs on every core; tests/conftest.py): a throwaway
Postgres, the instance migration, the daemon, the webserver and one gRPC code server per location (example
rendered from the template, platform-ops, the platform canary, and a location whose import is broken), started
by the same code as `make stack`. It is torn down by PID even when a test or the start-up itself fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_platform.local import locations
from tests.local.helpers import BROKEN, CANARY, EXAMPLE, running_stack

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def stack():
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
    with running_stack("test-", stack_locations) as running:
        yield running


@pytest.fixture(scope="session")
def client(stack):
    return stack.client
