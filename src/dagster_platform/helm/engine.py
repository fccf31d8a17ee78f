"""The Helm engine: the `helm` binary when it is on PATH, else Helm's Go SDK through `helm_python`.

Both are the real Helm: same template engine, same values.schema.json enforcement, same lint. The
binary is what CI and the upgrade use (it can reach chart repositories and clusters); the SDK lets
the checks run on machines without it. `DAGSTER_PLATFORM_HELM=sdk|binary` forces one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class HelmEngineError(Exception):
    """Helm refused the chart or the values (schema, template `fail`, missing chart, ...); one line."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


_SOURCE = re.compile(r"^# Source: (?P<path>\S+)\s*$", re.MULTILINE)


def split_manifests(rendered: Mapping[str, str]) -> list[dict[str, Any]]:
    """Kubernetes objects of a render, in template order; empty documents are dropped."""
    objects: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if not path.endswith((".yaml", ".yml", ".json")):
            continue  # NOTES.txt and the like
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                doc.setdefault("metadata", {})
                objects.append({"__source__": path, **doc})
    return objects


def strip_source(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__source__"}


class HelmEngine:
    """Render, lint and build dependencies of a local chart."""

    def __init__(self, prefer: str | None = None) -> None:
        prefer = prefer or os.environ.get("DAGSTER_PLATFORM_HELM") or "auto"
        if prefer not in ("auto", "sdk", "binary"):
            raise ValueError(f"DAGSTER_PLATFORM_HELM must be sdk or binary, not {prefer!r}")
        self.binary = shutil.which("helm") if prefer in ("auto", "binary") else None
        if prefer == "binary" and not self.binary:
            raise HelmEngineError("DAGSTER_PLATFORM_HELM=binary but no `helm` on PATH")

    @property
    def name(self) -> str:
        return f"helm binary ({self.binary})" if self.binary else "helm-python-sdk (Helm Go SDK)"

    def _binary(self, args: list[str], values: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
            json.dump(values, handle)
            handle.flush()
            return subprocess.run([self.binary, *args, "--values", handle.name], capture_output=True, text=True)

    def render(self, chart_dir: Path, values: Mapping[str, Any], *, release: str, namespace: str) -> dict[str, str]:
        """Template path -> rendered text (like `helm template`); raises HelmEngineError."""
        if self.binary:
            proc = self._binary(["template", release, str(chart_dir), "--namespace", namespace], values)
            if proc.returncode != 0:
                raise HelmEngineError(proc.stderr.strip() or proc.stdout.strip())
            rendered: dict[str, str] = {}
            for chunk in re.split(r"^---\s*$", proc.stdout, flags=re.MULTILINE):
                match = _SOURCE.search(chunk)
                if match:
                    rendered[match["path"]] = rendered.get(match["path"], "") + "\n---\n" + chunk
            return rendered
        import helm_python

        try:
            with helm_python.Chart.load(chart_dir) as chart:
                return chart.render(dict(values), name=release, namespace=namespace, is_install=False, is_upgrade=True)
        except helm_python.HelmError as exc:
            raise HelmEngineError(str(exc)) from exc

    def lint(self, chart_dir: Path, values: Mapping[str, Any], *, namespace: str) -> tuple[list[str], list[str]]:
        """`helm lint`: (errors, warnings)."""
        errors: list[str] = []
        warnings: list[str] = []
        if self.binary:
            proc = self._binary(["lint", str(chart_dir), "--namespace", namespace], values)
            for line in (proc.stdout + proc.stderr).splitlines():
                if line.startswith(("[ERROR]", "[WARNING]")):
                    (errors if line.startswith("[ERROR]") else warnings).append(line)
            if proc.returncode != 0 and not errors:
                errors.append(proc.stdout + proc.stderr)
            return errors, warnings
        import helm_python

        result = helm_python.lint(chart_dir, dict(values), namespace=namespace)
        for message in result["messages"]:
            text = f"{message['path']}: {message['error']}"
            {3: errors, 2: warnings}.get(message["severity"], []).append(text)
        errors += [error for error in result.get("errors", []) if not any(error in e for e in errors)]
        return errors, warnings

    def dependency_status(self, chart_dir: Path) -> list[dict[str, Any]]:
        """Declared dependencies with Helm's status: ok, missing, wrong version, ..."""
        import helm_python

        return helm_python.dependency_list(chart_dir)

    def dependency_build(self, chart_dir: Path) -> None:
        """`helm dependency build`: fetch charts/ exactly as Chart.lock pins them. Offline, one line naming the
        chart and its repository (Chart.yaml) instead of Helm's temporary index file."""
        import helm_python

        deps = yaml.safe_load((chart_dir / "Chart.yaml").read_text()).get("dependencies", [])
        try:
            if not self.binary:
                helm_python.dependency_build(chart_dir)
                return
            for dep in deps:
                if dep["repository"].startswith(("http://", "https://")):
                    add = [self.binary, "repo", "add", "--force-update", dep["name"], dep["repository"]]
                    subprocess.run(add, check=True, capture_output=True, text=True)
            build = [self.binary, "dependency", "build", str(chart_dir)]
            subprocess.run(build, check=True, capture_output=True, text=True)
        except (helm_python.HelmError, subprocess.CalledProcessError) as exc:
            charts = ", ".join(f"{d['name']} {d['version']} from {d['repository']}" for d in deps)
            raise HelmEngineError(
                f"{chart_dir.parent.name}/{chart_dir.name}/Chart.yaml dependencies: the official chart could not be "
                f"fetched ({charts}); `make platform-deps` needs network access to that repository "
                f"(Helm: {getattr(exc, 'stderr', None) or exc})"
            ) from None
