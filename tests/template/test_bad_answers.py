"""Every bad answer is refused before anything is kept: a message naming the problem with an example of a
valid answer, a non-zero exit, and no directory left behind. The checks are copier.yml's validators, the only
copy: `make new-usercode` (dagster-platform template new) lets copier check CONTEXT and the defaults with them,
and copier asks again at once when one refuses a typed answer."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dagster_platform import cli, platform_config
from dagster_platform.paths import ROOT, TEMPLATE_DIR
from dagster_platform.template.render import platform_context, questions, render

from .helpers import OTHER_PLATFORM, converse

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
    ({"owner_team": "Data Platform"}, "'Data Platform' is not a team slug (lowercase", "example: sales-analytics"),
    ({"owner_team": "sales-"}, "'sales-' is not a team slug", "example: sales-analytics"),
    ({"owner_team": "s" * 64}, "at most 63 characters", "example: sales-analytics"),
    ({"owner_team": ""}, "owner_team is required: the owning team's slug", "e.g. sales-analytics"),
    ({"owner_email": "nobody"}, "is not an e-mail address", "example: sales@example.com"),
    ({"owner_email": " "}, "owner_email is required", "e.g. sales@example.com"),
    ({"description": 'Say "hi"'}, "without quotes or backslashes", "example: Daily sales"),
    ({"project_name": "Line\\nbreak \\\\"}, "without quotes or backslashes", "example: Sales Pipelines"),
    ({"project_name": 'Quote " and \\ backslash'}, "without quotes or backslashes", "example: Sales Pipelines"),
]


# Every answer a data engineer must give, valid: each case replaces one (or leaves one derived default to refuse).
GOOD = {"owner_team": "sales-analytics", "owner_email": "sales@example.com"}


def template_new(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`dagster-platform template new ...` run in this process (the same main() as the command; a process per
    case cost a second of imports each): its exit code, stdout and stderr, stdin not a terminal."""
    out, err, argv = io.StringIO(), io.StringIO(), ["template", "new", "--output-dir", str(tmp_path), *args]
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    finally:
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def new_no_input(tmp_path: Path, answers: dict) -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return template_new(tmp_path, "--no-input", "--context", json.dumps({**GOOD, **answers}))


@pytest.mark.parametrize(("answers", "problem", "hint"), BAD_ANSWERS, ids=[str(a) for a, _, _ in BAD_ANSWERS])
def test_bad_answer_is_refused_in_one_line_and_nothing_is_written(tmp_path, answers, problem, hint):
    result = new_no_input(tmp_path, answers)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ERROR: ") and problem in line and hint in line, line
    assert line.endswith("Nothing was generated.") and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_rendering_with_copier_directly_refuses_the_same_answers(tmp_path):
    """The platform's render() (copier's API, as any copier run) refuses with the same validator."""
    with pytest.raises(ValueError, match="location_name 'Bad_Name' is not a Kubernetes DNS-1123 label"):
        render(tmp_path, {"location_name": "Bad_Name"})
    assert list(tmp_path.iterdir()) == []


def test_existing_repo_is_never_overwritten(tmp_path):
    existing = tmp_path / "existing-pipelines"
    existing.mkdir()
    (existing / "my_work.py").write_text("precious = True\n")
    result = new_no_input(tmp_path, {"project_name": "Existing Pipelines"})
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert [p.name for p in existing.iterdir()] == ["my_work.py"]
    assert (existing / "my_work.py").read_text() == "precious = True\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing-pipelines"]


def test_valid_answers_render(tmp_path):
    result = new_no_input(tmp_path, {"project_name": "Sales Pipelines"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sales-pipelines/src/sales_pipelines/definitions.py").exists()


# --- `dagster-platform template new` (make new-usercode) without a terminal: refusals before copier runs -----
@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"project_name": "Bad", "location_name": "Bad_Name"}, "location_name 'Bad_Name' is not a Kubernetes"),
        ({"project_name": "Sales", "owner_email": "nobody"}, "owner_email 'nobody' is not an e-mail address"),
        ({"project_name": "Sales", "platform": OTHER_PLATFORM}, "'platform' is a platform setting"),
        ({"project_name": "Sales", "_platform": OTHER_PLATFORM}, "'_platform' is a platform setting"),
        ({"project_name": "Sales", "dagster_version": "1.0.0"}, "'dagster_version' is a platform setting"),
        ({"project_name": "Sales", "grpc_port": 4001}, "'grpc_port' is not a question of the template"),
        ({"projet_name": "Sales"}, "'projet_name' is not a question of the template"),
    ],
)
def test_no_input_refusal_is_one_block_without_traceback(tmp_path, context, expected):
    result = new_no_input(tmp_path, context)
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


def test_without_a_terminal_it_is_refused_in_one_line_naming_no_input(tmp_path):
    result = template_new(tmp_path, stdin="Sales Pipelines\n")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ERROR: no terminal") and "NO_INPUT=1" in line, line
    assert line.endswith("Nothing was generated."), line
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_template_defaults_are_the_platform_settings():
    """copier.yml's `platform` default is what `make new-usercode` passes from the platform's company and
    environment files, so a plain `copier copy` of the platform repository renders the same repository."""
    platform = platform_context()
    assert questions()["platform"]["default"] == platform["platform"], "copier.yml is stale: make generate"
    facts, company = platform["platform"], platform_config.company()
    assert facts["image_registry"] == company.image_registry
    assert (facts["ci_project"], facts["ci_version"]) == (company.platform_project, company.platform_version)
    assert (facts["grpc_port"], facts["label_domain"]) == (company.grpc_port, company.label_domain)
    declared = platform_config.environments()
    assert [env["name"] for env in facts["environments"]] == [env.name for env in declared]  # promotion order
    for env, source in zip(facts["environments"], declared, strict=True):
        assert env == {
            "name": source.name, "tier": source.tier, "namespace": source.namespace,
            "postgres_secret": source.postgres_secret, "warehouse_domain": source.warehouse_domain,
            "previews": source.previews,
        }  # fmt: skip


def test_the_validators_live_once_in_copier_yml():
    """No second copy of the checks: no hooks, no Python validators; every asked question has its validator and
    platform facts are never asked."""
    from dagster_platform.template.new import asked

    assert not (TEMPLATE_DIR / "hooks").exists() and not (TEMPLATE_DIR / "cookiecutter.json").exists()
    assert asked() == ["project_name", "location_name", "package_name", "owner_team", "owner_email", "description"]
    for key in asked():
        assert "validator" in questions()[key], key
    for key in ("platform", "dagster_version", "dagster_libraries_version", "python_version"):
        assert questions()[key]["when"] is False, key
    root = (ROOT / "copier.yml").read_text()
    assert "!include usercode-template/copier.yml" in root


# --- one example per question: every refusal of that answer names it ------------------------------------
# An answer each check refuses (not for emptiness): its refusal must end with that question's example.
INVALID = {
    "project_name": ('Say "hi"', "Sales Pipelines"),
    "location_name": ("Bad_Name", "sales-pipelines"),
    "package_name": ("1sales", "sales_pipelines"),
    "owner_team": ("Data Platform", "sales-analytics"),
    "owner_email": ("nobody", "sales@example.com"),
    "description": ("back\\slash", "Daily sales figures for finance"),
}


@pytest.mark.parametrize("key", list(INVALID))
def test_every_refusal_of_an_answer_names_its_one_example(tmp_path, key):
    bad, example = INVALID[key]
    assert example in questions()[key]["validator"]
    result = new_no_input(tmp_path / "bad", {key: bad})
    assert result.stderr.strip().endswith(f"; example: {example}. Nothing was generated."), result.stderr
    for empty in ("", "   "):
        result = new_no_input(tmp_path / "empty", {key: empty})
        assert f"ERROR: {key} is required: " in result.stderr, result.stderr
        assert result.stderr.strip().endswith(f", e.g. {example}. Nothing was generated."), result.stderr


def test_the_examples_the_refusals_name_are_accepted(tmp_path):
    result = new_no_input(tmp_path, {key: example for key, (_, example) in INVALID.items()})
    assert result.returncode == 0, result.stderr


# --- asked in a terminal: copier re-asks at once ------------------------------------------------------------
def test_a_refused_answer_is_explained_and_asked_again_at_once(tmp_path):
    cli = [sys.executable, "-m", "dagster_platform.cli", "template", "new", "--output-dir", str(tmp_path)]
    enter, clear = "\r", "\x15"  # Ctrl-U: copier shows the default in the input line
    status, shown = converse(
        tmp_path,
        cli,
        [
            ("Project name", clear + "Sales Pipelines" + enter),
            ("Code location name", enter),
            ("Python package name", enter),
            ("Owning team", "Data Platform" + enter),
            ("is not a team slug", clear + "sales-analytics" + enter),
            ("Team e-mail", "sales@example.com" + enter),
            ("One-line description", enter),
        ],
    )
    assert "owner_team 'Data Platform' is not a team slug" in shown, shown[-2000:]
    assert status == 0, shown[-2000:]
    answers = yaml.safe_load((tmp_path / "sales-pipelines" / ".copier-answers.yml").read_text())
    assert answers["owner_team"] == "sales-analytics"
    assert "platform" not in answers and "dagster_version" not in answers  # data, never recorded
