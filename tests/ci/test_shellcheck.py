"""The shell in every CI job passes shellcheck (scripts as gitlab-ci-local resolves them: anchors, extends, default)."""

import copy

import pytest

from dagster_platform.ci.config import Pipeline
from dagster_platform.ci.policy import job_scripts, shellcheck

from .helpers import ENVS


def test_platform_job_scripts_pass_shellcheck(platform_pipeline):
    upgrades = {f"upgrade-{env}:script" for env in ENVS}
    assert set(job_scripts(platform_pipeline)) >= {"lint:script", "test:script", *upgrades}
    assert shellcheck(platform_pipeline) == []


def test_usercode_job_scripts_pass_shellcheck(usercode_pipeline):
    scripts = job_scripts(usercode_pipeline)
    deploys = [f"deploy-{env}:script" for env in ENVS]
    assert {"version-guard:script", "build:script", *deploys} <= set(scripts)
    # The anchor with the tools fetch is flattened into the job, as GitLab does.
    assert all("git -C" in scripts[deploy] for deploy in deploys)
    assert shellcheck(usercode_pipeline) == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("helm upgrade --install $DAGSTER_LOCATION chart", "SC2086"),  # unquoted expansion
        ('if [ "$DEPLOY_ENV" == "$PREVIEW_ENV" ]; then true; fi', "SC3014"),  # bashism in sh
        ("releases=`helm list -q`", "SC2006"),  # legacy backticks
    ],
)
def test_shellcheck_rejects_bad_shell(usercode_pipeline, line, code):
    config = copy.deepcopy(usercode_pipeline.config)
    for env in ENVS:
        job = config[f"deploy-{env}"]
        job["script"] = [*job["script"], line]
    broken = Pipeline(path=usercode_pipeline.path, config=config, templates=usercode_pipeline.templates)
    problems = shellcheck(broken)
    for env in ENVS:
        assert any(code in p and p.startswith(f".gitlab-ci.yml deploy-{env}:") for p in problems), problems
