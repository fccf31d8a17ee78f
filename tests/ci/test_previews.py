"""ci/previews.py, the registration of preview code locations: the pure changes (add, evict the oldest, re-add,
remove, collisions, the production guard, name length), and the cluster store against a stub `kubectl` that
keeps the ConfigMap the way the API server does (a resourceVersion per write, `replace` at a stale one refused
with Kubernetes' own 409 text): three writers started at once all land, through retried conflicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dagster_platform.ci import previews
from dagster_platform.ci.previews import PreviewError, Server, Workspace

REGISTRY = {"example-pipelines": Server("example-pipelines", 4000), "platform-ops": Server("platform-ops", 4000)}
BASE = Workspace(dict(REGISTRY))
CONTEXT = ["--context", "acme-acceptance", "--namespace", "dagster-acceptance"]


def registry_json(registry=REGISTRY) -> str:
    return json.dumps({n: {"host": s.host, "port": s.port} for n, s in registry.items()})


# -- the pure changes ------------------------------------------------------------------------------------------
def test_add_registers_the_preview_after_the_registered_locations():
    ws, evicted = previews.add_preview(BASE, "example-pipelines", 17, 4000, now=1.0)
    assert evicted == []
    assert ws.previews == {
        "example-pipelines-mr-17": {
            "location": "example-pipelines", "mr": 17, "host": "example-pipelines-mr-17", "port": 4000, "created": 1.0
        }
    }  # fmt: skip
    assert [e["grpc_server"]["location_name"] for e in json.loads(ws.text())["load_from"]] == [
        "example-pipelines", "platform-ops", "example-pipelines-mr-17"
    ]  # fmt: skip


def test_add_beyond_the_limit_evicts_the_oldest_of_that_location_only():
    ws = BASE
    for mr, now in ((1, 1.0), (2, 2.0)):
        ws, _ = previews.add_preview(ws, "example-pipelines", mr, 4000, max_per_location=2, now=now)
    ws, _ = previews.add_preview(ws, "platform-ops", 9, 4000, max_per_location=2, now=0.5)
    ws, evicted = previews.add_preview(ws, "example-pipelines", 3, 4000, max_per_location=2, now=3.0)
    assert evicted == ["example-pipelines-mr-1"]
    assert sorted(ws.previews) == ["example-pipelines-mr-2", "example-pipelines-mr-3", "platform-ops-mr-9"]


def test_the_limit_sync_stores_is_the_default_of_add():
    ws = previews.sync_registry(BASE, REGISTRY, "acceptance", limit=1)
    ws, _ = previews.add_preview(ws, "example-pipelines", 1, 4000, now=1.0)
    ws, evicted = previews.add_preview(ws, "example-pipelines", 2, 4000, now=2.0)
    assert ws.limit == 1 and evicted == ["example-pipelines-mr-1"]
    assert previews.sync_registry(ws, REGISTRY, "acceptance").limit == 1  # a sync without one keeps it


def test_re_adding_a_preview_keeps_its_place_and_evicts_nothing():
    ws, _ = previews.add_preview(BASE, "example-pipelines", 1, 4000, max_per_location=1, now=1.0)
    ws, evicted = previews.add_preview(ws, "example-pipelines", 1, 4001, max_per_location=1, now=5.0)
    assert evicted == [] and ws.previews["example-pipelines-mr-1"]["created"] == 1.0
    assert ws.previews["example-pipelines-mr-1"]["port"] == 4001


def test_removing_twice_is_not_an_error():
    ws, _ = previews.add_preview(BASE, "example-pipelines", 1, 4000, now=1.0)
    ws, removed = previews.remove_preview(ws, "example-pipelines-mr-1")
    assert removed and ws == BASE
    assert previews.remove_preview(ws, "example-pipelines-mr-1") == (BASE, False)


def test_the_registry_sync_keeps_the_previews():
    ws, _ = previews.add_preview(BASE, "example-pipelines", 1, 4000, now=1.0)
    new = {**REGISTRY, "sales": Server("sales", 4000)}
    synced = previews.sync_registry(ws, new, "acceptance")
    assert synced.registry == new and synced.previews == ws.previews


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda: previews.add_preview(BASE, "nope", 1, 4000),
            "'nope' is not a registered location (registered: example-pipelines, platform-ops); register it first",
        ),
        (
            lambda: previews.add_preview(
                Workspace({**REGISTRY, "example-pipelines-mr-1": Server("x", 4000)}), "example-pipelines", 1, 4000
            ),
            "preview 'example-pipelines-mr-1' collides with a registered location of that name",
        ),
        (
            lambda: previews.with_registry(BASE, {"sales-mr-2": Server("sales-mr-2", 4000)}),
            "registered location 'sales-mr-2' ends like a preview (-mr-<n>); rename it in the registry",
        ),
        (
            lambda: previews.remove_preview(BASE, "platform-ops"),
            "'platform-ops' is a registered location, not a preview; previews end in -mr-<iid>",
        ),
        (
            lambda: previews.add_preview(BASE, "example-pipelines", "12a", 4000),
            "merge request '12a' is not a number (CI_MERGE_REQUEST_IID)",
        ),
        (
            lambda: previews.preview_name("a" * 47, 12345),
            f"preview name '{'a' * 47}-mr-12345' is not a DNS-1123 label of at most 53 characters; "
            "shorten the location",
        ),
        (
            lambda: previews.check_environment("production"),
            "previews run only in acceptance or local, never in 'production': "
            "production holds the registered locations alone",
        ),
        (
            lambda: previews.sync_registry(
                previews.add_preview(BASE, "example-pipelines", 4, 4000)[0], REGISTRY, "production"
            ),
            "the production workspace holds preview(s) example-pipelines-mr-4; previews never run in production: "
            "remove them (helm uninstall, then `previews remove` in acceptance's tools) before the upgrade",
        ),
    ],
)
def test_a_refused_change_is_one_line(change, message):
    with pytest.raises(PreviewError) as refused:
        change()
    assert str(refused.value) == message and "\n" not in message


def test_a_registry_entry_colliding_with_a_live_preview_is_refused():
    ws = Workspace({"sales": Server("sales", 4000)}, {"x-mr-1": {"location": "x"}})
    with pytest.raises(PreviewError, match="registered location 'x-mr-1' ends like a preview"):
        previews.with_registry(ws, {"x-mr-1": Server("x-mr-1", 4000)})


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
    open(state_path + ".gets", "w").write(str(gets))
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


def test_sync_creates_the_configmap_dagster_reads(cluster):
    done = cluster.cli(
        "sync", "--env", "acceptance", *CONTEXT, "--registry-json", registry_json(), "--max-per-location", "2"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "workspace: 2 registered location(s), 0 preview(s) kept\n"
    cm = cluster.configmap()
    assert cm["metadata"]["name"] == "dagster-workspace" and cm["metadata"]["namespace"] == "dagster-acceptance"
    assert cm["metadata"]["annotations"]["platform.acme.io/max-per-location"] == "2"
    assert json.loads(cm["data"]["workspace.yaml"]) == {
        "load_from": [{"grpc_server": {"host": name, "port": 4000, "location_name": name}} for name in sorted(REGISTRY)]
    }
    assert [line.split(" ", 1)[1] for line in cluster.log()] == [
        "get NotFound", "create ok rv=1 ctx=acme-acceptance ns=dagster-acceptance"
    ]  # fmt: skip


def test_two_previews_and_a_platform_upgrade_at_the_same_moment_all_land(cluster):
    """Two preview jobs (different MRs) and the upgrade's sync read the same resourceVersion (the stub holds
    each read until all three have read), so two of the three `replace` calls are refused with 409; each
    re-reads and re-applies its own change: both previews and the new registry are in the ConfigMap."""
    assert cluster.cli("sync", "--env", "acceptance", *CONTEXT, "--registry-json", registry_json()).returncode == 0
    new_registry = {**REGISTRY, "sales": Server("sales", 4000)}
    # barrier=4: reads 2-4 (the first was the sync above) wait for each other
    jobs = [
        cluster.cli("add", "--env", "acceptance", *CONTEXT, "--location", "example-pipelines", "--mr", "17",
                    "--port", "4000", barrier=4, background=True),
        cluster.cli("add", "--env", "acceptance", *CONTEXT, "--location", "platform-ops", "--mr", "3",
                    "--port", "4000", barrier=4, background=True),
        cluster.cli("sync", "--env", "acceptance", *CONTEXT, "--registry-json", registry_json(new_registry),
                    barrier=4, background=True),
    ]  # fmt: skip
    outputs = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], outputs
    assert outputs[0][0] == "registered preview example-pipelines-mr-17\n"
    assert outputs[1][0] == "registered preview platform-ops-mr-3\n"

    notes = cluster.configmap()["metadata"]["annotations"]
    assert sorted(json.loads(notes["platform.acme.io/registry"])) == ["example-pipelines", "platform-ops", "sales"]
    assert sorted(json.loads(notes["platform.acme.io/previews"])) == ["example-pipelines-mr-17", "platform-ops-mr-3"]
    workspace = json.loads(cluster.configmap()["data"]["workspace.yaml"])
    assert [e["grpc_server"]["location_name"] for e in workspace["load_from"]][:3] == [
        "example-pipelines", "platform-ops", "sales"
    ]  # fmt: skip
    log = [line.split(" ", 1)[1] for line in cluster.log()]
    conflicts = [line for line in log if line.startswith("replace Conflict")]
    assert conflicts[:2] == ["replace Conflict at rv=1 (current 2)"] * 2, log  # refused at the stale version...
    assert sum(line.startswith("replace ok") for line in log) == 3  # and each of the three wrote once


def test_add_prints_the_evicted_previews_for_the_job_to_uninstall(cluster):
    cluster.cli("sync", "--env", "acceptance", *CONTEXT, "--registry-json", registry_json(), "--max-per-location", "1")
    add = ["add", "--env", "acceptance", *CONTEXT, "--location", "example-pipelines", "--port", "4000"]
    assert cluster.cli(*add, "--mr", "1").returncode == 0
    done = cluster.cli(*add, "--mr", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["registered preview example-pipelines-mr-2", "evicted example-pipelines-mr-1"]
    assert cluster.cli("remove", "--env", "acceptance", *CONTEXT, "--location", "example-pipelines",
                       "--mr", "1").stdout == "preview example-pipelines-mr-1 was not registered\n"  # fmt: skip


def test_production_sync_writes_the_registry_alone(cluster):
    prod = ["--context", "acme-production", "--namespace", "dagster-production"]
    done = cluster.cli("sync", "--env", "production", *prod, "--registry-json", registry_json())
    assert done.returncode == 0, done.stderr
    assert json.loads(cluster.configmap()["metadata"]["annotations"]["platform.acme.io/previews"]) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["add", "--env", "production", *CONTEXT, "--location", "example-pipelines", "--mr", "1", "--port", "4000"],
            "previews: previews run only in acceptance or local, never in 'production': "
            "production holds the registered locations alone",
        ),
        (
            ["remove", "--env", "production", *CONTEXT, "--location", "example-pipelines", "--mr", "1"],
            "previews: previews run only in acceptance or local, never in 'production': "
            "production holds the registered locations alone",
        ),
        (
            ["sync", "--env", "staging", *CONTEXT],
            "previews: unknown environment 'staging'; one of acceptance, local, production",
        ),
        (["sync", "--env", "acceptance", *CONTEXT], "previews: --registry-json is required for sync"),
        (
            ["sync", "--env", "acceptance", *CONTEXT, "--registry-json", "[1]"],
            "previews: --registry-json is not {name: {host, port}} JSON",
        ),
        (
            ["add", "--env", "acceptance", *CONTEXT, "--location", "sales", "--mr", "1", "--port", "4000"],
            "previews: 'sales' is not a registered location (registered: example-pipelines, platform-ops); "
            "register it first",
        ),
        (
            ["add", "--env", "acceptance", *CONTEXT, "--location", "example-pipelines", "--mr", "1"],
            "previews: --port is required for add",
        ),
        (
            ["show", "--env", "acceptance"],
            "previews: give --context and --namespace (the cluster) or --workspace-file (local)",
        ),
    ],
)
def test_a_refusal_is_exit_2_and_one_line(cluster, args, message):
    cluster.cli("sync", "--env", "acceptance", *CONTEXT, "--registry-json", registry_json())
    before = cluster.configmap()
    done = cluster.cli(*args)
    assert (done.returncode, done.stderr.splitlines(), done.stdout) == (2, [message], "")
    assert cluster.configmap() == before  # nothing written


def test_production_sync_with_a_preview_in_it_is_refused_and_writes_nothing(cluster):
    """A preview in production means a guard was bypassed: the upgrade stops instead of keeping or dropping it."""
    cluster.cli("sync", "--env", "acceptance", *CONTEXT, "--registry-json", registry_json())
    cluster.cli(
        "add", "--env", "acceptance", *CONTEXT, "--location", "example-pipelines", "--mr", "8", "--port", "4000"
    )
    before = cluster.configmap()
    done = cluster.cli("sync", "--env", "production", *CONTEXT, "--registry-json", registry_json())
    assert done.returncode == 2 and cluster.configmap() == before
    assert done.stderr.splitlines() == [
        "previews: the production workspace holds preview(s) example-pipelines-mr-8; previews never run in "
        "production: remove them (helm uninstall, then `previews remove` in acceptance's tools) before the upgrade"
    ]


def test_a_kubectl_failure_is_one_line(cluster, tmp_path):
    (tmp_path / "configmap.json").write_text("not json")  # the stub itself then dies with a traceback
    done = cluster.cli("show", "--env", "acceptance", *CONTEXT)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(
        "previews: kubectl get configmap dagster-workspace failed: json.decoder.JSONDecodeError"
    )
