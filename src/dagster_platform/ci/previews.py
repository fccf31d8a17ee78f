"""Preview code locations per merge request: the registration code, one implementation for the cluster and the laptop.

A workspace is the registered locations (platform/code-locations.yaml) plus the live previews
(`<location>-mr-<iid>`, one per open merge request of a user-code repo). Both live in ONE object, so every
change is one read-modify-write of that object and two writers cannot lose each other's change:

- cluster: the ConfigMap `dagster-workspace` the webserver and daemon mount (the official chart's
  `dagsterWebserver.workspace.externalConfigmap`): `data["workspace.yaml"]` is what Dagster reads,
  annotations hold the registry and the previews (who, which MR, since when). Written with
  `kubectl replace` at the resourceVersion it was read at; a concurrent write makes Kubernetes refuse ours
  (409 Conflict) and we read and apply our change again. A preview job and the platform upgrade (which
  replaces the registry part and keeps the previews) can therefore run at the same time in different GitLab
  projects, where no `resource_group` could serialize them.
- laptop: `workspace.yaml` in the local DAGSTER_HOME with the same state beside it (`FileStore`, under a lock).

Production has the same ConfigMap with the registry alone: `sync` (the platform upgrade) writes it there and
refuses when it finds a preview; `add` and `remove` refuse production before anything is read.

workspace.yaml is written as JSON (valid YAML): this module runs in user-code pipelines with the standard
library only (`python3 -m dagster_platform.ci.previews ...`), like smoke.py.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dagster_platform import ci

CONFIGMAP = "dagster-workspace"
WORKSPACE_KEY = "workspace.yaml"
# The company's label domain and its environments, as `make generate` copies them from platform/company.yaml and
# platform/values/ for tools that have the standard library only (this module runs in user-code pipelines).
PLATFORM_FACTS = Path(__file__).resolve().parents[3] / "ci" / "generated" / "platform.json"


def _facts() -> dict:
    return json.loads(PLATFORM_FACTS.read_text())


def annotation(kind: str) -> str:
    """<label_domain>/<kind>: registry, previews, max-per-location (previews.maxPerLocation, written by `sync`;
    `add` keeps to it unless told otherwise)."""
    return f"{_facts()['label_domain']}/{kind}"


def preview_environments() -> tuple[str, ...]:
    """Environments that may hold previews (previews.enabled in their values file) and the laptop's stack. Others
    never do: the guard refuses before anything is read."""
    return (*(env["name"] for env in _facts()["environments"] if env["previews"]), "local")


def environments() -> tuple[str, ...]:
    """Environments whose workspace `sync` and `show` may touch (those without previews: the registry alone)."""
    return (*preview_environments(), *(env["name"] for env in _facts()["environments"] if not env["previews"]))


DEFAULT_MAX_PER_LOCATION = 3
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PREVIEW = re.compile(r"-mr-[0-9]+$")


class PreviewError(Exception):
    """A refused change: one line naming the problem and the fix (exit 2, nothing written)."""


class Conflict(Exception):
    """The stored object changed since it was read: read again and re-apply."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int


@dataclass(frozen=True)
class Workspace:
    registry: dict[str, Server] = field(default_factory=dict)
    # name -> {"location", "mr", "host", "port", "created"}
    previews: dict[str, dict] = field(default_factory=dict)
    # At most this many previews per location (None: DEFAULT_MAX_PER_LOCATION); set by `sync` from the values.
    limit: int | None = None

    def text(self) -> str:
        """workspace.yaml: the registered locations, then the previews oldest first."""
        servers = [(name, s.host, s.port) for name, s in sorted(self.registry.items())]
        ordered = sorted(self.previews.items(), key=lambda item: (item[1]["created"], item[0]))
        servers += [(name, p["host"], p["port"]) for name, p in ordered]
        entries = [{"grpc_server": {"host": h, "port": p, "location_name": n}} for n, h, p in servers]
        return json.dumps({"load_from": entries}, indent=2) + "\n"

    def of(self, location: str) -> list[str]:
        return [name for name, p in self.previews.items() if p["location"] == location]


def preview_name(location: str, mr: int | str) -> str:
    name = f"{location}-mr-{mr}"
    if not str(mr).isdigit():
        raise PreviewError(f"merge request {mr!r} is not a number (CI_MERGE_REQUEST_IID)")
    if not _DNS1123.match(name) or len(name) > 53:
        raise PreviewError(
            f"preview name {name!r} is not a DNS-1123 label of at most 53 characters; shorten the location"
        )
    return name


def check_environment(env: str) -> None:
    """Refuse an environment that never holds previews (production), before anything is read."""
    allowed = preview_environments()
    if env not in allowed:
        raise PreviewError(
            f"previews run only in {' or '.join(allowed)}, never in {env!r}: {env} holds the registered locations alone"
        )


def with_registry(ws: Workspace, registry: Mapping[str, Server]) -> Workspace:
    """The registered part replaced (the platform upgrade), the previews kept."""
    for name in registry:
        if _PREVIEW.search(name):
            raise PreviewError(f"registered location {name!r} ends like a preview (-mr-<n>); rename it in the registry")
        if name in ws.previews:
            raise PreviewError(f"registered location {name!r} collides with a live preview; stop that preview first")
    return replace(ws, registry=dict(registry))


def sync_registry(ws: Workspace, registry: Mapping[str, Server], env: str, limit: int | None = None) -> Workspace:
    """`with_registry` for `env` (and the per-location limit, when given); production's workspace must hold no
    preview (one there means a guard was bypassed: refuse rather than keep or drop it silently)."""
    if env not in preview_environments() and ws.previews:
        raise PreviewError(
            f"the {env} workspace holds preview(s) {', '.join(sorted(ws.previews))}; previews never run in {env}: "
            "remove them (helm uninstall, then `previews remove` with the --env they run in) before the upgrade"
        )
    if limit is not None and limit < 1:
        raise PreviewError(f"max previews per location is {limit}; set at least 1")
    return replace(with_registry(ws, registry), limit=ws.limit if limit is None else limit)


def add_preview(
    ws: Workspace, location: str, mr: int | str, port: int, *, host: str | None = None,
    max_per_location: int | None = None, now: float | None = None,
) -> tuple[Workspace, list[str]]:  # fmt: skip
    """The workspace with the preview of `location` for merge request `mr` (re-adding it refreshes it), and the
    names of older previews of the same location evicted to keep at most `max_per_location` (default: the
    workspace's limit, which `sync` sets from the values' previews.maxPerLocation)."""
    name = preview_name(location, mr)
    max_per_location = max_per_location or ws.limit or DEFAULT_MAX_PER_LOCATION
    if location not in ws.registry:
        known = ", ".join(sorted(ws.registry)) or "none"
        raise PreviewError(f"{location!r} is not a registered location (registered: {known}); register it first")
    if name in ws.registry:
        raise PreviewError(f"preview {name!r} collides with a registered location of that name")
    if max_per_location < 1:
        raise PreviewError(f"max previews per location is {max_per_location}; set at least 1")
    now = time.time() if now is None else now
    created = ws.previews.get(name, {}).get("created", now)
    previews = {**ws.previews, name: {"location": location, "mr": int(mr), "host": host or name, "port": port,
                                      "created": created}}  # fmt: skip
    others = sorted((p["created"], n) for n, p in previews.items() if p["location"] == location and n != name)
    evicted = [n for _, n in others[: max(0, len(others) + 1 - max_per_location)]]
    return replace(ws, previews={n: p for n, p in previews.items() if n not in evicted}), evicted


def remove_preview(ws: Workspace, name: str) -> tuple[Workspace, bool]:
    """The workspace without preview `name`; False when it was not there (a stop job may run twice)."""
    if name in ws.registry:
        raise PreviewError(f"{name!r} is a registered location, not a preview; previews end in -mr-<iid>")
    if name not in ws.previews:
        return ws, False
    return replace(ws, previews={n: p for n, p in ws.previews.items() if n != name}), True


# -- where a workspace is stored ------------------------------------------------------------------------------
def _decode(registry: str | None, previews: str | None, limit: str | int | None = None) -> Workspace:
    reg = {n: Server(s["host"], int(s["port"])) for n, s in json.loads(registry or "{}").items()}
    return Workspace(reg, json.loads(previews or "{}"), None if limit in (None, "") else int(limit))


def _encode(ws: Workspace) -> tuple[str, str]:
    registry = {n: {"host": s.host, "port": s.port} for n, s in sorted(ws.registry.items())}
    return json.dumps(registry, sort_keys=True), json.dumps(ws.previews, sort_keys=True)


class ConfigMapStore:
    """The cluster's `dagster-workspace` ConfigMap, through kubectl in one kube context and namespace."""

    def __init__(self, context: str, namespace: str, name: str = CONFIGMAP, kubectl: str = "kubectl"):
        self.kube = [kubectl, "--context", context, "--namespace", namespace]
        self.name, self.namespace = name, namespace

    def lock(self) -> contextlib.AbstractContextManager:
        """Nothing to hold: a write at a stale resourceVersion is refused (Conflict) and `update` re-applies."""
        return contextlib.nullcontext()

    def read(self) -> tuple[Workspace, dict | None]:
        got = subprocess.run([*self.kube, "get", "configmap", self.name, "-o", "json"], capture_output=True, text=True)
        if got.returncode != 0:
            if "NotFound" in got.stderr or "not found" in got.stderr:
                return Workspace(), None
            raise PreviewError(f"kubectl get configmap {self.name} failed: {_last_line(got.stderr)}")
        obj = json.loads(got.stdout)
        notes = obj["metadata"].get("annotations") or {}
        registry, previews, limit = (notes.get(annotation(k)) for k in ("registry", "previews", "max-per-location"))
        return _decode(registry, previews, limit), obj

    def write(self, ws: Workspace, read: dict | None) -> None:
        registry, previews = _encode(ws)
        meta = {"name": self.name, "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "dagster-platform"},
                "annotations": {annotation("registry"): registry, annotation("previews"): previews}}  # fmt: skip
        if ws.limit is not None:
            meta["annotations"][annotation("max-per-location")] = str(ws.limit)
        if read is not None:  # optimistic concurrency: Kubernetes refuses a stale resourceVersion (409)
            meta["resourceVersion"] = read["metadata"]["resourceVersion"]
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {WORKSPACE_KEY: ws.text()}}
        verb = "replace" if read is not None else "create"
        done = subprocess.run([*self.kube, verb, "-f", "-"], input=json.dumps(obj), capture_output=True, text=True)
        if done.returncode != 0:
            if "Conflict" in done.stderr or "AlreadyExists" in done.stderr or "has been modified" in done.stderr:
                raise Conflict(done.stderr.strip())
            raise PreviewError(f"kubectl {verb} configmap {self.name} failed: {_last_line(done.stderr)}")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no message"


class FileStore:
    """The laptop's workspace.yaml (Dagster reads it) with the state beside it, changed under a file lock."""

    def __init__(self, workspace_yaml: Path):
        self.path = Path(workspace_yaml)
        self.state = self.path.with_name("workspace.state.json")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Writers on one machine (a stack command, the CLI) take turns: the file has no resourceVersion."""
        with self.path.with_name(".workspace.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def read(self) -> tuple[Workspace, dict | None]:
        if not self.state.exists():
            return Workspace(), None
        data = json.loads(self.state.read_text())
        return _decode(json.dumps(data["registry"]), json.dumps(data["previews"]), data.get("max_per_location")), data

    def write(self, ws: Workspace, read: dict | None) -> None:
        registry, previews = _encode(ws)
        state = {"registry": json.loads(registry), "previews": json.loads(previews)}
        if ws.limit is not None:
            state["max_per_location"] = ws.limit
        for target, text in ((self.path, ws.text()), (self.state, json.dumps(state, indent=2))):
            tmp = target.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, target)  # Dagster never reads half a file


def update(store, change: Callable[[Workspace], Workspace], attempts: int = 8) -> Workspace:
    """Read, change, write; on a concurrent write, read again and re-apply `change` (it must be re-runnable)."""
    for attempt in range(attempts):
        with store.lock():
            ws, read = store.read()
            new = change(ws)
            if new == ws and read is not None:
                return new
            try:
                store.write(new, read)
                return new
            except Conflict:
                time.sleep(0.2 * (attempt + 1))
    raise PreviewError(f"the workspace kept changing under us ({attempts} attempts); run the job again")


# -- command line (preview jobs in user-code pipelines; the platform upgrade) ---------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["add", "remove", "sync", "show"])
    parser.add_argument(
        "--env", required=True, help="an environment that enables previews, or local; any other: sync and show only"
    )
    parser.add_argument("--context", help="kube context (cluster)")
    parser.add_argument("--namespace", help="namespace of the platform release (cluster)")
    parser.add_argument("--workspace-file", help="a local workspace.yaml instead of the cluster's ConfigMap")
    parser.add_argument("--location", help="add: the registered location the preview is of")
    parser.add_argument("--mr", help="add/remove: the merge request's IID")
    parser.add_argument("--port", type=int, help="add: the preview code server's gRPC port")
    parser.add_argument(
        "--max-per-location", type=int,
        help=f"add: override; sync: store the values' previews.maxPerLocation (default {DEFAULT_MAX_PER_LOCATION})",
    )  # fmt: skip
    parser.add_argument("--registry-json", help="sync: {name: {host, port}} of the registered locations")


def run(args: argparse.Namespace) -> int:
    try:
        if args.env not in environments():
            raise PreviewError(f"unknown environment {args.env!r}; one of {', '.join(environments())}")
        if args.action not in ("sync", "show"):
            check_environment(args.env)
        store = _store(args)
        if args.action == "show":
            print(store.read()[0].text(), end="")
            return 0
        if args.action == "sync":
            registry = _registry(_required(args, "registry_json"))
            ws = update(store, lambda ws: sync_registry(ws, registry, args.env, args.max_per_location))
            print(f"workspace: {len(ws.registry)} registered location(s), {len(ws.previews)} preview(s) kept")
            return 0
        name = preview_name(_required(args, "location"), _required(args, "mr"))
        if args.action == "add":
            evicted: list[str] = []

            def change(ws: Workspace) -> Workspace:
                new, evicted[:] = add_preview(ws, args.location, args.mr, _required(args, "port"),
                                              max_per_location=args.max_per_location)  # fmt: skip
                return new

            update(store, change)
            print(f"registered preview {name}")
            for old in evicted:  # stdout lines the job uninstalls; the oldest first
                print(f"evicted {old}")
            return 0
        removed = [False]

        def drop(ws: Workspace) -> Workspace:
            new, removed[0] = remove_preview(ws, name)
            return new

        update(store, drop)
        print(f"deregistered preview {name}" if removed[0] else f"preview {name} was not registered")
        return 0
    except PreviewError as exc:
        print(f"previews: {exc}", file=sys.stderr)
        return 2


def _registry(text: str) -> dict[str, Server]:
    try:
        data = json.loads(text)
        return {str(n): Server(str(s["host"]), int(s["port"])) for n, s in data.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise PreviewError("--registry-json is not {name: {host, port}} JSON") from None


def _required(args: argparse.Namespace, name: str):
    value = getattr(args, name)
    if value in (None, ""):
        raise PreviewError(f"--{name.replace('_', '-')} is required for {args.action}")
    return value


def _store(args: argparse.Namespace):
    if args.workspace_file:
        return FileStore(Path(args.workspace_file))
    if not args.context or not args.namespace:
        raise PreviewError("give --context and --namespace (the cluster) or --workspace-file (local)")
    return ConfigMapStore(args.context, args.namespace)


if __name__ == "__main__":
    sys.exit(ci.main(__doc__, add_arguments, run))
