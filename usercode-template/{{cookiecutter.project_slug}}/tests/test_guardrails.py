"""The environment footguns, each refused with a message naming the problem."""

import dagster as dg
import pytest

from {{ cookiecutter.package_name }}.defs.warehouse import warehouse_from_env
from {{ cookiecutter.package_name }}.settings import (
    DATABASE_DOMAINS,
    EnvironmentConfigError,
    warehouse_settings,
)

ACC_HOST = f"warehouse.{DATABASE_DOMAINS['acceptance']}"
PROD_HOST = f"warehouse.{DATABASE_DOMAINS['production']}"


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


@pytest.mark.parametrize("host", [PROD_HOST, ACC_HOST, "localhost"])
def test_local_config_cannot_reach_a_network_database(host, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_HOST", host)
    with pytest.raises(EnvironmentConfigError, match="DAGSTER_ENV=local never uses a network database"):
        warehouse_from_env()


@pytest.mark.parametrize(("env", "host"), [("acceptance", PROD_HOST), ("production", ACC_HOST)])
def test_an_environment_refuses_another_environments_host(env, host):
    with pytest.raises(EnvironmentConfigError, match=f"is not in the {env} domain"):
        warehouse_settings(secrets(host, env))


def test_lookalike_host_is_refused():
    with pytest.raises(EnvironmentConfigError, match="is not in the production domain"):
        warehouse_settings(secrets("evil" + DATABASE_DOMAINS["production"], "production"))


@pytest.mark.parametrize("env", ["acceptance", "production"])
def test_missing_secrets_are_named(env):
    environ = secrets(ACC_HOST if env == "acceptance" else PROD_HOST, env)
    del environ["WAREHOUSE_PASSWORD"], environ["WAREHOUSE_USER"]
    with pytest.raises(EnvironmentConfigError, match="needs WAREHOUSE_USER, WAREHOUSE_PASSWORD"):
        warehouse_settings(environ)


def test_matching_environment_and_host_are_accepted():
    settings = warehouse_settings(secrets(PROD_HOST, "production"))
    assert (settings.env, settings.host, settings.port) == ("production", PROD_HOST, 5432)


def test_unknown_environment_is_refused():
    with pytest.raises(EnvironmentConfigError, match="DAGSTER_ENV='prod' is not one of"):
        warehouse_settings({"DAGSTER_ENV": "prod"})


def test_kubernetes_without_dagster_env_is_refused():
    with pytest.raises(EnvironmentConfigError, match="DAGSTER_ENV is not set but this process runs on Kube"):
        warehouse_settings({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_the_password_never_enters_the_resource_config(monkeypatch):
    for name, value in secrets(PROD_HOST, "production").items():
        monkeypatch.setenv(name, value)
    warehouse = warehouse_from_env()
    assert isinstance(warehouse.password, dg.EnvVar)
    assert "from-a-k8s-secret" not in repr(warehouse)
