"""dagster.yaml and workspace.yaml of the local runtime (`make stack`, `make dev`); workspace.yaml through
ci/previews.py, the registration code the cluster uses too.

The local dagster.yaml is the cluster's: `helm_instance.derive_instance(env)` (exactly what the official
chart writes into the environment's instance ConfigMap), changed only by the substitutions in
SUBSTITUTIONS below, per mode:

  stack  Postgres + S3-compatible object store on loopback (`make stack`, tests/local)
  dev    the embedded SQLite default (`make dev`: nothing to start but Dagster itself)

Everything else (Postgres scheme and TLS params, run queue, monitoring, retries, retention, step-log
bucket and prefix, ...) is the cluster's, so what the cluster would reject the laptop rejects first.
`parity_errors` proves a written file holds nothing else; the stack and `make dev` refuse to start when
it does not, and tests/local checks one failing case per rule.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dagster_platform.ci import previews
from dagster_platform.helm.instance import (
    MISSING,
    STORAGE_SECTIONS,
    derive_instance,
    instance_differences,
    instance_yaml,
)
from dagster_platform.net import HOST
from dagster_platform.platform_config import strictest


def default_env() -> str:
    """What laptops run: the strictest environment (the last production-tier one), since what must not fail
    there is what must run locally."""
    return strictest().name


MODES = ("stack", "dev")
# Where the loopback database is and who we are there: environment variables set by the local runtime
# (throwaway credentials), never a value from platform/values.
PG_LOCATION = {
    "hostname": "DAGSTER_PG_HOST",
    "port": "DAGSTER_PG_PORT",
    "username": "DAGSTER_PG_USERNAME",
    "password": "DAGSTER_PG_PASSWORD",
    "db_name": "DAGSTER_PG_DB",
}
S3_ENDPOINT_ENV = "DAGSTER_S3_ENDPOINT_URL"


@dataclass(frozen=True)
class Substitution:
    name: str
    modes: tuple[str, ...]
    keys: tuple[str, ...]  # fnmatch patterns over dotted keys of dagster.yaml
    why: str


SUBSTITUTIONS = (
    Substitution(
        "run-launcher",
        MODES,
        ("run_launcher", "run_launcher.*"),
        "runs start as local processes (DefaultRunLauncher) instead of Kubernetes Jobs",
    ),
    Substitution(
        "database-location",
        ("stack",),
        tuple(f"{section}.config.postgres_db.{key}" for section in STORAGE_SECTIONS for key in PG_LOCATION),
        "host, port, database and credentials of the loopback Postgres, from DAGSTER_PG_* variables",
    ),
    Substitution(
        "object-store-endpoint",
        ("stack",),
        ("compute_logs.config.endpoint_url",),
        f"step logs go to the loopback S3-compatible server ({S3_ENDPOINT_ENV}); bucket and prefix stay",
    ),
    Substitution(
        "embedded-sqlite",
        ("dev",),
        tuple(f"{section}*" for section in STORAGE_SECTIONS),
        "make dev keeps runs in SQLite under its DAGSTER_HOME (no database server to start)",
    ),
    Substitution(
        "local-step-logs",
        ("dev",),
        ("compute_logs", "compute_logs.*"),
        "make dev keeps step logs on disk under its DAGSTER_HOME (no object store to start)",
    ),
)


def local_instance(derived: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """The derived dagster.yaml with the substitutions of `mode` applied, and nothing else."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    config = copy.deepcopy(dict(derived))
    config["run_launcher"] = {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"}
    if mode == "stack":
        for section in STORAGE_SECTIONS:
            db = config[section]["config"]["postgres_db"]
            db.update({key: {"env": var} for key, var in PG_LOCATION.items()})
        if (config.get("compute_logs") or {}).get("class") == "S3ComputeLogManager":
            config["compute_logs"]["config"]["endpoint_url"] = {"env": S3_ENDPOINT_ENV}
    else:
        for section in (*STORAGE_SECTIONS, "compute_logs"):
            config.pop(section, None)
    return config


def parity_errors(local: Mapping[str, Any], env: str, mode: str, derived: Mapping[str, Any] | None = None) -> list[str]:
    """One line per key where `local` differs from the derived instance of `env` other than by the
    substitutions of `mode` (or where a substitution is not the one the local runtime relies on)."""
    derived = derive_instance(env) if derived is None else derived
    expected = local_instance(derived, mode)
    rules = [rule for rule in SUBSTITUTIONS if mode in rule.modes]
    errors = []
    for key, want, got in instance_differences(expected, local):
        rule = next((r for r in rules if any(fnmatch.fnmatchcase(key, pattern) for pattern in r.keys)), None)
        where = f"local {mode} instance vs {env}'s derived dagster.yaml: {key}"
        if rule:
            errors.append(
                f"{where} is {got!r}; substitution {rule.name!r} ({rule.why}) makes it {want!r} — "
                "write the instance with dagster_platform.local.config.write_instance"
            )
        else:
            cluster = derived
            for part in key.split("."):
                cluster = cluster.get(part, MISSING) if isinstance(cluster, Mapping) else MISSING
            errors.append(
                f"{where} is {got!r}, the cluster's is {cluster!r}; it is not in the substitution list "
                f"({', '.join(r.name for r in rules)}) — change platform/instance or "
                "platform/values, not the local copy"
            )
    return errors


def header(env: str, mode: str) -> str:
    rules = "".join(f"#   {r.name}: {r.why}\n" for r in SUBSTITUTIONS if mode in r.modes)
    return (
        f"# Generated by dagster-platform ({mode} mode) from {env}'s derived dagster.yaml\n"
        f"# (`make platform-instance ENV={env}` in the platform repo); do not edit. Local substitutions, nothing\n"
        f"# else:\n{rules}"
    )


def instance_text(env: str | None = None, mode: str = "stack", derived: Mapping[str, Any] | None = None) -> str:
    """The local dagster.yaml for `env` (default: default_env()) and `mode`: the derived instance with the mode's
    substitutions."""
    env = env or default_env()
    derived = derive_instance(env) if derived is None else derived
    return instance_yaml(local_instance(derived, mode), header(env, mode))


def write_instance(dagster_home: Path, env: str | None = None, mode: str = "stack") -> Path:
    """Write the local dagster.yaml for `env` (default: default_env()) and `mode`, then read it back and refuse any
    drift."""
    env = env or default_env()
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    derived = derive_instance(env)
    target.write_text(instance_text(env, mode, derived))
    if errors := parity_errors(yaml.safe_load(target.read_text()), env, mode, derived):
        raise ValueError(errors[0])
    return target


def write_workspace(dagster_home: Path, ports: Mapping[str, int], keep_previews: bool = True) -> Path:
    """The one writer of the local workspace.yaml, through the one registration code (ci/previews.py, as the
    cluster's ConfigMap is written): the locations (name → loopback port of its gRPC code server, so the webserver
    and the daemon never import user code) are the workspace's registry part (`previews.with_registry`); the live
    previews (`stack add-preview`) are its preview part, kept — or dropped with `keep_previews=False` when a stack
    starts (no preview's code server runs then). The file is JSON (valid YAML); its state is beside it
    (workspace.state.json)."""
    registry = {name: previews.Server(HOST, port) for name, port in ports.items()}
    dagster_home.mkdir(parents=True, exist_ok=True)
    store = previews.FileStore(dagster_home / "workspace.yaml")
    if keep_previews:
        previews.update(store, lambda ws: previews.with_registry(ws, registry))
    else:
        previews.update(store, lambda ws: previews.with_registry(dataclasses.replace(ws, previews={}), registry))
    return store.path
