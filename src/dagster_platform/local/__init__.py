"""The production-like local stack: Postgres, instance migration, daemon, webserver and one gRPC code
server per location, each in its own process (and each location in its own virtualenv), configured from
the platform's own instance settings. Modules by concern:

- postgres:   a throwaway PostgreSQL cluster (or an existing server from DAGSTER_PG_URL)
- config:     dagster.yaml (platform/instance/instance.yaml + Postgres storage + process run launcher)
              and workspace.yaml
- locations:  where each code location's source and virtualenv come from
- supervisor: start / readiness / log tail / stop-by-PID, with a state file
- lifecycle:  `up` / `down` / `status`, the CLI (`dagster-platform stack ...`)
- measure:    numbers for `make bench` (stack up, run latency, drain time, RSS)
"""
