"""Every CI file validates against GitLab's CI schema (offline) and its includes resolve to files that exist."""

import pytest
import yaml

from dagster_platform.ci.config import load_pipeline, schema_check
from dagster_platform.template.render import render

from .helpers import ENVS, PLATFORM_CI, USERCODE_CI, as_checkout, load_usercode, other_answers


@pytest.mark.parametrize("path", [PLATFORM_CI, USERCODE_CI], ids=["platform", "usercode-template"])
def test_ci_file_matches_gitlab_schema(path):
    ok, output = schema_check([path])
    assert ok, output


def test_rendered_repo_ci_matches_gitlab_schema(rendered_repo):
    ok, output = schema_check([rendered_repo / ".gitlab-ci.yml"])
    assert ok, output


def test_schema_rejects_an_invalid_file(tmp_path):
    bad = tmp_path / ".gitlab-ci.yml"
    bad.write_text("deploy-x:\n  stage: x\n  script: [make deploy]\n  when: sometimes\n  resource_group: 3\n")
    ok, output = schema_check([bad])
    assert not ok
    assert "sometimes" in output or "when" in output


def test_platform_ci_has_no_unresolved_includes(platform_pipeline):
    assert platform_pipeline.problems == []


def test_rendered_repo_includes_the_platform_template(usercode_pipeline):
    assert usercode_pipeline.problems == []
    assert USERCODE_CI in usercode_pipeline.files
    assert usercode_pipeline.templates == ["Jobs/Container-Scanning.gitlab-ci.yml"]
    deploys = [f"deploy-{env}" for env in ENVS]
    assert [job for job in usercode_pipeline.jobs() if job in deploys] == deploys, "run `make generate`"


def test_include_ref_and_tools_ref_agree(usercode_pipeline):
    """The jobs fetch the platform's tools at PLATFORM_CI_REF: it must be the ref the pipeline was included at."""
    (include,) = yaml.safe_load(usercode_pipeline.path.read_text())["include"]
    variables = usercode_pipeline.variables
    assert include["project"] == variables["PLATFORM_CI_PROJECT"]
    assert include["ref"] == variables["PLATFORM_CI_REF"]
    assert include["file"] == "ci/usercode.gitlab-ci.yml"


def test_other_answers_render_a_valid_pipeline(tmp_path):
    answers = other_answers()
    repo = as_checkout(render(tmp_path, answers))
    pipeline = load_usercode(repo, answers["platform"]["ci_project"])
    assert pipeline.problems == []
    assert pipeline.variables["DAGSTER_LOCATION"] == answers["location_name"]
    assert pipeline.variables["PACKAGE_NAME"] == answers["package_name"]
    assert pipeline.variables["PLATFORM_CI_PROJECT"] == answers["platform"]["ci_project"]
    assert pipeline.variables["PLATFORM_CI_REF"] == answers["platform"]["ci_ref"]
    ok, output = schema_check([repo / ".gitlab-ci.yml"])
    assert ok, output


def test_missing_include_is_reported(tmp_path, rendered_repo):
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text(
        (rendered_repo / ".gitlab-ci.yml").read_text().replace("ci/usercode.gitlab-ci.yml", "ci/nope.gitlab-ci.yml")
    )
    problems = load_usercode(tmp_path).problems
    assert any("ci/nope.gitlab-ci.yml does not exist" in p for p in problems), problems


def test_unknown_project_and_local_includes_are_reported(tmp_path):
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text(
        "include:\n"
        "  - project: someone/else\n    ref: main\n    file: x.yml\n"
        "  - local: ci/missing.yml\n"
        "  - template: Made-Up.gitlab-ci.yml\n"
    )
    problems = load_pipeline(ci).problems
    assert len(problems) == 3, problems


def test_default_keys_gitlab_ci_local_would_drop_are_reported(tmp_path):
    """gitlab-ci-local passes only some `default:` keys to jobs; a file relying on another would be checked wrongly."""
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text("default:\n  image: python:3.11.11\n  interruptible: true\nlint:\n  script: [make lint]\n")
    expected = f"{ci}: default: ['interruptible'] is not applied by gitlab-ci-local; set it per job"
    assert load_pipeline(ci).problems == [expected]


def test_unresolvable_pipeline_is_reported(tmp_path):
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text("lint:\n  extends: .nowhere\n  script: [make lint]\n")
    (problem,) = load_pipeline(ci).problems
    assert "gitlab-ci-local --preview failed" in problem and ".nowhere" in problem, problem


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ("x:\n  stage: c\n  script: ['true']\n", "stage:c not found for x"),
        ("x:\n  stage: a\n  needs: [nope]\n  script: ['true']\n", "needs: [nope] for x could not be found"),
        ("x: {stage: a, needs: [y], script: ['true']}\ny: {stage: b, script: ['true']}\n", "is in a future stage"),
    ],
    ids=["unknown stage", "unknown needs", "needs a later stage"],
)
def test_stages_and_needs_are_validated(tmp_path, jobs, message):
    """gitlab-ci-local's validation of stages and needs, reported as a pipeline problem (the policy's input)."""
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text("stages: [a, b]\n" + jobs)
    (problem,) = load_pipeline(ci).problems
    assert message in problem, problem
