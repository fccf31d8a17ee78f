"""Structure of the pipelines: stage order, developer commands, guarded production, no printed secrets, pinned
images. Each rule is shown to pass on the real files and to reject a file that breaks it."""

import pytest
import yaml

from dagster_platform.ci.policy import STAGES, check, image_pinned
from dagster_platform.ci.runner import run_job
from dagster_platform.paths import dagster_version

from .helpers import DELETE, mutated, set_key


def test_platform_pipeline_passes(platform_pipeline):
    assert check(platform_pipeline, "platform") == []


def test_usercode_pipeline_passes(usercode_pipeline):
    assert check(usercode_pipeline, "usercode") == []


def test_stage_order(platform_pipeline, usercode_pipeline):
    assert platform_pipeline.stages == ["lint", "test", "build", "render", "diff", "acceptance", "production"]
    assert usercode_pipeline.stages == ["lint", "test", "build", "scan", "acceptance", "production"]


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


@pytest.mark.parametrize(
    ("kind", "job", "mr", "main", "feature_push"),
    [
        ("usercode", "lint", "on_success", "on_success", "never"),
        ("usercode", "test", "on_success", "on_success", "never"),
        ("usercode", "build", "on_success", "on_success", "never"),
        ("usercode", "container_scanning", "on_success", "on_success", "never"),
        ("usercode", "deploy-acceptance", "never", "on_success", "never"),
        ("usercode", "deploy-production", "never", "manual", "never"),
        ("platform", "lint", "on_success", "on_success", "never"),
        ("platform", "test", "on_success", "on_success", "never"),
        ("platform", "diff", "on_success", "never", "never"),
        ("platform", "upgrade-acceptance", "never", "on_success", "never"),
        ("platform", "upgrade-production", "never", "manual", "never"),
    ],
)
def test_jobs_appear_in_the_right_pipelines(kind, job, mr, main, feature_push, pipeline_whens):
    whens = pipeline_whens[kind]
    assert (whens["mr"][job], whens["main"][job], whens["feature_push"][job]) == (mr, main, feature_push)


def test_job_outside_its_pipeline_is_refused(usercode_pipeline, tmp_path):
    with pytest.raises(RuntimeError, match="not part of a merge_request_event pipeline"):
        run_job(usercode_pipeline, "deploy-production", tmp_path)


# --- each rule rejects a pipeline that breaks it --------------------------------------------------------------


USERCODE_BREAKAGES = {
    "production not manual": (
        set_key(["deploy-production", "rules"], [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]),
        "deploy-production: production must be when: manual",
    ),
    "production may fail": (
        set_key(["deploy-production", "allow_failure"], True),
        "deploy-production: production must set allow_failure: false",
    ),
    "production on merge requests": (
        set_key(
            ["deploy-production", "rules"], [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"', "when": "manual"}]
        ),
        "deploy-production: must run only on the default branch",
    ),
    "production not serialized": (
        set_key(["deploy-production", "resource_group"], DELETE),
        "deploy-production: must be serialized by a resource_group",
    ),
    "one resource group for both": (
        set_key(["deploy-production", "resource_group"], "acceptance"),
        "is shared with another environment",
    ),
    "production not protected tier": (
        set_key(["deploy-production", "environment", "deployment_tier"], "staging"),
        "deploy-production: environment deployment_tier must be production",
    ),
    "acceptance uses the production context": (
        set_key(["deploy-acceptance", "variables", "KUBE_CONTEXT"], "$KUBE_CONTEXT_PRODUCTION"),
        "deploy-acceptance: references production variables ['KUBE_CONTEXT_PRODUCTION']",
    ),
    "acceptance manual": (
        set_key(["deploy-acceptance", "rules"], [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual"}]),
        "deploy-acceptance: acceptance deploys automatically",
    ),
    "lint runs something else": (
        set_key(["lint", "script"], ["uv run ruff check ."]),
        "lint: script must be exactly ['make lint']",
    ),
    "test skips dg check": (
        set_key(["test", "script"], ["make test"]),
        "test: script must be exactly ['make test', 'make check']",
    ),
    "test without junit": (
        set_key(["test", "artifacts"], {"paths": ["reports/"]}),
        "test: must publish a JUnit report",
    ),
    "lint not interruptible": (set_key(["lint", "interruptible"], False), "lint: must be interruptible"),
    "stages reordered": (
        set_key(["stages"], ["lint", "build", "test", "scan", "acceptance", "production"]),
        "stages must be",
    ),
    "image latest": (set_key(["variables", "PYTHON_IMAGE"], "python:latest"), "is not pinned"),
    "image untagged": (set_key(["variables", "HELM_IMAGE"], "alpine/helm"), "is not pinned"),
    "echo a secret": (
        set_key(["build", "script"], ['echo "$CI_REGISTRY_PASSWORD" > /tmp/p', 'buildah push "$IMAGE"']),
        "build: prints secret variable(s) ['CI_REGISTRY_PASSWORD']",
    ),
    "trace commands": (set_key(["lint", "before_script"], ["set -x"]), "lint: dumps the environment"),
    "dump env": (set_key(["lint", "before_script"], ["env | sort"]), "lint: dumps the environment"),
    "debug trace": (
        set_key(["test", "variables"], {"CI_DEBUG_TRACE": "true"}),
        "test: CI_DEBUG_TRACE prints every variable",
    ),
    "kaniko": (
        set_key(["build", "image"], "gcr.io/kaniko-project/executor:v1.23.2-debug"),
        "build: kaniko is unmaintained",
    ),
    "latest tag pushed": (
        set_key(["variables", "IMAGE"], "$CI_REGISTRY_IMAGE:latest"),
        "IMAGE must be $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA",
    ),
    "scan of another image": (
        set_key(["container_scanning", "variables", "CS_IMAGE"], "$CI_REGISTRY_IMAGE:main"),
        "container_scanning: CS_IMAGE must be $IMAGE",
    ),
    "scan may fail": (set_key(["container_scanning", "allow_failure"], True), "container_scanning: allow_failure"),
    "no scan gate": (set_key(["scan-gate"], DELETE), "job 'scan-gate' must run dagster_platform.ci.scan_gate"),
    "no version guard": (set_key(["version-guard"], DELETE), "job 'version-guard' must run"),
    "template version drifted from the platform pin": (
        set_key(["variables", "DAGSTER_PLATFORM_VERSION"], "1.0.0"),
        "DAGSTER_PLATFORM_VERSION must be the platform's pin",
    ),
    "workflow runs every branch": (
        set_key(["workflow", "rules"], [{"if": "$CI_COMMIT_BRANCH"}]),
        "workflow:rules must allow exactly",
    ),
}


@pytest.mark.parametrize("breakage", sorted(USERCODE_BREAKAGES))
def test_usercode_rule_rejects(breakage, usercode_pipeline):
    change, expected = USERCODE_BREAKAGES[breakage]
    problems = check(mutated(usercode_pipeline, change), "usercode")
    assert any(expected in p for p in problems), problems


DEPLOYS = ("deploy-acceptance", "deploy-production")


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
    "wrong values file": (
        _helm_line(lambda s: s.replace("values-$DEPLOY_ENV", "values-production")),
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
    assert any(expected in p for p in problems), problems


PLATFORM_BREAKAGES = {
    "test job with extras": (
        set_key(["test", "script"], ["make test PYTEST_ARGS=-x"]),
        "test: script must be exactly ['make test']",
    ),
    "production upgrade automatic": (
        set_key(["upgrade-production", "rules"], [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]),
        "upgrade-production: production must be when: manual",
    ),
    "production upgrade not serialized": (
        set_key(["upgrade-production", "resource_group"], DELETE),
        "upgrade-production: must be serialized",
    ),
    "production upgrade on acceptance": (
        set_key(["upgrade-production", "variables", "ENV"], "acceptance"),
        "upgrade-production: must run make platform-upgrade ENV=production",
    ),
    "two production deploys": (
        set_key(["hotfix"], {"stage": "production", "script": ["make platform-upgrade"], "environment": "production"}),
        "exactly one job must deploy to production",
    ),
}


@pytest.mark.parametrize("breakage", sorted(PLATFORM_BREAKAGES))
def test_platform_rule_rejects(breakage, platform_pipeline):
    change, expected = PLATFORM_BREAKAGES[breakage]
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


@pytest.mark.parametrize("env", ["acceptance", "production"])
def test_deploy_values_fit_the_helm_command(env, rendered_repo, usercode_pipeline):
    """`--set deployments[0].image.tag=$CI_COMMIT_SHA` must land on this location's one deployment, whose name is
    the Helm release name (DAGSTER_LOCATION), and the values file may not pin a tag of its own."""
    values = yaml.safe_load((rendered_repo / "deploy" / f"values-{env}.yaml").read_text())
    (deployment,) = values["deployments"]
    assert deployment["name"] == usercode_pipeline.variables["DAGSTER_LOCATION"]
    assert not deployment["image"].get("tag")
    variables = usercode_pipeline.jobs()[f"deploy-{env}"]["variables"]
    namespace = usercode_pipeline.variables[variables["KUBE_NAMESPACE"].lstrip("$")]
    assert namespace == f"dagster-{env}"
