"""Helpers shared by the template tests (fixtures live in conftest.py)."""

import copy
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import yaml

from dagster_platform.template.render import platform_context


def platform_facts() -> dict:
    """The template's `_platform` as this repository's platform/company.yaml and platform/values/ define it."""
    return platform_context()["platform"]


# A fixture company with three environments, none of them named, placed or configured like the repository's
# own: a rule that holds for it holds for whatever company and environments an adopter declares.
OTHER_PLATFORM = {
    "image_registry": "registry.example.org/analytics",
    "ci_project": "analytics/data-platform",
    "ci_version": "3.1.4",
    "grpc_port": 4123,
    "label_domain": "platform.example.org",
    "environments": [
        {
            "name": "sandbox",
            "tier": "development",
            "namespace": "analytics-sandbox",
            "postgres_secret": "analytics-sandbox-pg",
            "warehouse_domain": "sandbox.dwh.example.org",
            "previews": False,
        },
        {
            "name": "qa",
            "tier": "staging",
            "namespace": "analytics-qa",
            "postgres_secret": "analytics-qa-pg",
            "warehouse_domain": "qa.dwh.example.org",
            "previews": True,
        },
        {
            "name": "live",
            "tier": "production",
            "namespace": "analytics-live",
            "postgres_secret": "analytics-live-pg",
            "warehouse_domain": "live.dwh.example.org",
            "previews": False,
        },
    ],
}


def other_platform(**changes) -> dict:
    """A copy of OTHER_PLATFORM with some keys replaced."""
    return {**copy.deepcopy(OTHER_PLATFORM), **changes}


def other_environments(**changes) -> list[dict]:
    """OTHER_PLATFORM's environments, the first one with some keys replaced."""
    envs = copy.deepcopy(OTHER_PLATFORM["environments"])
    envs[0].update(changes)
    return envs


# The second answer set differs in every answer a data engineer types, and comes from the fixture company (the
# private `_platform` that `make new-usercode` takes from platform/company.yaml and platform/values/).
CUSTOM_ANSWERS = {
    "project_name": "Sales Forecasts",
    "location_name": "sales-forecasts",
    "package_name": "sales_forecasting",
    "owner_team": "sales-analytics",
    "owner_email": "sales-analytics@example.org",
    "description": "Sales forecasts for finance",
    "platform": OTHER_PLATFORM,
}


def deploy_values(repo: Path) -> dict[str, dict]:
    """environment name -> the rendered deploy/values-<env>.yaml of a repo."""
    return {
        path.name.removeprefix("values-").removesuffix(".yaml"): yaml.safe_load(path.read_text())
        for path in sorted((repo / "deploy").glob("values-*.yaml"))
    }


def run_make(repo: Path, *targets: str, offline: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "UV_OFFLINE": "1"} if offline else dict(os.environ)
    # The rendered repo must not borrow the platform's virtualenv.
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        ["make", "--no-print-directory", *targets], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )


def converse(
    cwd: Path, argv: list[str], replies: list[tuple[str, str]], timeout: float = 90, env: dict | None = None
) -> tuple[int, str]:
    """Run argv on a pseudo-terminal; each time the screen so far shows `expect` (after the previous one),
    type `reply`. Returns the exit status and everything shown."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the terminal
        os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        os.environ["PROMPT_TOOLKIT_NO_CPR"] = "1"
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))  # wide: refusals on one line
        os.execv(argv[0], argv)
    shown, seen_up_to, deadline = b"", 0, time.monotonic() + timeout
    pending = list(replies)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        if pending:
            expect, reply = pending[0]
            at = shown.decode(errors="replace").find(expect, seen_up_to)
            if at >= 0:
                seen_up_to = at + len(expect)
                pending.pop(0)
                time.sleep(0.3)
                os.write(fd, reply.encode())
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")
