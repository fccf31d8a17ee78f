"""Acceptance and production share base.yaml and differ only where they must; neither names the
other's namespace, kube context, database, secrets or hosts; the upgrade refuses the wrong cluster."""

from __future__ import annotations

import pytest

from dagster_platform.cli import main
from dagster_platform.helm import checks
from dagster_platform.helm import separation as hs
from dagster_platform.helm import upgrade as helm_upgrade
from dagster_platform.helm import values as helm_values

from .helpers import ENVS, edit_yaml, set_in

OTHER = {"acceptance": "production", "production": "acceptance"}


def other_env_files(env, values_dir=None):
    values_dir = values_dir or helm_values.VALUES_DIR
    return {OTHER[env]: helm_values.load_yaml(values_dir / f"{OTHER[env]}.yaml")}


@pytest.mark.parametrize("env", ENVS)
def test_environments_are_separated(env_values, rendered, env):
    found = hs.check_environment_separation(env, env_values[env], other_env_files(env), rendered[env])
    assert [str(v) for v in found] == []


def test_environments_differ_in_identity():
    markers = {
        env: set(hs.identity_markers(helm_values.load_yaml(helm_values.VALUES_DIR / f"{env}.yaml"))) for env in ENVS
    }
    assert markers["acceptance"] and markers["production"]
    assert markers["acceptance"].isdisjoint(markers["production"])


def test_environment_files_only_hold_what_differs():
    base = helm_values.load_yaml(helm_values.VALUES_DIR / "base.yaml")
    for env in ENVS:
        own = helm_values.load_yaml(helm_values.VALUES_DIR / f"{env}.yaml")
        assert set(own) <= {
            "global",
            "environment",
            "postgresPassword",
            "objectStore",
            "ingress",
            "networkPolicy",
            "ops",
            "previews",
            "dagster",
        }
        assert set(own["dagster"]) <= {"dagsterWebserver", "postgresql", "computeLogManager"}
        assert not set(base) & {"environment", "global", "postgresPassword", "ingress"}


@pytest.mark.parametrize(
    ("env", "path", "leak"),
    [
        ("acceptance", ("dagster", "postgresql", "postgresqlHost"), "pg-production.db.acme.internal"),
        ("acceptance", ("global", "postgresqlSecretName"), "dagster-production-postgresql"),
        ("acceptance", ("environment", "namespace"), "dagster-production"),
        ("acceptance", ("networkPolicy", "postgres", "cidrs"), ["10.30.8.0/24"]),
        ("production", ("dagster", "postgresql", "postgresqlDatabase"), "dagster_acceptance"),
        ("production", ("environment", "kubeContext"), "acme-acceptance"),
        ("production", ("ingress", "readOnly", "host"), "dagster.acceptance.acme.internal"),
        (
            "production",
            ("dagster", "dagsterWebserver", "env"),
            [{"name": "DB", "value": "pg-acceptance.db.acme.internal"}],
        ),
    ],
)
def test_value_pointing_at_the_other_environment_fails(values_of, env, path, leak):
    values = values_of(env)
    node = values
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = leak
    found = hs.check_environment_separation(env, values, other_env_files(env))
    assert {v.rule for v in found} == {"environment-separation"}
    assert len(found) == 1 and f"names {OTHER[env]} (" in str(found[0])


def test_rendered_object_naming_the_other_environment_fails(rendered):
    import copy

    objects = copy.deepcopy(rendered["acceptance"])
    ingress = next(o for o in objects if o["kind"] == "Ingress")
    ingress["spec"]["rules"][0]["host"] = "dagster-admin.acme.com"
    found = hs.check_environment_separation("acceptance", {}, other_env_files("acceptance"), objects)
    assert "Ingress/dagster-webserver-admin" in "\n".join(map(str, found))


def test_environment_name_must_match_the_file(values_dir):
    edit_yaml(values_dir / "acceptance.yaml", lambda d: d["environment"].update({"name": "production"}))
    values = helm_values.merge_layers(helm_values.values_layers("acceptance", values_dir=values_dir))
    found = hs.check_environment_separation("acceptance", values, other_env_files("acceptance"))
    assert [str(v) for v in found] == [
        "[environment-separation] values: environment.name is 'production'; set it to acceptance"
    ]


_EXTERNAL = ("postgresPassword", "externalSecret")


@pytest.mark.parametrize(
    ("env", "path", "leak", "marker"),
    [
        (
            "acceptance",
            (*_EXTERNAL, "secretStoreRef", "name"),
            "vault-production",
            "'production', its environment.name",
        ),
        (
            "acceptance",
            (*_EXTERNAL, "remoteRef", "key"),
            "dagster/production/postgres",
            "'production', its environment.name",
        ),
        (
            "acceptance",
            ("objectStore", "credentialsSecretName"),
            "prod-creds-production",
            "'production', its environment.name",
        ),
        (
            "production",
            ("objectStore", "credentialsSecretName"),
            "vault-acceptance",
            "'vault-acceptance', its postgresPassword.externalSecret.secretStoreRef.name",
        ),
    ],
)
def test_value_naming_the_other_environments_secret_store_key_or_secret_fails_in_one_line(
    values_dir, env, path, leak, marker
):
    edit_yaml(values_dir / f"{env}.yaml", set_in(path, leak))
    found = checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))
    assert [str(v) for v in found] == [
        f"[environment-separation] platform/values/{env}.yaml: {'.'.join(path)}: {leak!r} names {OTHER[env]} "
        f"({marker}); name {env}'s own instead"
    ]


# -- the upgrade guard --------------------------------------------------------------------------
KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: {current}
contexts:
  - name: acme-acceptance
    context: {{cluster: acceptance, user: ci, namespace: {acc_ns}}}
  - name: acme-production
    context: {{cluster: production, user: ci, namespace: dagster-production}}
clusters: []
users: []
"""


def kubeconfig(tmp_path, current, acc_ns="dagster-acceptance"):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(current=current, acc_ns=acc_ns))
    return str(path)


def test_guard_accepts_the_environments_own_context(tmp_path):
    assert helm_upgrade.guard("acceptance", kubeconfig=kubeconfig(tmp_path, "acme-acceptance")) == (
        "acme-acceptance",
        "dagster-acceptance",
    )


@pytest.mark.parametrize(
    ("env", "current", "namespace", "acc_ns", "message"),
    [
        ("production", "acme-acceptance", None, "dagster-acceptance", "'acme-acceptance' is acceptance's"),
        ("acceptance", "acme-production", None, "dagster-acceptance", "'acme-production' is production's"),
        ("acceptance", "ci-agent:other", None, "dagster-acceptance", "but acceptance lives in 'acme-acceptance'"),
        ("acceptance", "acme-acceptance", "dagster-production", "dagster-acceptance", "is production's"),
        ("acceptance", "acme-acceptance", None, "dagster-production", "is production's"),
        ("acceptance", "acme-acceptance", "default", "dagster-acceptance", "is not acceptance's namespace"),
    ],
)
def test_guard_refuses_another_environments_context_or_namespace(tmp_path, env, current, namespace, acc_ns, message):
    with pytest.raises(helm_upgrade.GuardError, match=message):
        helm_upgrade.guard(env, namespace=namespace, kubeconfig=kubeconfig(tmp_path, current, acc_ns))


def test_upgrade_command_refuses_before_touching_anything(tmp_path, capsys):
    code = main(["platform", "upgrade", "--env", "production", "--kubeconfig", kubeconfig(tmp_path, "acme-acceptance")])
    assert code == 2
    assert "refusing: the current kube context 'acme-acceptance' is acceptance's" in capsys.readouterr().err


def test_read_only_diff_accepts_a_ci_agent_context_but_never_the_other_environments(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(current="acme-production", acc_ns="x").replace("acme-production\n", "ci:ro\n", 1))
    assert helm_upgrade.guard("acceptance", kubeconfig=str(path), read_only=True) == ("ci:ro", "dagster-acceptance")
    with pytest.raises(helm_upgrade.GuardError, match="but acceptance lives in"):
        helm_upgrade.guard("acceptance", kubeconfig=str(path))
    with pytest.raises(helm_upgrade.GuardError, match="is production's"):
        helm_upgrade.guard("acceptance", kubeconfig=kubeconfig(tmp_path, "acme-production"), read_only=True)


def test_diff_refuses_the_other_environments_context(tmp_path, capsys):
    code = main(["platform", "diff", "--env", "acceptance", "--kubeconfig", kubeconfig(tmp_path, "acme-production")])
    assert code == 2
    assert "is production's" in capsys.readouterr().err


def test_upgrade_refuses_without_a_kube_context(tmp_path, capsys):
    code = main(["platform", "upgrade", "--env", "acceptance", "--kubeconfig", str(tmp_path / "none")])
    assert code == 2
    assert "no current kube context" in capsys.readouterr().err


def test_upgrade_plan_is_atomic_and_migrates_on_a_minor_upgrade(tmp_path):
    files = [tmp_path / "v.yaml"]
    plan = [
        cmd
        for _, cmd in helm_upgrade.upgrade_steps(
            "production", context="acme-production", namespace="dagster-production", value_files=files, migrate=True
        )
    ]
    sync, upgrade = plan[:2]  # the registry into the workspace ConfigMap first (tests/helm/test_upgrade.py)
    assert sync[1:4] == ["-m", "dagster_platform.ci.previews", "sync"] and "production" in sync
    assert upgrade[:4] == ["helm", "upgrade", "--install", "dagster"]
    assert {"--atomic", "--wait"} <= set(upgrade) and upgrade[upgrade.index("--timeout") + 1]
    assert upgrade[upgrade.index("--kube-context") + 1] == "acme-production"
    assert upgrade[upgrade.index("--namespace") + 1] == "dagster-production"
    text = "\n".join(" ".join(cmd) for cmd in plan)
    assert "scale deployment --replicas=0" in text
    assert "dagster.migrate.enabled=true" in text and "job-instance-migrate.yaml" in text
    assert "wait --for=condition=complete job/dagster-dagster-webserver-instance-migrate" in text
    # replicas restored to what production asks for
    assert "--replicas=2" in text


@pytest.mark.parametrize(
    ("deployed", "new", "migrate"),
    [("1.12.9", "1.13.27", True), ("1.13.1", "1.13.27", False), (None, "1.13.27", False), ("2.0.0", "1.13.27", True)],
)
def test_migration_only_for_minor_version_changes(deployed, new, migrate):
    assert helm_upgrade.needs_migration(deployed, new) is migrate


def test_no_migration_step_for_a_patch_upgrade(tmp_path):
    plan = [
        cmd
        for _, cmd in helm_upgrade.upgrade_steps(
            "acceptance", context="acme-acceptance", namespace="dagster-acceptance", value_files=[], migrate=False
        )
    ]
    assert len(plan) == 2 and plan[0][3] == "sync" and plan[1][1] == "upgrade"
