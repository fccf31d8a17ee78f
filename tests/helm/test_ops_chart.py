"""The platform's operations location on the cluster: deployed by the platform release (user-deployments subchart),
its environment, the daemon's liveness probe and the heartbeat-check CronJob, and their guardrails."""

from __future__ import annotations

import pytest

from dagster_platform.helm import policies as hp
from dagster_platform.helm import registry
from dagster_platform.helm import values as helm_values

from .helpers import ENVS, objects_of, with_chart_defaults

OPS = "platform-ops"
OPS_ENTRY = next(loc for loc in helm_values.load_code_locations() if loc["name"] == OPS)


def ops_deployment(values):
    return values["dagster"]["dagster-user-deployments"]["deployments"][0]


@pytest.mark.parametrize("env", ENVS)
def test_ops_environment_configmap_is_the_one_the_deployment_reads(rendered, env_values, env):
    values = env_values[env]
    config_map = objects_of(rendered[env], "ConfigMap")["dagster-platform-ops-env"]
    assert config_map["data"] == {
        "PLATFORM_ENV": env,
        "PLATFORM_UI_URL": f"https://{values['ingress']['admin']['host']}",
        "PLATFORM_RETENTION_DAYS": str(with_chart_defaults(values)["ops"]["retentionDays"]),
    }
    assert ops_deployment(values)["envConfigMaps"] == [{"name": "dagster-platform-ops-env"}]
    # Runs of the ops location (retention, canary) get the same environment as its code server.
    assert ops_deployment(values)["includeConfigInLaunchedRuns"] == {"enabled": True}


@pytest.mark.parametrize("env", ENVS)
def test_heartbeat_check_cronjob_runs_the_ops_image_against_the_clusters_instance(rendered, env_values, env):
    values = env_values[env]
    ops = ops_deployment(values)
    cron = objects_of(rendered[env], "CronJob")["dagster-daemon-heartbeat-check"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"{ops['image']['repository']}:"  # tag given at upgrade
    assert container["command"] == ["python", "-m", "platform_ops.heartbeat"]
    env_vars = {e["name"]: e for e in container["env"]}
    # The same tolerance the daemon's own watchdog and its liveness probe use: one number, stated once.
    assert env_vars["DAGSTER_DAEMON_HEARTBEAT_TOLERANCE"]["value"] == "300"
    assert values["dagster"]["dagsterDaemon"]["heartbeatTolerance"] == 300
    assert env_vars["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": values["global"]["postgresqlSecretName"],
        "key": "postgresql-password",
    }
    assert container["envFrom"] == [
        {"configMapRef": {"name": "dagster-platform-ops-env"}},
        {"secretRef": {"name": ops["envSecrets"][0]["name"]}},
    ]
    # The official chart's instance ConfigMap (the one helm/instance.py derives and the daemon mounts).
    assert pod["volumes"] == [{"name": "dagster-instance", "configMap": {"name": "dagster-instance"}}]
    assert container["volumeMounts"][0]["mountPath"] == "/opt/dagster/dagster_home/dagster.yaml"
    assert pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("env", ENVS)
def test_only_the_ops_pods_reach_the_alert_webhook(rendered, env_values, env):
    policies = objects_of(rendered[env], "NetworkPolicy")
    webhook = {
        "to": [{"ipBlock": {"cidr": c}} for c in env_values[env]["ops"]["alertWebhook"]["cidrs"]],
        "ports": [{"protocol": "TCP", "port": 443}],
    }
    code_server = policies["dagster-ops-to-alert-webhook"]["spec"]
    assert code_server["podSelector"] == {"matchLabels": {"component": "user-deployments", "deployment": OPS}}
    assert code_server["egress"] == [webhook]
    cron = objects_of(rendered[env], "CronJob")["dagster-daemon-heartbeat-check"]["spec"]["jobTemplate"]
    check = policies["dagster-heartbeat-check-to-postgres-and-webhook"]["spec"]
    assert check["podSelector"] == {"matchLabels": cron["spec"]["template"]["metadata"]["labels"]}
    assert check["egress"] == [policies["dagster-core-to-postgres"]["spec"]["egress"][0], webhook]
    # The ops code server is a registered location: webserver, daemon and runs may dial it.
    assert f"dagster-code-server-{OPS}" in policies


def test_ops_location_is_registered_and_deployed_as_registered(env_values):
    entry = next(loc for loc in helm_values.load_code_locations() if loc["name"] == OPS)
    for env in ENVS:
        ops = ops_deployment(env_values[env])
        assert ops["image"]["repository"] == registry.location_image(entry)
        assert ops["dagsterApiGrpcArgs"] == ["-m", entry["module"]]
        assert ops["port"] == entry["port"]
        assert registry.check_ops_deployment(env_values[env], helm_values.load_code_locations(), env) == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda v: v["dagster"]["dagster-user-deployments"]["deployments"].append({"name": "sales-pipelines"}),
            "dagster.dagster-user-deployments.deployments: the platform release deploys only platform-ops; user code "
            "is its own release (found ['platform-ops', 'sales-pipelines'])",
        ),
        (
            lambda v: ops_deployment(v).update(port=OPS_ENTRY["port"] + 1),
            f"dagster.dagster-user-deployments.deployments[0].port is {OPS_ENTRY['port'] + 1}; "
            f"the registry says {OPS_ENTRY['port']}",
        ),
        (
            lambda v: ops_deployment(v).update(dagsterApiGrpcArgs=["-m", "platform_ops.defs"]),
            "dagster.dagster-user-deployments.deployments[0].dagsterApiGrpcArgs is ['-m', 'platform_ops.defs']; "
            f"the registry says ['-m', {OPS_ENTRY['module']!r}]",
        ),
    ],
    ids=["second-deployment", "port", "module"],
)
@pytest.mark.parametrize("env", ENVS)
def test_ops_deployment_that_drifts_from_the_registry_is_one_line(values_of, env, edit, message):
    values = values_of(env)
    edit(values)
    found = registry.check_ops_deployment(values, helm_values.load_code_locations(), f"{env} values")
    assert [str(v) for v in found] == [f"[ops-location] {env} values: {message}"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d.pop("livenessProbe"),
            "dagster.dagsterDaemon.livenessProbe.exec.command must be [dagster-daemon, liveness-check] "
            "(a dead or hung daemon is then restarted)",
        ),
        (
            lambda d: d.update(heartbeatTolerance=1800),
            "dagster.dagsterDaemon.heartbeatTolerance is 1800; set seconds in 60..600",
        ),
        (
            lambda d: d.update(heartbeatTolerance="300"),
            "dagster.dagsterDaemon.heartbeatTolerance is '300'; set seconds in 60..600",
        ),
    ],
    ids=["no-probe", "chart-default-tolerance", "string"],
)
@pytest.mark.parametrize("env", ENVS)
def test_daemon_without_liveness_is_one_line(values_of, env, edit, message):
    values = values_of(env)
    edit(values["dagster"]["dagsterDaemon"])
    found = hp.check_daemon_liveness(values, f"{env} values")
    assert [str(v) for v in found] == [f"[daemon-liveness] {env} values: {message}"]


def test_committed_daemon_probe_is_dagsters_own_liveness_check(env_values):
    for env in ENVS:
        daemon = env_values[env]["dagster"]["dagsterDaemon"]
        assert daemon["livenessProbe"]["exec"]["command"] == ["dagster-daemon", "liveness-check"]
        assert hp.check_daemon_liveness(env_values[env], env) == []


@pytest.mark.parametrize("env", ENVS)
def test_a_tagless_image_passes_only_for_the_ops_deployment(values_of, env):
    values = values_of(env)
    assert hp.check_value_images(values, "v") == []  # the ops tag is given at upgrade
    values["dagster"]["dagsterDaemon"]["image"]["tag"] = ""
    assert [v.message for v in hp.check_value_images(values, "v")] == [
        f"dagster.dagsterDaemon.image ({values['dagster']['dagsterDaemon']['image']['repository']}) has no tag"
    ]
    ops_deployment(values)["image"]["tag"] = "latest"
    assert "uses the `latest` tag" in " ".join(v.message for v in hp.check_value_images(values, "v"))


def test_platform_pipeline_builds_scans_and_deploys_the_image_the_values_name(env_values):
    from dagster_platform.ci.config import flatten, load_pipeline
    from dagster_platform.paths import ROOT

    pipeline = load_pipeline(ROOT / ".gitlab-ci.yml")
    jobs = pipeline.jobs()
    image = pipeline.config["variables"]["OPS_IMAGE"]
    for env in ENVS:
        assert image == f"{ops_deployment(env_values[env])['image']['repository']}:$CI_COMMIT_SHA"
    build = " ".join(flatten(jobs["build-ops"]["script"]))
    assert '--file platform/ops/Dockerfile --tag "$OPS_IMAGE"' in build and "push" in build
    assert jobs["container_scanning"]["variables"]["CS_IMAGE"] == "$OPS_IMAGE"
    for env in ENVS:
        script = flatten(jobs[f"upgrade-{env}"]["script"])
        assert script == ['make platform-upgrade ENV="$ENV" OPS_IMAGE_TAG="$CI_COMMIT_SHA"']
