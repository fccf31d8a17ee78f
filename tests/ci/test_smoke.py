"""The deploy jobs' smoke check against a real webserver on loopback (the `webserver` fixture in conftest.py):
a gRPC code server that loads (`good`) and a workspace entry whose server is not there (`broken`)."""

import subprocess
import sys

import pytest

from dagster_platform.ci.smoke import _headers_from_env, check_location
from dagster_platform.graphql import Client, GraphQLError
from dagster_platform.net import free_port
from dagster_platform.paths import ROOT

pytestmark = pytest.mark.slow


def test_loaded_location_passes(webserver):
    detail = check_location(webserver, "good", timeout=60, interval=1)
    assert "'good' is LOADED" in detail
    assert "__repository__" in detail


def test_reload_then_loaded_passes(webserver):
    assert "LOADED" in check_location(webserver, "good", timeout=60, interval=1, reload=True)


def test_location_that_failed_to_load_fails(webserver):
    state, detail = Client(webserver).location_state("broken")
    assert state == "ERROR", detail
    with pytest.raises(GraphQLError, match="ERROR: location 'broken' failed to load"):
        check_location(webserver, "broken", timeout=2, interval=1)


def test_missing_location_fails(webserver):
    with pytest.raises(GraphQLError, match="MISSING: location 'nope' is not in the webserver's workspace"):
        check_location(webserver, "nope", timeout=1, interval=1)
    # --reload of a name the webserver does not know re-reads the workspace file (a new preview's entry arrives
    # there when the kubelet refreshes the ConfigMap); still missing at the deadline, it fails the same way.
    with pytest.raises(GraphQLError, match="MISSING: location 'nope' is not in the webserver's workspace"):
        check_location(webserver, "nope", timeout=1, interval=1, reload=True)


def test_extra_header_from_a_variable(webserver, monkeypatch):
    """Behind an authenticating proxy: the header comes from a masked variable and is sent with every request."""
    monkeypatch.setenv("SMOKE_TEST_AUTH", "Authorization: Bearer not-a-real-token")
    headers = _headers_from_env(["SMOKE_TEST_AUTH"])
    assert headers == {"Authorization": "Bearer not-a-real-token"}
    assert "LOADED" in check_location(webserver, "good", timeout=30, interval=1, headers=headers)
    monkeypatch.setenv("SMOKE_TEST_AUTH", "no colon here")
    with pytest.raises(ValueError, match=r"\$SMOKE_TEST_AUTH must hold 'Header-Name: value'"):
        _headers_from_env(["SMOKE_TEST_AUTH"])


def test_unreachable_webserver_fails():
    with pytest.raises(GraphQLError, match="UNREACHABLE"):
        check_location(f"http://127.0.0.1:{free_port()}", "good", timeout=1, interval=0.5)


def test_cli_as_the_deploy_job_runs_it(webserver):
    """As in the deploy job: plain python3 -m, PYTHONPATH at the platform's src, standard library only."""
    command = [sys.executable, "-I", "-S", "-c"]
    code = (
        "import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); "
        "runpy.run_module('dagster_platform.ci.smoke', run_name='__main__')"
    )
    ok = subprocess.run(
        [*command, code, str(ROOT / "src"), "--url", webserver, "--location", "good", "--reload", "--timeout", "60"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "smoke: OK: location 'good' is LOADED" in ok.stdout
    bad = subprocess.run(
        [*command, code, str(ROOT / "src"), "--url", webserver, "--location", "broken", "--timeout", "2"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "smoke: FAILED: ERROR: location 'broken' failed to load" in bad.stderr
