"""Which environment this code location runs in, and where its warehouse is.

DAGSTER_ENV selects the environment: `local` (the default) keeps everything in files on disk; every platform
environment (ENVIRONMENTS: the platform's platform/values/ when this repo was generated or last updated)
reads connection settings only from environment variables (Kubernetes secrets) and refuses to start when
one is missing or when the host belongs to another environment.

DAGSTER_PREVIEW (`mr-<iid>`) is set by the platform on the preview of a merge request (the pipeline's
deploy-preview job; `stack add-preview` locally): the warehouse schema gets the suffix `_mr_<iid>` and every
schedule and sensor is stopped by default (previews.py), so a preview never touches the location's own
tables or starts its automation. Previews run only where the platform enables them (PREVIEW_ENVIRONMENTS).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Every environment this location runs in: laptops, then the platform's environments in promotion order.
ENVIRONMENTS = (
    "local",
{%- for env in platform.environments %}
    "{{ env.name }}",
{%- endfor %}
)

# A database host is accepted only inside its environment's domain, so one environment's deployment can never
# be pointed at another's warehouse by a copy-pasted secret.
DATABASE_DOMAINS = {
{%- for env in platform.environments %}
    "{{ env.name }}": "{{ env.warehouse_domain }}",
{%- endfor %}
}
# Where previews of merge requests may run: the environments the platform enables them in, and laptops.
{%- set previews = platform.environments | selectattr("previews") | list %}
{%- if previews %}
PREVIEW_ENVIRONMENTS = (
    "local",
{%- for env in previews %}
    "{{ env.name }}",
{%- endfor %}
)
{%- else %}
PREVIEW_ENVIRONMENTS = ("local",)
{%- endif %}

# The location's tables live in the warehouse user's default schema (its search_path: public unless the
# warehouse team set another); a preview of merge request 12 writes to <package>_mr_12 instead, created on
# first use, so it never touches the location's tables.
SCHEMA = "public"
PREVIEW_SCHEMA_PREFIX = "{{ package_name }}"
PREVIEW_VAR = "DAGSTER_PREVIEW"
_PREVIEW = re.compile(r"^mr-[0-9]+$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # an unquoted PostgreSQL identifier

# Connection settings of every platform environment; all come from the environment (a Kubernetes secret).
REQUIRED_VARS = ("WAREHOUSE_HOST", "WAREHOUSE_DB", "WAREHOUSE_USER", "WAREHOUSE_PASSWORD")
NETWORK_VARS = (*REQUIRED_VARS, "WAREHOUSE_PORT")


class EnvironmentConfigError(RuntimeError):
    """The environment's settings are missing or point somewhere they must not."""


@dataclass(frozen=True)
class WarehouseSettings:
    env: str
    schema: str = SCHEMA
    sqlite_path: str = ""
    host: str = ""
    port: int = 5432
    dbname: str = ""
    user: str = ""


def current_env(environ: Mapping[str, str] = os.environ) -> str:
    env = environ.get("DAGSTER_ENV", "")
    if not env:
        if "KUBERNETES_SERVICE_HOST" in environ:
            raise EnvironmentConfigError(
                "DAGSTER_ENV is not set but this process runs on Kubernetes; set DAGSTER_ENV to the "
                f"environment ({', '.join(ENVIRONMENTS[1:])}) in deploy/values-<env>.yaml"
            )
        return "local"
    if env not in ENVIRONMENTS:
        raise EnvironmentConfigError(
            f"DAGSTER_ENV={env!r} is not one of {', '.join(ENVIRONMENTS)} (example: DAGSTER_ENV=local)"
        )
    return env


def current_preview(environ: Mapping[str, str] = os.environ) -> str:
    """'' for the location itself; 'mr-12' in the preview of merge request 12 (DAGSTER_PREVIEW)."""
    preview = environ.get(PREVIEW_VAR, "")
    if not preview:
        return ""
    if not _PREVIEW.match(preview):
        raise EnvironmentConfigError(
            f"{PREVIEW_VAR}={preview!r} is not mr-<merge request IID> (example: {PREVIEW_VAR}=mr-12)"
        )
    env = current_env(environ)
    if env not in PREVIEW_ENVIRONMENTS:
        raise EnvironmentConfigError(
            f"{PREVIEW_VAR}={preview} is set in {env}; previews of merge requests run in "
            f"{', '.join(PREVIEW_ENVIRONMENTS)} only"
        )
    return preview


def warehouse_schema(environ: Mapping[str, str] = os.environ) -> str:
    """The schema this process writes to: SCHEMA (the default), or <package>_mr_<iid> in a preview."""
    preview = current_preview(environ)
    schema = f"{PREVIEW_SCHEMA_PREFIX}_{preview.replace('-', '_')}" if preview else SCHEMA
    if not _SCHEMA_NAME.match(schema):
        raise EnvironmentConfigError(f"warehouse schema {schema!r} is not a PostgreSQL identifier")
    return schema


def host_belongs_to(host: str, env: str) -> bool:
    domain = DATABASE_DOMAINS[env]
    return host == domain or host.endswith("." + domain)


def warehouse_settings(environ: Mapping[str, str] = os.environ) -> WarehouseSettings:
    """Resolve the warehouse for the current environment, or raise naming exactly what is wrong."""
    env = current_env(environ)
    schema = warehouse_schema(environ)
    if env == "local":
        stray = [name for name in NETWORK_VARS if environ.get(name)]
        if stray:
            raise EnvironmentConfigError(
                f"DAGSTER_ENV=local never uses a network database, but {', '.join(stray)} is set; "
                "unset it, or set DAGSTER_ENV to the environment inside that environment"
            )
        home = environ.get("DAGSTER_HOME") or str(Path.cwd() / ".dagster_home")
        # SQLite has no schemas: the file is the schema. The platform gives every location and preview its
        # own WAREHOUSE_SQLITE_PATH; without one, a preview's default file carries its suffix too.
        suffix = schema.removeprefix(PREVIEW_SCHEMA_PREFIX) if schema != SCHEMA else ""
        default = Path(home) / f"warehouse{suffix}.sqlite"
        return WarehouseSettings(
            env=env, schema=schema, sqlite_path=environ.get("WAREHOUSE_SQLITE_PATH") or str(default)
        )

    missing = [name for name in REQUIRED_VARS if not environ.get(name)]
    if missing:
        raise EnvironmentConfigError(
            f"DAGSTER_ENV={env} needs {', '.join(missing)} from the Kubernetes secret "
            f"(see deploy/values-{env}.yaml, envSecrets); refusing to start without them"
        )
    host = environ["WAREHOUSE_HOST"]
    if not host_belongs_to(host, env):
        raise EnvironmentConfigError(
            f"WAREHOUSE_HOST={host!r} is not in the {env} domain {DATABASE_DOMAINS[env]!r}; "
            f"DAGSTER_ENV={env} may only reach hosts like warehouse.{DATABASE_DOMAINS[env]}"
        )
    return WarehouseSettings(
        env=env,
        schema=schema,
        host=host,
        port=int(environ.get("WAREHOUSE_PORT") or 5432),
        dbname=environ["WAREHOUSE_DB"],
        user=environ["WAREHOUSE_USER"],
    )
