"""Smoke check after a deploy: the code location is LOADED, without error, in an environment's webserver.

Asks the webserver's GraphQL API (`workspaceLocationEntryOrError`, via dagster_platform.graphql) until the
location's load status is LOADED and it holds a RepositoryLocation, not a PythonError. Optionally asks the
webserver to reload the location first (`reloadRepositoryLocation`), so a fresh deploy is picked up now
rather than at the next poll.
Exit 0 when loaded; 1 when the location is missing, failed to load or is still loading at the deadline.

Standard library only: deploy jobs run this file straight from a checkout of the platform repo
(`PYTHONPATH=<platform>/src python3 -m dagster_platform.ci.smoke ...`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from dagster_platform import ci
from dagster_platform.graphql import Client, GraphQLError

# reloadWorkspace reloads every location: at most this often while a new one is missing.
WORKSPACE_RELOAD_INTERVAL = 15.0


def check_location(
    url: str,
    location: str,
    timeout: float = 300.0,
    interval: float = 5.0,
    reload: bool = False,
    headers: dict[str, str] | None = None,
) -> str:
    """Wait until the location is LOADED; return its detail line, or raise GraphQLError."""
    client = Client(url, headers=headers)
    workspace_reloaded = float("-inf")
    if reload:
        try:
            client.reload_location(location)
        except GraphQLError:  # not in the webserver's workspace yet (a new location or preview): re-read the file
            client.reload_workspace()
            workspace_reloaded = time.monotonic()
    deadline = time.monotonic() + timeout
    while True:
        try:
            state, detail = client.location_state(location)
        except GraphQLError as exc:
            state, detail = "UNREACHABLE", str(exc)
        if state == "LOADED":
            return detail
        # A new entry reaches the webserver's mounted workspace file when the kubelet refreshes the ConfigMap
        # (about a minute): until then ask it to re-read the file, every WORKSPACE_RELOAD_INTERVAL seconds.
        if reload and state == "MISSING" and time.monotonic() - workspace_reloaded >= WORKSPACE_RELOAD_INTERVAL:
            try:
                client.reload_workspace()
            except GraphQLError as exc:
                detail += f" (reloadWorkspace: {exc})"
            workspace_reloaded = time.monotonic()
        # Not final before the deadline: a rollout may still replace a failing or missing code server.
        if time.monotonic() >= deadline:
            raise GraphQLError(f"{state}: {detail}")
        print(f"smoke: waiting ({state}): {detail}")
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.1)))


def check_absent(
    url: str, location: str, timeout: float = 300.0, interval: float = 10.0, headers: dict[str, str] | None = None
) -> str:
    """After a location's deregistration: ask the webserver to re-read its workspace until the location is gone
    (stop-preview, before its code server is uninstalled); raise GraphQLError at the deadline."""
    client, deadline = Client(url, headers=headers), time.monotonic() + timeout
    while True:
        try:
            client.reload_workspace()
            if client.location_state(location)[0] == "MISSING":
                return f"location {location!r} is no longer in the webserver's workspace"
            problem = f"location {location!r} is still in the webserver's workspace"
        except (GraphQLError, OSError) as exc:
            problem = f"the webserver did not re-read its workspace: {exc}"
        if time.monotonic() >= deadline:
            raise GraphQLError(f"{problem} after {timeout:.0f}s")
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.1)))


def _headers_from_env(names: list[str]) -> dict[str, str]:
    """Each named variable holds one 'Header-Name: value' (e.g. an auth header); values are never printed."""
    headers = {}
    for name in names:
        key, sep, value = os.environ.get(name, "").partition(":")
        if not sep or not key.strip():
            raise ValueError(f"${name} must hold 'Header-Name: value'")
        headers[key.strip()] = value.strip()
    return headers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="webserver base URL, e.g. https://dagster.acceptance.example")
    parser.add_argument("--location", required=True, help="code location name")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for LOADED (default 300)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    parser.add_argument(
        "--reload",
        action="store_true",
        help="ask the webserver to reload the location first (a location it does not know yet: the workspace file)",
    )
    parser.add_argument(
        "--absent", action="store_true", help="wait until the location is gone instead (after a deregistration)"
    )
    parser.add_argument(
        "--header-env",
        action="append",
        default=[],
        metavar="VAR",
        help="name of an environment variable holding an extra 'Header: value' (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        headers = _headers_from_env(args.header_env)
        if args.absent:
            detail = check_absent(args.url, args.location, args.timeout, args.interval, headers)
        else:
            detail = check_location(args.url, args.location, args.timeout, args.interval, args.reload, headers)
    except (GraphQLError, ValueError) as exc:
        print(f"smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"smoke: OK: {detail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return ci.main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
