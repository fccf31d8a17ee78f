"""Prometheus exporter of the platform's health: `python -m platform_ops.exporter --port 9102`.

Dagster OSS serves no /metrics, and the run-failure sensor dies with the daemon; this process reads the instance
(DagsterInstance public API) and the webserver's workspace (GraphQL) on every scrape, so Prometheus and
Alertmanager can alert from outside the components they watch (alert rules: helm/dagster-platform/files/).

Every scrape is bounded: indexed queries by status (runs.status, update_timestamp: idx_run_range), a time window
(`--window`, runs updated within it) and row limits; never a scan of all runs. A series capped by a limit says so
in its help text.

Environment: DAGSTER_HOME and the instance's variables, as for the daemon. The metric names are declared once, in
METRICS (`make platform-check` refuses a rule naming any other).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta

# name -> (type, help). The one list of what this exporter exports (the platform's check reads it).
METRICS = {
    "dagster_runs_recent": ("gauge", "Runs that reached a finished status within the window, by status and location"),
    "dagster_runs_finished_total": ("counter", "Runs finished since the exporter's first scrape, by status, location"),
    "dagster_runs_in_flight": ("gauge", "Queued, starting, started and canceling runs by location (the oldest 2000)"),
    "dagster_run_queue_length": ("gauge", "Runs waiting in the run queue (QUEUED), exact"),
    "dagster_run_oldest_age_seconds": ("gauge", "Seconds the oldest run has been in its in-flight status, by location"),
    "dagster_run_duration_seconds": ("gauge", "Start-to-end seconds of runs finished in the window (mean, max)"),
    "dagster_daemon_heartbeat_age_seconds": ("gauge", "Seconds since each required daemon's last heartbeat"),
    "dagster_code_location_status": ("gauge", "1 for the load status of each code location (LOADED, LOADING, ERROR)"),
    "dagster_exporter_source_up": ("gauge", "Whether the last scrape could read the source (instance, webserver)"),
    "dagster_exporter_scrape_duration_seconds": ("gauge", "Seconds the last scrape took (instance and webserver)"),
}  # fmt: skip

LABELS = {"dagster_exporter_source_up": ["source"]}  # labels of a series that has no samples to infer them from
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
IN_FLIGHT = ("QUEUED", "STARTING", "STARTED", "CANCELING")
LOCATION_STATUSES = ("LOADED", "LOADING", "ERROR")
FINISHED_LIMIT = 10000  # runs finished within the window, newest first
IN_FLIGHT_LIMIT = 2000  # in-flight runs, oldest first
WORKSPACE_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename } } } } }"""


def location_of(run) -> str:
    origin = run.remote_job_origin
    return origin.location_name if origin else "unknown"


def workspace_statuses(webserver_url: str, timeout: float = 5.0) -> dict[str, str]:
    """Code location -> LOADED / LOADING / ERROR, from the webserver's GraphQL API."""
    request = urllib.request.Request(
        f"{webserver_url.rstrip('/')}/graphql",
        data=json.dumps({"query": WORKSPACE_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        workspace = json.loads(response.read())["data"]["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise RuntimeError(f"workspace: {workspace['__typename']}")
    return {
        entry["name"]: "ERROR"
        if (entry["locationOrLoadError"] or {}).get("__typename") == "PythonError"
        else ("LOADED" if entry["loadStatus"] == "LOADED" else "LOADING")
        for entry in workspace["locationEntries"]
    }


class PlatformCollector:
    """Reads the instance and the webserver once per scrape (serialised: one scrape at a time)."""

    def __init__(self, instance, webserver_url: str | None, window: float):
        self.instance, self.webserver_url, self.window = instance, webserver_url, window
        self.lock = threading.Lock()
        self.first = True  # the first scrape's finished runs are the baseline, not counted
        self.finished_total: dict[tuple[str, str], int] = defaultdict(int)
        self.counted: dict[str, float] = {}  # run id -> update time, of runs already in finished_total

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self.lock:
            began = time.monotonic()
            samples, up = self._read()
            took = time.monotonic() - began
        families = {}
        for name, (kind, doc) in METRICS.items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            labels = sorted({key for labels, _ in samples.get(name, []) for key in labels}) or LABELS.get(name, [])
            families[name] = family(name.removesuffix("_total"), doc, labels=labels)
            for labels, value in samples.get(name, []):
                families[name].add_metric([labels[key] for key in sorted(labels)], value)
        for source, ok in up.items():
            families["dagster_exporter_source_up"].add_metric([source], 1.0 if ok else 0.0)
        families["dagster_exporter_scrape_duration_seconds"].add_metric([], took)
        yield from families.values()

    def _read(self) -> tuple[dict[str, list[tuple[dict[str, str], float]]], dict[str, bool]]:
        samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        up: dict[str, bool] = {}
        locations: dict[str, str] = {}
        if self.webserver_url:
            try:
                locations, up["webserver"] = workspace_statuses(self.webserver_url), True
            except Exception as exc:  # noqa: BLE001 - an unreachable webserver is a metric, not a crash
                up["webserver"] = False
                print(f"scrape: cannot read the webserver's workspace: {type(exc).__name__}: {exc}", flush=True)
        for location, status in sorted(locations.items()):
            for candidate in LOCATION_STATUSES:
                value = 1.0 if candidate == status else 0.0
                samples["dagster_code_location_status"].append(({"location": location, "status": candidate}, value))
        try:
            from_instance: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
            now = time.time()
            self._read_finished(from_instance, list(locations), now)
            self._read_in_flight(from_instance, now)
            self._read_daemons(from_instance, now)
            samples.update(from_instance)
            up["instance"] = True
        except Exception as exc:  # noqa: BLE001 - e.g. Postgres unreachable: said by dagster_exporter_source_up
            up["instance"] = False
            print(f"scrape: cannot read the instance: {type(exc).__name__}: {exc}", flush=True)
        return samples, up

    def _read_finished(self, samples, known_locations: list[str], now: float) -> None:
        """Runs finished within the window (one query: dagster-postgres opens a connection per query): by status,
        their durations, and the counter of runs finished since the first scrape."""
        from dagster import DagsterRunStatus, RunsFilter

        for location in known_locations:  # every counter series exists from 0, so increase() sees the first one
            for status in FINISHED:
                self.finished_total.setdefault((location, status), 0)
        recent: dict[tuple[str, str], int] = defaultdict(int)
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        since = datetime.fromtimestamp(now - self.window, tz=UTC)
        finished = RunsFilter(statuses=[DagsterRunStatus(s) for s in FINISHED], updated_after=since)
        for record in self.instance.get_run_records(filters=finished, limit=FINISHED_LIMIT):
            run, location = record.dagster_run, location_of(record.dagster_run)
            status = run.status.value
            recent[(status, location)] += 1
            if record.start_time and record.end_time:
                durations[(location, run.job_name)].append(record.end_time - record.start_time)
            # Counted by run id, not by time: SQLite keeps update times to the second.
            if run.run_id not in self.counted:
                self.counted[run.run_id] = record.update_timestamp.timestamp()
                self.finished_total[(location, status)] += 0 if self.first else 1
        self.counted = {run_id: t for run_id, t in self.counted.items() if t > now - 2 * self.window}
        self.first = False
        for (status, location), count in sorted(recent.items()):
            samples["dagster_runs_recent"].append(({"status": status, "location": location}, float(count)))
        for (location, status), count in sorted(self.finished_total.items()):
            samples["dagster_runs_finished_total"].append(({"status": status, "location": location}, float(count)))
        for (location, job), seconds in sorted(durations.items()):
            for stat, value in (("mean", sum(seconds) / len(seconds)), ("max", max(seconds))):
                labels = {"location": location, "job": job, "stat": stat}
                samples["dagster_run_duration_seconds"].append((labels, value))

    def _read_in_flight(self, samples, now: float) -> None:
        """Queued, starting, started and canceling runs, oldest first: counts and the oldest's age in its status;
        the exact length of the queue."""
        from dagster import DagsterRunStatus, RunsFilter

        counts: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[tuple[str, str], float] = {}
        in_flight = RunsFilter(statuses=[DagsterRunStatus(s) for s in IN_FLIGHT])
        for record in self.instance.get_run_records(filters=in_flight, limit=IN_FLIGHT_LIMIT, ascending=True):
            status = record.dagster_run.status.value
            key = (status, location_of(record.dagster_run))
            counts[key] += 1
            # In this status since: creation (queued), the start (started), the last status change (others).
            if status == "STARTED" and record.start_time:
                entered = record.start_time
            else:
                entered = (record.create_timestamp if status == "QUEUED" else record.update_timestamp).timestamp()
            oldest[key] = max(oldest.get(key, 0.0), now - entered)
        for status, location in sorted(counts):
            labels = {"status": status, "location": location}
            samples["dagster_runs_in_flight"].append((labels, float(counts[(status, location)])))
            samples["dagster_run_oldest_age_seconds"].append((labels, oldest[(status, location)]))
        queued = RunsFilter(statuses=[DagsterRunStatus.QUEUED])
        samples["dagster_run_queue_length"].append(({}, float(self.instance.get_runs_count(filters=queued))))

    def _read_daemons(self, samples, now: float) -> None:
        """Each required daemon's heartbeat age; +Inf when it has none."""
        heartbeats = self.instance.get_daemon_heartbeats()
        for daemon_type in sorted(self.instance.get_required_daemon_types()):
            beat = heartbeats.get(daemon_type)
            age = now - beat.timestamp if beat else float("inf")
            samples["dagster_daemon_heartbeat_age_seconds"].append(({"daemon_type": daemon_type}, age))


def serve(port: int, host: str, webserver_url: str | None, window: float) -> None:
    from dagster import DagsterInstance
    from prometheus_client import REGISTRY, start_http_server

    instance = DagsterInstance.get()
    REGISTRY.register(PlatformCollector(instance, webserver_url, window))
    server, _ = start_http_server(port, addr=host)
    print(f"platform exporter on http://{host}:{port}/metrics (window {timedelta(seconds=window)})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        instance.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="platform_ops.exporter", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9102)
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (the stack: 127.0.0.1)")  # noqa: S104
    parser.add_argument("--webserver-url", help="the Dagster webserver, for code location load status")
    parser.add_argument("--window", type=float, default=3600.0, help="seconds of finished runs each scrape reads")
    args = parser.parse_args(argv)
    serve(args.port, args.host, args.webserver_url, args.window)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
