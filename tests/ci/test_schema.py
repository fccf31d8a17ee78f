"""Every CI file validates against GitLab's CI schema (offline), its includes resolve to files that exist, and the
user-code component's inputs are checked as GitLab checks them when it creates a pipeline."""

import shutil
from pathlib import Path

import pytest
import yaml

from dagster_platform.ci.config import (
    gitlab_ci_local,
    load_pipeline,
    platform_projects,
    refusal,
    schema_check,
    seed_includes,
)
from dagster_platform.ci.policy import check
from dagster_platform.template.render import render

from .helpers import COMPANY, ENVS, PLATFORM_CI, USERCODE_CI, as_checkout, load_usercode, other_answers

# The template's default answers (the rendered_repo fixture).
LOCATION, PACKAGE = "example-pipelines", "example_pipelines"


@pytest.mark.parametrize("path", [PLATFORM_CI, USERCODE_CI], ids=["platform", "usercode-component"])
def test_ci_file_matches_gitlab_schema(path):
    ok, output = schema_check([path])
    assert ok, output


def test_the_component_is_a_spec_header_and_a_pipeline():
    """GitLab's component layout: `spec:` (typed, described inputs) then `---` and the configuration; each document
    is validated against GitLab's schema."""
    spec, config = yaml.safe_load_all(USERCODE_CI.read_text())
    assert set(spec) == {"spec"}
    for name, declared in spec["spec"]["inputs"].items():
        assert declared.get("type") in ("string", "number", "boolean", "array"), name
        assert declared.get("description"), f"input {name} has no description"
    assert {"location", "package"} <= {k for k, v in spec["spec"]["inputs"].items() if "default" not in v}
    assert "stages" in config and "spec" not in config


def test_schema_names_the_component_document_it_refuses(tmp_path):
    broken = tmp_path / "template.yml"
    broken.write_text(USERCODE_CI.read_text().replace("type: number", "type: numeric", 1))
    ok, output = schema_check([broken])
    assert not ok
    assert f"{broken} (document 1)::$.spec.inputs." in output, output


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


def test_rendered_repo_includes_the_platform_component(usercode_pipeline):
    assert usercode_pipeline.problems == []
    assert USERCODE_CI in usercode_pipeline.files
    assert usercode_pipeline.templates == ["Jobs/Container-Scanning.gitlab-ci.yml"]
    deploys = [f"deploy-{env}" for env in ENVS]
    assert [job for job in usercode_pipeline.jobs() if job in deploys] == deploys, "run `make generate`"


def test_the_repo_states_the_platform_release_once(usercode_pipeline):
    """The repo's .gitlab-ci.yml is one component include at the release platform/company.yaml pins, with its
    inputs: no project, ref or PLATFORM_* variable beside it. The jobs fetch the tools at that same release."""
    ci = yaml.safe_load(usercode_pipeline.path.read_text())
    component = f"$CI_SERVER_FQDN/{COMPANY.platform_project}/usercode@{COMPANY.platform_version}"
    assert ci == {"include": [{"component": component, "inputs": {"location": LOCATION, "package": PACKAGE}}]}
    variables = usercode_pipeline.variables
    assert (variables["PLATFORM_TOOLS_PROJECT"], variables["PLATFORM_TOOLS_REF"]) == (
        COMPANY.platform_project,
        COMPANY.platform_version,
    )
    # The inputs reach the jobs, the defaults where the repo sets none.
    assert (variables["DAGSTER_LOCATION"], variables["PACKAGE_NAME"]) == (LOCATION, PACKAGE)
    spec = next(yaml.safe_load_all(USERCODE_CI.read_text()))["spec"]["inputs"]
    assert variables["SMOKE_TIMEOUT"] == str(spec["smoke_timeout"]["default"])


def test_other_answers_render_a_valid_pipeline(tmp_path):
    answers = other_answers()
    repo = as_checkout(render(tmp_path, answers))
    pipeline = load_usercode(repo, answers["platform"]["ci_project"])
    assert pipeline.problems == []
    assert pipeline.variables["DAGSTER_LOCATION"] == answers["location_name"]
    assert pipeline.variables["PACKAGE_NAME"] == answers["package_name"]
    (include,) = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())["include"]
    assert include["component"] == "$CI_SERVER_FQDN/data/platform/usercode@2.3.0"
    ok, output = schema_check([repo / ".gitlab-ci.yml"])
    assert ok, output


# --- the component's inputs, refused when GitLab creates the pipeline -------------------------------------------


def _with_inputs(rendered_repo, tmp_path, inputs: dict) -> Path:
    """A copy of the rendered repo whose component include passes `inputs` instead (a git checkout)."""
    repo = tmp_path / "repo"
    shutil.copytree(rendered_repo, repo, ignore=shutil.ignore_patterns(".git"))
    ci = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())
    ci["include"][0]["inputs"] = inputs
    (repo / ".gitlab-ci.yml").write_text(yaml.safe_dump(ci, sort_keys=False))
    return as_checkout(repo)


def _list(repo: Path, tmp_path: Path):
    """`gitlab-ci-local --list` of the repo, its component include served from this checkout (offline)."""
    state = tmp_path / "state"
    seeded = seed_includes(repo / ".gitlab-ci.yml", state, platform_projects(), repo)
    if seeded.problems:
        return seeded.problems
    return gitlab_ci_local(repo, state, "--list")


def test_the_rendered_repo_lists_its_jobs_through_the_component(rendered_repo, tmp_path):
    done = _list(rendered_repo, tmp_path)
    assert done.returncode == 0, done.stderr
    jobs = [line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()]
    assert {"lint", "version-guard", "test", "build", "container_scanning", "scan-gate"} <= set(jobs)
    assert {f"deploy-{env}" for env in ENVS} <= set(jobs)


def test_an_input_of_the_wrong_type_is_refused(rendered_repo, tmp_path):
    repo = _with_inputs(rendered_repo, tmp_path, {"location": LOCATION, "package": PACKAGE, "smoke_timeout": "600"})
    done = _list(repo, tmp_path)
    assert done.returncode != 0
    address = f"component {COMPANY.platform_project}/usercode@{COMPANY.platform_version}"
    assert refusal(done.stderr + done.stdout) == (
        f"This GitLab CI configuration is invalid: `{address}`: `smoke_timeout` input: provided value is not a number."
    )
    pipeline = load_usercode(repo)
    (problem,) = pipeline.problems
    assert problem.endswith("`smoke_timeout` input: provided value is not a number."), problem
    # ci-check's rules add nothing to it: one line for one bad input.
    assert check(pipeline, "usercode") == [problem]


def test_a_missing_required_input_is_refused(rendered_repo, tmp_path):
    repo = _with_inputs(rendered_repo, tmp_path, {"package": PACKAGE})
    done = _list(repo, tmp_path)
    assert done.returncode != 0
    assert "`location` input: required value has not been provided." in refusal(done.stderr + done.stdout)


def test_an_input_the_component_does_not_declare_is_refused(rendered_repo, tmp_path):
    """GitLab refuses an unknown input name at pipeline creation; gitlab-ci-local 4.64.1 ignores it, so the
    include walk that serves the component refuses it, in GitLab's words, before gitlab-ci-local runs."""
    inputs = {"location": LOCATION, "package": PACKAGE, "smoke_timout": 600}
    repo = _with_inputs(rendered_repo, tmp_path, inputs)
    address = f"$CI_SERVER_FQDN/{COMPANY.platform_project}/usercode@{COMPANY.platform_version}"
    expected = f"{repo / '.gitlab-ci.yml'}: component {address}: unknown input arguments: smoke_timout"
    assert _list(repo, tmp_path) == [expected]
    assert load_usercode(repo).problems == [expected]


def test_a_component_that_does_not_exist_is_reported(tmp_path, rendered_repo):
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text((rendered_repo / ".gitlab-ci.yml").read_text().replace("/usercode@", "/nope@"))
    (problem,) = load_usercode(tmp_path).problems
    assert "has no templates/nope.yml or templates/nope/template.yml" in problem, problem


def test_a_partial_version_is_refused(tmp_path, rendered_repo):
    """`@1` or `~latest` would float under the repo (and gitlab-ci-local would ask the network): pin a release."""
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text((rendered_repo / ".gitlab-ci.yml").read_text().replace(f"@{COMPANY.platform_version}", "@~latest"))
    (problem,) = load_usercode(tmp_path).problems
    assert problem.endswith("pin a full release, e.g. @1.4.0 (not ~latest)"), problem


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
