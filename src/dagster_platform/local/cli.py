"""The local runtime's command line: `dagster-platform dev` (`make dev`) and `dagster-platform stack
up|down|status|restart|add-location|remove-location|add-preview|remove-preview|sync-registry|rotate-pg-password`
(`make stack`, `make stack-down`, `make stack-restart`, `make stack-add-location`, `make stack-add-preview`, ...):
arguments, one-line refusals and exit codes; the work is lifecycle's (start, stop) and registration's (live
changes of a running stack)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster_platform import net, platform_config
from dagster_platform.ci.previews import PreviewError
from dagster_platform.graphql import Client, GraphQLError
from dagster_platform.helm.instance import InstanceTranslationError
from dagster_platform.local import config, lifecycle, locations, postgres, registration, upgrade_drill
from dagster_platform.local.services import say
from dagster_platform.local.supervisor import ComponentFailed, Supervisor, owned
from dagster_platform.paths import DEV_DIR

# What `up` raises for a refusal or a failure; it has printed the details (log tail) and stopped what it started.
ERRORS = (
    ComponentFailed, RuntimeError, TimeoutError, FileNotFoundError, ValueError, InstanceTranslationError, PreviewError,
)  # fmt: skip


def _refused_env(args, command: str) -> bool:
    """--env must be a declared environment (platform/values/<env>.yaml); else one line, before anything starts."""
    try:
        if args.env:
            platform_config.environment(args.env)
        return False
    except platform_config.PlatformConfigError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return True


def _dev_command(args) -> int:
    """`make dev`: the template's example rendered once into --dev-dir (the developer's to edit, as a data
    engineer's repo is), its dagster.yaml refreshed from today's derivation, then that repo's own `make dev`:
    Dagster's `dg dev`, exactly what a data engineer runs. exec: Ctrl-C and SIGTERM reach dg directly."""
    if net.port_open(args.host, args.port):  # before the first render, which takes a while
        print(f"dev: port {args.port} is already in use on {args.host}; choose another: make dev PORT={args.port + 1}",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        repo = locations.ensure_example(Path(args.dev_dir).resolve())
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        print(f"dev: FAILED: {exc}", file=sys.stderr)
        return 1
    (repo / "dagster.yaml").write_text(config.instance_text(mode="dev"))
    # A data engineer's shell: none of the platform's venv (uv run put it first on PATH), instance or make flags.
    platform_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in (*lifecycle.SCRUBBED, "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != platform_bin)
    argv = ["make", "--no-print-directory", "-C", str(repo), "dev", f"PORT={args.port}", f"HOST={args.host}"]
    print(f"dev: the example location in {repo} (yours to edit): its make dev", flush=True)
    os.execvpe(argv[0], argv, env)


def _up_command(args) -> int:
    if _refused_env(args, "stack up"):
        return 2
    try:
        # Until ready, what up() starts dies with it (signals, SIGKILL); afterwards it keeps running.
        with owned(str(Path(args.state_dir).resolve()), keep=True):
            stack = lifecycle.up(Path(args.state_dir), port=args.port, pg_url=args.pg_url, env_name=args.env)
    except KeyboardInterrupt as exc:
        print(f"stack up interrupted ({exc or 'SIGINT'}); stopped what it had started", file=sys.stderr)
        return 130
    except ERRORS as exc:
        print(f"stack up failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    say(f"up in {stack.timings['total']:.1f}s: {stack.url} (stop with `make stack-down`)")
    for name, info in lifecycle.status(stack.state_dir).items():
        say(f"  {name:<32} pid {info['pid']:<8} {info['rss_mib']:>7.1f} MiB  log {info['log']}")
    return 0


def _down_command(args) -> int:
    if not lifecycle.down(Path(args.state_dir), wipe=args.wipe):
        say("nothing was running")
    return 0


def _status_command(args) -> int:
    state = lifecycle.status(Path(args.state_dir))
    if not state:
        say("no stack state (never started, or wiped)")
        return 1
    for name, info in state.items():
        mark = "running" if info["alive"] else "stopped"
        say(f"{name:<32} {mark:<8} pid {info['pid']:<8} {info['rss_mib']:>7.1f} MiB")
    state_dir = Path(args.state_dir).resolve()
    meta = Supervisor(state_dir).meta
    for name, address in meta.get("monitoring", {}).items():
        page = {"metrics-exporter": "/metrics"}.get(name, "")  # Prometheus: / leads to its UI (Debian's: /classic)
        say(f"{name}: {address}{page}" + ("" if state.get(name, {}).get("alive") else " (stopped)"))
    url = meta.get("url")
    if url and state.get("webserver", {}).get("alive"):
        for name, loc in Client(url, timeout=10).locations().items():
            error = f" ERROR: {loc['error'][:200]}" if loc["error"] else ""
            say(f"location {name}: {loc['status']}{error}")
    restart = "make stack-restart COMPONENT=" if state_dir == lifecycle.DEFAULT_STATE_DIR else (
        f"dagster-platform stack --state-dir {state_dir} restart "
    )  # fmt: skip
    for name in (name for name, info in state.items() if not info["alive"]):
        say(f"{name} is dead (log {state[name]['log']}); restart it alone: {restart}{name}")
    return 0 if all(i["alive"] for i in state.values()) else 1


def _restart_command(args) -> int:
    try:
        with owned(str(Path(args.state_dir).resolve()), keep=True):  # interrupted before ready: stopped again
            stack = lifecycle.attach(Path(args.state_dir))
            lifecycle.restart_component(stack, args.component)
    except KeyboardInterrupt as exc:
        print(f"stack restart interrupted ({exc or 'SIGINT'}); {args.component} stopped", file=sys.stderr)
        return 130
    except ERRORS as exc:
        print(f"stack restart failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    say(f"restarted {args.component} (pid {stack.supervisor.components[args.component].pid})")
    return 0


def _registration_step(args, stack) -> str:
    """Do one registration on a running stack; return the line that says what was done."""
    if args.action == "add-location":
        source = Path(args.source).resolve()
        module = args.module or locations.default_module(source)
        registration.add_location(stack, locations.Location(args.name, module, str(source)))
        return f"added location {args.name}"
    if args.action == "remove-location":
        registration.remove_location(stack, args.name)
        return f"removed location {args.name}"
    name = f"{args.location}-mr-{args.mr}" if args.action != "sync-registry" else ""
    if args.action == "add-preview":
        _, evicted = registration.add_preview(
            stack, args.location, args.mr, Path(args.source).resolve(), args.module, args.max_per_location
        )
        return f"added preview {name}" + "".join(f"; evicted {old}" for old in evicted)
    if args.action == "remove-preview":
        _, removed = registration.remove_preview(stack, args.location, args.mr)
        return f"{'removed' if removed else 'no'} preview {name}"
    registration.sync_registry(stack)
    return "registry part of the workspace regenerated, previews kept"


def _registration_command(args) -> int:
    """add-/remove-location, add-/remove-preview, sync-registry: a refusal (nothing changed) exits 2, a failure 1;
    one line each."""
    action = args.action
    try:
        with owned(str(Path(args.state_dir).resolve()), keep=True):  # interrupted: what it started is stopped
            done = _registration_step(args, lifecycle.attach(Path(args.state_dir)))
    except KeyboardInterrupt as exc:
        print(f"stack {action} interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return 130
    except registration.NotRegistered as exc:
        print(f"stack {action} refused: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except (*ERRORS, GraphQLError) as exc:
        print(f"stack {action} failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    say(done)
    return 0


def _rotate_command(args) -> int:
    try:
        with owned(str(Path(args.state_dir).resolve()), keep=True):
            registration.rotate_pg_password(lifecycle.attach(Path(args.state_dir)))
    except KeyboardInterrupt as exc:
        print(f"stack rotate-pg-password interrupted ({exc or 'SIGINT'}): run it again", file=sys.stderr)
        return 130
    except (*ERRORS, GraphQLError) as exc:
        print(f"stack rotate-pg-password failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    say("rotated the Postgres password; every component runs with the new one")
    return 0


def _instance_command(args) -> int:
    if _refused_env(args, "local-instance"):
        return 2
    text = config.instance_text(args.env, args.mode)
    if args.output is None:
        print(text, end="")
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


def register(subparsers) -> None:
    env_help = "whose derived dagster.yaml to run: a declared environment (default: the strictest, production tier)"
    dev = subparsers.add_parser("dev", help="the example location's own make dev (dg dev, SQLite instance)")
    dev.add_argument("--host", default=lifecycle.HOST)
    dev.add_argument("--port", type=int, default=lifecycle.DEFAULT_PORT)
    dev.add_argument("--dev-dir", default=str(DEV_DIR), help="where the example location is rendered")
    dev.set_defaults(func=_dev_command)

    stack = subparsers.add_parser("stack", help="production-like local stack (Postgres, daemon, code servers)")
    stack.add_argument("--state-dir", default=str(lifecycle.DEFAULT_STATE_DIR), help="runtime state (default .stack/)")
    actions = stack.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start Postgres, daemon, webserver and one code server per location")
    up.add_argument("--port", type=int, default=lifecycle.DEFAULT_PORT, help="webserver port (default 3000)")
    up.add_argument("--pg-url", default=None, help=f"use an existing PostgreSQL server (or set {postgres.PG_URL_ENV})")
    up.add_argument("--env", default=None, help=env_help)
    up.set_defaults(func=_up_command)
    down = actions.add_parser("down", help="stop everything the stack started, by PID")
    down.add_argument("--wipe", action="store_true", help="also delete the database and instance data")
    down.set_defaults(func=_down_command)
    status = actions.add_parser("status", help="what runs, its PID and memory, location load state")
    status.set_defaults(func=_status_command)
    restart = actions.add_parser("restart", help="stop what is left of one component and start it again, alone")
    restart.add_argument("component", help="as `stack status` names it: daemon, webserver, code-server-<location>, ...")
    restart.set_defaults(func=_restart_command)
    add = actions.add_parser("add-location", help="register one more code location on the running stack")
    add.add_argument("--name", required=True, help="location name (DNS-1123 label, as in the registry)")
    add.add_argument("--source", required=True, help="the location's directory (pyproject.toml and uv.lock)")
    add.add_argument("--module", default=None, help="module the code server loads (default <project>.definitions)")
    add.set_defaults(func=_registration_command)
    remove = actions.add_parser("remove-location", help="stop a location's schedules/sensors, unregister, stop it")
    remove.add_argument("name", help="as `stack status` names it (location <name>)")
    remove.set_defaults(func=_registration_command)
    preview = actions.add_parser("add-preview", help="a merge request's checkout as preview <location>-mr-<mr>")
    preview.add_argument("--location", required=True, help="the registered location it is a preview of")
    preview.add_argument("--mr", required=True, help="the merge request's IID (a number)")
    preview.add_argument("--source", required=True, help="the checkout of the MR's branch (pyproject.toml, uv.lock)")
    preview.add_argument("--module", default=None, help="module the code server loads (default <project>.definitions)")
    preview.add_argument("--max-per-location", type=int, default=None, help="previews per location; oldest evicted")
    preview.set_defaults(func=_registration_command)
    unpreview = actions.add_parser("remove-preview", help="stop a preview's automation, deregister it, stop it")
    unpreview.add_argument("--location", required=True)
    unpreview.add_argument("--mr", required=True)
    unpreview.set_defaults(func=_registration_command)
    sync = actions.add_parser("sync-registry", help="regenerate the workspace's registry part, keep the previews")
    sync.set_defaults(func=_registration_command)
    rotate = actions.add_parser("rotate-pg-password", help="new Postgres password: ALTER ROLE, store, restart readers")
    rotate.set_defaults(func=_rotate_command)

    instance = subparsers.add_parser(
        "local-instance", help="the local runtime's dagster.yaml of a mode (stdout or --output)"
    )
    instance.add_argument("--mode", choices=("dev", "stack"), default="dev")
    instance.add_argument("--env", default=None, help=env_help)
    instance.add_argument("--output", default=None, help="write it here (make template-instance: the template's)")
    instance.set_defaults(func=_instance_command)

    upgrade_drill.register(subparsers)
