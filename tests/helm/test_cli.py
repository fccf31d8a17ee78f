"""`dagster-platform platform ...` as make and CI call it: every declared environment, and a mistake in a platform
file or an undeclared environment refused in one line (exit 2) before anything runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from dagster_platform import paths
from dagster_platform.cli import main
from dagster_platform.helm import checks
from dagster_platform.helm import values as helm_values
from dagster_platform.paths import dagster_version

from .helpers import ENVS, PAIRS, declared, edit_yaml, env_file, render, use_values_dir

# Every `platform` subcommand that takes --env, as the Makefile and CI call it.
ENV_COMMANDS = ["values", "instance", "render", "check", "diff", "upgrade", "postgres-setup"]


@pytest.mark.slow
def test_check_passes_for_every_environment(capsys):
    assert main(["platform", "check", "--env", "all"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == ENVS  # every declared one, in promotion order
    assert all(f"{env}: ok" in out for env in ENVS)


def test_full_check_needs_the_official_chart_here():
    if checks.official_chart_present():
        pytest.skip("the official chart is present (after `make platform-deps`): `make platform-verify` runs it")
    problems = checks.check_environment(ENVS[0], full=True)
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


@pytest.mark.parametrize("env", ENVS)
def test_values_writes_the_generated_layer_last(tmp_path, capsys, env):
    assert main(["platform", "values", "--env", env, "--out", str(tmp_path)]) == 0
    args = capsys.readouterr().out.split()
    files = args[1::2]
    assert files[:2] == [str(helm_values.VALUES_DIR / "base.yaml"), str(helm_values.VALUES_DIR / f"{env}.yaml")]
    generated = yaml.safe_load(Path(files[2]).read_text())
    assert generated == helm_values.values_layers(env)[-1][1]
    secret = helm_values.environment_values(env)["objectStore"]["credentialsSecretName"]
    assert generated["dagster"]["dagsterDaemon"]["envSecrets"] == [{"name": secret}]


def test_values_for_all_writes_every_declared_environment(tmp_path, capsys):
    assert main(["platform", "values", "--env", "all", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ENVS)


@pytest.mark.parametrize("env", ENVS)
def test_render_writes_the_environments_manifests(engine, env_values, tmp_path, env):
    out = tmp_path / "m.yaml"
    assert main(["platform", "render", "--env", env, "--out", str(out)]) == 0
    written = {(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(out.read_text()) if doc}
    assert written == {(o["kind"], o["metadata"]["name"]) for o in render(engine, env_values[env])}
    assert {"NetworkPolicy", "PodDisruptionBudget", "LimitRange"} <= {kind for kind, _ in written}


@pytest.mark.parametrize("env", ENVS)
def test_postgres_setup_uses_the_environments_values_alone(capsys, env):
    assert main(["platform", "postgres-setup", "--env", env]) == 0
    out = capsys.readouterr().out
    pg = helm_values.environment_values(env)["dagster"]["postgresql"]
    assert f"-h {pg['postgresqlHost']} " in out and f"-v database={pg['postgresqlDatabase']} " in out
    for other in ENVS:
        if other != env:
            theirs = helm_values.environment_values(other)["dagster"]["postgresql"]
            assert theirs["postgresqlHost"] not in out and f"={theirs['postgresqlDatabase']} " not in out


# -- refusals: one line, exit 2, no usage dump, no traceback ---------------------------------------
@pytest.mark.parametrize("command", ENV_COMMANDS)
def test_an_undeclared_environment_is_refused_in_one_line_by_every_command(capsys, command):
    assert main(["platform", command, "--env", "no-such-env"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"platform {command}: environment 'no-such-env' is not declared; use one of {', '.join(ENVS)} "
        "(or add platform/values/no-such-env.yaml)\n"
    )


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c.pop("label_domain"), "label_domain"),
        (lambda c: c.update(image_registry="https://registry.example.com/dagster/"), "image_registry"),
        (lambda c: c["gitlab"].update(host="https://gitlab.example.com"), "gitlab.host"),
    ],
    ids=["missing-key", "registry-with-scheme", "host-with-scheme"],
)
def test_a_broken_company_file_is_refused_in_one_line(tmp_path, monkeypatch, capsys, edit, key):
    company = tmp_path / "company.yaml"
    shutil.copy(paths.COMPANY_YAML, company)
    edit_yaml(company, edit)
    monkeypatch.setattr(paths, "COMPANY_YAML", company)
    assert main(["platform", "values", "--env", ENVS[0], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"platform values: {company}: {key}") and err.count("\n") == 1, err


@pytest.mark.parametrize(("env", "other"), PAIRS[:1])
def test_two_environments_sharing_a_namespace_are_refused_in_one_line(values_dir, monkeypatch, capsys, env, other):
    # The environments are read in file-name order: the later file is the one named.
    first, second = sorted([env, other])
    namespace = declared(first).namespace
    edit_yaml(env_file(values_dir, second), lambda d: d["environment"].update(namespace=namespace))
    use_values_dir(monkeypatch, values_dir)
    assert main(["platform", "check", "--env", "all"]) == 2
    assert capsys.readouterr().err == (
        f"platform check: {env_file(values_dir, second)}: environment.namespace: {namespace!r} is also {first}'s "
        f"({env_file(values_dir, first)} environment.namespace); every environment needs its own namespace\n"
    )
