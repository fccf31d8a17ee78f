"""`make check`: `dg check defs`; when the definitions do not load, their cause in one short block.
`make dev` runs it with --dev beside `dg dev`: the same block when the definitions do not load, nothing else.

dg reports a load error as a log record, with colour codes even in a file and the traceback once per link of
Python's exception chain (three times for a syntax error), and has no option for less. On a failure this loads
the definitions again in a subprocess of this .venv, as the tests do (import the module, call its `defs`), and
prints the exception, the file and line of this repo it comes from, and the next step. Standard library only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Prints "<type>: <message>" and "<file>:<line>" (the innermost frame in src/, or where a syntax error is),
# or nothing when the definitions load.
PROBE = """
import importlib, sys, traceback
try:
    defs = getattr(importlib.import_module(sys.argv[1]), "defs", None)
    if callable(defs):
        defs()
except Exception as exc:
    tb = traceback.extract_tb(exc.__traceback__)
    where = [(f.filename, f.lineno) for f in tb if f.filename.startswith(sys.argv[2])]
    if isinstance(exc, SyntaxError) and exc.filename:
        where.append((exc.filename, exc.lineno))
    print(f"{type(exc).__name__}: {exc.msg if isinstance(exc, SyntaxError) else exc}".strip())
    print("%s:%s" % where[-1] if where else "")
"""


def plain(text: str) -> str:
    return text if sys.stdout.isatty() else ANSI.sub("", text)


def cause(module: str, command: str = "make check", next_step: str = "run make check again") -> str | None:
    """The one block naming why `module`'s definitions do not load (None when they load on their own)."""
    env = {**os.environ, "DAGSTER_IS_DEFS_VALIDATION_CLI": "1"}
    probe = [sys.executable, "-c", PROBE, module, str(ROOT / "src")]
    lines = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True).stdout.splitlines()
    if not lines:
        return None
    error, where = lines[0], lines[-1] if len(lines) > 1 else ""
    path, _, line = where.rpartition(":")
    block = [f"{command}: the definitions of {module} do not load", f"  {error}"]
    if path:
        shown = Path(path).relative_to(ROOT) if Path(path).is_relative_to(ROOT) else path
        source = Path(path).read_text().splitlines() if Path(path).is_file() else []
        code = source[int(line) - 1].strip() if line.isdigit() and 0 < int(line) <= len(source) else ""
        block.append(f"  at {shown}:{line}" + (f": {code}" if code else ""))
    return "\n".join([*block, f"  fix it, then {next_step}"])


def main(args: list[str]) -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    module = project.get("code_location_target_module", f"{project['root_module']}.definitions")
    if args == ["--dev"]:  # make dev: dg dev serves the UI meanwhile; the UI shows the error after a Reload
        block = cause(module, "make dev", 'press "Reload" on the location in the UI')
        if block:
            print(block, file=sys.stderr)
        return 1 if block else 0
    dg = [str(Path(sys.executable).parent / "dg"), "check", "defs", *args]
    done = subprocess.run(dg, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode == 0:
        print(plain(done.stdout), end="")
        return 0
    block = cause(module)
    print(block or plain(done.stdout), file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
