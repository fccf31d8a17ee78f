import pytest

from {{ package_name }}.settings import NETWORK_VARS


@pytest.fixture(autouse=True)
def local_env(tmp_path, monkeypatch):
    """Every test runs as DAGSTER_ENV=local with its own warehouse file, no network settings, no preview."""
    monkeypatch.setenv("DAGSTER_ENV", "local")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("WAREHOUSE_SQLITE_PATH", str(tmp_path / "warehouse.sqlite"))
    monkeypatch.delenv("ORDERS_LANDING_DIR", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("DAGSTER_PREVIEW", raising=False)  # tests/test_previews.py sets it where it means to
    for name in NETWORK_VARS:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def defs():
    from {{ package_name }}.definitions import defs as load_defs

    return load_defs()
