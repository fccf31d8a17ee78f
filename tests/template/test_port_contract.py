"""The port contract: the platform's webserver dials the port platform/code-locations.yaml registers; every
user-code repo serves platform/company.yaml's grpc_port (its Dockerfile and deploy/values-*.yaml are rendered
from it). `make platform-check` refuses a registry port the template does not serve, in one line, before
`make platform-upgrade` could deploy a workspace that cannot reach the location."""

import copy

import yaml

from dagster_platform import paths, platform_config
from dagster_platform.cli import build_parser
from dagster_platform.helm import cli as helm_cli
from dagster_platform.helm import registry as helm_registry
from dagster_platform.helm import values as helm_values
from dagster_platform.paths import grpc_port
from dagster_platform.template.render import platform_context, render

from .helpers import deploy_values

# A location that is not in the registry, registered on a port the template does not serve.
NEW_LOCATION = "port-check-pipelines"


def test_template_serves_the_platform_port(tmp_path):
    repo = render(tmp_path, {"project_name": "Port Check", **platform_context()})
    values = deploy_values(repo)
    assert list(values) == sorted(platform_config.environment_names())
    for env, own in values.items():
        (deployment,) = own["deployments"]
        assert deployment["port"] == grpc_port() == platform_config.company().grpc_port, env
    dockerfile = (repo / "Dockerfile").read_text()
    assert f"EXPOSE {grpc_port()}\n" in dockerfile and f'"-p", "{grpc_port()}", "-m"' in dockerfile
    # Every location the registry holds is registered on that port (make platform-check refuses any other).
    elsewhere = {loc["name"]: loc["port"] for loc in helm_values.load_code_locations() if loc["port"] != grpc_port()}
    assert elsewhere == {}


def test_registry_port_mismatch_is_one_violation():
    served, other = grpc_port(), grpc_port() + 1
    locations = copy.deepcopy(helm_values.load_code_locations())
    locations.append({"name": NEW_LOCATION, "team": "s", "port": other, "module": "m"})
    (violation,) = helm_registry.check_code_location_registry(locations)
    assert str(violation) == (
        f"[registry] platform/code-locations.yaml: {NEW_LOCATION}: port {other} is not the port user-code repos "
        f"serve ({served}, platform/company.yaml grpc_port = the template's deploy/values-*.yaml port); register it "
        f"with port: {served}"
    )


def test_platform_check_fails_on_a_registry_port_the_template_does_not_serve(tmp_path, monkeypatch, capsys):
    served, other = grpc_port(), grpc_port() + 1
    env = platform_config.environment_names()[0]
    registry = yaml.safe_load(paths.CODE_LOCATIONS_YAML.read_text())
    registry["locations"].append(
        {"name": NEW_LOCATION, "team": "sales", "port": other, "module": "port_check_pipelines.definitions"}
    )
    bad = tmp_path / "code-locations.yaml"
    bad.write_text(yaml.safe_dump(registry))
    monkeypatch.setattr(paths, "CODE_LOCATIONS_YAML", bad)
    args = build_parser().parse_args(["platform", "check", "--env", env])
    assert helm_cli.cmd_check(args) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{env}: 1 problem(s)")
    assert len(err) == 2 and f"{NEW_LOCATION}: port {other} is not the port user-code repos serve ({served}" in err[1]
