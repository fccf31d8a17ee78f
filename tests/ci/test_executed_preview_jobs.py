"""Merge-request previews: the deploy-preview and stop-preview jobs of the user-code component (templates/usercode/).

They run in the preview environment: the first environment in promotion order whose platform/values/<env>.yaml
enables previews (platform_config.preview_environment()); a company where none does has no preview jobs, and the
tests that need one are skipped.

Executed (slow) as the deploy jobs are in test_executed_jobs.py: gitlab-ci-local's shell executor in a fresh clone,
the platform's tools fetched from a local stand-in, `helm` and `apk` stubbed, and `kubectl` a stateful stand-in for
the preview environment's ConfigMap `dagster-workspace` (get / replace / create with a resourceVersion, Kubernetes'
conflict and not-found answers), so the real previews.py registers and deregisters. What the kubelet and cluster DNS
would do is the stub's second write: the ConfigMap's workspace.yaml, every entry pointed at one loopback gRPC code
server, is the workspace file of a real dagster-webserver, which the jobs make re-read it and the smoke check then
asks. Fast: which pipelines the jobs appear in, their environment, and the policy refusing previews that could
reach another environment.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from dagster_platform.ci.policy import check
from dagster_platform.ci.runner import host_environment, run_job
from dagster_platform.graphql import Client
from dagster_platform.paths import ROOT, dagster_version
from dagster_platform.platform_config import Environment

from .helpers import (
    COMPANY,
    DEAD_URL,
    HELM_STUB,
    PREVIEW,
    cluster_variables,
    fresh_checkout,
    git,
    helm_calls,
    mutated,
    needs,
    other_than,
    set_key,
)

LOCATION = "example-pipelines"  # the template's default location name (the rendered_repo fixture)
MR_IID = "12"
PREVIEW_NAME = f"{LOCATION}-mr-{MR_IID}"
PORT = COMPANY.grpc_port
IMAGE_REPOSITORY = COMPANY.image(LOCATION)
REGISTRY = {LOCATION: {"host": LOCATION, "port": PORT}}
# The preview pod label as the job passes it to helm --set-string (dots escaped).
PREVIEW_LABEL = COMPANY.label_domain.replace(".", "\\.") + "/preview"


@pytest.fixture
def preview_env() -> Environment:
    return needs("environment enabling previews (previews.enabled)", PREVIEW)


# --- fast: where the jobs run, their environment, the policy --------------------------------------------------


def test_preview_jobs_exist_only_where_an_environment_enables_previews(usercode_pipeline):
    jobs = set(usercode_pipeline.jobs())
    if PREVIEW is None:
        assert not {"deploy-preview", "stop-preview"} & jobs, "no environment enables previews; run `make generate`"
    else:
        assert {"deploy-preview", "stop-preview"} <= jobs, f"{PREVIEW.file} enables previews; run `make generate`"


def test_preview_jobs_run_on_merge_requests_only(preview_env, pipeline_whens):
    whens = pipeline_whens["usercode"]
    assert [whens[ctx]["deploy-preview"] for ctx in ("mr", "main", "feature_push")] == ["on_success", "never", "never"]
    assert [whens[ctx]["stop-preview"] for ctx in ("mr", "main", "feature_push")] == ["manual", "never", "never"]


def test_preview_environment_is_a_stoppable_review_app(preview_env, usercode_pipeline):
    jobs = usercode_pipeline.jobs()
    deploy, stop = jobs["deploy-preview"], jobs["stop-preview"]
    url = f"$DAGSTER_WEBSERVER_URL_{preview_env.variable_suffix}"
    assert deploy["environment"] == {
        "name": "review/$DAGSTER_LOCATION-mr-$CI_MERGE_REQUEST_IID",
        "url": f"{url}/locations/$DAGSTER_LOCATION-mr-$CI_MERGE_REQUEST_IID/assets",
        "on_stop": "stop-preview",
        "auto_stop_in": "$PREVIEW_AUTO_STOP_IN",
        "deployment_tier": "development",
    }
    assert stop["environment"] == {"name": deploy["environment"]["name"], "action": "stop"}
    assert deploy["stage"] == stop["stage"] == preview_env.name
    for job in (deploy, stop):
        assert job["variables"]["PREVIEW_ENV"] == preview_env.name
        assert job["variables"]["KUBE_CONTEXT"] == f"$KUBE_CONTEXT_{preview_env.variable_suffix}"
        assert job["variables"]["KUBE_NAMESPACE"] == preview_env.namespace
        assert job["variables"]["DAGSTER_WEBSERVER_URL"] == url
    assert deploy["resource_group"] == stop["resource_group"] == "preview-$DAGSTER_LOCATION-$CI_MERGE_REQUEST_IID"
    assert deploy["interruptible"] is stop["interruptible"] is False
    assert stop["variables"]["GIT_STRATEGY"] == "none"
    variables = usercode_pipeline.variables
    assert variables["PREVIEW_AUTO_STOP_IN"] == "3 days"
    assert variables["PREVIEW_MAX_PER_LOCATION"] == "3"
    # The port the preview serves and is registered with is the platform's port contract (company.yaml grpc_port),
    # and its pods carry the company's preview label.
    assert int(variables["DAGSTER_GRPC_PORT"]) == COMPANY.grpc_port
    assert variables["PREVIEW_LABEL"] == PREVIEW_LABEL


def _in_preview_script(old: str, new: str):
    def change(config):
        script = config["deploy-preview"]["script"]
        assert any(old in line for line in script), f"{old!r} is not in deploy-preview's script"
        config["deploy-preview"]["script"] = [line.replace(old, new) for line in script]

    return change


def _only(preview: Environment, other: Environment, variable: str) -> str:
    found = f"{variable}_{other.variable_suffix}"
    return f"a review/ environment must use {preview.name} variables only, found [{found!r}]"


def _fixed(change, expected):
    return lambda preview, other: (change, expected)


NO_STOP = "deploy-preview: a review/ environment needs on_stop naming a job with the same environment and action: stop"
# (the preview environment, another environment: the strictest) -> (a broken copy, the one line refusing it)
PREVIEW_BREAKAGES = {
    "another environment's kube context": lambda p, o: (
        set_key(["deploy-preview", "variables", "KUBE_CONTEXT"], f"$KUBE_CONTEXT_{o.variable_suffix}"),
        f"deploy-preview: {_only(p, o, 'KUBE_CONTEXT')}",
    ),
    "another environment's webserver in the stop job": lambda p, o: (
        set_key(["stop-preview", "variables", "DAGSTER_WEBSERVER_URL"], f"$DAGSTER_WEBSERVER_URL_{o.variable_suffix}"),
        f"stop-preview: {_only(p, o, 'DAGSTER_WEBSERVER_URL')}",
    ),
    "another environment's webserver link": lambda p, o: (
        set_key(["deploy-preview", "environment", "url"], f"$DAGSTER_WEBSERVER_URL_{o.variable_suffix}/locations"),
        f"deploy-preview: {_only(p, o, 'DAGSTER_WEBSERVER_URL')}",
    ),
    "registered in another environment": lambda p, o: (
        _in_preview_script('--env "$PREVIEW_ENV"', f"--env {o.name}"),
        'deploy-preview: the previews tool must run with --env "$PREVIEW_ENV"',
    ),
    "PREVIEW_ENV of another environment": lambda p, o: (
        set_key(["deploy-preview", "variables", "PREVIEW_ENV"], o.name),
        f"deploy-preview: PREVIEW_ENV must be {p.name}, the first environment enabling previews",
    ),
    "in another environment's stage": lambda p, o: (
        set_key(["deploy-preview", "stage"], o.name),
        f"deploy-preview: a review/ environment must run in stage {p.name!r}",
    ),
    "on the default branch": _fixed(
        set_key(["deploy-preview", "rules"], [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]),
        "deploy-preview: a review/ environment runs on merge requests only"
        ' (rules: if $CI_PIPELINE_SOURCE == "merge_request_event")',
    ),
    "no stop job": _fixed(set_key(["deploy-preview", "environment", "on_stop"], "nothing"), NO_STOP),
    "stop job of another environment": _fixed(set_key(["stop-preview", "environment", "name"], "review/x"), NO_STOP),
    "never stopped by itself": _fixed(
        lambda config: config["deploy-preview"]["environment"].pop("auto_stop_in"),
        "deploy-preview: a review/ environment must set auto_stop_in",
    ),
    "GitLab's production tier": _fixed(
        set_key(["deploy-preview", "environment", "deployment_tier"], "production"),
        "deploy-preview: a review/ environment's deployment_tier must be development",
    ),
}


@pytest.mark.parametrize("breakage", sorted(PREVIEW_BREAKAGES))
def test_policy_refuses_a_preview_that_could_reach_another_environment(breakage, preview_env, usercode_pipeline):
    """Each broken copy is refused with exactly one line; the real file passes (test_structure.py)."""
    other = needs("second environment", other_than(preview_env))
    change, expected = PREVIEW_BREAKAGES[breakage](preview_env, other)
    assert check(mutated(usercode_pipeline, change), "usercode") == [expected]


@pytest.mark.parametrize("job", ["deploy-preview", "stop-preview"])
def test_policy_refuses_a_preview_in_another_environments_namespace(job, preview_env, usercode_pipeline):
    other = needs("second environment", other_than(preview_env))
    change = set_key([job, "variables", "KUBE_NAMESPACE"], other.namespace)
    problems = check(mutated(usercode_pipeline, change), "usercode")
    assert len(problems) == 1 and problems[0].startswith(f"{job}: ") and preview_env.namespace in problems[0], problems


# --- executed: helm and kubectl stubbed, a real webserver -----------------------------------------------------

KUBECTL_STUB = '''#!/usr/bin/env python3
"""Stands in for kubectl against one ConfigMap held as JSON in $KUBE_STATE: get -o json, replace -f - (refused with
Kubernetes' Conflict when the resourceVersion is not the stored one), create -f - (AlreadyExists). Each call's
arguments are appended to $KUBECTL_LOG as a JSON line. After a write, the ConfigMap's workspace.yaml goes to
$KUBE_MOUNT with every server at 127.0.0.1:$STUB_GRPC_PORT: the kubelet's volume refresh and cluster DNS."""
import json, os, sys

argv = sys.argv[1:]
with open(os.environ["KUBECTL_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
opts = {}
while argv and argv[0].startswith("--"):
    opts[argv[0]], argv = argv[1], argv[2:]
state = os.environ["KUBE_STATE"]
stored = json.load(open(state)) if os.path.exists(state) else None


def fail(message):
    sys.exit(f"Error from server ({message}")


if argv == ["get", "configmap", "dagster-workspace", "-o", "json"]:
    if stored is None:
        fail('NotFound): configmaps "dagster-workspace" not found')
    sys.exit(print(json.dumps(stored)))
if argv not in (["replace", "-f", "-"], ["create", "-f", "-"]):
    sys.exit(f"kubectl-stub: unexpected call {argv}")
obj = json.load(sys.stdin)
meta = obj["metadata"]
assert obj["kind"] == "ConfigMap" and meta["name"] == "dagster-workspace", obj
assert meta["namespace"] == opts["--namespace"], (meta, opts)
if argv[0] == "create":
    if stored is not None:
        fail('AlreadyExists): error when creating "STDIN": configmaps "dagster-workspace" already exists')
    if "resourceVersion" in meta:
        fail("BadRequest): resourceVersion should not be set on objects to be created")
    version = 1
else:
    if stored is None:
        fail('NotFound): error when replacing "STDIN": configmaps "dagster-workspace" not found')
    if meta.get("resourceVersion") != stored["metadata"]["resourceVersion"]:
        fail('Conflict): error when replacing "STDIN": Operation cannot be fulfilled on configmaps'
             ' "dagster-workspace": the object has been modified; please apply your changes to the latest version'
             " and try again")
    version = int(stored["metadata"]["resourceVersion"]) + 1
meta["resourceVersion"] = str(version)
with open(state + ".tmp", "w") as out:
    json.dump(obj, out)
os.replace(state + ".tmp", state)
workspace = json.loads(obj["data"]["workspace.yaml"])
for entry in workspace["load_from"]:
    entry["grpc_server"].update(host="127.0.0.1", port=int(os.environ["STUB_GRPC_PORT"]))
with open(os.environ["KUBE_MOUNT"] + ".tmp", "w") as out:
    json.dump(workspace, out)
os.replace(os.environ["KUBE_MOUNT"] + ".tmp", os.environ["KUBE_MOUNT"])
print(f"configmap/dagster-workspace {argv[0]}d")
'''


class Cluster:
    """The stubs' files: helm's and kubectl's recorded calls, the preview environment's ConfigMap."""

    def __init__(self, tmp_path: Path, webserver, env: Environment):
        self.url, self.mount, grpc_port = webserver
        self.environment = env
        bin_dir = tmp_path / "stub-bin"
        bin_dir.mkdir()
        for name, text in (("helm", HELM_STUB), ("kubectl", KUBECTL_STUB), ("apk", "#!/bin/sh\nexit 0\n")):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        self.helm_log, self.kubectl_log = tmp_path / "helm-args.log", tmp_path / "kubectl.log"
        self.state = tmp_path / "configmap.json"
        self.env = {
            "PATH": f"{bin_dir}:{host_environment()['PATH']}",
            "HELM_ARGS_LOG": str(self.helm_log),
            "KUBECTL_LOG": str(self.kubectl_log),
            "KUBE_STATE": str(self.state),
            "KUBE_MOUNT": str(self.mount),
            "STUB_GRPC_PORT": str(grpc_port),
        }
        # kubectl's calls of the jobs: the environment's kube context (CI variable) and namespace.
        kube = ["--context", env.kube_context, "--namespace", env.namespace]
        self.get = [*kube, "get", "configmap", "dagster-workspace", "-o", "json"]
        self.replace = [*kube, "replace", "-f", "-"]

    def uninstall(self, name: str) -> list[str]:
        """helm's arguments when a job uninstalls preview `name` from the preview environment."""
        env = self.environment
        return ["uninstall", name, "--kube-context", env.kube_context, "--namespace", env.namespace,
                "--ignore-not-found", "--wait"]  # fmt: skip

    def previews(self, *args: str) -> str:
        """The platform's own previews CLI against the stub, as the platform upgrade (sync) or another MR's job
        (add) would run it: how the ConfigMap is seeded."""
        env = self.environment
        done = subprocess.run(
            [sys.executable, "-m", "dagster_platform.ci.previews", *args, "--env", env.name]
            + ["--context", env.kube_context, "--namespace", env.namespace],
            env={**os.environ, **self.env, "PYTHONPATH": str(ROOT / "src")},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def reset_logs(self) -> None:
        """The next job's calls are recorded afresh; earlier ones are kept beside them (<log>.<n>) to read."""
        for log in (self.helm_log, self.kubectl_log):
            if log.exists():
                log.rename(log.with_name(f"{log.name}.{len(list(log.parent.glob(log.name + '.*')))}"))

    def helm_calls(self) -> list[list[str]]:
        return helm_calls(self.helm_log)

    def kubectl_calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.kubectl_log.read_text().splitlines()]

    def configmap(self) -> dict:
        return json.loads(self.state.read_text())

    def annotation(self, kind: str):
        """An annotation of the ConfigMap under the company's label domain (platform/company.yaml), decoded."""
        return json.loads(self.configmap()["metadata"]["annotations"][f"{COMPANY.label_domain}/{kind}"])

    def workspace_locations(self) -> list[str]:
        workspace = json.loads(self.configmap()["data"]["workspace.yaml"])
        return [entry["grpc_server"]["location_name"] for entry in workspace["load_from"]]


@pytest.fixture
def cluster(tmp_path, preview_webserver, preview_env):
    cluster = Cluster(tmp_path, preview_webserver, preview_env)
    # The platform upgrade has written the registry (previews sync), as on a cluster where the location is registered.
    cluster.previews("sync", "--registry-json", json.dumps(REGISTRY))
    return cluster


def _run(job, repo, pipeline, cluster, platform_remote, tmp_path, **extra):
    """`job` with every environment's CI variables set; only the preview environment's webserver answers."""
    overrides = {
        **cluster_variables(cluster.environment, cluster.url),
        "CI_MERGE_REQUEST_IID": MR_IID,
        "CI_REGISTRY_IMAGE": IMAGE_REPOSITORY,
        "PLATFORM_TOOLS_GIT_URL": platform_remote,
        **cluster.env,
        **extra,
    }
    workdir = Path(tempfile.mkdtemp(prefix=f"{job}-", dir=tmp_path))  # each run a fresh clone, as in GitLab
    return run_job(pipeline, job, fresh_checkout(repo, workdir), overrides=overrides)


@pytest.mark.slow
def test_deploy_preview_then_stop_preview(rendered_repo, usercode_pipeline, platform_remote, cluster, tmp_path):
    """deploy-preview: helm in the preview environment only, registered next to the registry entry, LOADED in the
    real webserver; stop-preview: deregistered, gone from the webserver, then uninstalled."""
    env = cluster.environment
    sha = git(rendered_repo, "rev-parse", "HEAD")
    values = yaml.safe_load((rendered_repo / "deploy" / f"values-{env.name}.yaml").read_text())
    env_index = len(values["deployments"][0]["env"])  # DAGSTER_PREVIEW is appended after the file's own entries
    cluster.reset_logs()

    deployed = _run("deploy-preview", rendered_repo, usercode_pipeline, cluster, platform_remote, tmp_path)
    assert deployed.ok, deployed.output[-4000:]
    assert f"registered preview {PREVIEW_NAME}" in deployed.output
    assert f"smoke: OK: location '{PREVIEW_NAME}' is LOADED" in deployed.output
    assert cluster.helm_calls() == [
        ["repo", "add", "dagster", "https://dagster-io.github.io/helm", "--force-update"],
        [
            "upgrade", "--install", PREVIEW_NAME, "dagster/dagster-user-deployments",
            "--version", dagster_version(),
            "--kube-context", env.kube_context, "--namespace", env.namespace,
            "-f", f"deploy/values-{env.name}.yaml",
            "--set", f"deployments[0].name={PREVIEW_NAME}",
            "--set", f"deployments[0].image.repository={IMAGE_REPOSITORY}",
            "--set", f"deployments[0].image.tag={sha}",
            "--set", f"deployments[0].port={PORT}",
            "--set-string", f"deployments[0].labels.{PREVIEW_LABEL}=true",
            "--set", f"deployments[0].env[{env_index}].name=DAGSTER_PREVIEW",
            "--set-string", f"deployments[0].env[{env_index}].value=mr-{MR_IID}",
            "--atomic", "--wait", "--timeout", "10m",
        ],
    ]  # fmt: skip
    assert cluster.kubectl_calls() == [cluster.get, cluster.replace]
    assert cluster.workspace_locations() == [LOCATION, PREVIEW_NAME]
    assert cluster.annotation("registry") == REGISTRY
    preview = cluster.annotation("previews")[PREVIEW_NAME]
    assert (preview["location"], preview["mr"], preview["host"], preview["port"]) == (
        LOCATION, int(MR_IID), PREVIEW_NAME, PORT
    )  # fmt: skip
    assert Client(cluster.url).location_state(PREVIEW_NAME)[0] == "LOADED"

    cluster.reset_logs()
    stopped = _run("stop-preview", rendered_repo, usercode_pipeline, cluster, platform_remote, tmp_path)
    assert stopped.ok, stopped.output[-4000:]
    assert f"deregistered preview {PREVIEW_NAME}" in stopped.output
    assert f"smoke: OK: location '{PREVIEW_NAME}' is no longer in the webserver's workspace" in stopped.output
    assert cluster.kubectl_calls() == [cluster.get, cluster.replace]
    assert cluster.helm_calls() == [cluster.uninstall(PREVIEW_NAME)]
    assert cluster.workspace_locations() == [LOCATION]
    assert cluster.annotation("previews") == {}
    assert Client(cluster.url).location_state(PREVIEW_NAME)[0] == "MISSING"
    assert Client(cluster.url).location_state(LOCATION)[0] == "LOADED"

    # GitLab may run the stop job again (auto-stop after a manual stop): nothing left to do, still green.
    cluster.reset_logs()
    again = _run("stop-preview", rendered_repo, usercode_pipeline, cluster, platform_remote, tmp_path)
    assert again.ok, again.output[-4000:]
    assert f"preview {PREVIEW_NAME} was not registered" in again.output
    assert cluster.kubectl_calls() == [cluster.get]  # unchanged: nothing written
    assert cluster.helm_calls() == [cluster.uninstall(PREVIEW_NAME)]


@pytest.mark.slow
def test_deploy_preview_evicts_the_oldest_beyond_the_limit(
    rendered_repo, usercode_pipeline, platform_remote, cluster, tmp_path
):
    for mr in ("7", "8", "9"):  # three live previews of this location, MR 7 the oldest
        cluster.previews("add", "--location", LOCATION, "--mr", mr, "--port", str(PORT))
    cluster.reset_logs()
    deployed = _run("deploy-preview", rendered_repo, usercode_pipeline, cluster, platform_remote, tmp_path)
    assert deployed.ok, deployed.output[-4000:]
    assert f"evicted {LOCATION}-mr-7" in deployed.output
    repo_add, upgrade, *uninstalls = cluster.helm_calls()
    assert upgrade[:3] == ["upgrade", "--install", PREVIEW_NAME]
    assert uninstalls == [cluster.uninstall(f"{LOCATION}-mr-7")]  # after it left the workspace
    assert cluster.workspace_locations() == [LOCATION, f"{LOCATION}-mr-8", f"{LOCATION}-mr-9", PREVIEW_NAME]
    assert f"smoke: OK: location '{PREVIEW_NAME}' is LOADED" in deployed.output
    assert Client(cluster.url).location_state(f"{LOCATION}-mr-7")[0] == "MISSING"


@pytest.mark.slow
def test_deploy_preview_of_an_unregistered_location_leaves_nothing(
    rendered_repo, usercode_pipeline, platform_remote, cluster, tmp_path
):
    """previews refuses a location the registry does not hold: the job fails in one line and uninstalls the
    release it has just installed; the workspace is unchanged."""
    before = cluster.configmap()
    cluster.reset_logs()
    failed = _run(
        "deploy-preview", rendered_repo, usercode_pipeline, cluster, platform_remote, tmp_path,
        DAGSTER_LOCATION="unregistered",
    )  # fmt: skip
    assert failed.returncode != 0
    assert (
        f"previews: 'unregistered' is not a registered location (registered: {LOCATION}); register it first"
        in failed.output
    )
    assert [call[:3] for call in cluster.helm_calls()[1:]] == [
        ["upgrade", "--install", f"unregistered-mr-{MR_IID}"],
        ["uninstall", f"unregistered-mr-{MR_IID}", "--kube-context"],
    ]
    assert cluster.kubectl_calls() == [cluster.get]
    assert cluster.configmap() == before


@pytest.mark.slow
def test_stop_preview_goes_on_when_the_webserver_is_down(
    rendered_repo, usercode_pipeline, platform_remote, cluster, tmp_path
):
    """An MR's stop is not blocked by the webserver: deregistered, a warning, uninstalled."""
    cluster.previews("add", "--location", LOCATION, "--mr", MR_IID, "--port", str(PORT))
    cluster.reset_logs()
    down = {f"DAGSTER_WEBSERVER_URL_{cluster.environment.variable_suffix}": DEAD_URL, "SMOKE_TIMEOUT": "0"}
    stopped = _run("stop-preview", rendered_repo, usercode_pipeline, cluster, platform_remote, tmp_path, **down)
    assert stopped.ok, stopped.output[-4000:]
    assert "smoke: FAILED: the webserver did not re-read its workspace" in stopped.output
    assert "webserver: WARNING: it did not confirm the preview is gone; uninstalling anyway" in stopped.output
    assert cluster.workspace_locations() == [LOCATION]
    assert cluster.helm_calls() == [cluster.uninstall(PREVIEW_NAME)]
