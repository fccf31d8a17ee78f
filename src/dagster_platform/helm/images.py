"""Can every image that loads an environment's instance import what that instance names?

On the cluster three kinds of process load the derived dagster.yaml: the webserver and the daemon (the
official `dagster-celery-k8s` image), and the code server and run workers of every location (an image
built from usercode-template). A storage scheme whose database driver, or a compute log manager whose
package, is missing from one of them fails only there, at run time (`No module named 'psycopg'`). These
checks make it fail in `make platform-check` instead, one line per image and key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from functools import cache
from typing import Any

from dagster_platform import paths
from dagster_platform.helm.instance import STORAGE_SECTIONS

# docker.io/dagster/dagster-celery-k8s installs these (its Dockerfile in dagster-io/dagster:
# python_modules/automation/automation/docker/images/dagster-celery-k8s/Dockerfile), with their
# dependencies: dagster-postgres brings psycopg2-binary, dagster-aws brings boto3.
CELERY_K8S_IMAGE = frozenset({"dagster", "dagster-webserver", "dagster-graphql", "dagster-postgres", "psycopg2-binary",
                              "dagster-k8s", "dagster-aws", "boto3", "dagster-azure", "dagster-gcp", "dagster-celery",
                              "dagster-celery-k8s"})  # fmt: skip
# dagster-postgres builds its SQLAlchemy URL from `scheme` (default `postgresql`), and SQLAlchemy 2.1
# resolves a bare `postgresql` to psycopg 3. A driver module comes from the distribution of its name or
# its `-binary` wheel (psycopg2-binary).
SCHEME_DRIVERS = {
    "postgresql": "psycopg",
    "postgresql+psycopg": "psycopg",
    "postgresql+psycopg2": "psycopg2",
    "postgresql+pg8000": "pg8000",
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def usercode_image() -> frozenset[str]:
    """Distributions a user-code image installs: the template's runtime dependencies."""
    return locked_image(paths.TEMPLATE_PROJECT / "uv.lock")


def ops_image() -> frozenset[str]:
    """Distributions the platform's ops image installs (platform/ops/, deployed with the platform)."""
    return locked_image(paths.PLATFORM_DIR / "ops" / "uv.lock")


@cache
def locked_image(lock_path) -> frozenset[str]:
    """Distributions an image built from this uv.lock installs: its project's runtime dependencies, resolved
    through the lock (what a Dockerfile's `uv sync --frozen --no-dev` installs)."""
    lock = tomllib.loads(lock_path.read_text())
    packages = {_normalize(p["name"]): p for p in lock["package"]}
    root = next(p for p in lock["package"] if (p.get("source") or {}).get("editable") == ".")
    seen: set[str] = set()
    todo = [_normalize(dep["name"]) for dep in root.get("dependencies", [])]
    while todo:
        name = todo.pop()
        if name in seen or name not in packages:
            continue
        seen.add(name)
        todo.extend(_normalize(dep["name"]) for dep in packages[name].get("dependencies", []))
    return frozenset(seen)


def instance_image_errors(env: str, instance: Mapping[str, Any]) -> list[str]:
    """One line per (image, instance key) the image cannot serve; empty when every image can."""
    errors = []
    image_sets = {
        "webserver/daemon image (dagster-celery-k8s)": CELERY_K8S_IMAGE,
        "user-code image (usercode-template runtime dependencies)": usercode_image(),
        "ops image (platform/ops runtime dependencies)": ops_image(),
    }
    scheme = (instance.get("run_storage") or {}).get("config", {}).get("postgres_db", {}).get("scheme") or "postgresql"
    if any(section in instance for section in STORAGE_SECTIONS):
        driver = SCHEME_DRIVERS.get(scheme)
        if driver is None:
            errors.append(
                f"{env}: dagster.postgresql.postgresqlScheme {scheme!r} is not a Postgres scheme the platform "
                f"knows; use postgresql+psycopg2 (the driver dagster-postgres installs)"
            )
        else:
            for image, dists in image_sets.items():
                if not {driver, f"{driver}-binary"} & dists:
                    errors.append(
                        f"{env}: dagster.postgresql.postgresqlScheme {scheme!r} needs the {driver} driver, which the "
                        f"{image} does not install; set postgresqlScheme: postgresql+psycopg2 in platform/values"
                    )
    for section in ("compute_logs", "run_launcher", "run_coordinator", "scheduler", *STORAGE_SECTIONS):
        data = instance.get(section)
        if not data:
            continue
        dist = _normalize(data["module"].split(".", 1)[0])  # dagster_aws.s3... -> dagster-aws
        for image, dists in image_sets.items():
            if dist not in dists:
                errors.append(
                    f"{env}: {section} {data['class']} comes from {dist}, which the {image} does not install; "
                    f"add {dist} to that image (template: usercode-template pyproject.toml + `make template-lock`) "
                    "or choose another class"
                )
    logs = instance.get("compute_logs") or {}
    if logs.get("class") == "S3ComputeLogManager" and not (logs.get("config") or {}).get("bucket"):
        errors.append(
            f"{env}: dagster.computeLogManager.config.s3ComputeLogManager.bucket is empty; set the environment's "
            f"bucket in platform/values/{env}.yaml"
        )
    if logs.get("class") == "NoOpComputeLogManager":
        errors.append(
            f"{env}: computeLogManager is NoOpComputeLogManager: step logs would be lost with the run pods; set "
            "dagster.computeLogManager (S3ComputeLogManager) in platform/values/base.yaml"
        )
    return errors
