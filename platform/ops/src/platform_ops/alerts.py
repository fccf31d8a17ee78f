"""The one place that posts the platform's alerts to its chat webhook; the run-failure sensor and the daemon
heartbeat check both use it. Standard library only (urllib).

Environment (on the cluster from the ops location's Secret and values; locally set by `make stack`):
  PLATFORM_ALERT_WEBHOOK_URL  incoming-webhook URL (Slack, Mattermost, Teams); unset or empty: alerts are off
  PLATFORM_ENV                the environment's name, shown in every alert (e.g. acceptance, production)
  PLATFORM_UI_URL             the Dagster UI's base URL, for links (e.g. https://dagster.example.internal)

Body: one JSON object whose `text` is the whole human message (what Slack's and Mattermost's incoming
webhooks and Teams' legacy connectors display) plus `props`, the same facts as structured fields (Mattermost
stores them with the post; Slack and Teams ignore keys they do not know).

A webhook URL is a credential (its path is the secret): errors name only its scheme and host.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

WEBHOOK_URL_ENV = "PLATFORM_ALERT_WEBHOOK_URL"
ENVIRONMENT_ENV = "PLATFORM_ENV"
UI_URL_ENV = "PLATFORM_UI_URL"


class AlertDeliveryError(RuntimeError):
    """The webhook did not accept the alert (non-2xx answer, or unreachable after the retries)."""


def webhook_url() -> str | None:
    return os.environ.get(WEBHOOK_URL_ENV, "").strip() or None


def environment() -> str:
    return os.environ.get(ENVIRONMENT_ENV, "").strip() or "unknown"


def ui_link(path: str) -> str | None:
    """`${PLATFORM_UI_URL}/<path>`, or None when the UI URL is not set."""
    base = os.environ.get(UI_URL_ENV, "").strip().rstrip("/")
    return f"{base}/{path.lstrip('/')}" if base else None


def redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def body(kind: str, text: str, **fields: Any) -> dict[str, Any]:
    """The webhook body: `text` for humans, `props` with kind, environment and the given fields."""
    env = environment()
    return {"text": f"[{env}] {text}", "props": {"kind": kind, "environment": env, **fields}}


def run_failure_body(run_id: str, job: str, location: str, error: str) -> dict[str, Any]:
    link = ui_link(f"runs/{run_id}")
    text = f"Dagster run failed: job `{job}` in code location `{location}`, run `{run_id}`: {error}"
    return body(
        "run_failure",
        text + (f"\n{link}" if link else ""),
        run_id=run_id,
        job=job,
        location=location,
        error=error,
        url=link,
    )


def heartbeat_body(stale: dict[str, float | None], stale_after: float) -> dict[str, Any]:
    """`stale`: daemon type → seconds since its last heartbeat (None: never seen); `stale_after`: the limit."""
    ages = ", ".join(f"{name} ({'no heartbeat' if age is None else f'last heartbeat {age:.0f}s ago'})"
                     for name, age in sorted(stale.items()))  # fmt: skip
    link = ui_link("deployment/daemons")
    text = f"Dagster daemon not running: {ages} (stale after {stale_after:.0f}s)"
    return body(
        "daemon_heartbeat",
        text + (f"\n{link}" if link else ""),
        daemons={name: None if age is None else round(age, 1) for name, age in stale.items()},
        stale_after_seconds=stale_after,
        url=link,
    )


def post(payload: dict[str, Any], url: str, timeout: float = 10.0, attempts: int = 3, backoff: float = 1.0) -> int:
    """POST payload as JSON; returns the HTTP status (2xx). A 5xx answer or an unreachable webhook is tried
    `attempts` times (backoff, 2*backoff, ... seconds apart), a 4xx answer once (a wrong URL or body does
    not heal). Raises AlertDeliveryError naming the status (or the network error) and the webhook's host."""
    data = json.dumps(payload).encode()
    problem = ""
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "platform-ops"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:
            problem = f"unreachable: {getattr(exc, 'reason', exc)}"
        if attempt < attempts:
            time.sleep(backoff * attempt)
    raise AlertDeliveryError(f"alert webhook {redacted(url)} refused the alert ({problem}; {attempt} attempt(s))")
