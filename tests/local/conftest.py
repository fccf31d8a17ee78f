"""One production-like stack for the whole session: a throwaway Postgres, the instance migration, the daemon,
the webserver and one gRPC code server per location (example rendered from the template, the platform
canary, and a location whose import is broken), started by the same code as `make stack`. It is torn
down by PID even when a test fails or the start-up itself fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from dagster_platform import net
from dagster_platform.local import lifecycle, locations
from dagster_platform.paths import ROOT
from tests.local.helpers import BROKEN, CANARY, EXAMPLE

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    """`stack down` tests end the session stack: they run last."""
    items.sort(key=lambda item: item.name.startswith("test_stack_down"))


@pytest.fixture(scope="session")
def stack():
    # Under the repo's git-ignored .stack/ (not pytest's 0700 tmp dirs): the `postgres` user must be able
    # to reach its data directory when the tests run as root.
    (ROOT / ".stack").mkdir(exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="test-", dir=ROOT / ".stack"))
    state_dir.chmod(0o755)
    stack_locations = locations.default_locations()
    canary = next(loc for loc in stack_locations if loc.name == CANARY)
    canary.env["CANARY_TRIGGER_DIR"] = str(state_dir / "triggers")
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
    try:
        running = lifecycle.up(state_dir, port=net.free_port(), stack_locations=stack_locations, timeout=400)
        yield running
    finally:
        stopped = lifecycle.down(state_dir, quiet=True)
        leftovers = lifecycle.status(state_dir)
        assert not [n for n, i in leftovers.items() if i["alive"]], f"still running after down: {leftovers}"
        print(f"stack stopped: {stopped}")
        if not os.environ.get("KEEP_STACK_STATE"):
            lifecycle.down(state_dir, wipe=True, quiet=True)
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def client(stack):
    return stack.client
