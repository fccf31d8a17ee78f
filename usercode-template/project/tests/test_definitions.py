"""The location's conventions, checked over whatever the definitions load: no list of assets here.

A new asset under defs/ that follows the rules passes with no change to this file; one that breaks a rule
fails with its key and the rule. Rules about assets apply to every asset this location materializes (not to
assets of other locations it only depends on).
"""

import dagster as dg
import pytest

TEAM_OWNER = "team:{{ owner_team }}"
IMPLICIT_JOB_PREFIX = "__ASSET_JOB"  # Dagster's own job for materializing from the asset graph


def jobs(defs: dg.Definitions) -> list[dg.JobDefinition]:
    return [job for job in defs.resolve_all_job_defs() if not job.name.startswith(IMPLICIT_JOB_PREFIX)]


def owner(node, defs) -> str | None:
    if TEAM_OWNER not in node.owners:
        return f"owners are {node.owners or 'not set'}"
    return None


def group(node, defs) -> str | None:
    if not node.group_name or node.group_name == "default":
        return "no group_name (it is in 'default')"
    return None


def description(node, defs) -> str | None:
    if not (node.description or "").strip():
        return "no description (docstring or description=)"
    return None


def in_a_job(node, defs) -> str | None:
    if not any(node.key in job.asset_layer.selected_asset_keys for job in jobs(defs)):
        return f"selected by none of the jobs {[job.name for job in jobs(defs)]}"
    return None


# (id, rule, finder): the finder returns what is wrong with one asset, or None.
ASSET_RULES = [
    ("owner", f"every asset is owned by {TEAM_OWNER} (owners=[...])", owner),
    ("group", "every asset has a group (group_name=...)", group),
    ("description", "every asset says what it is (a docstring or description=...)", description),
    ("job", "every asset is in a job (define_asset_job), which a schedule or sensor can run", in_a_job),
]


def broken(rule: str, offenders: dict[str, str]) -> str:
    lines = [f"rule: {rule}", *(f"  asset {key}: {detail}" for key, detail in sorted(offenders.items()))]
    return "\n".join(lines)


def test_definitions_load_and_validate(defs):
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_asset_graph().materializable_asset_keys, "the location defines no asset"


@pytest.mark.parametrize(("rule", "find"), [r[1:] for r in ASSET_RULES], ids=[r[0] for r in ASSET_RULES])
def test_every_asset_follows_the_rule(defs, rule, find):
    graph = defs.resolve_asset_graph()
    offenders = {}
    for key in graph.materializable_asset_keys:
        detail = find(graph.get(key), defs)
        if detail:
            offenders[key.to_user_string()] = detail
    assert not offenders, broken(rule, offenders)


def test_every_job_loads_and_runs_something(defs):
    repo = defs.get_repository_def()
    offenders = {}
    for name in repo.job_names:
        if name.startswith(IMPLICIT_JOB_PREFIX):
            continue
        try:
            job = defs.resolve_job_def(name)
        except Exception as exc:  # whatever stops the job from loading, named with the job
            offenders[name] = f"does not load: {exc}"
            continue
        if not job.graph.nodes:
            offenders[name] = "selects nothing (check its selection: a group or key that does not exist?)"
    lines = [f"  job {name}: {detail}" for name, detail in sorted(offenders.items())]
    assert not offenders, "\n".join(["rule: every job loads and runs something", *lines])


def test_every_asset_check_says_what_it_checks(defs):
    graph = defs.resolve_asset_graph()
    offenders = {
        f"{key.asset_key.to_user_string()} (check {key.name})": "no description (docstring or description=)"
        for key in graph.asset_check_keys
        if not (graph.get_check_spec(key).description or "").strip()
    }
    assert not offenders, broken("every asset check says what it checks (description=...)", offenders)


def test_every_job_runs_the_checks_of_its_assets(defs):
    graph = defs.resolve_asset_graph()
    offenders = {}
    for job in jobs(defs):
        selected = job.asset_layer.selected_asset_keys
        runs = job.asset_layer.asset_graph.asset_check_keys
        for key in graph.asset_check_keys:
            if key.asset_key in selected and key not in runs:
                offenders[key.asset_key.to_user_string()] = f"job {job.name} skips its check {key.name}"
    assert not offenders, broken("a job that materializes an asset also runs its asset checks", offenders)
