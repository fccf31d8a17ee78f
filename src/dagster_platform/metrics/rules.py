"""The alert rules: one file (helm/dagster-platform/files/alerts.rules.yaml) with ${name} placeholders, filled from
the chart's `metrics.alerts` values by the chart (templates/metrics.yaml) and by this module for the laptop's
Prometheus, and its checks for `make platform-check`: the placeholders' values, and every metric a rule names is
one the exporter exports (platform_ops.exporter.METRICS, read from its source: the ops package is not importable
here)."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dagster_platform import paths
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.policies import Violation
from dagster_platform.mappings import deep_merge

CHART_DIR = paths.HELM_DIR / "dagster-platform"
RULES_FILE = CHART_DIR / "files" / "alerts.rules.yaml"
RULES_TEST_FILE = CHART_DIR / "files" / "alerts.test.yaml"
EXPORTER_MODULE = paths.PLATFORM_DIR / "ops" / "src" / "platform_ops" / "exporter.py"
# The exporter's scrape job: the Service the chart names `<release>-metrics` (a ServiceMonitor's job label), and the
# job name of the laptop's Prometheus.
EXPORTER_JOB = f"{helm_values.RELEASE_NAME}-metrics"

# The laptop's only differences from the cluster's rules: shorter waits, so the end-to-end tests take seconds. The
# heartbeat threshold stays above Dagster's 30 s heartbeat interval (a live daemon's age reaches 30 s).
LOCAL_SUBSTITUTIONS = {
    "daemonHeartbeatMaxAgeSeconds": 40,
    "daemonHeartbeatFor": "2s",
    "exporterAbsentFor": "3s",
    "queueBacklogFor": "5s",
    "oldestQueuedFor": "5s",
    "runStuckFor": "5s",
    "codeLocationErrorFor": "3s",
    "failureRateWindow": "5m",
    "failureRateFor": "0s",
}
# ...and the laptop Prometheus' and Alertmanager's own intervals (local.py writes them into their configs). A scrape
# every 3 s: each costs the exporter tens of milliseconds of CPU (Postgres over TLS), a test stack runs for minutes.
LOCAL_INTERVALS = {"scrape_interval": "3s", "evaluation_interval": "1s", "group_wait": "1s", "group_interval": "1s"}

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")
# Prometheus' duration grammar (model.ParseDuration): units largest first, each at most once; "0" alone too.
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")
DURATION_KEYS = re.compile(r"(For|Window)$")  # metrics.alerts keys holding durations; the others are numbers
# PromQL words that are not metric names.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}  # fmt: skip
NON_EXPORTER_METRICS = {"up"}  # Prometheus' own series a rule may name


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())


def substitutions(values: Mapping[str, Any] | None = None, local: bool = False) -> dict[str, Any]:
    """${name} → value: `metrics.alerts` of the values (over the chart's defaults), the exporter's job, the runbook;
    local=True: with LOCAL_SUBSTITUTIONS over them."""
    metrics = deep_merge(chart_defaults(), dict(values or {}))["metrics"]
    runbook = metrics.get("runbookUrl") or helm_values.runbook_url()
    subs = {**metrics["alerts"], "exporterJob": EXPORTER_JOB, "runbookUrl": runbook}
    return {**subs, **(LOCAL_SUBSTITUTIONS if local else {})}


def render(subs: Mapping[str, Any], text: str | None = None) -> str:
    """The rule file with every ${name} replaced; ValueError naming any placeholder without a value."""
    text = RULES_FILE.read_text() if text is None else text
    missing = sorted({name for name in PLACEHOLDER.findall(text) if name not in subs})
    if missing:
        raise ValueError(f"{RULES_FILE.name}: no value for {', '.join('${' + n + '}' for n in missing)}")
    return PLACEHOLDER.sub(lambda m: str(subs[m[1]]), text)


def rules(text: str) -> list[dict[str, Any]]:
    """Every alerting rule of a rule file's text (rendered or not)."""
    return [r for group in yaml.safe_load(text)["groups"] for r in group["rules"] if "alert" in r]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords, label names
    (inside {...} or by/without/on/ignoring (...)) or durations."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = PLACEHOLDER.sub("0", expr)
    names = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(?!\s*\()", expr)
    return {name for name in names if name.lower() not in PROMQL_WORDS}


def exported_metrics(module: Path = EXPORTER_MODULE) -> dict[str, str]:
    """name → type of the exporter's METRICS (read from its source), counters with their `_total` name."""
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "METRICS" for t in node.targets):
            return {name: kind for name, (kind, _doc) in ast.literal_eval(node.value).items()}
    raise ValueError(f"{module}: no METRICS = {{...}} declaration")


def check_rule_metrics(rules_file: Path | None = None, module: Path | None = None) -> list[Violation]:
    """Every metric an alert's expression names is exported (or Prometheus' own `up`)."""
    rules_file, module = rules_file or RULES_FILE, module or EXPORTER_MODULE
    known = set(exported_metrics(module)) | NON_EXPORTER_METRICS
    where = str(rules_file.relative_to(paths.ROOT)) if rules_file.is_relative_to(paths.ROOT) else str(rules_file)
    out = []
    for rule in rules(rules_file.read_text()):
        for name in sorted(metric_names(rule["expr"]) - known):
            message = f"alert {rule['alert']} uses {name}, which platform_ops.exporter does not export (METRICS)"
            out.append(Violation("alert-rules", where, message))
    return out


def check_metrics_values(values: Mapping[str, Any], where: str) -> list[Violation]:
    """`metrics:` of an environment's values: enabled needs the monitoring namespace; durations are Prometheus
    durations, the other thresholds numbers; every placeholder of the rule file has a value."""
    metrics = deep_merge(chart_defaults(), dict(values))["metrics"]
    out = []
    if metrics.get("enabled") and not metrics.get("monitoringNamespace"):
        message = "metrics.enabled needs metrics.monitoringNamespace (the NetworkPolicy admits only its Prometheus)"
        out.append(Violation("metrics", where, message))
    scrape = metrics.get("scrapeInterval")
    if not (isinstance(scrape, str) and scrape not in ("", "0") and DURATION.match(scrape)):
        message = f"metrics.scrapeInterval: {scrape!r} is not a Prometheus duration (e.g. 30s, 1m)"
        out.append(Violation("metrics", where, message))
    for key, value in (metrics.get("alerts") or {}).items():
        if DURATION_KEYS.search(key) and not (isinstance(value, str) and value and DURATION.match(value)):
            message = f"metrics.alerts.{key}: {value!r} is not a Prometheus duration (e.g. 30s, 5m, 1h)"
            out.append(Violation("metrics", where, message))
        elif not DURATION_KEYS.search(key) and (isinstance(value, bool) or not isinstance(value, int | float)):
            out.append(Violation("metrics", where, f"metrics.alerts.{key}: {value!r} is not a number"))
    try:
        render(substitutions(values))
    except ValueError as exc:
        out.append(Violation("metrics", where, str(exc)))
    return out
