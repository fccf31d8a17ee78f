"""Daemon heartbeat check: `python -m platform_ops.heartbeat` (console script `platform-ops-heartbeat`), for
a Kubernetes CronJob in the ops image. The daemon cannot alert on its own death; this check can.

No arguments. Environment: DAGSTER_HOME (the instance's dagster.yaml, as the daemon reads it), the
instance's own variables (its database credentials), PLATFORM_ALERT_WEBHOOK_URL, PLATFORM_ENV,
PLATFORM_UI_URL (see alerts.py), and DAGSTER_DAEMON_HEARTBEAT_TOLERANCE (seconds, default Dagster's 1800).

It applies the rule of `dagster-daemon liveness-check` (Dagster's get_daemon_statuses with errors ignored):
a required daemon is stale when it has no heartbeat or its last one is older than the heartbeat interval
(30 s) plus the tolerance. Exit status and output, one line on stdout either way:
  0  every required daemon is live
  1  some are stale: ONE alert naming each stale daemon and its heartbeat's age went to the webhook
     (or alerts are off: no URL set; or the webhook refused it: said on the same line)
  2  the check itself could not run (bad tolerance, instance unreadable): one alert, one line
"""

from __future__ import annotations

import os
import sys
import time

from platform_ops import alerts

TOLERANCE_ENV = "DAGSTER_DAEMON_HEARTBEAT_TOLERANCE"


def _send(payload: dict) -> str:
    """'alert sent' / 'alerts are off' / why it failed: the tail of the line printed."""
    url = alerts.webhook_url()
    if url is None:
        return f"alerts are off ({alerts.WEBHOOK_URL_ENV} not set)"
    try:
        alerts.post(payload, url)
    except alerts.AlertDeliveryError as exc:
        return f"ALERT NOT DELIVERED: {exc}"
    return "alert sent"


def check() -> tuple[int, str]:
    """(exit status, the one line to print)."""
    from dagster import DagsterInstance
    from dagster._daemon.controller import (
        DEFAULT_DAEMON_HEARTBEAT_TOLERANCE_SECONDS,
        DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
        get_daemon_statuses,
    )

    env = alerts.environment()
    raw = os.environ.get(TOLERANCE_ENV, "").strip()
    try:
        if raw and not raw.isdigit():
            raise ValueError(f"{TOLERANCE_ENV}={raw!r} is not a whole number of seconds")
        tolerance = float(raw or DEFAULT_DAEMON_HEARTBEAT_TOLERANCE_SECONDS)
        with DagsterInstance.get() as instance:
            required = instance.get_required_daemon_types()
            statuses = get_daemon_statuses(
                instance, daemon_types=required, ignore_errors=True, heartbeat_tolerance_seconds=tolerance
            )
    except Exception as exc:  # noqa: BLE001 - whatever stops the check is reported in one line and alerted
        problem = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        sent = _send(alerts.body("daemon_heartbeat_check_failed", f"Dagster daemon heartbeat check failed: {problem}"))
        return 2, f"daemon heartbeat check [{env}] FAILED: {problem}; {sent}"
    now = time.time()
    ages = {
        name: None if status.last_heartbeat is None else now - status.last_heartbeat.timestamp
        for name, status in statuses.items()
    }
    stale = {name: ages[name] for name, status in statuses.items() if not status.healthy}
    limit = DEFAULT_HEARTBEAT_INTERVAL_SECONDS + tolerance
    if not stale:
        oldest = max((age for age in ages.values() if age is not None), default=0.0)
        return 0, (
            f"daemon heartbeat ok [{env}]: {len(statuses)} required daemons live, "
            f"oldest heartbeat {oldest:.0f}s ago (stale after {limit:.0f}s)"
        )
    named = ", ".join(
        f"{name} ({'never' if age is None else f'{age:.0f}s ago'})" for name, age in sorted(stale.items())
    )
    return 1, (
        f"daemon heartbeat STALE [{env}]: {named} (stale after {limit:.0f}s); "
        f"{_send(alerts.heartbeat_body(stale, limit))}"
    )


def main() -> int:
    status, line = check()
    print(line, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
