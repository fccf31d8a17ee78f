"""Every bad answer is refused before anything is kept: a message naming the problem with an example of a
valid answer, a non-zero exit, and no directory left behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagster_platform import platform_config
from dagster_platform.paths import TEMPLATE_DIR

from .helpers import OTHER_PLATFORM

COOKIECUTTER = [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE_DIR)]

BAD_ANSWERS = [
    ({"location_name": "Sales_Pipelines"}, "is not a Kubernetes DNS-1123 label", "example: sales-pipelines"),
    ({"location_name": "-sales"}, "is not a Kubernetes DNS-1123 label", "example: sales-pipelines"),
    ({"location_name": "sales-"}, "is not a Kubernetes DNS-1123 label", "example: sales-pipelines"),
    ({"location_name": "s" * 54}, "at most 53 characters", "example: sales-pipelines"),
    ({"project_name": "Sales & Marketing"}, "'sales-&-marketing' is not a Kubernetes", "example: sales-pipelines"),
    ({"location_name": "dagster"}, "is reserved by the platform", "example: sales-pipelines"),
    ({"location_name": "dagster-daemon"}, "is reserved by the platform", "example: sales-pipelines"),
    ({"location_name": "test"}, "is reserved by the platform", "example: sales-pipelines"),
    ({"package_name": "1sales"}, "is not a valid Python package name", "example: sales_pipelines"),
    ({"package_name": "sales-pipelines"}, "is not a valid Python package name", "example: sales_pipelines"),
    ({"package_name": "class"}, "is not a valid Python package name", "example: sales_pipelines"),
    ({"package_name": "dagster"}, "is reserved (it would shadow Dagster)", "example: sales_pipelines"),
    ({"package_name": "tests"}, "is reserved", "example: sales_pipelines"),
    ({"package_name": "json"}, "clashes with an installed or standard-library package", "example: sales_pipelines"),
    ({"package_name": "yaml"}, "clashes with an installed or standard-library package", "example: sales_pipelines"),
    ({"package_name": "requests"}, "clashes with an installed", "example: sales_pipelines"),
    ({"project_slug": "other-dir"}, "must equal location_name", "leave it at its default"),
    ({"owner_team": "Data Platform"}, "'Data Platform' is not a team slug (lowercase", "example: sales-analytics"),
    ({"owner_team": "sales-"}, "'sales-' is not a team slug", "example: sales-analytics"),
    ({"owner_team": "s" * 64}, "at most 63 characters", "example: sales-analytics"),
    ({"owner_team": ""}, "owner_team is required: the owning team's slug", "e.g. sales-analytics"),
    ({"owner_email": "nobody"}, "is not an e-mail address", "example: sales@example.com"),
    ({"owner_email": " "}, "owner_email is required", "e.g. sales@example.com"),
    ({"description": 'Say "hi"'}, "without quotes or backslashes", "example: Daily sales"),
    ({"project_name": "Line\\nbreak \\\\"}, "without quotes or backslashes", "example: Sales Pipelines"),
    ({"project_name": 'Quote " and \\ backslash'}, "is not a Kubernetes DNS-1123 label", "example: sales-pipelines"),
]


def run_cookiecutter(out: Path, answers: dict[str, str]) -> subprocess.CompletedProcess:
    args = [f"{key}={value}" for key, value in answers.items()]
    return subprocess.run([*COOKIECUTTER, "--output-dir", str(out), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("answers", "problem", "hint"), BAD_ANSWERS, ids=[str(a) for a, _, _ in BAD_ANSWERS])
def test_bad_answer_is_refused_and_nothing_is_written(tmp_path, answers, problem, hint):
    result = run_cookiecutter(tmp_path, answers)
    assert result.returncode != 0
    assert problem in result.stderr
    assert hint in result.stderr
    assert "Nothing was generated" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_all_problems_are_reported_at_once(tmp_path):
    result = run_cookiecutter(tmp_path, {"location_name": "Bad_Name", "package_name": "class", "owner_email": "x"})
    assert result.returncode != 0
    assert result.stderr.count("ERROR: ") == 3
    assert list(tmp_path.iterdir()) == []


def test_existing_repo_is_never_overwritten(tmp_path):
    existing = tmp_path / "existing-pipelines"
    existing.mkdir()
    (existing / "my_work.py").write_text("precious = True\n")
    result = run_cookiecutter(tmp_path, {"project_name": "Existing Pipelines"})
    assert result.returncode != 0
    assert "already exists" in result.stdout + result.stderr
    assert [p.name for p in existing.iterdir()] == ["my_work.py"]
    assert (existing / "my_work.py").read_text() == "precious = True\n"


def test_valid_answers_render(tmp_path):
    result = run_cookiecutter(tmp_path, {"project_name": "Sales Pipelines"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sales-pipelines/src/sales_pipelines/definitions.py").exists()


# --- what cookiecutter leaves in the temp dir: it renders the hook, answers included, into a temporary file
# it never deletes; the hook removes its own rendered copy (for people running cookiecutter/cruft directly).
@pytest.mark.parametrize("answers", [{"owner_email": "secret-team@example.org"}, {"owner_email": "secret-team"}])
def test_hook_leaves_no_answers_in_the_temp_dir(tmp_path, answers):
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "out"
    args = [f"{key}={value}" for key, value in answers.items()]
    env = {**os.environ, "TMPDIR": str(temp)}  # tempfile.gettempdir() of cookiecutter: this empty directory
    subprocess.run([*COOKIECUTTER, "--output-dir", str(out), *args], env=env, capture_output=True, timeout=120)
    assert list(temp.iterdir()) == []


# --- `dagster-platform template new` (make new-usercode) without a terminal: refusals before cruft runs ------
def template_new(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dagster_platform.cli", "template", "new", "--output-dir", str(tmp_path), *args],
        input=stdin, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"project_name": "Bad", "location_name": "Bad_Name"}, "location_name 'Bad_Name' is not a Kubernetes"),
        ({"project_name": "Sales", "owner_email": "nobody"}, "owner_email 'nobody' is not an e-mail address"),
        ({"project_name": "Sales", "_platform": OTHER_PLATFORM}, "'_platform' is a platform setting"),
        ({"project_name": "Sales", "grpc_port": 4001}, "'grpc_port' is not a question of the template"),
        ({"projet_name": "Sales"}, "'projet_name' is not a question of the template"),
    ],
)
def test_no_input_refusal_is_one_block_without_traceback(tmp_path, context, expected):
    result = template_new(tmp_path, "--no-input", "--context", json.dumps(context))
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "Nothing was generated" in result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("ERROR: ") for line in lines[:-1]) and len(lines) <= 3, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_refusal_of_a_context_that_is_not_json(tmp_path):
    result = template_new(tmp_path, "--no-input", "--context", "{project_name: Sales}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "CONTEXT is not JSON" in result.stderr and "Traceback" not in result.stderr


def test_end_of_input_while_asking_is_refused_in_one_line(tmp_path):
    result = template_new(tmp_path, stdin="Sales Pipelines\n")
    assert result.returncode == 1
    assert result.stderr.strip() == "ERROR: no answer (end of input). Nothing was generated."
    assert list(tmp_path.iterdir()) == []


def test_template_defaults_are_the_platform_settings():
    """cookiecutter.json's `_platform` is what `make new-usercode` passes from the platform's company and
    environment files, so a plain `cookiecutter usercode-template` renders the same repository."""
    from dagster_platform.template.render import default_answers, platform_context

    platform = platform_context()
    assert default_answers()["_platform"] == platform["_platform"], "cookiecutter.json is stale: make generate"
    facts, company = platform["_platform"], platform_config.company()
    assert facts["image_registry"] == company.image_registry
    assert (facts["ci_project"], facts["ci_ref"]) == (company.platform_project, company.platform_ref)
    assert (facts["grpc_port"], facts["label_domain"]) == (company.grpc_port, company.label_domain)
    declared = platform_config.environments()
    assert [env["name"] for env in facts["environments"]] == [env.name for env in declared]  # promotion order
    for env, source in zip(facts["environments"], declared, strict=True):
        assert env == {
            "name": source.name, "tier": source.tier, "namespace": source.namespace,
            "postgres_secret": source.postgres_secret, "warehouse_domain": source.warehouse_domain,
            "previews": source.previews,
        }  # fmt: skip


def test_prompt_and_hook_share_one_set_of_validators():
    from dagster_platform.template.new import QUESTIONS
    from dagster_platform.template.render import validators

    checks = validators()
    assert list(checks.FIELDS) == list(QUESTIONS)
    assert checks.RENDERED is False  # imported unrendered: it must not delete the template's own file
    assert (TEMPLATE_DIR / "hooks/pre_gen_project.py").exists()


# --- one example per question: the prompt shows it, every refusal of that answer names it ----------------
# An answer each check refuses (not for emptiness): its refusal must end with that question's example.
INVALID = {
    "project_name": 'Say "hi"',
    "location_name": "Bad_Name",
    "package_name": "1sales",
    "owner_team": "Data Platform",
    "owner_email": "nobody",
    "description": "back\\slash",
}


@pytest.mark.parametrize("key", list(INVALID))
def test_every_refusal_of_an_answer_names_its_one_example(key):
    from dagster_platform.template.render import validators

    checks = validators()
    assert list(INVALID) == list(checks.FIELDS)
    example = checks.EXAMPLES[key]
    assert checks.FIELDS[key](example) is None, f"the example {example!r} of {key} is refused itself"
    assert checks.FIELDS[key](INVALID[key]).endswith(f"; example: {example}")
    for empty in ("", "   "):
        required = checks.FIELDS[key](empty)
        assert required.startswith(f"{key} is required: ") and required.endswith(f", e.g. {example}"), required


def scripted(answers: list[str]):
    """A `read` for new.ask: records each prompt and gives the next answer."""
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        return answers[len(prompts) - 1]

    return read, prompts


def test_an_empty_answer_is_refused_saying_what_is_expected_and_asked_again():
    from dagster_platform.template.new import QUESTIONS, ask
    from dagster_platform.template.render import validators

    checks = validators()
    read, prompts = scripted(
        ["", "Sales Pipelines", "", "", "", "Data Platform", "sales-analytics", "", "sales@example.com", ""]
    )
    said: list[str] = []
    answers = ask(checks, {}, read=read, write=said.append)
    assert answers["owner_team"] == "sales-analytics"
    assert answers["location_name"] == "sales-pipelines"  # Enter takes a default; only a question without one
    assert said == [
        "  ! project_name is required: the project's human-readable name, e.g. Sales Pipelines",
        "  ! owner_team is required: the owning team's slug, e.g. sales-analytics",
        "  ! " + checks.FIELDS["owner_team"]("Data Platform"),
        "  ! owner_email is required: the team's e-mail address for alerts, e.g. sales@example.com",
    ]
    team = QUESTIONS["owner_team"]
    assert prompts.count(f"{team} (e.g. sales-analytics): ") == 3  # asked again at once, each time
    # The question and its refusal explain a slug in the same words, with the same single example.
    for words in ("lowercase letters, digits, '-' or '_'", "GitLab group or on-call rota"):
        assert words in team and words in said[2], words
    assert said[2].endswith("; example: sales-analytics")
    # Every question shows its default, or else the example its refusals name.
    for key, question in QUESTIONS.items():
        first = next(prompt for prompt in prompts if prompt.startswith(question))
        assert first.endswith("]: ") or first == f"{question} (e.g. {checks.EXAMPLES[key]}): ", first


def test_enter_on_the_team_question_is_refused_by_make_new_usercode(tmp_path):
    result = template_new(tmp_path, stdin="Sales Pipelines\n\n\n\n")
    assert "  ! owner_team is required: the owning team's slug, e.g. sales-analytics\n" in result.stdout
    assert result.returncode == 1  # then the end of input: nothing was generated
    assert list(tmp_path.iterdir()) == []
