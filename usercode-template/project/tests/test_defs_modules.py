"""Everything a module under defs/ defines is loaded: nothing vanishes silently.

Dagster loads a module under defs/ in one of two ways. Without a `@dg.definitions` function or a
`dg.Definitions` object, it takes every asset, asset check, job, schedule and sensor the module defines at
module level (orders.py, automation.py). With one, it takes only what that returns (warehouse.py): anything
else the module defines at module level is dropped without a word. This test names each dropped object and
its module, whatever the modules are called and whatever they define.
"""

import importlib
from pathlib import Path

import dagster as dg

import {{ package_name }}.defs as defs_package

DEFS_DIR = Path(defs_package.__file__).parent
SRC_DIR = DEFS_DIR.parents[1]
# The classes of what define_asset_job and a partitioned asset job's schedule return (Dagster does not export
# them by name; they are what the public functions below build).
ASSET_JOB = type(dg.define_asset_job("probe"))
PARTITIONED_SCHEDULE = type(dg.build_schedule_from_partitioned_job(dg.define_asset_job("probe")))
LOADABLE = (
    dg.AssetsDefinition,
    dg.AssetSpec,
    dg.SourceAsset,
    dg.JobDefinition,
    ASSET_JOB,
    dg.ScheduleDefinition,
    PARTITIONED_SCHEDULE,
    dg.SensorDefinition,
)


def defs_modules() -> dict[str, Path]:
    """module name → file of every Python module under defs/, as Dagster's defs folder loader finds them."""
    found = {}
    for path in sorted(DEFS_DIR.rglob("*.py")):
        parts = path.relative_to(SRC_DIR).with_suffix("").parts
        if "__pycache__" in parts or any(part.startswith(".") for part in parts):
            continue
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def module_level(module) -> list:
    """The objects Dagster would load from the module's namespace (a list of them counts too)."""
    found = []
    for value in vars(module).values():
        if isinstance(value, LOADABLE):
            found.append(value)
        elif isinstance(value, list) and value and all(isinstance(item, LOADABLE) for item in value):
            found.extend(value)
    return found


def names(obj) -> list[tuple[str, object]]:
    """(kind, key or name) of what one object defines."""
    if isinstance(obj, dg.AssetsDefinition):  # assets, multi-assets and asset checks
        return [("asset", key) for key in obj.keys] + [("asset check", spec.key) for spec in obj.check_specs]
    if isinstance(obj, dg.AssetSpec | dg.SourceAsset):
        return [("asset", obj.key)]
    if isinstance(obj, dg.JobDefinition | ASSET_JOB):
        return [("job", obj.name)]
    if isinstance(obj, dg.ScheduleDefinition | PARTITIONED_SCHEDULE):
        return [("schedule", obj.name)]
    return [("sensor", obj.name)]


def loaded(defs: dg.Definitions) -> set[tuple[str, object]]:
    repo = defs.get_repository_def()
    return {
        *(("asset", key) for key in defs.resolve_all_asset_keys()),
        *(("asset check", key) for key in defs.resolve_asset_graph().asset_check_keys),
        *(("job", name) for name in repo.job_names),
        *(("schedule", schedule.name) for schedule in repo.schedule_defs),
        *(("sensor", sensor.name) for sensor in repo.sensor_defs),
    }


def label(kind: str, key: object) -> str:
    if isinstance(key, dg.AssetKey):
        return f"{kind} {key.to_user_string()}"
    if isinstance(key, dg.AssetCheckKey):
        return f"{kind} {key.name} (of asset {key.asset_key.to_user_string()})"
    return f"{kind} {key}"


def test_everything_defined_under_defs_is_loaded(defs):
    present = loaded(defs)  # the location as it loads: every module under defs/ is imported by now
    dropped = {}
    for module_name, path in defs_modules().items():
        module = importlib.import_module(module_name)
        missing = {item for obj in module_level(module) for item in names(obj)} - present
        if missing:
            where = f"{path.relative_to(SRC_DIR.parent)} ({module_name})"
            dropped[where] = sorted(label(kind, key) for kind, key in missing)
    assert not dropped, "\n".join(
        [
            "rule: everything a module under defs/ defines at module level is loaded. A module with a "
            "@dg.definitions function (or a dg.Definitions object) loads only what that returns: return "
            "these from it, or move them to a module without one.",
            *(f"  {module}: not loaded: {', '.join(items)}" for module, items in sorted(dropped.items())),
        ]
    )
