"""The generated copies of the company and its environments (`make generate`, src/dagster_platform/generate.py):
in sync on this repository, drift reported in one line naming the file and the command, and what the generator
makes of environments this repository does not have: a manual one, a third one, an environment list read from
files in any promotion order. The last ones run the pipeline policy and gitlab-ci-local on the generated files,
with a fixture company whose names are none of this repository's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dagster_platform import generate, platform_config
from dagster_platform.ci import policy
from dagster_platform.ci.config import load_pipeline
from dagster_platform.ci.policy import DEFAULT_BRANCH_RULE, STAGES, check
from dagster_platform.ci.runner import context_variables, job_whens
from dagster_platform.paths import ROOT
from dagster_platform.platform_config import Company, Environment, PlatformConfigError

from .helpers import COMPANY, DELETE, MAIN, MR, as_checkout, mutated, set_key

# --- this repository's copies -----------------------------------------------------------------------------------


def test_the_generated_copies_are_in_sync():
    assert generate.drift() == [], "the platform's files changed since the copies were written: run `make generate`"


# What a copy of the repository needs for `dagster-platform generate`: the package, the sources, the copies.
COPIED = ("src", "platform", "ci/generated", "templates", "usercode-template", "pyproject.toml")


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of this repository's platform files and generated copies (the real ones are never touched)."""
    target = tmp_path / "platform-copy"
    for name in COPIED:
        source, dest = ROOT / name, target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest)
    return target


def generate_cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`dagster-platform generate` of the copy (its src/ first on the path), as `make generate` runs it."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    return subprocess.run(
        [sys.executable, "-m", "dagster_platform.cli", "generate", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _drift_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    return done.stderr.splitlines()


def test_a_hand_edited_copy_is_one_line_naming_the_file_and_make_generate(checkout):
    assert generate_cli(checkout, "--check").returncode == 0, "this repository's copies drifted: `make generate`"
    # The component's generated block edited by hand (a deploy's namespace); the hand-written part is the
    # component's own and is kept as it is.
    copy = checkout / "templates" / "usercode" / "template.yml"
    original = copy.read_text()
    namespace = platform_config.environments()[0].namespace
    assert f"KUBE_NAMESPACE: {namespace}\n" in original
    copy.write_text(original.replace(f"KUBE_NAMESPACE: {namespace}\n", "KUBE_NAMESPACE: elsewhere\n", 1))

    (line,) = _drift_lines(generate_cli(checkout, "--check"))
    assert line.startswith("generate: templates/usercode/template.yml "), line
    assert "`make generate`" in line, line

    # The fix the line names: the copy is written again, and the check passes.
    done = generate_cli(checkout)
    assert done.returncode == 0, done.stderr
    assert "wrote templates/usercode/template.yml" in done.stdout
    assert copy.read_text() == original
    assert generate_cli(checkout, "--check").returncode == 0


def test_a_changed_company_fact_names_every_copy_holding_it(checkout):
    """A new label domain in platform/company.yaml: each copy that carries it drifts, one line each."""
    company_file = checkout / "platform" / "company.yaml"
    company = yaml.safe_load(company_file.read_text())
    company["label_domain"] = "platform.example.net"
    company_file.write_text(yaml.safe_dump(company, sort_keys=False))

    lines = _drift_lines(generate_cli(checkout, "--check"))
    named = [line.removeprefix("generate: ").split(" ", 1)[0] for line in lines]
    assert all("`make generate`" in line for line in lines), lines
    assert len(named) == len(set(named)), lines
    # The preview label (user-code component), the stdlib tools' facts and the template's answers hold it.
    assert {"templates/usercode/template.yml", "ci/generated/platform.json"} <= set(named), lines
    assert "usercode-template/copier.yml" in named, lines

    assert generate_cli(checkout).returncode == 0
    assert generate_cli(checkout, "--check").returncode == 0
    assert "platform.example.net" in (checkout / "ci" / "generated" / "platform.json").read_text()


# --- environments this repository may not have ------------------------------------------------------------------

FIXTURE_COMPANY = Company(
    name="example-corp",
    gitlab_host="gitlab.example.org",
    platform_project="data/dagster-platform",
    platform_version="2.7.1",
    image_registry="registry.example.org/data/dagster",
    label_domain="platform.example.org",
    grpc_port=4123,
)


def environment_file(values_dir: Path, name: str, promotion: int, tier: str, manual=False, previews=False) -> Path:
    """platform/values/<name>.yaml with its environment: block only (every name its own)."""
    data: dict = {
        "environment": {
            "name": name,
            "namespace": f"data-{name}",
            "kubeContext": f"data/agents:{name}",
            "tier": tier,
            "promotion": promotion,
            "manualDeploy": manual,
            "warehouseDomain": f"{name}.dwh.example.org",
        },
        "global": {"postgresqlSecretName": f"data-{name}-postgresql"},
    }
    if previews:
        data["previews"] = {"enabled": True}
    values_dir.mkdir(parents=True, exist_ok=True)
    path = values_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def values_dir(tmp_path) -> Path:
    """Two environments: `sandbox` (first, automatic, previews) and `live-eu` (production tier, manual deploys;
    its name has a '-', its variables end in LIVE_EU). Files named so that the alphabet is not promotion order."""
    values = tmp_path / "values"
    environment_file(values, "sandbox", 1, "development", previews=True)
    environment_file(values, "live-eu", 3, "production", manual=True)
    return values


def _usercode(envs: list[Environment]) -> dict:
    """The component's jobs document as generated for the fixture company."""
    _, jobs = yaml.safe_load_all(generate.component(FIXTURE_COMPANY, envs))
    return jobs


def _platform(envs: list[Environment]) -> dict:
    return yaml.safe_load(generate.platform_ci(FIXTURE_COMPANY, envs))


def test_a_manual_environment_gets_a_blocking_manual_deploy_and_upgrade(values_dir):
    envs = platform_config.environments(values_dir)
    manual = platform_config.environment("live-eu", values_dir)
    automatic = platform_config.environment("sandbox", values_dir)
    assert manual.manual and not automatic.manual
    for jobs, prefix in ((_usercode(envs), "deploy"), (_platform(envs), "upgrade")):
        job = jobs[f"{prefix}-{manual.name}"]
        assert job["rules"] == [{"if": DEFAULT_BRANCH_RULE, "when": "manual"}]
        assert job["allow_failure"] is False  # GitLab's default for a manual job would let the pipeline pass
        job = jobs[f"{prefix}-{automatic.name}"]
        assert job["rules"] == [{"if": DEFAULT_BRANCH_RULE}]
        assert "allow_failure" not in job


def test_a_third_environment_is_a_third_deploy_in_stage_order(values_dir):
    two = platform_config.environments(values_dir)
    # A third, placed between the two in the promotion order.
    environment_file(values_dir, "qa", 2, "staging")
    three = platform_config.environments(values_dir)
    names = [env.name for env in three]
    assert names == ["sandbox", "qa", "live-eu"]

    usercode, before = _usercode(three), _usercode(two)
    assert usercode["stages"] == [*STAGES["usercode"], *names]
    assert [job for job in usercode if job.startswith("deploy-") and job != "deploy-preview"] == [
        f"deploy-{name}" for name in names
    ]
    assert usercode["deploy-qa"] == {
        "extends": ".deploy",
        "stage": "qa",
        "variables": {
            "DEPLOY_ENV": "qa",
            "KUBE_CONTEXT": "$KUBE_CONTEXT_QA",
            "KUBE_NAMESPACE": "data-qa",
            "DAGSTER_WEBSERVER_URL": "$DAGSTER_WEBSERVER_URL_QA",
        },
        "environment": {"name": "qa", "deployment_tier": "staging", "url": "$DAGSTER_WEBSERVER_URL_QA"},
        "resource_group": "qa",
        "rules": [{"if": DEFAULT_BRANCH_RULE}],
    }
    # The jobs of the environments that were there are unchanged.
    for name in ("sandbox", "live-eu"):
        assert usercode[f"deploy-{name}"] == before[f"deploy-{name}"]
    assert usercode["deploy-preview"] == before["deploy-preview"]

    platform = _platform(three)
    assert platform["stages"] == [*STAGES["platform"], *names]
    assert [job for job in platform if job.startswith("upgrade-")] == [f"upgrade-{name}" for name in names]
    assert platform["render"]["parallel"]["matrix"] == [{"ENV": names}]
    assert platform["diff"]["parallel"]["matrix"] == [
        {"ENV": [env.name], "KUBE_CONTEXT": f"$KUBE_CONTEXT_DIFF_{env.variable_suffix}"} for env in three
    ]
    assert platform["upgrade-live-eu"]["variables"] == {"ENV": "live-eu", "KUBE_CONTEXT": "$KUBE_CONTEXT_LIVE_EU"}


def test_the_stdlib_tools_and_the_template_get_every_environment(values_dir):
    environment_file(values_dir, "qa", 2, "staging")
    envs = platform_config.environments(values_dir)
    facts = yaml.safe_load(generate.platform_json(FIXTURE_COMPANY, envs))
    assert facts["label_domain"] == FIXTURE_COMPANY.label_domain
    assert facts["environments"] == [
        {"name": "sandbox", "tier": "development", "previews": True},
        {"name": "qa", "tier": "staging", "previews": False},
        {"name": "live-eu", "tier": "production", "previews": False},
    ]
    template = generate.template_platform(FIXTURE_COMPANY, envs)
    assert [(e["name"], e["namespace"]) for e in template["environments"]] == [
        ("sandbox", "data-sandbox"),
        ("qa", "data-qa"),
        ("live-eu", "data-live-eu"),
    ]
    assert (template["ci_project"], template["grpc_port"]) == (FIXTURE_COMPANY.platform_project, 4123)


def test_an_environment_named_like_a_preview_job_is_refused_or_kept_apart(tmp_path):
    values = tmp_path / "values"
    environment_file(values, "qa", 1, "staging", previews=True)
    environment_file(values, "preview", 2, "production", manual=True)
    try:
        envs = platform_config.environments(values)
    except PlatformConfigError as refused:
        assert "preview.yaml" in str(refused)
        return
    jobs = _usercode(envs)
    deploys = [job for job in jobs.values() if isinstance(job, dict) and job.get("extends") == ".deploy"]
    assert [job["variables"]["DEPLOY_ENV"] for job in deploys] == ["qa", "preview"]


# --- the policy and GitLab's rules on a generated three-environment pipeline -----------------------------------


@pytest.fixture
def three_environments(values_dir, monkeypatch) -> list[Environment]:
    """sandbox (previews), qa, live-eu (manual), and the policy reading them instead of this repository's."""
    environment_file(values_dir, "qa", 2, "staging")
    envs = platform_config.environments(values_dir)
    monkeypatch.setattr(policy, "environments", lambda: envs)
    monkeypatch.setattr(policy, "preview_environment", lambda: platform_config.preview_environment(values_dir))
    return envs


def _platform_project(root: Path, envs: list[Environment]) -> Path:
    """This repository's pipelines with copies generated for the fixture company: the platform project as a
    user-code pipeline includes it, and the platform's own pipeline (a git checkout: gitlab-ci-local resolves
    local includes among tracked files)."""
    (root / "ci" / "generated").mkdir(parents=True)
    (root / "templates" / "usercode").mkdir(parents=True)
    shutil.copy(ROOT / ".gitlab-ci.yml", root / ".gitlab-ci.yml")
    (root / "templates" / "usercode" / "template.yml").write_text(generate.component(FIXTURE_COMPANY, envs))
    (root / "ci" / "generated" / "platform.gitlab-ci.yml").write_text(generate.platform_ci(FIXTURE_COMPANY, envs))
    return as_checkout(root)


@pytest.mark.slow
def test_the_policy_passes_a_generated_three_environment_pipeline_and_guards_its_manual_deploy(
    three_environments, rendered_repo, tmp_path
):
    project = _platform_project(tmp_path / "platform", three_environments)
    usercode = load_pipeline(
        rendered_repo / ".gitlab-ci.yml", projects={COMPANY.platform_project: project}, repo_root=rendered_repo
    )
    platform = load_pipeline(project / ".gitlab-ci.yml")
    assert usercode.problems == [] and platform.problems == []
    assert check(usercode, "usercode") == []
    assert check(platform, "platform") == []
    assert usercode.stages == [*STAGES["usercode"], "sandbox", "qa", "live-eu"]

    # As GitLab evaluates the rules: on the default branch the first two deploy by themselves, live-eu waits for
    # a click; merge requests deploy nothing but the preview, in the first environment enabling previews.
    main, mr = (job_whens(usercode, context_variables(**ctx)) for ctx in (MAIN, MR))
    assert [main[f"deploy-{e}"] for e in ("sandbox", "qa", "live-eu")] == ["on_success", "on_success", "manual"]
    assert [mr[f"deploy-{e}"] for e in ("sandbox", "qa", "live-eu")] == ["never"] * 3
    assert (mr["deploy-preview"], usercode.jobs()["deploy-preview"]["stage"]) == ("on_success", "sandbox")
    platform_main = job_whens(platform, context_variables(**MAIN))
    assert [platform_main[f"upgrade-{e}"] for e in ("sandbox", "qa", "live-eu")] == [
        "on_success",
        "on_success",
        "manual",
    ]

    # The manual deploy's guard: a click (when: manual) that blocks the pipeline (allow_failure: false).
    made_automatic = set_key(["deploy-live-eu", "rules"], [{"if": DEFAULT_BRANCH_RULE}])
    (problem,) = check(mutated(usercode, made_automatic), "usercode")
    assert problem.startswith("deploy-live-eu: live-eu must be when: manual ("), problem
    assert "live-eu.yaml manualDeploy" in problem, problem
    for value in (True, DELETE):
        problems = check(mutated(usercode, set_key(["deploy-live-eu", "allow_failure"], value)), "usercode")
        assert problems == [
            "deploy-live-eu: a manual deploy must set allow_failure: false (blocks the pipeline until run)"
        ], problems


def test_the_pinned_release_is_stated_once_and_copied_where_it_is_read(values_dir):
    """gitlab.version: the template pins it (copier data), the component fetches its tools at it, and the platform's
    release job refuses a tag other than it."""
    envs = platform_config.environments(values_dir)
    version = FIXTURE_COMPANY.platform_version
    assert generate.template_platform(FIXTURE_COMPANY, envs)["ci_version"] == version
    spec, jobs = yaml.safe_load_all(generate.component(FIXTURE_COMPANY, envs))
    assert set(spec["spec"]["inputs"]) >= {"location", "package"}
    assert jobs["variables"]["PLATFORM_TOOLS_REF"] == version
    assert jobs["variables"]["PLATFORM_TOOLS_PROJECT"] == FIXTURE_COMPANY.platform_project
    assert _platform(envs)["variables"]["COMPONENT_VERSION"] == version
