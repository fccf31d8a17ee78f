"""Tools CI pipelines run. version_guard, scan_gate and smoke are fetched by user-code pipelines into bare
images, so they (and this package) use the standard library only.

Each of the three defines `add_arguments(parser)` and `run(args) -> int`: ci/cli.py makes each a subcommand of
dagster-platform, and `main` below runs one as pipelines do, `python3 -m dagster_platform.ci.<tool> ...`.
"""

import argparse


def main(doc: str, add_arguments, run, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc)
    add_arguments(parser)
    return run(parser.parse_args(argv))
