"""The shell in every CI job passes shellcheck (scripts as gitlab-ci-local resolves them: anchors, extends, default)."""

import copy

import pytest

from dagster_platform.ci.config import Pipeline
from dagster_platform.ci.policy import job_scripts, shellcheck


def test_platform_job_scripts_pass_shellcheck(platform_pipeline):
    assert set(job_scripts(platform_pipeline)) >= {"lint:script", "test:script", "upgrade-production:script"}
    assert shellcheck(platform_pipeline) == []


def test_usercode_job_scripts_pass_shellcheck(usercode_pipeline):
    scripts = job_scripts(usercode_pipeline)
    assert {"version-guard:script", "build:script", "deploy-production:script"} <= set(scripts)
    # The anchor with the tools fetch is flattened into the job, as GitLab does.
    assert "git -C" in scripts["deploy-production:script"]
    assert shellcheck(usercode_pipeline) == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("helm upgrade --install $DAGSTER_LOCATION chart", "SC2086"),  # unquoted expansion
        ('if [ "$DEPLOY_ENV" == production ]; then true; fi', "SC3014"),  # bashism in sh
        ("releases=`helm list -q`", "SC2006"),  # legacy backticks
    ],
)
def test_shellcheck_rejects_bad_shell(usercode_pipeline, line, code):
    config = copy.deepcopy(usercode_pipeline.config)
    for job in ("deploy-acceptance", "deploy-production"):
        config[job]["script"] = [*config[job]["script"], line]
    broken = Pipeline(path=usercode_pipeline.path, config=config, templates=usercode_pipeline.templates)
    problems = shellcheck(broken)
    assert any(code in p and p.startswith(".gitlab-ci.yml deploy-") for p in problems), problems
