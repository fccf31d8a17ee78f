"""Every environment shares base.yaml and differs only where it must; none names another's namespace, kube context,
database, secrets or hosts; the upgrade refuses any cluster but the environment's own. Over every declared
environment and every pair of them (platform/values/), whatever they are called."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from dagster_platform.cli import main
from dagster_platform.helm import checks
from dagster_platform.helm import separation as hs
from dagster_platform.helm import upgrade as helm_upgrade
from dagster_platform.helm import values as helm_values
from dagster_platform.platform_config import get_path

from .helpers import ENVIRONMENTS, ENVS, PAIRS, declared, edit_yaml, env_file, objects_of, set_in


@pytest.mark.parametrize("env", ENVS)
def test_environments_are_separated(env_values, rendered, env):
    found = hs.check_environment_separation(env, env_values[env], hs.other_env_files(env), rendered[env])
    assert [str(v) for v in found] == []


@pytest.mark.parametrize(("env", "other"), PAIRS)
def test_environments_differ_in_identity(env, other):
    mine, theirs = (set(hs.identity_markers(declared(name).values)) for name in (env, other))
    assert mine, f"platform/values/{env}.yaml names nothing of its own (namespace, context, hosts, secrets)"
    assert mine.isdisjoint(theirs), f"{env} and {other} share {sorted(mine & theirs)}; give each its own"


@pytest.mark.parametrize("env", ENVS)
def test_environment_file_only_holds_what_differs(env):
    own = helm_values.load_yaml(env_file(helm_values.VALUES_DIR, env))
    allowed = {"global", "environment", "postgresPassword", "objectStore", "ingress", "networkPolicy", "ops",
               "previews", "dagster"}  # fmt: skip
    assert set(own) <= allowed
    assert set(own.get("dagster") or {}) <= {"dagsterWebserver", "postgresql", "computeLogManager"}


def test_base_holds_nothing_of_one_environment():
    base = helm_values.load_yaml(helm_values.VALUES_DIR / "base.yaml")
    assert not set(base) & {"environment", "global", "postgresPassword", "ingress"}


# (the key of this environment's values that gets the leak, the key of the other environment's file it copies)
LEAKS = [
    ("dagster.postgresql.postgresqlHost", "dagster.postgresql.postgresqlHost"),
    ("global.postgresqlSecretName", "global.postgresqlSecretName"),
    ("environment.namespace", "environment.namespace"),
    ("environment.kubeContext", "environment.kubeContext"),
    ("networkPolicy.postgres.cidrs", "networkPolicy.postgres.cidrs"),
    ("dagster.postgresql.postgresqlDatabase", "dagster.postgresql.postgresqlDatabase"),
    ("ingress.readOnly.host", "ingress.admin.host"),
    ("dagster.dagsterWebserver.env", "dagster.postgresql.postgresqlHost"),  # in an environment variable
]


def as_written(target, value):
    """The other environment's `value` as it would be written at `target`."""
    if target.endswith(".cidrs"):
        return value[:1]
    if target.endswith(".env"):
        return [{"name": "DB", "value": value}]
    return value


LEAK_CASES = [
    pytest.param(env, other, tuple(target.split(".")), as_written(target, value), id=f"{env}-{target}-of-{other}")
    for env, other in PAIRS
    for target, source in LEAKS
    if (value := get_path(declared(other).values, source))
]


@pytest.mark.parametrize(("env", "other", "path", "leak"), LEAK_CASES)
def test_a_value_pointing_at_another_environment_fails(values_of, env, other, path, leak):
    values = values_of(env)
    set_in(path, leak)(values)
    found = hs.check_environment_separation(env, values, hs.other_env_files(env))
    assert {v.rule for v in found} == {"environment-separation"}
    assert len(found) == 1 and f"names {other} (" in str(found[0]), [str(v) for v in found]


@pytest.mark.parametrize(("env", "other"), PAIRS)
def test_a_rendered_object_in_another_environments_namespace_fails(rendered, env, other):
    objects = copy.deepcopy(rendered[env])
    deny = objects_of(objects, "NetworkPolicy")["dagster-default-deny"]
    deny["metadata"]["namespace"] = declared(other).namespace
    found = hs.check_environment_separation(env, {}, hs.other_env_files(env), objects)
    assert len(found) == 1 and found[0].where.startswith("NetworkPolicy/dagster-default-deny")
    assert f"metadata.namespace: {declared(other).namespace!r} names {other} (" in str(found[0])


def test_values_naming_another_environment_as_their_own_fail():
    found = hs.check_environment_separation("blue", {"environment": {"name": "green"}}, {})
    assert [str(v) for v in found] == ["[environment-separation] values: environment.name is 'green'; set it to blue"]


# A secret store, key path or secret name of another environment: its name in it, or its own store by name.
SECRET_PATHS = (
    "objectStore.credentialsSecretName",
    "global.postgresqlSecretName",
    "postgresPassword.externalSecret.secretStoreRef.name",
    "postgresPassword.externalSecret.remoteRef.key",
    "ingress.admin.tlsSecretName",
)
SECRET_CASES = [
    *(
        pytest.param(env, dotted, f"copied-from-{other}", other, id=f"{env}-{dotted}-names-{other}")
        for env, other in PAIRS
        for dotted in SECRET_PATHS
        if get_path(declared(env).values, dotted)
    ),
    *(
        pytest.param(env, "objectStore.credentialsSecretName", store, other, id=f"{env}-credentials-are-{other}s-store")
        for env, other in PAIRS
        if get_path(declared(env).values, "objectStore.credentialsSecretName")
        and (store := get_path(declared(other).values, "postgresPassword.externalSecret.secretStoreRef.name"))
    ),
]


@pytest.mark.parametrize(("env", "dotted", "leak", "other"), SECRET_CASES)
def test_a_secret_naming_another_environment_fails_in_one_line(values_dir, env, dotted, leak, other):
    edit_yaml(env_file(values_dir, env), set_in(tuple(dotted.split(".")), leak))
    found = [str(v) for v in checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))]
    assert len(found) == 1, found
    assert found[0].startswith(
        f"[environment-separation] platform/values/{env}.yaml: {dotted}: {leak!r} names {other} ("
    ) and found[0].endswith(f"; name {env}'s own instead"), found[0]


# -- the upgrade guard --------------------------------------------------------------------------
CI_AGENT = "ci-agent:read-only"  # a context that is no environment's (CI diffs through read-only agents)


def kubeconfig(tmp_path, current, namespaces=None):
    """A kubeconfig with every environment's context (in its namespace, unless `namespaces` says otherwise:
    {context: namespace}), whose current context is `current`."""
    namespaces = namespaces or {}
    contexts = [
        {"name": env.kube_context,
         "context": {"cluster": env.name, "user": "ci", "namespace": namespaces.get(env.kube_context, env.namespace)}}
        for env in ENVIRONMENTS
    ]  # fmt: skip
    path = tmp_path / "kubeconfig"
    config = {"apiVersion": "v1", "kind": "Config", "current-context": current, "contexts": contexts}
    path.write_text(yaml.safe_dump({**config, "clusters": [], "users": []}, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("env", ENVS)
def test_guard_accepts_the_environments_own_context(tmp_path, env):
    own = declared(env)
    assert helm_upgrade.guard(env, kubeconfig=kubeconfig(tmp_path, own.kube_context)) == (
        own.kube_context,
        own.namespace,
    )


@pytest.mark.parametrize(("env", "other"), PAIRS)
def test_guard_refuses_another_environments_context(tmp_path, env, other):
    theirs = declared(other).kube_context
    message = f"the current kube context '{theirs}' is {other}'s; refusing to use it for {env}"
    for read_only in (False, True):
        with pytest.raises(helm_upgrade.GuardError, match=re.escape(message)):
            helm_upgrade.guard(env, kubeconfig=kubeconfig(tmp_path, theirs), read_only=read_only)


@pytest.mark.parametrize(("env", "other"), PAIRS)
def test_guard_refuses_another_environments_namespace_given_or_from_the_context(tmp_path, env, other):
    own, theirs = declared(env), declared(other).namespace
    message = re.escape(f"namespace '{theirs}' is {other}'s; refusing to use it for {env}")
    with pytest.raises(helm_upgrade.GuardError, match=message):
        helm_upgrade.guard(env, namespace=theirs, kubeconfig=kubeconfig(tmp_path, own.kube_context))
    in_theirs = kubeconfig(tmp_path, own.kube_context, namespaces={own.kube_context: theirs})
    with pytest.raises(helm_upgrade.GuardError, match=message):
        helm_upgrade.guard(env, kubeconfig=in_theirs)


@pytest.mark.parametrize("env", ENVS)
def test_guard_refuses_a_namespace_that_is_not_the_environments(tmp_path, env):
    own = declared(env)
    with pytest.raises(helm_upgrade.GuardError, match=re.escape(f"namespace 'default' is not {env}'s namespace")):
        helm_upgrade.guard(env, namespace="default", kubeconfig=kubeconfig(tmp_path, own.kube_context))


@pytest.mark.parametrize("env", ENVS)
def test_upgrade_needs_the_environments_own_context_a_diff_any_but_anothers(tmp_path, env):
    own = declared(env)
    agent = kubeconfig(tmp_path, CI_AGENT)
    assert helm_upgrade.guard(env, kubeconfig=agent, read_only=True) == (CI_AGENT, own.namespace)
    with pytest.raises(helm_upgrade.GuardError, match=re.escape(f"but {env} lives in '{own.kube_context}'")):
        helm_upgrade.guard(env, kubeconfig=agent)


@pytest.mark.parametrize(("env", "other"), PAIRS)
@pytest.mark.parametrize("command", ["upgrade", "diff"])
def test_upgrade_and_diff_refuse_another_environments_context_before_anything(tmp_path, capsys, command, env, other):
    theirs = declared(other).kube_context
    assert main(["platform", command, "--env", env, "--kubeconfig", kubeconfig(tmp_path, theirs)]) == 2
    assert capsys.readouterr().err == (
        f"refusing: the current kube context '{theirs}' is {other}'s; refusing to use it for {env}\n"
    )


@pytest.mark.parametrize("env", ENVS)
def test_upgrade_refuses_without_a_kube_context(tmp_path, capsys, env):
    code = main(["platform", "upgrade", "--env", env, "--kubeconfig", str(tmp_path / "none")])
    assert code == 2
    assert "no current kube context" in capsys.readouterr().err


@pytest.mark.parametrize("env", ENVS)
def test_upgrade_plan_is_atomic_and_migrates_on_a_minor_upgrade(tmp_path, env):
    own = declared(env)
    files = [tmp_path / "v.yaml"]
    where = {"context": own.kube_context, "namespace": own.namespace}
    plan = [cmd for _, cmd in helm_upgrade.upgrade_steps(env, **where, value_files=files, migrate=True)]
    sync, upgrade = plan[:2]  # the registry into the workspace ConfigMap first (tests/helm/test_upgrade.py)
    assert sync[1:4] == ["-m", "dagster_platform.ci.previews", "sync"] and sync[sync.index("--env") + 1] == env
    assert upgrade[:4] == ["helm", "upgrade", "--install", "dagster"]
    assert {"--atomic", "--wait"} <= set(upgrade) and upgrade[upgrade.index("--timeout") + 1]
    assert upgrade[upgrade.index("--kube-context") + 1] == own.kube_context
    assert upgrade[upgrade.index("--namespace") + 1] == own.namespace
    text = "\n".join(" ".join(cmd) for cmd in plan)
    assert "scale deployment --replicas=0" in text
    assert "dagster.migrate.enabled=true" in text and "job-instance-migrate.yaml" in text
    assert "wait --for=condition=complete job/dagster-dagster-webserver-instance-migrate" in text
    # The webservers come back with the replicas the environment asks for.
    replicas = helm_values.environment_values(env)["dagster"]["dagsterWebserver"].get("replicaCount", 1)
    (scale_up,) = [cmd for cmd in plan if "scale" in cmd and "--replicas=0" not in cmd and "daemon" not in cmd[-1]]
    assert f"--replicas={replicas}" in scale_up


@pytest.mark.parametrize(
    ("deployed", "new", "migrate"),
    [("1.12.9", "1.13.27", True), ("1.13.1", "1.13.27", False), (None, "1.13.27", False), ("2.0.0", "1.13.27", True)],
)
def test_migration_only_for_minor_version_changes(deployed, new, migrate):
    assert helm_upgrade.needs_migration(deployed, new) is migrate


@pytest.mark.parametrize("env", ENVS)
def test_no_migration_step_for_a_patch_upgrade(env):
    own = declared(env)
    where = {"context": own.kube_context, "namespace": own.namespace}
    plan = [cmd for _, cmd in helm_upgrade.upgrade_steps(env, **where, value_files=[], migrate=False)]
    assert len(plan) == 2 and plan[0][3] == "sync" and plan[1][1] == "upgrade"
