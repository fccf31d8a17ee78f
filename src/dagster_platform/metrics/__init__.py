"""Platform health → the monitoring every cluster has: the alert rules (rules.py) and, on the laptop, Prometheus
and Alertmanager next to the stack (local.py). The exporter is in the ops image (platform_ops.exporter)."""
