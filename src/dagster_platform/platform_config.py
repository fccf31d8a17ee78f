"""The one reader of the company and its environments.

- `platform/company.yaml`: what is the same in every environment (GitLab host and project, image registry, label
  domain, gRPC port). `company()`.
- `platform/values/<env>.yaml`, every file but base.yaml: one environment each. Its `environment:` block declares
  what the rest of the platform needs (namespace, kube context, GitLab tier, promotion position, manual deploys,
  warehouse domain, instance overrides); its Helm values name the rest (hosts, bucket, secret store).
  `environments()` in promotion order, `environment(name)`.

Every mistake is one line naming the file, the key and the fix (PlatformConfigError); the commands print it and
exit 2, never a traceback, before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dagster_platform import paths

# GitLab's deployment tiers (environment:deployment_tier); `production` also means: previews refused, the
# read-only webserver required, and the strictest environment is what laptops run by default.
TIERS = ("production", "staging", "testing", "development", "other")
# Names a file in platform/values/ cannot take: base.yaml is the shared layer, local is the laptop's, all a CLI word,
# preview the merge-request jobs' (deploy-preview would be both that environment's deploy and the preview's).
RESERVED_NAMES = ("base", "local", "all", "preview")
_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DOMAIN = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}$")
_HOST = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?(:[0-9]{1,5})?$")
_PROJECT = re.compile(r"^[a-zA-Z0-9_.-]+(/[a-zA-Z0-9_.-]+)+$")
# A release of the platform repository: a semver tag, as GitLab's CI/CD Catalog publishes components from.
_VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
# An image repository without tag: host[:port]/path, lowercase (OCI distribution spec).
_REGISTRY = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")
COMPANY_FILE = "platform/company.yaml"


class PlatformConfigError(ValueError):
    """A platform file is wrong: one line naming the file, the key and the fix."""


def load_yaml(path: Path) -> dict[str, Any]:
    where = path.relative_to(paths.ROOT) if path.is_relative_to(paths.ROOT) else path
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise PlatformConfigError(f"{where}: missing; create it (docs/adopt.md)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}" if mark else "?"
        raise PlatformConfigError(f"{where}: {at}: {getattr(exc, 'problem', exc)}; fix the YAML there") from None
    if not isinstance(data, Mapping):
        raise PlatformConfigError(f"{where}: the top level is a {type(data).__name__}; write a mapping")
    return data


def get_path(values: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


# -- the company --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Company:
    name: str
    gitlab_host: str
    platform_project: str
    platform_version: str
    image_registry: str
    label_domain: str
    grpc_port: int

    def image(self, location: str) -> str:
        """The image repository of a code location: <image_registry>/<location>."""
        return f"{self.image_registry}/{location}"


# key: (pattern or check, what a valid value looks like)
_COMPANY_KEYS = {
    "name": (_DNS_LABEL, "a short lowercase slug, e.g. example-corp"),
    "gitlab.host": (_HOST, "a host name without scheme, e.g. gitlab.example.com"),
    "gitlab.project": (_PROJECT, "the platform repository's path, e.g. data/dagster-platform"),
    "gitlab.version": (_VERSION, "a release (semver tag) of the platform repository, e.g. 1.4.0"),
    "image_registry": (_REGISTRY, "host/path without scheme, tag or trailing '/', e.g. registry.example.com/dagster"),
    "label_domain": (_DOMAIN, "a DNS domain you own, e.g. platform.example.com"),
}


def company(path: Path | None = None) -> Company:
    path = path or paths.COMPANY_YAML
    data, where = load_yaml(path), _where(path)
    if get_path(data, "gitlab.ref") is not None:
        raise PlatformConfigError(
            f"{where}: gitlab.ref was replaced by gitlab.version: the release (semver tag, e.g. 1.4.0) user-code"
            " repos pin their CI/CD component and tools at (docs/adopt.md)"
        )
    for key, (pattern, example) in _COMPANY_KEYS.items():
        value = get_path(data, key)
        if value is None or value == "":
            raise PlatformConfigError(f"{where}: {key} is missing; set it to {example}")
        if not isinstance(value, str) or not pattern.match(value):
            raise PlatformConfigError(f"{where}: {key}: {value!r} is not {example}")
    port = data.get("grpc_port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        raise PlatformConfigError(f"{where}: grpc_port: {port!r} is not a port number in 1024..65535, e.g. 4000")
    return Company(
        name=data["name"],
        gitlab_host=data["gitlab"]["host"],
        platform_project=data["gitlab"]["project"],
        platform_version=data["gitlab"]["version"],
        image_registry=data["image_registry"],
        label_domain=data["label_domain"],
        grpc_port=port,
    )


# -- the environments ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Environment:
    name: str
    file: str  # repository-relative path of its values file
    namespace: str
    kube_context: str
    tier: str
    promotion: int
    manual: bool
    previews: bool
    warehouse_domain: str
    instance: dict[str, Any] = field(default_factory=dict)  # overrides of platform/instance/instance.yaml
    values: dict[str, Any] = field(default_factory=dict, repr=False)  # the file as written

    @property
    def production(self) -> bool:
        return self.tier == "production"

    @property
    def variable_suffix(self) -> str:
        """How CI variables of this environment end: KUBE_CONTEXT_<SUFFIX>."""
        return self.name.upper().replace("-", "_")

    @property
    def postgres_secret(self) -> str:
        return str(get_path(self.values, "global.postgresqlSecretName") or "")

    def identities(self) -> dict[str, str]:
        """What names this environment and no other may share: {dotted key: value}."""
        values = ((key, get_path(self.values, key)) for key in UNIQUE_KEYS)
        return {key: value for key, value in values if isinstance(value, str) and value}


# Values every environment must hold alone (a second environment with the same one is refused); the separation
# check (helm/separation.py) also refuses each of them in another environment's files.
UNIQUE_KEYS = (
    "environment.namespace",
    "environment.kubeContext",
    "environment.warehouseDomain",
    "global.postgresqlSecretName",
    "postgresPassword.externalSecret.secretStoreRef.name",
    "postgresPassword.externalSecret.remoteRef.key",
    "dagster.postgresql.postgresqlHost",
    "dagster.computeLogManager.config.s3ComputeLogManager.bucket",
    "ingress.admin.host",
    "ingress.readOnly.host",
)
_WHAT = {
    "environment.namespace": "namespace",
    "environment.kubeContext": "kube context",
    "environment.warehouseDomain": "warehouse domain",
    "postgresPassword.externalSecret.secretStoreRef.name": "secret store",
    "postgresPassword.externalSecret.remoteRef.key": "secret key",
    "dagster.computeLogManager.config.s3ComputeLogManager.bucket": "bucket",
    "ingress.admin.host": "host",
    "ingress.readOnly.host": "host",
    "dagster.postgresql.postgresqlHost": "database host",
    "global.postgresqlSecretName": "Postgres secret",
}


def _where(path: Path) -> str:
    return str(path.relative_to(paths.ROOT)) if path.is_relative_to(paths.ROOT) else str(path)


def environment_files(values_dir: Path | None = None) -> list[Path]:
    """Every environment's values file: platform/values/*.yaml except base.yaml."""
    values_dir = values_dir or paths.VALUES_DIR
    return sorted(p for p in values_dir.glob("*.yaml") if p.name != "base.yaml")


def _read_environment(path: Path) -> Environment:
    where, name = _where(path), path.stem
    if name in RESERVED_NAMES or not _ENV_NAME.match(name):
        raise PlatformConfigError(
            f"{where}: {name!r} cannot name an environment (lowercase letters, digits and '-', 2-32 characters, not "
            f"{', '.join(RESERVED_NAMES)}); rename the file, e.g. platform/values/staging.yaml"
        )
    values = load_yaml(path)
    env = values.get("environment")
    if not isinstance(env, Mapping):
        raise PlatformConfigError(f"{where}: environment is missing; add the environment: block (docs/adopt.md)")

    def need(key: str, ok, fix: str) -> Any:
        value = env.get(key)
        if value is None:
            raise PlatformConfigError(f"{where}: environment.{key} is missing; set it to {fix}")
        if not ok(value):
            raise PlatformConfigError(f"{where}: environment.{key}: {value!r} is not {fix}")
        return value

    is_str = lambda pattern: lambda v: isinstance(v, str) and bool(pattern.match(v))  # noqa: E731
    need("name", lambda v: v == name, f"the file's name, {name!r}")
    namespace = need("namespace", is_str(_DNS_LABEL), "a Kubernetes namespace (DNS-1123 label), e.g. dagster-" + name)
    context = need("kubeContext", lambda v: isinstance(v, str) and bool(v.strip()), "the GitLab agent's kube context")
    tier = need("tier", lambda v: v in TIERS, f"a GitLab deployment tier ({', '.join(TIERS)})")
    promotion = need(
        "promotion", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "its place in the promotion order, 1 for the first environment main deploys to",
    )  # fmt: skip
    manual = need("manualDeploy", lambda v: isinstance(v, bool), "true (deploys wait for a click) or false")
    domain = need("warehouseDomain", is_str(_DOMAIN), "the DNS domain of its warehouse hosts, e.g. db.example.internal")
    secret = get_path(values, "global.postgresqlSecretName")
    if not isinstance(secret, str) or not _DNS_LABEL.match(secret):
        raise PlatformConfigError(
            f"{where}: global.postgresqlSecretName: {secret!r} is not a Secret name; name the Secret holding the "
            f"Postgres password in {namespace} (user code and the chart read it), e.g. dagster-{name}-postgresql"
        )
    overrides = env.get("instance") or {}
    if not isinstance(overrides, Mapping):
        raise PlatformConfigError(f"{where}: environment.instance: write a mapping of instance.yaml keys to override")
    return Environment(
        name=name, file=where, namespace=namespace, kube_context=context, tier=tier, promotion=promotion,
        manual=manual, previews=bool(get_path(values, "previews.enabled")), warehouse_domain=domain,
        instance=dict(overrides), values=dict(values),
    )  # fmt: skip


def environments(values_dir: Path | None = None) -> list[Environment]:
    """Every environment, in promotion order; refused in one line when two of them clash."""
    files = environment_files(values_dir)
    if not files:
        where = _where(values_dir or paths.VALUES_DIR)
        raise PlatformConfigError(f"{where}: no environment; add one file per environment, e.g. acceptance.yaml")
    envs = [_read_environment(path) for path in files]
    by_position: dict[int, Environment] = {}
    for env in envs:
        if env.promotion in by_position:
            first = by_position[env.promotion]
            raise PlatformConfigError(
                f"{env.file}: environment.promotion {env.promotion} is also {first.file}'s; give each environment "
                f"its own place (1 = first deploy)"
            )
        by_position[env.promotion] = env
    owners: dict[str, tuple[Environment, str]] = {}
    for env in envs:
        for key, value in env.identities().items():
            if value in owners:
                first, first_key = owners[value]
                what = _WHAT.get(key, key)
                if first is env:
                    raise PlatformConfigError(
                        f"{env.file}: {key}: {value!r} is also its {first_key}; give each its own {what}"
                    )
                raise PlatformConfigError(
                    f"{env.file}: {key}: {value!r} is also {first.name}'s ({first.file} {first_key}); every "
                    f"environment needs its own {what}"
                )
            owners[value] = (env, key)
    return sorted(envs, key=lambda e: e.promotion)


def environment_names(values_dir: Path | None = None) -> list[str]:
    return [env.name for env in environments(values_dir)]


def environment(name: str, values_dir: Path | None = None) -> Environment:
    """One declared environment; anything else refused in one line naming the declared ones."""
    envs = environments(values_dir)
    for env in envs:
        if env.name == name:
            return env
    declared = ", ".join(env.name for env in envs)
    raise PlatformConfigError(
        f"environment {name!r} is not declared; use one of {declared} (or add platform/values/{name}.yaml)"
    )


def strictest(values_dir: Path | None = None) -> Environment:
    """What laptops run by default: the last production-tier environment in promotion order, else the last one."""
    envs = environments(values_dir)
    return ([env for env in envs if env.production] or envs)[-1]


def preview_environment(values_dir: Path | None = None) -> Environment | None:
    """Where merge-request previews run: the first environment (promotion order) that enables them."""
    return next((env for env in environments(values_dir) if env.previews), None)
