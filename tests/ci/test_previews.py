"""ci/previews.py, the registration of preview code locations: the pure changes (add, evict the oldest, re-add,
remove, collisions, the guard of environments without previews, name length), and the cluster store against a stub
`kubectl` that keeps the ConfigMap the way the API server does (a resourceVersion per write, `replace` at a stale
one refused with Kubernetes' own 409 text): three writers started at once all land, through retried conflicts.

The environments are the company's (platform/values/, through the generated ci/generated/platform.json previews.py
reads): OPEN is the environment previews run in, CLOSED one that holds the registered locations alone; a company
without one of them skips the tests that need it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dagster_platform.ci import previews
from dagster_platform.ci.previews import PreviewError, Server, Workspace

from .helpers import COMPANY, ENVIRONMENTS, NO_PREVIEW, PREVIEW, needs

PORT = COMPANY.grpc_port
REGISTRY = {"example-pipelines": Server("example-pipelines", PORT), "platform-ops": Server("platform-ops", PORT)}
BASE = Workspace(dict(REGISTRY))
# Where previews may run in the pure changes: the preview environment, else the laptop's (always allowed).
OPEN_NAME = PREVIEW.name if PREVIEW else "local"
# The environments previews may run in, as previews.py names them in a refusal.
ALLOWED = " or ".join([*(env.name for env in ENVIRONMENTS if env.previews), "local"])


def registry_json(registry=REGISTRY) -> str:
    return json.dumps({n: {"host": s.host, "port": s.port} for n, s in registry.items()})


def kube(env) -> list[str]:
    """The CLI's cluster arguments for an environment: its kube context and namespace."""
    return ["--context", env.kube_context, "--namespace", env.namespace]


def annotation(kind: str) -> str:
    return f"{COMPANY.label_domain}/{kind}"


def refused_in(env: str) -> str:
    return f"previews run only in {ALLOWED}, never in {env!r}: {env} holds the registered locations alone"


def test_previews_reads_the_companys_environments_and_label_domain():
    """previews.py (stdlib only) reads the generated copy of platform/company.yaml and platform/values/: it names
    the same environments and the same label domain as platform_config."""
    hint = "ci/generated/platform.json is stale: run `make generate`"
    assert previews.preview_environments() == (*(e.name for e in ENVIRONMENTS if e.previews), "local"), hint
    assert sorted(previews.environments()) == sorted([*(e.name for e in ENVIRONMENTS), "local"]), hint
    assert previews.annotation("registry") == annotation("registry"), hint


# -- the pure changes ------------------------------------------------------------------------------------------
def test_add_registers_the_preview_after_the_registered_locations():
    ws, evicted = previews.add_preview(BASE, "example-pipelines", 17, PORT, now=1.0)
    assert evicted == []
    assert ws.previews == {
        "example-pipelines-mr-17": {
            "location": "example-pipelines", "mr": 17, "host": "example-pipelines-mr-17", "port": PORT, "created": 1.0
        }
    }  # fmt: skip
    assert [e["grpc_server"]["location_name"] for e in json.loads(ws.text())["load_from"]] == [
        "example-pipelines", "platform-ops", "example-pipelines-mr-17"
    ]  # fmt: skip


def test_add_beyond_the_limit_evicts_the_oldest_of_that_location_only():
    ws = BASE
    for mr, now in ((1, 1.0), (2, 2.0)):
        ws, _ = previews.add_preview(ws, "example-pipelines", mr, PORT, max_per_location=2, now=now)
    ws, _ = previews.add_preview(ws, "platform-ops", 9, PORT, max_per_location=2, now=0.5)
    ws, evicted = previews.add_preview(ws, "example-pipelines", 3, PORT, max_per_location=2, now=3.0)
    assert evicted == ["example-pipelines-mr-1"]
    assert sorted(ws.previews) == ["example-pipelines-mr-2", "example-pipelines-mr-3", "platform-ops-mr-9"]


def test_the_limit_sync_stores_is_the_default_of_add():
    ws = previews.sync_registry(BASE, REGISTRY, OPEN_NAME, limit=1)
    ws, _ = previews.add_preview(ws, "example-pipelines", 1, PORT, now=1.0)
    ws, evicted = previews.add_preview(ws, "example-pipelines", 2, PORT, now=2.0)
    assert ws.limit == 1 and evicted == ["example-pipelines-mr-1"]
    assert previews.sync_registry(ws, REGISTRY, OPEN_NAME).limit == 1  # a sync without one keeps it


def test_re_adding_a_preview_keeps_its_place_and_evicts_nothing():
    ws, _ = previews.add_preview(BASE, "example-pipelines", 1, PORT, max_per_location=1, now=1.0)
    ws, evicted = previews.add_preview(ws, "example-pipelines", 1, 4001, max_per_location=1, now=5.0)
    assert evicted == [] and ws.previews["example-pipelines-mr-1"]["created"] == 1.0
    assert ws.previews["example-pipelines-mr-1"]["port"] == 4001


def test_removing_twice_is_not_an_error():
    ws, _ = previews.add_preview(BASE, "example-pipelines", 1, PORT, now=1.0)
    ws, removed = previews.remove_preview(ws, "example-pipelines-mr-1")
    assert removed and ws == BASE
    assert previews.remove_preview(ws, "example-pipelines-mr-1") == (BASE, False)


def test_the_registry_sync_keeps_the_previews():
    ws, _ = previews.add_preview(BASE, "example-pipelines", 1, PORT, now=1.0)
    new = {**REGISTRY, "sales": Server("sales", PORT)}
    synced = previews.sync_registry(ws, new, OPEN_NAME)
    assert synced.registry == new and synced.previews == ws.previews


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda: previews.add_preview(BASE, "nope", 1, PORT),
            "'nope' is not a registered location (registered: example-pipelines, platform-ops); register it first",
        ),
        (
            lambda: previews.add_preview(
                Workspace({**REGISTRY, "example-pipelines-mr-1": Server("x", PORT)}), "example-pipelines", 1, PORT
            ),
            "preview 'example-pipelines-mr-1' collides with a registered location of that name",
        ),
        (
            lambda: previews.with_registry(BASE, {"sales-mr-2": Server("sales-mr-2", PORT)}),
            "registered location 'sales-mr-2' ends like a preview (-mr-<n>); rename it in the registry",
        ),
        (
            lambda: previews.remove_preview(BASE, "platform-ops"),
            "'platform-ops' is a registered location, not a preview; previews end in -mr-<iid>",
        ),
        (
            lambda: previews.add_preview(BASE, "example-pipelines", "12a", PORT),
            "merge request '12a' is not a number (CI_MERGE_REQUEST_IID)",
        ),
        (
            lambda: previews.preview_name("a" * 47, 12345),
            f"preview name '{'a' * 47}-mr-12345' is not a DNS-1123 label of at most 53 characters; "
            "shorten the location",
        ),
    ],
)
def test_a_refused_change_is_one_line(change, message):
    with pytest.raises(PreviewError) as refused:
        change()
    assert str(refused.value) == message and "\n" not in message


def test_an_environment_without_previews_is_refused_in_one_line():
    closed = needs("environment without previews", NO_PREVIEW).name
    with pytest.raises(PreviewError) as refused:
        previews.check_environment(closed)
    assert str(refused.value) == refused_in(closed)
    with_preview = previews.add_preview(BASE, "example-pipelines", 4, PORT)[0]
    with pytest.raises(PreviewError) as refused:
        previews.sync_registry(with_preview, REGISTRY, closed)
    assert str(refused.value) == (
        f"the {closed} workspace holds preview(s) example-pipelines-mr-4; previews never run in {closed}: "
        "remove them (helm uninstall, then `previews remove` with the --env they run in) before the upgrade"
    )


def test_a_registry_entry_colliding_with_a_live_preview_is_refused():
    ws = Workspace({"sales": Server("sales", PORT)}, {"x-mr-1": {"location": "x"}})
    with pytest.raises(PreviewError, match="registered location 'x-mr-1' ends like a preview"):
        previews.with_registry(ws, {"x-mr-1": Server("x-mr-1", PORT)})


# -- the cluster store, against a stub kubectl that behaves like the API server ----------------------------------
STUB_KUBECTL = '''\
#!{python}
"""kubectl stub: the ConfigMap in a JSON file with a resourceVersion counter; every call logged."""
import fcntl, json, os, sys, time
args = sys.argv[1:]
state_path, log_path = os.environ["STUB_STATE"], os.environ["STUB_LOG"]
lock = open(state_path + ".lock", "a")

def load():
    return json.load(open(state_path)) if os.path.exists(state_path) else {{"rv": 0, "object": None}}

def log(line):
    with open(log_path, "a") as f:
        f.write(f"{{os.getpid()}} {{line}}\\n")

i = args.index("--namespace")
ctx, ns, verb = args[args.index("--context") + 1], args[i + 1], args[i + 2:]
if verb[:2] == ["get", "configmap"]:
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = load()
    gets = int(open(state_path + ".gets").read()) + 1 if os.path.exists(state_path + ".gets") else 1
    # Replaced whole, never truncated in place: the barrier below reads it without the lock.
    with open(state_path + ".gets.tmp", "w") as out:
        out.write(str(gets))
    os.replace(state_path + ".gets.tmp", state_path + ".gets")
    fcntl.flock(lock, fcntl.LOCK_UN)
    # STUB_BARRIER=n: the first n reads return only once all n have read (the same resourceVersion): forced
    # interleaving, whatever the machine's load, instead of a sleep that hopes for it.
    barrier, deadline = int(os.environ.get("STUB_BARRIER", "0")), time.monotonic() + 60
    while gets <= barrier and time.monotonic() < deadline and int(open(state_path + ".gets").read()) < barrier:
        time.sleep(0.02)
    if state["object"] is None:
        log("get NotFound")
        sys.exit('Error from server (NotFound): configmaps "dagster-workspace" not found')
    log(f"get rv={{state['rv']}}")
    print(json.dumps(state["object"]))
    sys.exit(0)
if verb[:2] in (["create", "-f"], ["replace", "-f"]):
    obj = json.load(sys.stdin)
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = load()
    name = obj["metadata"]["name"]
    if verb[0] == "create" and state["object"] is not None:
        log("create AlreadyExists")
        sys.exit(f'Error from server (AlreadyExists): error when creating "STDIN": configmaps "{{name}}" exists')
    if verb[0] == "replace" and obj["metadata"].get("resourceVersion") != str(state["rv"]):
        log(f"replace Conflict at rv={{obj['metadata'].get('resourceVersion')}} (current {{state['rv']}})")
        sys.exit(
            f'Error from server (Conflict): error when replacing "STDIN": Operation cannot be fulfilled on '
            f'configmaps "{{name}}": the object has been modified; please apply your changes to the latest '
            'version and try again'
        )
    state["rv"] += 1
    obj["metadata"]["resourceVersion"] = str(state["rv"])
    state["object"] = obj
    json.dump(state, open(state_path + ".tmp", "w"))
    os.replace(state_path + ".tmp", state_path)
    log(f"{{verb[0]}} ok rv={{state['rv']}} ctx={{ctx}} ns={{ns}}")
    sys.exit(0)
sys.exit(f"stub kubectl: unexpected {{args}}")
'''


@pytest.fixture
def cluster(tmp_path):
    """(run the CLI as the jobs do -> CompletedProcess or Popen, the stored ConfigMap, the stub's call log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(STUB_KUBECTL.format(python=sys.executable))
    (bin_dir / "kubectl").chmod(0o755)
    state, log = tmp_path / "configmap.json", tmp_path / "kubectl.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env |= {"STUB_STATE": str(state), "STUB_LOG": str(log)}

    class Cluster:
        def cli(self, *args, barrier=0, background=False):
            command = [sys.executable, "-m", "dagster_platform.ci.previews", *args]
            kwargs = {"env": {**env, "STUB_BARRIER": str(barrier)}, "text": True}
            if background:
                return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
            return subprocess.run(command, capture_output=True, **kwargs)

        def configmap(self):
            return json.loads(state.read_text())["object"]

        def log(self):
            return log.read_text().splitlines() if log.exists() else []

    return Cluster()


@pytest.fixture
def open_env():
    """The environment previews run in (the first enabling previews.enabled)."""
    return needs("environment enabling previews (previews.enabled)", PREVIEW)


@pytest.fixture
def closed_env():
    """An environment that holds the registered locations alone (no previews.enabled), the strictest."""
    return needs("environment without previews", NO_PREVIEW)


def test_sync_creates_the_configmap_dagster_reads(cluster, open_env):
    done = cluster.cli(
        "sync", "--env", open_env.name, *kube(open_env), "--registry-json", registry_json(), "--max-per-location", "2"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "workspace: 2 registered location(s), 0 preview(s) kept\n"
    cm = cluster.configmap()
    assert cm["metadata"]["name"] == "dagster-workspace" and cm["metadata"]["namespace"] == open_env.namespace
    assert cm["metadata"]["annotations"][annotation("max-per-location")] == "2"
    assert json.loads(cm["data"]["workspace.yaml"]) == {
        "load_from": [{"grpc_server": {"host": name, "port": PORT, "location_name": name}} for name in sorted(REGISTRY)]
    }
    assert [line.split(" ", 1)[1] for line in cluster.log()] == [
        "get NotFound", f"create ok rv=1 ctx={open_env.kube_context} ns={open_env.namespace}"
    ]  # fmt: skip


def test_two_previews_and_a_platform_upgrade_at_the_same_moment_all_land(cluster, open_env):
    """Two preview jobs (different MRs) and the upgrade's sync read the same resourceVersion (the stub holds
    each read until all three have read), so two of the three `replace` calls are refused with 409; each
    re-reads and re-applies its own change: both previews and the new registry are in the ConfigMap."""
    where = ["--env", open_env.name, *kube(open_env)]
    assert cluster.cli("sync", *where, "--registry-json", registry_json()).returncode == 0
    new_registry = {**REGISTRY, "sales": Server("sales", PORT)}
    # barrier=4: reads 2-4 (the first was the sync above) wait for each other
    jobs = [
        cluster.cli("add", *where, "--location", "example-pipelines", "--mr", "17", "--port", str(PORT),
                    barrier=4, background=True),
        cluster.cli("add", *where, "--location", "platform-ops", "--mr", "3", "--port", str(PORT),
                    barrier=4, background=True),
        cluster.cli("sync", *where, "--registry-json", registry_json(new_registry), barrier=4, background=True),
    ]  # fmt: skip
    outputs = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], outputs
    assert outputs[0][0] == "registered preview example-pipelines-mr-17\n"
    assert outputs[1][0] == "registered preview platform-ops-mr-3\n"

    notes = cluster.configmap()["metadata"]["annotations"]
    assert sorted(json.loads(notes[annotation("registry")])) == ["example-pipelines", "platform-ops", "sales"]
    assert sorted(json.loads(notes[annotation("previews")])) == ["example-pipelines-mr-17", "platform-ops-mr-3"]
    workspace = json.loads(cluster.configmap()["data"]["workspace.yaml"])
    assert [e["grpc_server"]["location_name"] for e in workspace["load_from"]][:3] == [
        "example-pipelines", "platform-ops", "sales"
    ]  # fmt: skip
    log = [line.split(" ", 1)[1] for line in cluster.log()]
    conflicts = [line for line in log if line.startswith("replace Conflict")]
    assert conflicts[:2] == ["replace Conflict at rv=1 (current 2)"] * 2, log  # refused at the stale version...
    assert sum(line.startswith("replace ok") for line in log) == 3  # and each of the three wrote once


def test_add_prints_the_evicted_previews_for_the_job_to_uninstall(cluster, open_env):
    where = ["--env", open_env.name, *kube(open_env)]
    cluster.cli("sync", *where, "--registry-json", registry_json(), "--max-per-location", "1")
    add = ["add", *where, "--location", "example-pipelines", "--port", str(PORT)]
    assert cluster.cli(*add, "--mr", "1").returncode == 0
    done = cluster.cli(*add, "--mr", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["registered preview example-pipelines-mr-2", "evicted example-pipelines-mr-1"]
    assert cluster.cli("remove", *where, "--location", "example-pipelines",
                       "--mr", "1").stdout == "preview example-pipelines-mr-1 was not registered\n"  # fmt: skip


def test_sync_of_an_environment_without_previews_writes_the_registry_alone(cluster, closed_env):
    done = cluster.cli("sync", "--env", closed_env.name, *kube(closed_env), "--registry-json", registry_json())
    assert done.returncode == 0, done.stderr
    assert json.loads(cluster.configmap()["metadata"]["annotations"][annotation("previews")]) == {}


def _refusals(open_env, closed_env) -> dict[str, tuple[list[str], str]]:
    """name -> (CLI arguments, the one line on stderr)."""
    where = ["--env", open_env.name, *kube(open_env)]
    closed = ["--env", closed_env.name, *kube(open_env)] if closed_env else None
    port = ["--port", str(PORT)]
    refusals = {
        "required --registry-json": (["sync", *where], "previews: --registry-json is required for sync"),
        "registry not JSON": (
            ["sync", *where, "--registry-json", "[1]"], "previews: --registry-json is not {name: {host, port}} JSON"
        ),
        "unregistered location": (
            ["add", *where, "--location", "sales", "--mr", "1", *port],
            "previews: 'sales' is not a registered location (registered: example-pipelines, platform-ops); "
            "register it first",
        ),
        "no port": (
            ["add", *where, "--location", "example-pipelines", "--mr", "1"], "previews: --port is required for add"
        ),
        "no cluster": (
            ["show", "--env", open_env.name],
            "previews: give --context and --namespace (the cluster) or --workspace-file (local)",
        ),
    }  # fmt: skip
    if closed:
        refusals["add where previews never run"] = (
            ["add", *closed, "--location", "example-pipelines", "--mr", "1", *port],
            f"previews: {refused_in(closed_env.name)}",
        )
        refusals["remove where previews never run"] = (
            ["remove", *closed, "--location", "example-pipelines", "--mr", "1"],
            f"previews: {refused_in(closed_env.name)}",
        )
    return refusals


REFUSALS = [
    "required --registry-json", "registry not JSON", "unregistered location", "no port", "no cluster",
    "add where previews never run", "remove where previews never run",
]  # fmt: skip


@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_refusal_is_exit_2_and_one_line(cluster, open_env, refusal):
    refusals = _refusals(open_env, NO_PREVIEW)
    if refusal not in refusals:
        pytest.skip("no environment in platform/values/ is without previews")
    args, message = refusals[refusal]
    cluster.cli("sync", "--env", open_env.name, *kube(open_env), "--registry-json", registry_json())
    before = cluster.configmap()
    done = cluster.cli(*args)
    assert (done.returncode, done.stderr.splitlines(), done.stdout) == (2, [message], "")
    assert cluster.configmap() == before  # nothing written


def test_an_unknown_environment_is_refused_naming_the_declared_ones(cluster, open_env):
    unknown = "not-" + "-".join(env.name for env in ENVIRONMENTS)
    done = cluster.cli("sync", "--env", unknown, *kube(open_env), "--registry-json", registry_json())
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    prefix = f"previews: unknown environment {unknown!r}; one of "
    assert line.startswith(prefix), line
    assert sorted(line.removeprefix(prefix).split(", ")) == sorted([*(e.name for e in ENVIRONMENTS), "local"])


def test_a_sync_finding_a_preview_where_none_may_run_is_refused_and_writes_nothing(cluster, open_env, closed_env):
    """A preview in the workspace of an environment without previews means a guard was bypassed: the upgrade
    stops instead of keeping or dropping it. (The same ConfigMap stands in for both: what matters is what sync
    finds.)"""
    where = ["--env", open_env.name, *kube(open_env)]
    cluster.cli("sync", *where, "--registry-json", registry_json())
    cluster.cli("add", *where, "--location", "example-pipelines", "--mr", "8", "--port", str(PORT))
    before = cluster.configmap()
    done = cluster.cli("sync", "--env", closed_env.name, *kube(open_env), "--registry-json", registry_json())
    assert done.returncode == 2 and cluster.configmap() == before
    name = closed_env.name
    assert done.stderr.splitlines() == [
        f"previews: the {name} workspace holds preview(s) example-pipelines-mr-8; previews never run in {name}: "
        "remove them (helm uninstall, then `previews remove` with the --env they run in) before the upgrade"
    ]


def test_a_kubectl_failure_is_one_line(cluster, open_env, tmp_path):
    (tmp_path / "configmap.json").write_text("not json")  # the stub itself then dies with a traceback
    done = cluster.cli("show", "--env", open_env.name, *kube(open_env))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(
        "previews: kubectl get configmap dagster-workspace failed: json.decoder.JSONDecodeError"
    )
