"""No Dagster private API in this repo: what Dagster does not publish can change in any release, and the
platform moves every location to each new Dagster version.

Fails, naming file and line, on any import of a private Dagster module (`dagster._core`, `dagster_aws._x`, in
any import form) and on any use of a private attribute (`obj._name`, `getattr(obj, "_name")`) except on
`self` or `cls`: Python does not say whose object an attribute belongs to, so this rule covers them all.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("src", "tests")
PRIVATE_MODULE = re.compile(r"^dagster(_\w+)?\._")  # dagster._core..., dagster_postgres._x...
DAGSTER_MODULE = re.compile(r"^dagster(_\w+)?$")
ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}
IMPORT_FUNCTIONS = {"import_module", "__import__"}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in {"self", "cls"}


def constant(node: ast.AST | None) -> str:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def private_call(call: ast.Call) -> list[tuple[int, str]]:
    """`importlib.import_module("dagster._x")`, `__import__(...)`, `getattr(obj, "_x")` and the like."""
    func, args = call.func, call.args
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if name in IMPORT_FUNCTIONS and args and PRIVATE_MODULE.match(constant(args[0])):
        return [(call.lineno, f"imports {constant(args[0])}")]
    attribute = constant(args[1]) if len(args) > 1 else ""
    if name in ATTRIBUTE_FUNCTIONS and is_private(attribute) and not is_self(args[0]):
        return [(call.lineno, f"uses the private attribute {attribute!r} ({name})")]
    return []


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for every private Dagster import and private attribute use in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"imports {a.name}") for a in node.names if PRIVATE_MODULE.match(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if PRIVATE_MODULE.match(node.module):
                found.append((node.lineno, f"imports from {node.module}"))
            elif DAGSTER_MODULE.match(node.module):
                found += [
                    (node.lineno, f"imports {node.module}.{a.name}") for a in node.names if is_private(a.name)
                ]
        elif isinstance(node, ast.Attribute) and is_private(node.attr) and not is_self(node.value):
            found.append((node.lineno, f"uses the private attribute .{node.attr}"))
        elif isinstance(node, ast.Call):
            found += private_call(node)
    return sorted(found)


def test_no_dagster_private_api():
    offenders = [
        f"  {path.relative_to(ROOT)}:{line}: {what}"
        for folder in CHECKED
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, what in private_uses(path.read_text())
    ]
    assert not offenders, "\n".join(
        ["rule: no Dagster private API (no dagster._ module, no ._attribute except on self/cls)", *offenders]
    )


@pytest.mark.parametrize(
    "source",
    [
        "from dagster._record import replace",
        "import dagster._core.definitions",
        "import dagster._check as check",
        "from dagster import _check",
        "from dagster_aws._internal import thing",
        "import importlib\nimportlib.import_module('dagster._core')",
        "schedule._default_status = 'STOPPED'",
        "status = sensor._default_status",
        "setattr(schedule, '_default_status', 'STOPPED')",
        "getattr(sensor, '_raw_fn')",
    ],
)
def test_the_rule_finds_each_form(source):
    assert private_uses(source), source


def test_the_rule_allows_public_api_self_and_dunders():
    source = (
        "import dagster as dg\nfrom dagster import asset\n"
        "class Thing:\n    def run(self):\n        return self._helper(cls._x, type(self).__name__)\n"
        "status = schedule.default_status\nname = getattr(sensor, 'name')\n"
    )
    assert private_uses(source) == []
