"""Smoke check after a deploy: the code location is LOADED, without error, in an environment's webserver.

Asks the webserver's GraphQL API (`workspaceLocationEntryOrError`) until the location's load status is LOADED
and it holds a RepositoryLocation, not a PythonError. Optionally asks the webserver to reload the location
first (`reloadRepositoryLocation`), so a fresh deploy is picked up now rather than at the next poll.
Exit 0 when loaded; 1 when the location is missing, failed to load or is still loading at the deadline.

Standard library only: deploy jobs run this file straight from a checkout of the platform repo
(`PYTHONPATH=<platform>/src python3 -m dagster_platform.ci.smoke ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

LOCATION_QUERY = """
query SmokeLocation($name: String!) {
  workspaceLocationEntryOrError(name: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      name
      loadStatus
      locationOrLoadError {
        __typename
        ... on RepositoryLocation { name repositories { name } }
        ... on PythonError { message }
      }
    }
    ... on PythonError { message }
  }
}
"""

RELOAD_MUTATION = """
mutation SmokeReload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on PythonError { message }
    ... on RepositoryLocationNotFound { message }
    ... on UnauthorizedError { message }
    ... on ReloadNotSupported { message }
  }
}
"""


class SmokeError(Exception):
    pass


def graphql(url: str, query: str, variables: dict, headers: dict[str, str], timeout: float = 30.0) -> dict:
    endpoint = url.rstrip("/") + "/graphql"
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        endpoint, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SmokeError(f"{endpoint}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SmokeError(f"{endpoint}: cannot reach the webserver: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise SmokeError(f"{endpoint}: answer is not JSON (is this a Dagster webserver?)") from exc
    if payload.get("errors"):
        raise SmokeError(f"{endpoint}: GraphQL errors: {payload['errors']}")
    return payload["data"]


def location_state(url: str, location: str, headers: dict[str, str]) -> tuple[str, str]:
    """(state, detail): state is LOADED, LOADING, ERROR or MISSING."""
    entry = graphql(url, LOCATION_QUERY, {"name": location}, headers)["workspaceLocationEntryOrError"]
    if entry is None:
        return "MISSING", f"location {location!r} is not in the webserver's workspace"
    if entry["__typename"] == "PythonError":
        return "ERROR", entry["message"]
    if entry["loadStatus"] != "LOADED":
        return "LOADING", f"location {location!r} is {entry['loadStatus']}"
    loaded = entry["locationOrLoadError"]
    if loaded is None:
        return "LOADING", f"location {location!r} has no load result yet"
    if loaded["__typename"] != "RepositoryLocation":
        return "ERROR", f"location {location!r} failed to load: {loaded.get('message', loaded['__typename'])}"
    repositories = ", ".join(repo["name"] for repo in loaded["repositories"])
    return "LOADED", f"location {location!r} is LOADED (repositories: {repositories})"


def reload_location(url: str, location: str, headers: dict[str, str]) -> None:
    result = graphql(url, RELOAD_MUTATION, {"name": location}, headers)["reloadRepositoryLocation"]
    if result["__typename"] in ("RepositoryLocationNotFound", "UnauthorizedError", "PythonError"):
        raise SmokeError(f"reload of {location!r} refused: {result['__typename']}: {result.get('message', '')}")


def check_location(
    url: str,
    location: str,
    timeout: float = 300.0,
    interval: float = 5.0,
    reload: bool = False,
    headers: dict[str, str] | None = None,
    log=print,
) -> str:
    """Wait until the location is LOADED; return its detail line, or raise SmokeError."""
    headers = headers or {}
    if reload:
        reload_location(url, location, headers)
    deadline = time.monotonic() + timeout
    while True:
        try:
            state, detail = location_state(url, location, headers)
        except SmokeError as exc:
            state, detail = "UNREACHABLE", str(exc)
        if state == "LOADED":
            return detail
        # Not final before the deadline: a rollout may still replace a failing or missing code server.
        if time.monotonic() >= deadline:
            raise SmokeError(f"{state}: {detail}")
        log(f"smoke: waiting ({state}): {detail}")
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.1)))


def _headers_from_env(names: list[str]) -> dict[str, str]:
    """Each named variable holds one 'Header-Name: value' (e.g. an auth header); values are never printed."""
    headers = {}
    for name in names:
        raw = os.environ.get(name, "")
        key, sep, value = raw.partition(":")
        if not sep or not key.strip():
            raise SmokeError(f"${name} must hold 'Header-Name: value'")
        headers[key.strip()] = value.strip()
    return headers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="webserver base URL, e.g. https://dagster.acceptance.example")
    parser.add_argument("--location", required=True, help="code location name")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for LOADED (default 300)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    parser.add_argument("--reload", action="store_true", help="ask the webserver to reload the location first")
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
        detail = check_location(args.url, args.location, args.timeout, args.interval, args.reload, headers)
    except SmokeError as exc:
        print(f"smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"smoke: OK: {detail}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "smoke", help="check that a code location is LOADED in a webserver (GraphQL)", description=__doc__
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smoke", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
