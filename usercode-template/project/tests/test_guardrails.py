"""The environment footguns, each refused with a message naming the problem."""

import dagster as dg
import pytest

from {{ package_name }}.defs.warehouse import warehouse_from_env
from {{ package_name }}.settings import (
    DATABASE_DOMAINS,
    EnvironmentConfigError,
    warehouse_settings,
)

# The platform's environments this repo deploys to (settings.py, rendered from the platform's files): every
# rule below holds for each of them, however many there are and whatever they are called.
ENVS = list(DATABASE_DOMAINS)
OTHER_ENV_PAIRS = [(env, other) for env in ENVS for other in ENVS if other != env]


def host_of(env: str) -> str:
    return f"warehouse.{DATABASE_DOMAINS[env]}"


def secrets(host: str, env: str) -> dict[str, str]:
    return {
        "DAGSTER_ENV": env,
        "WAREHOUSE_HOST": host,
        "WAREHOUSE_DB": "warehouse",
        "WAREHOUSE_USER": "dagster",
        "WAREHOUSE_PASSWORD": "from-a-k8s-secret",
    }


def test_local_uses_a_file_on_disk(local_env):
    settings = warehouse_settings()
    assert settings.env == "local"
    assert settings.host == ""
    assert settings.sqlite_path == str(local_env / "warehouse.sqlite")


def test_unset_environment_means_local_on_a_laptop():
    assert warehouse_settings({"DAGSTER_HOME": "/tmp/x"}).env == "local"


@pytest.mark.parametrize("host", [*map(host_of, ENVS), "localhost"])
def test_local_config_cannot_reach_a_network_database(host, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_HOST", host)
    with pytest.raises(EnvironmentConfigError, match="DAGSTER_ENV=local never uses a network database"):
        warehouse_from_env()


@pytest.mark.parametrize(("env", "other"), OTHER_ENV_PAIRS)
def test_an_environment_refuses_another_environments_host(env, other):
    with pytest.raises(EnvironmentConfigError, match=f"is not in the {env} domain"):
        warehouse_settings(secrets(host_of(other), env))


@pytest.mark.parametrize("env", ENVS)
def test_lookalike_host_is_refused(env):
    with pytest.raises(EnvironmentConfigError, match=f"is not in the {env} domain"):
        warehouse_settings(secrets("evil" + DATABASE_DOMAINS[env], env))


@pytest.mark.parametrize("env", ENVS)
def test_missing_secrets_are_named(env):
    environ = secrets(host_of(env), env)
    del environ["WAREHOUSE_PASSWORD"], environ["WAREHOUSE_USER"]
    with pytest.raises(EnvironmentConfigError, match="needs WAREHOUSE_USER, WAREHOUSE_PASSWORD"):
        warehouse_settings(environ)


@pytest.mark.parametrize("env", ENVS)
def test_matching_environment_and_host_are_accepted(env):
    settings = warehouse_settings(secrets(host_of(env), env))
    assert (settings.env, settings.host, settings.port) == (env, host_of(env), 5432)


def test_unknown_environment_is_refused():
    with pytest.raises(EnvironmentConfigError, match="DAGSTER_ENV='no-such-env' is not one of"):
        warehouse_settings({"DAGSTER_ENV": "no-such-env"})


def test_kubernetes_without_dagster_env_is_refused():
    with pytest.raises(EnvironmentConfigError, match="DAGSTER_ENV is not set but this process runs on Kube"):
        warehouse_settings({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_the_password_never_enters_the_resource_config(monkeypatch):
    for name, value in secrets(host_of(ENVS[-1]), ENVS[-1]).items():
        monkeypatch.setenv(name, value)
    warehouse = warehouse_from_env()
    assert isinstance(warehouse.password, dg.EnvVar)
    assert "from-a-k8s-secret" not in repr(warehouse)
