"""The laptop's monitoring next to `make stack`: the exporter (platform_ops.exporter, from the ops location's .venv),
Debian's Prometheus and Alertmanager, each a component of the one supervisor on a free loopback port, configured
in <state dir>/monitoring/. Prometheus loads the chart's rule file rendered with LOCAL_SUBSTITUTIONS (rules.py)
and sends to Alertmanager, which posts every notification to the stack's alert receiver (alerts.jsonl): the
cluster's alert path, from the exporter to the webhook, on loopback.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from dagster_platform import net
from dagster_platform.local.supervisor import Supervisor
from dagster_platform.metrics import rules

HOST = net.HOST
PROMETHEUS, ALERTMANAGER = "prometheus", "prometheus-alertmanager"  # Debian's binaries (packages of the same name)
COMPONENTS = ("metrics-exporter", "prometheus", "alertmanager")
RECEIVER = "stack-alert-receiver"


class MonitoringUnavailable(RuntimeError):
    """Prometheus or Alertmanager is not installed: one line naming the packages."""


def preflight() -> None:
    missing = [name for name in (PROMETHEUS, ALERTMANAGER) if shutil.which(name) is None]
    if missing:
        raise MonitoringUnavailable(
            f"{' and '.join(missing)} not found (the stack's Prometheus and Alertmanager): "
            f"apt-get install -y {' '.join(missing)} (`make test` installs them as root)"
        )


def config_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "monitoring"


def prometheus_config(exporter_port: int, alertmanager_port: int, rule_file: Path) -> dict:
    intervals = rules.LOCAL_INTERVALS
    return {
        "global": {key: intervals[key] for key in ("scrape_interval", "evaluation_interval")},
        "rule_files": [str(rule_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{alertmanager_port}"]}]}]},
        "scrape_configs": [
            {"job_name": rules.EXPORTER_JOB, "static_configs": [{"targets": [f"{HOST}:{exporter_port}"]}]},
        ],
    }  # fmt: skip


def alertmanager_config(webhook_url: str) -> dict:
    intervals = rules.LOCAL_INTERVALS
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname", "daemon_type", "location"],
            "group_wait": intervals["group_wait"],
            "group_interval": intervals["group_interval"],
            "repeat_interval": "1h",
        },
        "receivers": [{"name": RECEIVER, "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }


def write_configs(state_dir: Path, exporter_port: int, alertmanager_port: int, webhook_url: str) -> dict[str, Path]:
    out = config_dir(state_dir)
    out.mkdir(parents=True, exist_ok=True)
    rule_file = out / rules.RULES_FILE.name
    rule_file.write_text(rules.render(rules.substitutions(local=True)))
    files = {"rules": rule_file, "prometheus": out / "prometheus.yml", "alertmanager": out / "alertmanager.yml"}
    files["prometheus"].write_text(yaml.safe_dump(prometheus_config(exporter_port, alertmanager_port, rule_file)))
    files["alertmanager"].write_text(yaml.safe_dump(alertmanager_config(webhook_url)))
    return files


def start(
    sup: Supervisor, env: dict[str, str], ops_dir: Path, webserver_url: str, webhook_url: str, timeout: float
) -> dict[str, str]:
    """The exporter, then Alertmanager and Prometheus (which would otherwise find no exporter at its first
    evaluation and send ExporterAbsent); returns their URLs once each answers."""
    ports = {name: net.free_port() for name in COMPONENTS}
    files = write_configs(sup.state_dir, ports["metrics-exporter"], ports["alertmanager"], webhook_url)
    data = config_dir(sup.state_dir)
    urls = {name: f"http://{HOST}:{port}" for name, port in ports.items()}
    commands = {
        "alertmanager": [
            shutil.which(ALERTMANAGER) or ALERTMANAGER, f"--config.file={files['alertmanager']}",
            f"--storage.path={data / 'alertmanager-data'}", f"--web.listen-address={HOST}:{ports['alertmanager']}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ],
        "prometheus": [
            shutil.which(PROMETHEUS) or PROMETHEUS, f"--config.file={files['prometheus']}",
            f"--storage.tsdb.path={data / 'prometheus-data'}", f"--web.listen-address={HOST}:{ports['prometheus']}",
            "--storage.tsdb.retention.time=1d",
        ],
        "metrics-exporter": [
            str(ops_dir / ".venv" / "bin" / "python"), "-m", "platform_ops.exporter", "--host", HOST,
            "--port", str(ports["metrics-exporter"]), "--webserver-url", webserver_url,
        ],
    }  # fmt: skip
    ready = {"alertmanager": "/-/ready", "prometheus": "/-/ready", "metrics-exporter": "/metrics"}
    for group in (["metrics-exporter"], ["alertmanager", "prometheus"]):
        for name in group:
            cwd = sup.state_dir if name != "metrics-exporter" else Path(env["DAGSTER_HOME"])
            sup.start(name, commands[name], env=env, cwd=cwd, info={"port": ports[name]})
        for name in group:
            sup.wait_ready(name, lambda n=name: net.http_ok(urls[n] + ready[n], timeout=10), timeout)
    sup.meta["monitoring"] = urls
    sup.save()
    return urls


def urls(state_dir: Path) -> dict[str, str]:
    """The running stack's monitoring URLs by component (empty when it has none)."""
    return Supervisor(Path(state_dir)).meta.get("monitoring", {})


if __name__ == "__main__":  # print the local rule file: python -m dagster_platform.metrics.local
    sys.stdout.write(rules.render(rules.substitutions(local=True)))
