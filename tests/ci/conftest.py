import contextlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dagster_platform.ci.config import Pipeline, load_pipeline
from dagster_platform.ci.runner import context_variables, job_whens
from dagster_platform.net import free_port, http_ok
from dagster_platform.paths import ROOT
from dagster_platform.template.render import render

from .helpers import COMPANY, FEATURE_PUSH, MAIN, MR, PLATFORM_CI, as_checkout, git, load_usercode, wait_for


@pytest.fixture(scope="session")
def rendered_repo(tmp_path_factory) -> Path:
    """The template rendered with its default answers, once per session."""
    return as_checkout(render(tmp_path_factory.mktemp("usercode")))


@pytest.fixture(scope="session")
def usercode_pipeline(rendered_repo) -> Pipeline:
    return load_usercode(rendered_repo)


@pytest.fixture(scope="session")
def platform_pipeline() -> Pipeline:
    return load_pipeline(PLATFORM_CI)


@pytest.fixture(scope="session")
def pipeline_whens(platform_pipeline, usercode_pipeline) -> dict[str, dict[str, dict[str, str]]]:
    """kind -> pipeline context (mr, main, feature_push) -> job -> when, as gitlab-ci-local evaluates the rules.

    Six gitlab-ci-local runs, in parallel."""
    pipelines = {"platform": platform_pipeline, "usercode": usercode_pipeline}
    contexts = {"mr": MR, "main": MAIN, "feature_push": FEATURE_PUSH}
    keys = [(kind, ctx) for kind in pipelines for ctx in contexts]
    with ThreadPoolExecutor() as pool:
        results = pool.map(lambda k: job_whens(pipelines[k[0]], context_variables(**contexts[k[1]])), keys)
        whens = dict(zip(keys, results, strict=True))
    return {kind: {ctx: whens[kind, ctx] for ctx in contexts} for kind in pipelines}


@pytest.fixture(scope="session")
def platform_remote(tmp_path_factory) -> str:
    """A git repo holding this working tree's platform tools, tagged with the release repos pin (company.yaml
    gitlab.version), for jobs that fetch them: the Python package and the generated facts the stdlib-only tools
    read (ci/generated/platform.json).

    Stands in for the platform project on GitLab (PLATFORM_TOOLS_GIT_URL), so the jobs' real fetch runs: at the
    component's own version, as on GitLab.
    """
    repo = tmp_path_factory.mktemp("platform-remote")
    shutil.copytree(ROOT / "src" / "dagster_platform", repo / "src" / "dagster_platform")
    shutil.copytree(ROOT / "ci" / "generated", repo / "ci" / "generated")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "platform tools")
    git(repo, "tag", COMPANY.platform_version)
    return repo.as_uri()


BIN = Path(sys.prefix) / "bin"
DEFS = """
import dagster as dg


@dg.asset
def smoke_asset() -> int:
    return 1


defs = dg.Definitions(assets=[smoke_asset])
"""


@contextlib.contextmanager
def _dagster_webserver(home: Path, locations: dict[str, bool]):
    """A real dagster-webserver on loopback over DEFS served by one gRPC code server; `locations` maps each
    workspace entry's name to True (served by that code server) or False (a port where nothing listens).
    Yields (url, workspace file, gRPC port); stops both processes afterwards."""
    (home / "defs.py").write_text(DEFS)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    grpc_port, dead_port, web_port = free_port(), free_port(), free_port()
    workspace = home / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        + "".join(
            f"  - grpc_server: {{host: 127.0.0.1, port: {grpc_port if served else dead_port}, location_name: {name}}}\n"
            for name, served in locations.items()
        )
    )
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    # The schema first, as make dev does: two processes creating a fresh SQLite instance at once race
    # ("more than one head present"), and the code server then never answers.
    subprocess.run([BIN / "dagster", "instance", "migrate"], cwd=home, env=env, check=True, capture_output=True)
    logs = [open(home / name, "w") for name in ("grpc.log", "web.log")]  # noqa: SIM115 - closed below
    commands = [
        [BIN / "dagster", "api", "grpc", "--python-file", "defs.py", "--host", "127.0.0.1", "--port", str(grpc_port)],
        [BIN / "dagster-webserver", "-h", "127.0.0.1", "-p", str(web_port), "-w", str(workspace)],
    ]
    processes = [
        subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
        for command, log in zip(commands, logs, strict=True)
    ]
    url = f"http://127.0.0.1:{web_port}"
    try:
        wait_for(lambda: http_ok(url + "/server_info"), 120, "dagster-webserver")
        yield url, workspace, grpc_port
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


@pytest.fixture(scope="session")
def webserver(tmp_path_factory):
    """A real dagster-webserver on loopback: `good` and `example-pipelines` served by one gRPC code server, `broken`
    pointing at a port where nothing listens."""
    locations = {"good": True, "example-pipelines": True, "broken": False}
    with _dagster_webserver(tmp_path_factory.mktemp("smoke"), locations) as (url, _, _):
        yield url


@pytest.fixture(scope="session")
def preview_webserver(tmp_path_factory):
    """A real dagster-webserver whose workspace file stands in for the preview environment's mounted ConfigMap
    `dagster-workspace`: the kubectl stub of the preview-job tests writes it (every entry dialed at the one gRPC
    code server here, as cluster DNS would resolve each Service), and the jobs make the webserver re-read it.

    Yields (url, workspace file, gRPC port); the workspace starts with `example-pipelines` only."""
    with _dagster_webserver(tmp_path_factory.mktemp("preview-web"), {"example-pipelines": True}) as served:
        yield served
