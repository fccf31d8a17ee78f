"""Adopting the platform for another company, as docs/adopt.md says, in a copy of this repository: its own
company file, three environments of its own (none of this repository's names), `make generate`; then every
check the docs name passes, a new user-code repo is green with deploy values for all three, and nothing but the
docs still names the company the repository came with.

Everything the copy starts from is read from this repository (its company, its environment files), so the test
holds for whichever company adopted the repository before."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dagster_platform import platform_config
from dagster_platform.ci.config import GITLAB_CI_LOCAL
from dagster_platform.paths import ROOT

pytestmark = pytest.mark.slow

NEW_COMPANY = {
    "name": "northwind",
    "gitlab": {"host": "git.northwind.example", "project": "data/dagster-platform", "version": "1.0.0"},
    "image_registry": "registry.northwind.example/data/dagster",
    "label_domain": "dagster.northwind.example",
}
# name: (tier, manual deploys, previews); promotion order is the order here.
NEW_ENVIRONMENTS = {"dev": ("development", False, True), "stage": ("staging", False, False),
                    "live": ("production", True, False)}  # fmt: skip


def copy_repository(target: Path) -> Path:
    """This checkout as a new repository (tracked and untracked files, not ignored ones), one commit."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
        check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    commit(target, "copy")
    return target


def commit(repo: Path, message: str) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    if not (repo / ".git").exists():
        subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], cwd=repo, check=True)


def platform_cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """The copy's own dagster-platform (its src/ first on the path), with this venv's packages."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "GITLAB_CI_LOCAL": str(GITLAB_CI_LOCAL)}
    return subprocess.run(
        [sys.executable, "-m", "dagster_platform.cli", *args], cwd=repo, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def replace_in_strings(node, replacements: dict[str, str]):
    if isinstance(node, dict):
        return {key: replace_in_strings(value, replacements) for key, value in node.items()}
    if isinstance(node, list):
        return [replace_in_strings(value, replacements) for value in node]
    if isinstance(node, str):
        for old, new in replacements.items():
            node = node.replace(old, new)
    return node


def adopt(repo: Path) -> None:
    """docs/adopt.md, steps 1-3: the company file, one file per environment, the registry in base.yaml."""
    old = platform_config.company()
    old_envs = platform_config.environments()
    company_file = repo / "platform" / "company.yaml"
    company = yaml.safe_load(company_file.read_text())
    company_file.write_text(yaml.safe_dump({**company, **NEW_COMPANY}, sort_keys=False))

    # Each new environment starts from a copy of the old environment of its tier (or the first one), its names
    # rewritten; what does not carry the environment's name (warehouse domain, address ranges) is set anew.
    for env in old_envs:
        (repo / "platform" / "values" / f"{env.name}.yaml").unlink()
    for position, (name, (tier, manual, previews)) in enumerate(NEW_ENVIRONMENTS.items(), start=1):
        model = next((e for e in old_envs if e.tier == tier), old_envs[0])
        values = replace_in_strings(copy.deepcopy(model.values), {model.name: name, old.name: NEW_COMPANY["name"]})
        values["environment"].update(
            name=name, tier=tier, promotion=position, manualDeploy=manual,
            warehouseDomain=f"{name}.dwh.northwind.example", kubeContext=f"data/dagster-platform:{name}",
        )  # fmt: skip
        values.pop("previews", None)
        if previews:  # base.yaml has them off
            values["previews"] = {"enabled": True}
        values.setdefault("dagster", {}).setdefault("dagsterWebserver", {})["enableReadOnly"] = tier == "production"
        if tier != "production":
            values.get("ingress", {}).pop("readOnly", None)
        for key in ("postgres", "kubernetesApi", "objectStore"):
            values.setdefault("networkPolicy", {})[key] = {"cidrs": [f"10.{40 + position}.{len(key)}.0/24"]}
        values.setdefault("ops", {})["alertWebhook"] = {"cidrs": [f"10.{40 + position}.99.0/24"]}
        (repo / "platform" / "values" / f"{name}.yaml").write_text(yaml.safe_dump(values, sort_keys=False))

    base = repo / "platform" / "values" / "base.yaml"
    base.write_text(base.read_text().replace(old.image_registry + "/", NEW_COMPANY["image_registry"] + "/"))


@pytest.fixture(scope="module")
def adopted(tmp_path_factory) -> dict:
    repo = copy_repository(tmp_path_factory.mktemp("adopted"))
    adopt(repo)
    generated = platform_cli(repo, "generate")
    commit(repo, "adopt: northwind with dev, stage, live")
    return {"repo": repo, "generate": generated, "old": platform_config.company()}


def test_generate_rewrites_the_copies(adopted):
    assert adopted["generate"].returncode == 0, adopted["generate"].stderr
    assert "templates/usercode/template.yml" in adopted["generate"].stdout
    assert platform_cli(adopted["repo"], "generate", "--check").returncode == 0


def test_platform_check_passes_for_every_new_environment(adopted):
    done = platform_cli(adopted["repo"], "platform", "check", "--env", "all")
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == list(NEW_ENVIRONMENTS)


@pytest.mark.parametrize("env", NEW_ENVIRONMENTS)
def test_platform_instance_of_each_environment(adopted, env):
    done = platform_cli(adopted["repo"], "platform", "instance", "--env", env)
    assert done.returncode == 0, done.stderr
    instance = yaml.safe_load(done.stdout)
    assert (
        instance["run_launcher"]["config"]["job_namespace"]
        == yaml.safe_load((adopted["repo"] / "platform" / "values" / f"{env}.yaml").read_text())["environment"][
            "namespace"
        ]
    )


def test_an_environment_of_the_old_company_is_refused(adopted):
    old = platform_config.environment_names()[0]
    done = platform_cli(adopted["repo"], "platform", "instance", "--env", old)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is not declared; use one of dev, stage, live" in done.stderr


def test_the_pipelines_have_a_stage_and_a_job_per_environment(adopted):
    done = platform_cli(adopted["repo"], "ci-check")
    assert done.returncode == 0, done.stderr
    _, usercode = yaml.safe_load_all((adopted["repo"] / "templates" / "usercode" / "template.yml").read_text())
    assert usercode["stages"][-3:] == list(NEW_ENVIRONMENTS)
    assert [job for job in usercode if job.startswith("deploy-")] == [f"deploy-{e}" for e in NEW_ENVIRONMENTS] + [
        "deploy-preview"
    ]
    assert usercode["deploy-live"]["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual"}]
    assert usercode["deploy-preview"]["stage"] == "dev"


def test_a_new_usercode_repo_deploys_to_every_environment_and_is_green(adopted, tmp_path):
    repo = adopted["repo"]
    done = platform_cli(
        repo, "template", "new", "--template-url", str(repo), "--output-dir", str(tmp_path), "--no-input",
        "--context", json.dumps({"project_name": "Orders", "owner_team": "orders", "owner_email": "orders@x.org"}),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    new = tmp_path / "orders"
    assert sorted(p.name for p in (new / "deploy").iterdir()) == sorted(f"values-{e}.yaml" for e in NEW_ENVIRONMENTS)
    for env in NEW_ENVIRONMENTS:
        deploy = yaml.safe_load((new / "deploy" / f"values-{env}.yaml").read_text())
        assert {"name": "DAGSTER_ENV", "value": env} in deploy["deployments"][0]["env"]
        assert deploy["deployments"][0]["image"]["repository"] == f"{NEW_COMPANY['image_registry']}/orders"
    commit(new, "new location")
    check = platform_cli(repo, "ci-check", "--repo", str(new))
    assert check.returncode == 0, check.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    green = subprocess.run(["make", "lint", "test"], cwd=new, env=env, capture_output=True, text=True, timeout=900)
    assert green.returncode == 0, green.stdout[-3000:] + green.stderr[-3000:]
    assert_old_company_gone(new, adopted["old"], docs_too=True)


def assert_old_company_gone(repo: Path, old: platform_config.Company, docs_too: bool = False) -> None:
    markers = {old.name, old.image_registry, old.platform_project, old.label_domain}
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, text=True, check=True).stdout
    found = []
    for name in filter(None, listed.split("\0")):  # names with spaces too: the template's `{% yield %}` file
        if name.endswith("uv.lock") or (not docs_too and (name.endswith(".md") or name.startswith("docs/"))):
            continue
        text = (repo / name).read_text(errors="replace").lower()
        found += [f"{name}: {marker}" for marker in sorted(markers) if marker.lower() in text]
    assert found == [], "the old company is still named here (only docs may keep it as an example)"


def test_nothing_but_the_docs_names_the_old_company(adopted):
    assert_old_company_gone(adopted["repo"], adopted["old"])
