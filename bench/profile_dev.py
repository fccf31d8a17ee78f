"""Where `make dev` (or `dg dev` in the bench's bare scaffold) spends its time until ready: a timeline of
every process of its tree (first seen, from /proc every 50 ms) and of the readiness events `make bench`
measures. Not part of `make bench`; run it by hand when working on start-up time:

    .venv/bin/python bench/profile_dev.py            # make dev (bench dev dir .bench/dev, rendered once)
    .venv/bin/python bench/profile_dev.py --dg-dev   # dg dev in .bench/bare-scaffold

Pair it with `python -X importtime` on the slow processes it names.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from bench import bench
from dagster_platform import net


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    short = [Path(parts[0]).name if parts else "?", *parts[1:]]
    return " ".join(short)[:150]


def profile(
    argv: list[str], cwd: Path, env: dict[str, str], port: int, log: Path, timeout: float = 300
) -> list[tuple[float, str]]:
    url = f"http://127.0.0.1:{port}"
    events: list[tuple[float, str]] = []
    seen: dict[int, str] = {}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        started, started_epoch = time.monotonic(), time.time()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    done: set[str] = set()
    tree: dict[int, str] = {}
    try:
        while done != {"webserver", "ready", "daemon"} and time.monotonic() - started < timeout:
            now = time.monotonic() - started
            tree.update(bench.descendants(proc.pid))
            for pid in tree:
                if pid not in seen:
                    seen[pid] = cmdline(pid)
                    events.append((now, f"process {pid}: {seen[pid]}"))
            if "webserver" not in done and net.http_ok(f"{url}/server_info", timeout=1):
                done.add("webserver")
                events.append((time.monotonic() - started, "webserver answers /server_info"))
            if "webserver" in done and "ready" not in done and bench.all_locations_loaded(url):
                done.add("ready")
                events.append((time.monotonic() - started, "READY: every location LOADED"))
            if "webserver" in done and "daemon" not in done and bench.daemons_healthy(url, started_epoch):
                done.add("daemon")
                events.append((time.monotonic() - started, "daemon: required daemons healthy"))
            time.sleep(0.05)
    finally:
        tree.update(bench.descendants(proc.pid))
        events.append((time.monotonic() - started, f"stopped in {bench.stop_tree(proc, tree):.1f}s"))
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dg-dev", action="store_true", help="profile dg dev in the bare scaffold instead")
    args = parser.parse_args()
    port = net.free_port()
    if args.dg_dev:
        scaffold = bench.ensure_scaffold()
        argv = [str(scaffold / ".venv/bin/dg"), "dev", "--host", "127.0.0.1", "--port", str(port)]
        cwd, env = scaffold, bench.scaffold_env(scaffold)
    else:
        bench.ensure_example()
        argv = ["make", "--no-print-directory", "dev", f"DEV_FLAGS=--port {port} --dev-dir {bench.DEV_DIR}"]
        cwd, env = bench.ROOT, bench.user_env()
    for at, what in profile(argv, cwd, env, port, bench.LOG_DIR / "profile.log"):
        print(f"{at:7.2f}s  {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
