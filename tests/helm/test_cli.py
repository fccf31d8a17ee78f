"""`dagster-platform platform ...` as make and CI call it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dagster_platform.cli import main
from dagster_platform.helm import checks
from dagster_platform.helm import values as helm_values
from dagster_platform.paths import dagster_version


@pytest.mark.slow
def test_check_passes_for_every_environment(capsys):
    assert main(["platform", "check", "--env", "all"]) == 0
    out = capsys.readouterr().out
    assert "acceptance: ok" in out and "production: ok" in out


def test_full_check_needs_the_official_chart_here():
    if checks.official_chart_present():
        pytest.skip("the official chart is present (after `make platform-deps`): `make platform-verify` runs it")
    problems = checks.check_environment("acceptance", full=True)
    assert any("official dagster chart is not in helm/dagster-platform/charts/" in p for p in problems)


def test_deps_offline_names_the_chart_repository_in_one_line(monkeypatch, capsys):
    import helm_python

    def offline(chart_dir):
        raise helm_python.HelmError("open /tmp/helm-c-deps-1/repository/helm-c-dep-0-index.yaml: no such file or\n dir")

    monkeypatch.setenv("DAGSTER_PLATFORM_HELM", "sdk")
    monkeypatch.setattr(helm_python, "dependency_build", offline)
    assert main(["platform", "deps"]) == 1
    assert capsys.readouterr().err == (
        "platform deps: helm/dagster-platform/Chart.yaml dependencies: the official chart could not be fetched "
        f"(dagster {dagster_version()} from https://dagster-io.github.io/helm); "
        "`make platform-deps` needs network access to that "
        "repository (Helm: open /tmp/helm-c-deps-1/repository/helm-c-dep-0-index.yaml: no such file or dir)\n"
    )


def test_values_writes_the_generated_layer_last(tmp_path, capsys):
    assert main(["platform", "values", "--env", "production", "--out", str(tmp_path)]) == 0
    args = capsys.readouterr().out.split()
    files = args[1::2]
    assert files[:2] == [str(helm_values.VALUES_DIR / "base.yaml"), str(helm_values.VALUES_DIR / "production.yaml")]
    generated = yaml.safe_load(Path(files[2]).read_text())
    assert generated == helm_values.values_layers("production")[-1][1]
    assert generated["dagster"]["dagsterDaemon"]["envSecrets"] == [{"name": "dagster-production-object-store"}]


def test_render_writes_manifests(tmp_path):
    out = tmp_path / "m.yaml"
    assert main(["platform", "render", "--env", "acceptance", "--out", str(out)]) == 0
    kinds = {doc["kind"] for doc in yaml.safe_load_all(out.read_text()) if doc}
    assert {"NetworkPolicy", "PodDisruptionBudget", "Ingress", "ExternalSecret", "LimitRange"} <= kinds


def test_postgres_setup_uses_the_environments_values(capsys):
    assert main(["platform", "postgres-setup", "--env", "acceptance"]) == 0
    out = capsys.readouterr().out
    assert "-h pg-acceptance.db.acme.internal" in out and "-v database=dagster_acceptance" in out
    assert "production" not in out
