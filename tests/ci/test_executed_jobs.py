"""The jobs' script lines executed here by gitlab-ci-local's shell executor, each job in a fresh clone of the repo.

lint and test: tests/template/test_render.py already runs the rendered repo's `make lint test check` and requires
them to pass with a JUnit report, so they are not run a second time here. What this module adds is that the CI
jobs run exactly those commands: the jobs are executed with `make` recording its targets, in the job's
directory and order; the test job's declared JUnit report is then missing, which the runner reports. One real
`make lint` runs, on a repo with a lint error, and must fail the job. The version-guard and scan-gate jobs fetch
the platform's tools for real (from a local stand-in for the platform project) and must pass or fail on their
inputs; the deploy jobs run with only `helm` and `apk` stubbed.
"""

import json
import subprocess
from pathlib import Path

import pytest

from dagster_platform.ci.runner import host_environment, run_job
from dagster_platform.paths import dagster_version

from .helpers import ENVIRONMENTS, ENVS, FIRST, HELM_STUB, cluster_variables, fresh_checkout, git, helm_calls

pytestmark = pytest.mark.slow

MAKE_STUB = """#!/bin/sh
# Stands in for make: records the working directory and the targets, one call per line.
echo "$PWD $*" >> "$MAKE_LOG"
"""


@pytest.mark.parametrize(("job", "targets"), [("lint", ["lint"]), ("test", ["test", "check"])])
def test_developer_jobs_run_exactly_the_make_targets(job, targets, rendered_repo, usercode_pipeline, tmp_path):
    workdir = fresh_checkout(rendered_repo, tmp_path)
    stubs = tmp_path / "stub-bin"
    stubs.mkdir()
    (stubs / "make").write_text(MAKE_STUB)
    (stubs / "make").chmod(0o755)
    log = tmp_path / "make.log"
    path = f"{stubs}:{host_environment()['PATH']}"
    result = run_job(usercode_pipeline, job, workdir, overrides={"PATH": path, "MAKE_LOG": str(log)})
    assert result.returncode == 0, result.output[-4000:]
    assert result.commands == [f"make {t}" for t in targets]
    assert log.read_text().splitlines() == [f"{workdir} {t}" for t in targets]
    # No real `make test` ran, so the job's declared report is missing, and the runner says so.
    assert result.missing_artifacts == (["reports/junit.xml"] if job == "test" else [])


def test_lint_target_runs_every_linter(rendered_repo):
    """What `make lint` (the lint job's one command) runs, read from make itself without running it."""
    done = subprocess.run(["make", "-n", "lint"], cwd=rendered_repo, capture_output=True, text=True, check=True)
    for tool in ("ruff check", "ruff format --check", "sqlfluff lint", "yamllint --strict", "hadolint Dockerfile"):
        assert tool in done.stdout


def test_failing_lint_fails_the_job(rendered_repo, usercode_pipeline, tmp_path):
    workdir = fresh_checkout(rendered_repo, tmp_path)
    (workdir / "src" / "bad.py").write_text("import os\n")  # unused import: ruff F401
    result = run_job(usercode_pipeline, "lint", workdir)
    assert not result.ok
    assert "F401" in result.output


def _run_tools_job(pipeline, job, workdir, platform_remote):
    return run_job(pipeline, job, workdir, overrides={"PLATFORM_TOOLS_GIT_URL": platform_remote})


def test_version_guard_job_passes_on_the_rendered_lock(rendered_repo, usercode_pipeline, platform_remote, tmp_path):
    workdir = fresh_checkout(rendered_repo, tmp_path)
    result = _run_tools_job(usercode_pipeline, "version-guard", workdir, platform_remote)
    assert result.ok, result.output
    assert f"OK: dagster=={dagster_version()}" in result.output
    assert (workdir / ".platform-ci" / "src" / "dagster_platform" / "ci" / "version_guard.py").is_file()


def test_version_guard_job_fails_on_a_newer_dagster(rendered_repo, usercode_pipeline, platform_remote, tmp_path):
    workdir = fresh_checkout(rendered_repo, tmp_path)
    lock = workdir / "uv.lock"
    platform = dagster_version()
    major, minor, _ = platform.split(".")
    newer = f"{major}.{int(minor) + 1}.0"
    text = lock.read_text()
    lock.write_text(text.replace(f'name = "dagster"\nversion = "{platform}"', f'name = "dagster"\nversion = "{newer}"'))
    assert lock.read_text() != text
    git(workdir, "commit", "-qam", "lock a newer dagster")
    result = _run_tools_job(usercode_pipeline, "version-guard", workdir, platform_remote)
    assert result.returncode == 1
    assert f"locks dagster=={newer}, newer than the platform's dagster=={platform}" in result.output


def _report(workdir: Path, *severities: str) -> None:
    vulns = [
        {
            "id": str(i),
            "name": f"CVE-2026-100{i}",
            "severity": severity,
            "identifiers": [{"type": "cve", "name": f"CVE-2026-100{i}", "value": f"CVE-2026-100{i}"}],
            "location": {"dependency": {"package": {"name": "openssl"}}},
        }
        for i, severity in enumerate(severities)
    ]
    (workdir / "gl-container-scanning-report.json").write_text(
        json.dumps({"version": "15.0.7", "vulnerabilities": vulns})
    )


def test_scan_gate_job(rendered_repo, usercode_pipeline, platform_remote, tmp_path):
    """The report arrives as container_scanning's artifact; the allow-list is the repo's own file."""
    workdir = fresh_checkout(rendered_repo, tmp_path)
    _report(workdir, "Medium", "Low")
    passed = _run_tools_job(usercode_pipeline, "scan-gate", workdir, platform_remote)
    assert passed.ok, passed.output
    _report(workdir, "Critical")
    failed = _run_tools_job(usercode_pipeline, "scan-gate", workdir, platform_remote)
    assert failed.returncode == 1
    assert "CRITICAL CVE-2026-1000 in openssl" in failed.output
    (workdir / "scan-allowlist.toml").write_text(
        '[[allow]]\nid = "CVE-2026-1000"\nreason = "not reachable from the code server"\nexpires = 2999-01-01\n'
    )
    allowed = _run_tools_job(usercode_pipeline, "scan-gate", workdir, platform_remote)
    assert allowed.ok, allowed.output


# --- deploy jobs: everything but the cluster ------------------------------------------------------------------


@pytest.fixture
def cluster_stubs(tmp_path):
    """`helm` (recording) and `apk` (no-op: git and python3 are on this machine) ahead of the real PATH."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    (bin_dir / "helm").write_text(HELM_STUB)
    (bin_dir / "apk").write_text("#!/bin/sh\nexit 0\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    log = tmp_path / "helm-args.log"
    return {"PATH": f"{bin_dir}:{host_environment()['PATH']}", "HELM_ARGS_LOG": str(log)}, log


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=ENVS)
def test_deploy_job_upgrades_then_smoke_checks(
    env, rendered_repo, usercode_pipeline, platform_remote, webserver, cluster_stubs, tmp_path
):
    """The deploy job's own script: tools fetched, helm called for this environment only (its kube context,
    namespace and values file, as platform/values/<env>.yaml names them), then the smoke check against a real
    webserver where the location is LOADED. Every environment's variables are set, only this one's webserver
    answers."""
    stub_env, log = cluster_stubs
    workdir = fresh_checkout(rendered_repo, tmp_path)
    result = run_job(
        usercode_pipeline,
        f"deploy-{env.name}",
        workdir,
        pipeline_source="push",
        branch="main",
        overrides={**cluster_variables(env, webserver), **stub_env, "PLATFORM_TOOLS_GIT_URL": platform_remote},
    )
    assert result.ok, result.output[-4000:]
    assert "smoke: OK: location 'example-pipelines' is LOADED" in result.output
    repo_add, upgrade = helm_calls(log)
    assert repo_add[:3] == ["repo", "add", "dagster"]
    sha = git(workdir, "rev-parse", "HEAD")
    assert upgrade[:4] == ["upgrade", "--install", "example-pipelines", "dagster/dagster-user-deployments"]
    pairs = dict(zip(upgrade, upgrade[1:], strict=False))
    assert pairs["--version"] == dagster_version()
    assert pairs["--kube-context"] == env.kube_context
    assert pairs["--namespace"] == env.namespace
    assert pairs["-f"] == f"deploy/values-{env.name}.yaml"
    assert f"deployments[0].image.tag={sha}" in upgrade
    assert {"--atomic", "--wait"} <= set(upgrade)
    for other in ENVIRONMENTS:
        if other.name != env.name:
            assert not {other.kube_context, other.namespace, f"deploy/values-{other.name}.yaml"} & set(upgrade)


def test_deploy_job_fails_when_the_location_does_not_load(
    rendered_repo, usercode_pipeline, platform_remote, webserver, cluster_stubs, tmp_path
):
    stub_env, log = cluster_stubs
    workdir = fresh_checkout(rendered_repo, tmp_path)
    # The same job for a location whose code server is not there (`broken` in the webserver's workspace).
    overrides = {**cluster_variables(FIRST, webserver), **stub_env, "PLATFORM_TOOLS_GIT_URL": platform_remote}
    overrides["DAGSTER_LOCATION"] = "broken"
    overrides["SMOKE_TIMEOUT"] = "3"
    result = run_job(
        usercode_pipeline, f"deploy-{FIRST.name}", workdir, pipeline_source="push", branch="main", overrides=overrides
    )
    assert result.returncode != 0
    assert "smoke: FAILED: ERROR: location 'broken' failed to load" in result.output
    assert helm_calls(log)[-1][:3] == ["upgrade", "--install", "broken"]
