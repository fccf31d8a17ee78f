"""The port contract: the platform's webserver dials the port platform/code-locations.yaml registers; every
user-code repo serves platform/usercode.yaml's grpc_port (its Dockerfile and deploy/values-*.yaml are rendered
from it). `make platform-check` refuses a registry port the template does not serve, in one line, before
`make platform-upgrade` could deploy a workspace that cannot reach the location."""

import copy

import yaml

from dagster_platform import paths
from dagster_platform.cli import build_parser
from dagster_platform.helm import cli as helm_cli
from dagster_platform.helm import registry as helm_registry
from dagster_platform.helm import values as helm_values
from dagster_platform.paths import grpc_port
from dagster_platform.template.render import render


def test_template_serves_the_platform_port(tmp_path):
    repo = render(tmp_path, {"project_name": "Port Check"})
    for env in ("acceptance", "production"):
        (deployment,) = yaml.safe_load((repo / f"deploy/values-{env}.yaml").read_text())["deployments"]
        assert deployment["port"] == grpc_port() == 4000
    dockerfile = (repo / "Dockerfile").read_text()
    assert f"EXPOSE {grpc_port()}\n" in dockerfile and f'"-p", "{grpc_port()}", "-m"' in dockerfile
    registered = {loc["name"]: loc["port"] for loc in helm_values.load_code_locations()}
    assert registered["example-pipelines"] == grpc_port()


def test_registry_port_mismatch_is_one_violation():
    locations = copy.deepcopy(helm_values.load_code_locations())
    locations.append({"name": "sales-pipelines", "team": "s", "image": "r/sales", "port": 4001, "module": "m"})
    (violation,) = helm_registry.check_code_location_registry(locations)
    assert str(violation) == (
        "[registry] platform/code-locations.yaml: sales-pipelines: port 4001 is not the port user-code repos serve "
        "(4000, platform/usercode.yaml grpc_port = the template's deploy/values-*.yaml port); register it with "
        "port: 4000"
    )


def test_platform_check_fails_on_a_registry_port_the_template_does_not_serve(tmp_path, monkeypatch, capsys):
    registry = yaml.safe_load(paths.CODE_LOCATIONS_YAML.read_text())
    registry["locations"].append(
        {"name": "sales-pipelines", "team": "sales", "image": "r/sales-pipelines", "port": 4001,
         "module": "sales_pipelines.definitions"}
    )  # fmt: skip
    bad = tmp_path / "code-locations.yaml"
    bad.write_text(yaml.safe_dump(registry))
    monkeypatch.setattr(paths, "CODE_LOCATIONS_YAML", bad)
    args = build_parser().parse_args(["platform", "check", "--env", "acceptance"])
    assert helm_cli.cmd_check(args) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("acceptance: 1 problem(s)")
    assert len(err) == 2 and "sales-pipelines: port 4001 is not the port user-code repos serve (4000" in err[1]
