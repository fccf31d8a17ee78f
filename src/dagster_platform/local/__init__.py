"""The local runtime: `make dev` (the example location rendered into .dev/, run by its own `make dev`: dg dev on
the derived instance, mode dev: embedded SQLite) and `make stack` (mode stack: Postgres, object store, one gRPC
code server per location, each location in its own virtualenv), both running the cluster's derived
dagster.yaml with named substitutions. Imports point down this list:

- cli:         `dagster-platform dev` and `stack up|down|status|restart`: arguments, one-line refusals, exit codes
- lifecycle:   the stack's up / down / status / restart, in the one start-up order
- registration: on a running stack: add/remove a location, add/remove a preview (through ci/previews.py, the
               cluster's registration code), sync the registry part, rotate the Postgres password
- services:    the stack's Postgres and object store under the supervisor, found again from its state
- postgres:    a throwaway TLS-only PostgreSQL cluster (or an existing server from DAGSTER_PG_URL)
- objectstore: moto's S3 server and its throwaway credentials
- locations:   which locations run, and the one place that prepares a location's sources and .venv
- config:      the one writer of dagster.yaml (derived instance + substitutions) and of workspace.yaml (via ci/previews)
- supervisor:  the one process supervisor: start, readiness, log tail, stop by PID, owned() start-up
"""
