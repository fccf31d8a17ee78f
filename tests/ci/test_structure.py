"""Structure of the pipelines: stage order, developer commands, guarded deploys, no printed secrets, pinned
images. Each rule is shown to pass on the real files and to reject a file that breaks it.

Environments and their roles (the first, a manual one, another one) come from platform/values/ (helpers.py):
the breakages below are built from whatever this company declares."""

import shutil

import pytest
import yaml

from dagster_platform.ci.policy import DEFAULT_BRANCH_RULE, MR_RULE, STAGES, check, image_pinned
from dagster_platform.ci.runner import context_variables, job_whens, run_job
from dagster_platform.paths import dagster_version
from dagster_platform.platform_config import TIERS

from .helpers import (
    AUTOMATIC,
    COMPANY,
    DELETE,
    ENVIRONMENTS,
    ENVS,
    FIRST,
    LAST,
    MANUAL,
    as_checkout,
    load_usercode,
    mutated,
    needs,
    other_than,
    set_key,
)


def test_platform_pipeline_passes(platform_pipeline):
    assert check(platform_pipeline, "platform") == []


def test_usercode_pipeline_passes(usercode_pipeline):
    assert check(usercode_pipeline, "usercode") == []


def test_stage_order(platform_pipeline, usercode_pipeline):
    """The fixed stages, then one stage per environment in promotion order."""
    assert platform_pipeline.stages == ["lint", "test", "build", "render", "diff", "release", *ENVS], "make generate"
    assert usercode_pipeline.stages == ["lint", "test", "build", "scan", *ENVS], "run `make generate`"


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=ENVS)
def test_each_environment_has_its_deploy_and_upgrade_as_its_file_says(env, platform_pipeline, usercode_pipeline):
    """deploy-<env> and upgrade-<env> read straight from the resolved pipelines (not through the policy): the
    environment's stage, tier, kube context variable and namespace; manual and blocking where manualDeploy says."""
    for job, kind in ((f"deploy-{env.name}", "usercode"), (f"upgrade-{env.name}", "platform")):
        pipeline = usercode_pipeline if kind == "usercode" else platform_pipeline
        found = pipeline.jobs().get(job)
        assert found is not None, f"{job} is missing from the {kind} pipeline; run `make generate`"
        assert found["stage"] == env.name
        assert found["environment"]["deployment_tier"] == env.tier
        assert found["variables"]["KUBE_CONTEXT"] == f"$KUBE_CONTEXT_{env.variable_suffix}"
        if env.manual:
            assert found["rules"] == [{"if": DEFAULT_BRANCH_RULE, "when": "manual"}], f"{env.file} manualDeploy"
            assert found["allow_failure"] is False, "a manual deploy blocks the pipeline until it is run"
        else:
            assert found["rules"] == [{"if": DEFAULT_BRANCH_RULE}], f"{env.file} manualDeploy"
    assert usercode_pipeline.jobs()[f"deploy-{env.name}"]["variables"]["KUBE_NAMESPACE"] == env.namespace
    assert usercode_pipeline.jobs()[f"deploy-{env.name}"]["variables"]["DEPLOY_ENV"] == env.name
    assert platform_pipeline.jobs()[f"upgrade-{env.name}"]["variables"]["ENV"] == env.name


def test_developer_commands_exactly(platform_pipeline, usercode_pipeline):
    platform, usercode = platform_pipeline.jobs(), usercode_pipeline.jobs()
    assert platform["lint"]["script"] == ["make lint"]
    assert platform["test"]["script"] == ["make test"]
    assert usercode["lint"]["script"] == ["make lint"]
    assert usercode["test"]["script"] == ["make test", "make check"]
    assert usercode["test"]["artifacts"]["reports"]["junit"] == "reports/junit.xml"


def test_template_states_the_platform_dagster_version(usercode_pipeline):
    assert usercode_pipeline.variables["DAGSTER_PLATFORM_VERSION"] == dagster_version()


# --- rules as GitLab evaluates them (gitlab-ci-local --list-json, workflow rules first) ---------------------------


def _expected_whens() -> list[tuple[str, str, str, str, str]]:
    """(kind, job, in a merge-request pipeline, on the default branch, on another branch's push)."""
    rows = [
        ("usercode", "lint", "on_success", "on_success", "never"),
        ("usercode", "test", "on_success", "on_success", "never"),
        ("usercode", "build", "on_success", "on_success", "never"),
        ("usercode", "container_scanning", "on_success", "on_success", "never"),
        ("platform", "lint", "on_success", "on_success", "never"),
        ("platform", "test", "on_success", "on_success", "never"),
        ("platform", "diff", "on_success", "never", "never"),
    ]
    for env in ENVIRONMENTS:
        main = "manual" if env.manual else "on_success"
        rows += [("usercode", f"deploy-{env.name}", "never", main, "never")]
        rows += [("platform", f"upgrade-{env.name}", "never", main, "never")]
    return rows


@pytest.mark.parametrize(("kind", "job", "mr", "main", "feature_push"), _expected_whens())
def test_jobs_appear_in_the_right_pipelines(kind, job, mr, main, feature_push, pipeline_whens):
    whens = pipeline_whens[kind]
    assert (whens["mr"][job], whens["main"][job], whens["feature_push"][job]) == (mr, main, feature_push)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (COMPANY.platform_version, "on_success"),
        (f"v{COMPANY.platform_version}", "on_success"),  # runs, and refuses a tag that is not gitlab.version
        ("nightly", "never"),
    ],
)
def test_a_release_tag_runs_the_checks_then_the_release(tag, expected, platform_pipeline):
    """A semver tag's pipeline: lint, test and every environment's render, then `release`; no upgrade, no diff.
    Any other tag creates no pipeline."""
    whens = job_whens(platform_pipeline, context_variables(tag=tag))
    checks = {job: whens[job] for job in ("lint", "test", "render", "release")}
    assert checks == dict.fromkeys(checks, expected)
    assert {whens["diff"], *(whens[f"upgrade-{env}"] for env in ENVS)} == {"never"}


def test_the_release_job_needs_the_checks_and_releases_its_tag(platform_pipeline):
    release = platform_pipeline.jobs()["release"]
    assert {need["job"] for need in release["needs"]} == {"lint", "test", "render"}
    assert release["release"]["tag_name"] == "$CI_COMMIT_TAG"
    assert release["stage"] == "release"
    # The tag must be the release repos pin: compared with the generated COMPONENT_VERSION.
    assert platform_pipeline.variables["COMPONENT_VERSION"] == COMPANY.platform_version
    assert '"$CI_COMMIT_TAG" != "$COMPONENT_VERSION"' in release["script"][0]


@pytest.mark.parametrize("variable", ["PLATFORM_TOOLS_REF", "PLATFORM_TOOLS_PROJECT", "DAGSTER_PLATFORM_VERSION"])
def test_a_repo_restating_what_its_release_states_is_refused(variable, rendered_repo, tmp_path):
    """A repo's own variables override the component's: tools fetched at another ref than the pinned release would
    be two statements of one fact again."""
    repo = tmp_path / "repo"
    shutil.copytree(rendered_repo, repo, ignore=shutil.ignore_patterns(".git"))
    ci = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())
    ci["variables"] = {variable: "9.9.9"}
    (repo / ".gitlab-ci.yml").write_text(yaml.safe_dump(ci, sort_keys=False))
    problems = check(load_usercode(as_checkout(repo)), "usercode")
    assert f".gitlab-ci.yml: sets ['{variable}']: the component's release states them" in problems[0], problems


def test_job_outside_its_pipeline_is_refused(usercode_pipeline, tmp_path):
    with pytest.raises(RuntimeError, match="not part of a merge_request_event pipeline"):
        run_job(usercode_pipeline, f"deploy-{LAST.name}", tmp_path)


# --- each rule rejects a pipeline that breaks it --------------------------------------------------------------


# Each entry: () -> (change, the violation expected). Entries about an environment take it by role from
# platform/values/ (helpers.py); a company without that role skips them (test_generated.py covers the rule).


def _fixed(change, expected):
    return lambda: (change, expected)


def _manual_made_automatic(prefix: str):
    def breakage():
        env = needs("environment deployed manually (manualDeploy: true)", MANUAL)
        job = f"{prefix}-{env.name}"
        return set_key([job, "rules"], [{"if": DEFAULT_BRANCH_RULE}]), f"{job}: {env.name} must be when: manual"

    return breakage


def _manual_may_fail(prefix: str, value):
    def breakage():
        env = needs("environment deployed manually (manualDeploy: true)", MANUAL)
        job = f"{prefix}-{env.name}"
        return set_key([job, "allow_failure"], value), f"{job}: a manual deploy must set allow_failure: false"

    return breakage


def _automatic_made_manual():
    env = needs("environment deployed automatically (manualDeploy: false)", AUTOMATIC)
    job = f"deploy-{env.name}"
    rules = [{"if": DEFAULT_BRANCH_RULE, "when": "manual"}]
    return set_key([job, "rules"], rules), f"{job}: {env.name} deploys automatically on the default branch"


def _on_merge_requests():
    job = f"deploy-{LAST.name}"
    rules = [{"if": MR_RULE, "when": "manual"}]
    return set_key([job, "rules"], rules), f"{job}: must run only on the default branch"


def _not_serialized(prefix: str):
    job = f"{prefix}-{LAST.name}"
    return set_key([job, "resource_group"], DELETE), f"{job}: must be serialized by a resource_group"


def _shared_resource_group():
    other = needs("second environment", other_than(LAST))
    job = f"deploy-{LAST.name}"

    def change(config):
        config[job]["resource_group"] = config[f"deploy-{other.name}"]["resource_group"]

    return change, f"{job}: resource_group"


def _wrong_tier():
    job, tier = f"deploy-{LAST.name}", next(t for t in TIERS if t != LAST.tier)
    change = set_key([job, "environment", "deployment_tier"], tier)
    return change, f"{job}: environment deployment_tier must be {LAST.tier}"


def _foreign_context(prefix: str):
    def breakage():
        other = needs("second environment", other_than(FIRST))
        job = f"{prefix}-{FIRST.name}"
        variable = f"KUBE_CONTEXT_{other.variable_suffix}"
        change = set_key([job, "variables", "KUBE_CONTEXT"], f"${variable}")
        return change, f"{job}: references another environment's variables ['{variable}']"

    return breakage


def _foreign_namespace():
    other = needs("second environment", other_than(FIRST))
    job = f"deploy-{FIRST.name}"
    change = set_key([job, "variables", "KUBE_NAMESPACE"], other.namespace)
    return change, f"{job}: KUBE_NAMESPACE must be {FIRST.namespace}"


def _context_of_no_environment():
    job = f"deploy-{FIRST.name}"
    change = set_key([job, "variables", "KUBE_CONTEXT"], "some-cluster")
    return change, f"{job}: KUBE_CONTEXT must be $KUBE_CONTEXT_{FIRST.variable_suffix}"


def _values_of_another_environment():
    job = f"deploy-{FIRST.name}"
    other = other_than(FIRST)
    change = set_key([job, "variables", "DEPLOY_ENV"], other.name if other else "elsewhere")
    return change, f"{job}: DEPLOY_ENV must be {FIRST.name}"


def _two_deploys(environment: str, script: str):
    def breakage():
        job = {"stage": LAST.name, "script": [script], "environment": environment.format(env=LAST.name)}
        return set_key(["hotfix"], job), f"exactly one job must deploy to {LAST.name}"

    return breakage


def _reordered_stages(config):
    stages = config["stages"]
    i, j = stages.index("test"), stages.index("build")
    stages[i], stages[j] = stages[j], stages[i]


USERCODE_BREAKAGES = {
    "a manual deploy made automatic": _manual_made_automatic("deploy"),
    "a manual deploy may fail": _manual_may_fail("deploy", True),
    "a manual deploy without allow_failure (GitLab's default lets the pipeline pass)": _manual_may_fail(
        "deploy", DELETE
    ),
    "an automatic deploy made manual": _automatic_made_manual,
    "a deploy on merge requests": _on_merge_requests,
    "a deploy not serialized": lambda: _not_serialized("deploy"),
    "one resource group for two environments": _shared_resource_group,
    "a deploy in another deployment tier": _wrong_tier,
    "a deploy with another environment's kube context": _foreign_context("deploy"),
    "a deploy into another environment's namespace": _foreign_namespace,
    "a deploy with a kube context of no environment": _context_of_no_environment,
    "a deploy with another environment's values file": _values_of_another_environment,
    "an interruptible deploy": lambda: (
        set_key([f"deploy-{FIRST.name}", "interruptible"], True),
        f"deploy-{FIRST.name}: a deploy must not be interruptible",
    ),
    "two jobs deploy to one environment": _two_deploys("{env}", "helm upgrade --install x y"),
    "lint runs something else": _fixed(
        set_key(["lint", "script"], ["uv run ruff check ."]),
        "lint: script must be exactly ['make lint']",
    ),
    "test skips dg check": _fixed(
        set_key(["test", "script"], ["make test"]),
        "test: script must be exactly ['make test', 'make check']",
    ),
    "test without junit": _fixed(
        set_key(["test", "artifacts"], {"paths": ["reports/"]}),
        "test: must publish a JUnit report",
    ),
    "lint not interruptible": _fixed(set_key(["lint", "interruptible"], False), "lint: must be interruptible"),
    "stages reordered": _fixed(_reordered_stages, "stages must be"),
    "image latest": _fixed(set_key(["variables", "PYTHON_IMAGE"], "python:latest"), "is not pinned"),
    "image untagged": _fixed(set_key(["variables", "HELM_IMAGE"], "alpine/helm"), "is not pinned"),
    "echo a secret": _fixed(
        set_key(["build", "script"], ['echo "$CI_REGISTRY_PASSWORD" > /tmp/p', 'buildah push "$IMAGE"']),
        "build: prints secret variable(s) ['CI_REGISTRY_PASSWORD']",
    ),
    "trace commands": _fixed(set_key(["lint", "before_script"], ["set -x"]), "lint: dumps the environment"),
    "dump env": _fixed(set_key(["lint", "before_script"], ["env | sort"]), "lint: dumps the environment"),
    "debug trace": _fixed(
        set_key(["test", "variables"], {"CI_DEBUG_TRACE": "true"}),
        "test: CI_DEBUG_TRACE prints every variable",
    ),
    "kaniko": _fixed(
        set_key(["build", "image"], "gcr.io/kaniko-project/executor:v1.23.2-debug"),
        "build: kaniko is unmaintained",
    ),
    "latest tag pushed": _fixed(
        set_key(["variables", "IMAGE"], "$CI_REGISTRY_IMAGE:latest"),
        "IMAGE must be $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA",
    ),
    "scan of another image": _fixed(
        set_key(["container_scanning", "variables", "CS_IMAGE"], "$CI_REGISTRY_IMAGE:main"),
        "container_scanning: CS_IMAGE must be $IMAGE",
    ),
    "scan may fail": _fixed(
        set_key(["container_scanning", "allow_failure"], True), "container_scanning: allow_failure"
    ),
    "no scan gate": _fixed(set_key(["scan-gate"], DELETE), "job 'scan-gate' must run dagster_platform.ci.scan_gate"),
    "no version guard": _fixed(set_key(["version-guard"], DELETE), "job 'version-guard' must run"),
    "template version drifted from the platform pin": _fixed(
        set_key(["variables", "DAGSTER_PLATFORM_VERSION"], "1.0.0"),
        "DAGSTER_PLATFORM_VERSION must be the platform's pin",
    ),
    "workflow runs every branch": _fixed(
        set_key(["workflow", "rules"], [{"if": "$CI_COMMIT_BRANCH"}]),
        "workflow:rules must allow exactly",
    ),
}


@pytest.mark.parametrize("breakage", sorted(USERCODE_BREAKAGES))
def test_usercode_rule_rejects(breakage, usercode_pipeline):
    change, expected = USERCODE_BREAKAGES[breakage]()
    problems = check(mutated(usercode_pipeline, change), "usercode")
    assert any(expected in p for p in problems), problems


DEPLOYS = [f"deploy-{env}" for env in ENVS]


def _helm_line(transform):
    def change(config):
        for job in DEPLOYS:
            script = config[job]["script"]
            config[job]["script"] = [transform(line) if "helm upgrade" in line else line for line in script]

    return change


def _smoke_first(config):
    for job in DEPLOYS:
        script = config[job]["script"]
        smoke = [line for line in script if "dagster_platform.ci.smoke" in line]
        config[job]["script"] = smoke + [line for line in script if line not in smoke]


HELM_BREAKAGES = {
    "no --atomic": (_helm_line(lambda s: s.replace("--atomic ", "")), "helm upgrade lacks --atomic"),
    "no --wait": (_helm_line(lambda s: s.replace("--wait ", "")), "helm upgrade lacks --wait"),
    "unpinned chart": (
        _helm_line(lambda s: s.replace('--version "$DAGSTER_PLATFORM_VERSION"', "")),
        "helm upgrade lacks --version",
    ),
    "one environment's values file for all": (
        _helm_line(lambda s: s.replace("values-$DEPLOY_ENV", f"values-{LAST.name}")),
        "-f must be deploy/values-$DEPLOY_ENV.yaml",
    ),
    "no image tag": (
        _helm_line(lambda s: s.replace('--set "deployments[0].image.tag=$CI_COMMIT_SHA"', "")),
        "must --set deployments[0].image.tag=$CI_COMMIT_SHA",
    ),
    "smoke before deploy": (_smoke_first, "the smoke check (dagster_platform.ci.smoke) must run after helm upgrade"),
}


@pytest.mark.parametrize("breakage", sorted(HELM_BREAKAGES))
def test_deploy_rule_rejects(breakage, usercode_pipeline):
    change, expected = HELM_BREAKAGES[breakage]
    problems = check(mutated(usercode_pipeline, change), "usercode")
    # Every environment's deploy job is refused, not only one.
    for job in DEPLOYS:
        assert any(p.startswith(f"{job}: ") and expected in p for p in problems), (job, problems)


def _upgrade_of_another_environment():
    job, other = f"upgrade-{LAST.name}", other_than(LAST)
    change = set_key([job, "variables", "ENV"], other.name if other else "elsewhere")
    return change, f"{job}: must run make platform-upgrade ENV={LAST.name}"


PLATFORM_BREAKAGES = {
    "test job with extras": _fixed(
        set_key(["test", "script"], ["make test PYTEST_ARGS=-x"]),
        "test: script must be exactly ['make test']",
    ),
    "a manual upgrade made automatic": _manual_made_automatic("upgrade"),
    "a manual upgrade may fail": _manual_may_fail("upgrade", True),
    "an upgrade not serialized": lambda: _not_serialized("upgrade"),
    "an upgrade of another environment": _upgrade_of_another_environment,
    "an upgrade with another environment's kube context": _foreign_context("upgrade"),
    "two jobs upgrade one environment": _two_deploys("platform-{env}", "make platform-upgrade"),
    "a release before the tests passed": _fixed(
        set_key(["release", "needs"], ["lint", "render"]), "release: must need ['lint', 'render', 'test']"
    ),
    "a release from the default branch": _fixed(
        set_key(["release", "rules"], [{"if": DEFAULT_BRANCH_RULE}]), "release: must run on release tags only"
    ),
    "a release of another tag": _fixed(
        set_key(["release", "release", "tag_name"], "latest"), "release: release:tag_name must be $CI_COMMIT_TAG"
    ),
    "no release job": _fixed(set_key(["release"], DELETE), "job 'release' is missing"),
    "no release pipelines": _fixed(
        set_key(["workflow", "rules"], [{"if": MR_RULE}, {"if": DEFAULT_BRANCH_RULE}]),
        "workflow:rules must allow exactly merge-request, default-branch and release-tag pipelines",
    ),
}


@pytest.mark.parametrize("breakage", sorted(PLATFORM_BREAKAGES))
def test_platform_rule_rejects(breakage, platform_pipeline):
    change, expected = PLATFORM_BREAKAGES[breakage]()
    problems = check(mutated(platform_pipeline, change), "platform")
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("python:3.11.11-bookworm", True),
        ("registry.example:5000/tools/helm@sha256:" + "a" * 64, True),
        ("python:latest", False),
        ("python", False),
        ("registry.example:5000/python", False),
        ("python:bookworm", False),
    ],
)
def test_image_pinning(image, pinned):
    assert image_pinned(image) is pinned


def test_stage_lists_are_the_documented_ones():
    assert set(STAGES) == {"platform", "usercode"}


def test_the_rendered_repo_has_deploy_values_for_every_environment_and_no_other(rendered_repo):
    files = sorted(path.name for path in (rendered_repo / "deploy").glob("values-*.yaml"))
    assert files == sorted(f"values-{env}.yaml" for env in ENVS)


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=ENVS)
def test_deploy_values_fit_the_helm_command(env, rendered_repo, usercode_pipeline):
    """`--set deployments[0].image.tag=$CI_COMMIT_SHA` must land on this location's one deployment, whose name is
    the Helm release name (DAGSTER_LOCATION), and the values file may not pin a tag of its own; the job deploys
    into the environment's own namespace (its environment.namespace)."""
    values = yaml.safe_load((rendered_repo / "deploy" / f"values-{env.name}.yaml").read_text())
    (deployment,) = values["deployments"]
    assert deployment["name"] == usercode_pipeline.variables["DAGSTER_LOCATION"]
    assert not deployment["image"].get("tag")
    variables = usercode_pipeline.jobs()[f"deploy-{env.name}"]["variables"]
    assert variables["KUBE_NAMESPACE"] == env.namespace, f"{env.file} environment.namespace; run `make generate`"
