"""One command line for the platform: the Makefile, CI and tests all call these subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module registers its own subcommands: `register(subparsers)` adds parsers whose
# `func(args) -> int` does the work. Keep this list the only place that knows them all.
COMMAND_MODULES = [
    "dagster_platform.template.new",
    "dagster_platform.helm.cli",
    "dagster_platform.ci.cli",
    "dagster_platform.local.cli",
    "dagster_platform.upgrade_pins",
    "dagster_platform.generate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagster-platform", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
