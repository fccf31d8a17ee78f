"""platform_config, the one reader of the company and its environments: what it reads and what it refuses.

Each case writes its own company and environments into tmp_path (names of its own: dev, qa, live), so the rules
hold for any company; every refusal is one line naming the file, the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dagster_platform import paths, platform_config
from dagster_platform.platform_config import PlatformConfigError

DELETE = object()  # a change that removes the key


def environment_values(name: str, promotion: int, tier: str = "staging") -> dict[str, Any]:
    """A complete environment file of its own: every name in it is this environment's alone."""
    return {
        "global": {"postgresqlSecretName": f"dagster-{name}-postgresql"},
        "environment": {
            "name": name,
            "namespace": f"dagster-{name}",
            "kubeContext": f"agents:{name}",
            "tier": tier,
            "promotion": promotion,
            "manualDeploy": tier == "production",
            "warehouseDomain": f"{name}.db.example.internal",
        },
        "postgresPassword": {
            "source": "externalSecret",
            "externalSecret": {
                "secretStoreRef": {"name": f"vault-{name}"},
                "remoteRef": {"key": f"dagster/{name}/postgres"},
            },
        },
        "ingress": {"admin": {"enabled": True, "host": f"dagster.{name}.example.com"}},
        "dagster": {
            "postgresql": {"postgresqlHost": f"pg.{name}.db.example.internal"},
            "computeLogManager": {"config": {"s3ComputeLogManager": {"bucket": f"example-{name}-logs"}}},
        },
    }


def change(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`data` with each dotted key set to its value (DELETE: removed)."""
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def write_env(envs_dir: Path, name: str, promotion: int, tier: str = "staging", **changes: Any) -> Path:
    """platform/values/<name>.yaml of the fixture company; `changes` by dotted key with '.' written as '__'."""
    path = envs_dir / f"{name}.yaml"
    dotted = {key.replace("__", "."): value for key, value in changes.items()}
    path.write_text(yaml.safe_dump(change(environment_values(name, promotion, tier), dotted), sort_keys=False))
    return path


@pytest.fixture
def envs_dir(tmp_path) -> Path:
    """A company with three environments, written out of promotion order: dev (1), qa (2), live (3, production)."""
    envs_dir = tmp_path / "values"
    envs_dir.mkdir()
    (envs_dir / "base.yaml").write_text("previews:\n  enabled: false\n")
    write_env(envs_dir, "qa", 2, previews={"enabled": True})
    write_env(envs_dir, "live", 3, tier="production")
    write_env(envs_dir, "dev", 1)
    return envs_dir


def refusal(call) -> str:
    with pytest.raises(PlatformConfigError) as refused:
        call()
    message = str(refused.value)
    assert "\n" not in message, message
    return message


# -- the repository's own files ------------------------------------------------------------------------
def test_the_repositorys_company_and_environments_are_valid():
    platform_config.company()
    files = [p.stem for p in paths.VALUES_DIR.glob("*.yaml") if p.name != "base.yaml"]
    assert sorted(platform_config.environment_names()) == sorted(files)


# -- environments ----------------------------------------------------------------------------------------
def test_every_file_but_base_is_an_environment_in_promotion_order(envs_dir):
    assert platform_config.environment_names(envs_dir) == ["dev", "qa", "live"]
    assert [env.promotion for env in platform_config.environments(envs_dir)] == [1, 2, 3]


def test_an_environment_is_what_its_file_declares(envs_dir):
    write_env(envs_dir, "eu-west", 4, tier="production", environment__instance={"run_retries": {"max_retries": 3}})
    env = platform_config.environment("eu-west", envs_dir)
    assert (env.name, env.namespace, env.kube_context, env.tier, env.promotion, env.manual) == (
        "eu-west", "dagster-eu-west", "agents:eu-west", "production", 4, True,
    )  # fmt: skip
    assert env.production and not env.previews and env.warehouse_domain == "eu-west.db.example.internal"
    assert env.instance == {"run_retries": {"max_retries": 3}}
    assert env.variable_suffix == "EU_WEST" and env.postgres_secret == "dagster-eu-west-postgresql"
    assert env.file == str(envs_dir / "eu-west.yaml")


def test_an_undeclared_environment_is_refused_naming_the_declared_ones(envs_dir):
    assert refusal(lambda: platform_config.environment("staging", envs_dir)) == (
        "environment 'staging' is not declared; use one of dev, qa, live (or add platform/values/staging.yaml)"
    )


def test_laptops_run_the_last_production_tier_environment(envs_dir):
    assert platform_config.strictest(envs_dir).name == "live"
    write_env(envs_dir, "dr", 4, tier="production")
    write_env(envs_dir, "sandbox", 5, tier="development")
    assert platform_config.strictest(envs_dir).name == "dr"


def test_without_a_production_tier_laptops_run_the_last_environment(envs_dir):
    write_env(envs_dir, "live", 3, tier="staging")
    assert platform_config.strictest(envs_dir).name == "live"


def test_previews_run_in_the_first_environment_that_enables_them(envs_dir):
    assert platform_config.preview_environment(envs_dir).name == "qa"
    write_env(envs_dir, "dev", 1, previews={"enabled": True})
    assert platform_config.preview_environment(envs_dir).name == "dev"
    for name, promotion in (("dev", 1), ("qa", 2)):
        write_env(envs_dir, name, promotion)
    assert platform_config.preview_environment(envs_dir) is None


@pytest.mark.parametrize("value", [DELETE, 0, -1, "1", True, 1.5])
def test_a_missing_or_invalid_promotion_is_refused_in_one_line(envs_dir, value):
    path = write_env(envs_dir, "qa", 2, environment__promotion=value)
    fix = "its place in the promotion order, 1 for the first environment main deploys to"
    what = " is missing; set it to" if value is DELETE else f": {value!r} is not"
    assert refusal(lambda: platform_config.environments(envs_dir)) == f"{path}: environment.promotion{what} {fix}"


def test_two_environments_in_one_place_of_the_promotion_order_are_refused(envs_dir):
    write_env(envs_dir, "qa", 1)
    assert refusal(lambda: platform_config.environments(envs_dir)) == (
        f"{envs_dir / 'qa.yaml'}: environment.promotion 1 is also {envs_dir / 'dev.yaml'}'s; give each "
        "environment its own place (1 = first deploy)"
    )


@pytest.mark.parametrize(
    ("dotted", "what"),
    [
        ("environment.namespace", "namespace"),
        ("environment.kubeContext", "kube context"),
        ("environment.warehouseDomain", "warehouse domain"),
        ("dagster.computeLogManager.config.s3ComputeLogManager.bucket", "bucket"),
        ("postgresPassword.externalSecret.secretStoreRef.name", "secret store"),
        ("postgresPassword.externalSecret.remoteRef.key", "secret key"),
        ("global.postgresqlSecretName", "Postgres secret"),
        ("dagster.postgresql.postgresqlHost", "database host"),
        ("ingress.admin.host", "host"),
    ],
)
def test_two_environments_sharing_what_names_one_of_them_are_refused(envs_dir, dotted, what):
    shared = platform_config.get_path(environment_values("dev", 1), dotted)
    path = write_env(envs_dir, "qa", 2, **{dotted.replace(".", "__"): shared})
    assert refusal(lambda: platform_config.environments(envs_dir)) == (
        f"{path}: {dotted}: {shared!r} is also dev's ({envs_dir / 'dev.yaml'} {dotted}); every environment needs "
        f"its own {what}"
    )


def test_a_read_only_host_another_environment_serves_as_its_admin_host_is_refused(envs_dir):
    path = write_env(envs_dir, "live", 3, tier="production", ingress__readOnly={"host": "dagster.dev.example.com"})
    assert refusal(lambda: platform_config.environments(envs_dir)) == (
        f"{path}: ingress.readOnly.host: 'dagster.dev.example.com' is also dev's ({envs_dir / 'dev.yaml'} "
        "ingress.admin.host); every environment needs its own host"
    )


# base.yaml is the shared layer, never read as an environment; the other reserved names are refused as files.
@pytest.mark.parametrize(
    "name", ["Prod_1", "x", "-qa", "qa-", "a" * 33, *(n for n in platform_config.RESERVED_NAMES if n != "base")]
)
def test_a_file_named_unlike_an_environment_is_refused(envs_dir, name):
    path = envs_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(environment_values("other", 9)))
    assert refusal(lambda: platform_config.environments(envs_dir)).startswith(
        f"{path}: {name!r} cannot name an environment (lowercase letters, digits and '-', 2-32 characters, not "
        f"{', '.join(platform_config.RESERVED_NAMES)}); rename the file"
    )


def test_an_environment_name_other_than_the_files_is_refused(envs_dir):
    path = write_env(envs_dir, "qa", 2, environment__name="staging")
    assert refusal(lambda: platform_config.environments(envs_dir)) == (
        f"{path}: environment.name: 'staging' is not the file's name, 'qa'"
    )


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("environment.tier", "prod", "environment.tier: 'prod' is not a GitLab deployment tier"),
        ("environment.namespace", "Dagster_QA", "environment.namespace: 'Dagster_QA' is not a Kubernetes namespace"),
        ("environment.kubeContext", DELETE, "environment.kubeContext is missing; set it to the GitLab agent's"),
        ("environment.manualDeploy", "yes", "environment.manualDeploy: 'yes' is not true"),
        ("environment.warehouseDomain", "localhost", "environment.warehouseDomain: 'localhost' is not the DNS domain"),
        ("environment.instance", ["run_retries"], "environment.instance: write a mapping of instance.yaml keys"),
        ("environment", DELETE, "environment is missing; add the environment: block"),
    ],
)
def test_an_environment_block_that_is_incomplete_or_wrong_is_refused_in_one_line(envs_dir, dotted, value, expected):
    path = write_env(envs_dir, "qa", 2, **{dotted.replace(".", "__"): value})
    assert refusal(lambda: platform_config.environments(envs_dir)).startswith(f"{path}: {expected}")


def test_a_values_file_that_is_not_yaml_is_refused_naming_the_line(envs_dir):
    path = envs_dir / "qa.yaml"
    path.write_text("environment:\n  name: qa\n  tier: [staging\n")
    assert refusal(lambda: platform_config.environments(envs_dir)).startswith(f"{path}: line ")


def test_a_values_dir_without_environments_is_refused(tmp_path):
    (tmp_path / "base.yaml").write_text("{}\n")
    assert refusal(lambda: platform_config.environments(tmp_path)).startswith(
        f"{tmp_path}: no environment; add one file per environment"
    )


# -- the company -------------------------------------------------------------------------------------------
COMPANY = {
    "name": "example-corp",
    "gitlab": {"host": "gitlab.example.com", "project": "data/dagster-platform", "version": "1.0.0"},
    "image_registry": "registry.example.com/data/dagster",
    "label_domain": "platform.example.com",
    "grpc_port": 4100,
}


def write_company(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "company.yaml"
    dotted = {key.replace("__", "."): value for key, value in changes.items()}
    path.write_text(yaml.safe_dump(change(yaml.safe_load(yaml.safe_dump(COMPANY)), dotted)))
    return path


def test_the_company_is_what_its_file_says(tmp_path):
    company = platform_config.company(write_company(tmp_path))
    assert company == platform_config.Company(
        name="example-corp", gitlab_host="gitlab.example.com", platform_project="data/dagster-platform",
        platform_version="1.0.0", image_registry="registry.example.com/data/dagster",
        label_domain="platform.example.com", grpc_port=4100,
    )  # fmt: skip
    assert company.image("sales") == "registry.example.com/data/dagster/sales"


@pytest.mark.parametrize(
    "key", ["name", "gitlab.host", "gitlab.project", "gitlab.version", "image_registry", "label_domain"]
)
def test_a_company_file_missing_a_key_is_refused_in_one_line(tmp_path, key):
    path = write_company(tmp_path, **{key.replace(".", "__"): DELETE})
    assert refusal(lambda: platform_config.company(path)).startswith(f"{path}: {key} is missing; set it to ")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("image_registry", "https://registry.example.com/data/dagster"),  # a scheme
        ("image_registry", "registry.example.com/data/dagster/"),  # a trailing '/'
        ("image_registry", "registry.example.com/data/dagster:1.0"),  # a tag
        ("image_registry", "Registry.Example.com/data/dagster"),  # not lowercase
        ("image_registry", "registry.example.com"),  # no path
        ("gitlab.host", "https://gitlab.example.com"),
        ("gitlab.host", "gitlab.example.com/"),
        ("gitlab.project", "dagster-platform"),  # no group
        ("gitlab.version", "main"),  # a branch: repos pin a release
        ("gitlab.version", "v1.2.0"),  # GitLab's catalog versions are plain semver
        ("gitlab.version", "1.2"),  # a partial version moves under the repo
        ("label_domain", "platform"),  # not a domain
        ("name", "Example Corp"),
    ],
)
def test_a_malformed_company_value_is_refused_in_one_line(tmp_path, key, value):
    path = write_company(tmp_path, **{key.replace(".", "__"): value})
    assert refusal(lambda: platform_config.company(path)).startswith(f"{path}: {key}: {value!r} is not ")


def test_the_former_gitlab_ref_is_refused_naming_its_replacement(tmp_path):
    path = write_company(tmp_path, gitlab__ref="main")
    assert refusal(lambda: platform_config.company(path)).startswith(
        f"{path}: gitlab.ref was replaced by gitlab.version: the release (semver tag, e.g. 1.4.0)"
    )


@pytest.mark.parametrize("port", [None, "4000", 80, 70000, True])
def test_a_grpc_port_that_is_no_port_is_refused_in_one_line(tmp_path, port):
    path = write_company(tmp_path, grpc_port=DELETE if port is None else port)
    assert refusal(lambda: platform_config.company(path)) == (
        f"{path}: grpc_port: {port!r} is not a port number in 1024..65535, e.g. 4000"
    )


def test_a_missing_company_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "company.yaml"
    assert refusal(lambda: platform_config.company(path)) == f"{path}: missing; create it (docs/adopt.md)"


def test_a_company_file_that_is_no_mapping_is_refused_in_one_line(tmp_path):
    path = tmp_path / "company.yaml"
    path.write_text("- name: example-corp\n")
    assert refusal(lambda: platform_config.company(path)) == f"{path}: the top level is a list; write a mapping"
