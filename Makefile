# dagster-platform: thin targets over uv and the `dagster-platform` CLI (src/dagster_platform/cli.py).
# The two contract commands are `make dev` and `make test`; both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
# uv: the one on PATH, else a pinned copy bootstrapped with pip into .tools/.
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
# Recipes, tests and rendered repos find the same uv.
export PATH := $(CURDIR)/.tools/bin:$(PATH)
VENV := .venv
RUN := $(UV) run --frozen --no-sync
CLI := $(RUN) dagster-platform
git_files = git ls-files -z --cached --others --exclude-standard -- $(1)

.PHONY: help install prerequisites dev test test-fast lint fmt generate new-usercode usercode-to-copier template-lock template-instance clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]*):.*## /  \1\t/' | sort

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# The venv is rebuilt only when the lock or the project metadata change. Bytecode is compiled once here:
# with PYTHONDONTWRITEBYTECODE set (CI images, containers) every dagster process would otherwise compile
# its imports from source on each start (webserver import 6.4 s -> 3.2 s on the 2-core machines).
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode
	@touch $@

install: $(VENV)/.synced ## install the locked platform environment (.venv)

# make dev's port, named as in user-code repos: make dev PORT=3001 (not read from the environment).
# The example location is rendered once into .dev/ and its own `make dev` (dg dev) runs; the CLI is started
# directly, not by `uv run`, which would pass Ctrl-C on a second time.
PORT := 3000
dev: install ## serve the Dagster UI on http://127.0.0.1:3000 with the example code location (SQLite; PORT=3001 for another port)
	@$(VENV)/bin/dagster-platform dev --port $(PORT) $(DEV_FLAGS)

# System packages first (ci/scripts/test-prerequisites.sh): installed as root with apt, else one line naming them.
prerequisites:
	@sh ci/scripts/test-prerequisites.sh

# In parallel (pytest-xdist; tests/conftest.py: each file whole on one worker, the longest handed out first, each
# worker with its own stack): `make test` with one worker more than cores, as its slow tests mostly wait on Dagster's
# own clocks (the daemon's 60 s workspace re-read, sensor ticks) while another worker computes; `make test-fast` one
# per core. PYTEST_WORKERS=0 runs either in one process. Times: docs/bench.md.
CORES := $(shell getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
PYTEST_PARALLEL = -n $(or $(PYTEST_WORKERS),$(1)) --dist loadgroup --no-loadscope-reorder

test: prerequisites install ci-tools ## everything CI checks: lint, then the whole test suite
	$(MAKE) --no-print-directory lint
	$(RUN) pytest $(call PYTEST_PARALLEL,$(shell echo $$(($(CORES) + 1))))

# The inner loop: every test that needs no real Postgres, processes, browser or rendered repo (marker `slow`).
test-fast: prerequisites install ci-tools ## the fast lane (under a minute): lint + every test not marked slow
	$(MAKE) --no-print-directory lint
	$(RUN) pytest $(call PYTEST_PARALLEL,$(CORES)) -m "not slow"

lint: install ## ruff, sqlfluff, yamllint, hadolint, shellcheck over the repo
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) sqlfluff lint platform
	$(RUN) yamllint --strict .
	@# Template files hold Jinja; they are linted after rendering by the rendered repo's own `make lint`
	@# (tests/template). Here: every other Dockerfile and shell script in the repo.
	$(call git_files,'Dockerfile' '*/Dockerfile' ':!usercode-template') | xargs -0 -r $(RUN) hadolint
	$(call git_files,'*.sh' '.ci/*' ':!usercode-template') | xargs -0 -r $(RUN) shellcheck

fmt: install ## apply ruff fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

# The copies of platform/company.yaml and platform/values/ in files that cannot read them (CI YAML, the template's
# copier.yml and dagster.yaml, the stdlib tools' JSON): src/dagster_platform/generate.py lists them.
generate: install ## rewrite every generated copy of the company and environment files (platform-check reports drift)
	$(CLI) generate

# Asks only what a data engineer knows, each answer checked as it is typed; platform facts (registry, CI
# project, environments, namespaces, Postgres secrets, port) come from platform/company.yaml and platform/values/.
# copier asks (each answer checked by copier.yml's validators) and records the template's origin and commit in
# .copier-answers.yml, so the new repo later takes template updates with `make update-template` (copier update).
# Set TEMPLATE_URL to the platform repo's Git URL (default: its origin).
TEMPLATE_URL ?= $(or $(shell git remote get-url origin 2>/dev/null),$(CURDIR))
TEMPLATE_REF ?= HEAD
OUT ?= ..
new-usercode: install ## new user-code repo via copier in OUT (default ..); NO_INPUT=1 CONTEXT='{"project_name": "X", "owner_team": "x", "owner_email": "x@example.com"}'
	@$(CLI) template new --template-url '$(TEMPLATE_URL)' --checkout '$(TEMPLATE_REF)' --output-dir '$(OUT)' \
		$(if $(NO_INPUT),--no-input) $(if $(CONTEXT),--context '$(CONTEXT)')

# A user-code repo generated with cruft (.cruft.json), moved to copier once (docs/usercode.md).
usercode-to-copier: install ## move the cruft-generated user-code repo REPO=<path> to copier, once
	@test -n '$(REPO)' || { echo "usercode-to-copier: set REPO=<path of the user-code repo>" >&2; exit 2; }
	@$(CLI) template from-cruft '$(REPO)' $(if $(filter command line,$(origin TEMPLATE_URL)),--template-url '$(TEMPLATE_URL)')

template-lock: install ## regenerate usercode-template's uv.lock after changing its pyproject.toml
	$(CLI) template lock

template-instance: generate ## regenerate usercode-template's dagster.yaml (its local instance): part of make generate

clean: ## remove local environments and runtime state
	rm -rf $(VENV) .tools .dev .dagster_home .pytest_cache .ruff_cache

# --- Platform on Kubernetes: helm/dagster-platform + platform/values (what runs where: helm/README.md) ---
.PHONY: platform-env platform-instance platform-deps platform-render platform-check platform-verify platform-diff platform-upgrade
# ENV: a declared environment, i.e. a file platform/values/<ENV>.yaml (the CLI refuses any other in one line).
platform-env:
	@$(if $(ENV),true,echo 'set ENV=<environment>, one of: $(basename $(notdir $(filter-out %/base.yaml,$(wildcard platform/values/*.yaml))))' >&2; exit 2)

platform-instance: platform-env install ## the dagster.yaml the cluster's processes of ENV read
	@$(CLI) platform instance --env $(ENV)

platform-deps: install ## fetch the official dagster chart pinned in helm/dagster-platform/Chart.lock (network)
	$(CLI) platform deps

platform-render: platform-env platform-deps ## full manifests of ENV -> .dev/helm/ENV/manifests.yaml
	$(CLI) platform render --env $(ENV) --full --out .dev/helm/$(ENV)/manifests.yaml

platform-check: install ## generated copies up to date, then guardrails for ENV (default: all) on our templates; offline
	$(CLI) generate --check
	$(CLI) platform check --env $(or $(ENV),all)

platform-verify: platform-deps ## CI: full render with the official chart, every guardrail, Kubernetes schemas
	$(CLI) platform check --env $(or $(ENV),all) --full

platform-diff: platform-env platform-deps ## what platform-upgrade would change in ENV (helm-diff, else manifest diff)
	$(CLI) platform diff --env $(ENV)

platform-upgrade: platform-env platform-deps ## guarded helm upgrade of ENV (backup, migration); OPS_IMAGE_TAG= the platform/ops image tag
	$(CLI) platform upgrade --env $(ENV) $(if $(OPS_IMAGE_TAG),--ops-image-tag $(OPS_IMAGE_TAG)) $(UPGRADE_FLAGS)

# CI/CD pipelines (ci/README.md): the same checks tests/ci runs, for one look before pushing.
.PHONY: ci-check ci-tools
ci-check: install ci-tools ## GitLab CI files: GitLab schema (offline), structure rules, shellcheck of every job script
	$(CLI) ci-check

# gitlab-ci-local (resolves, lists and runs GitLab jobs for tests/ci and ci-check), pinned exactly in
# ci/tools/package-lock.json, installed with npm (Node >= 18) into the git-ignored .tools/ci-tools/ once per lock change.
GITLAB_CI_LOCAL := .tools/ci-tools/node_modules/.bin/gitlab-ci-local
$(GITLAB_CI_LOCAL): ci/tools/package.json ci/tools/package-lock.json
	mkdir -p .tools/ci-tools
	cp ci/tools/package.json ci/tools/package-lock.json .tools/ci-tools/
	cd .tools/ci-tools && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

ci-tools: $(GITLAB_CI_LOCAL) ## install the pinned gitlab-ci-local (npm) into .tools/ci-tools/

# Benchmarks (docs/bench.md): the dev loop and the platform next to plain Dagster; Markdown table + JSON
# in bench/results/. Takes a while (make test alone is minutes): BENCH_FLAGS='--runs 5 --only dev,check'.
.PHONY: bench
bench: install ## measure make dev vs dg dev, template → green, dg check, local stack, make test (BENCH_FLAGS=...)
	$(RUN) python -m bench.bench $(BENCH_FLAGS)

# Production-like local stack (docs/stack.md): Postgres, daemon, webserver on :3000 and one gRPC code server
# per location, from the platform's instance settings, with the metrics exporter, Prometheus and Alertmanager. PORT=3001 as for make dev; STACK_FLAGS='--pg-url postgresql://...'.
.PHONY: stack stack-down
stack: install ## local stack like the cluster: Postgres, daemon, webserver, a code server per location, Prometheus (PORT=3001)
	$(CLI) stack up --port $(PORT) $(STACK_FLAGS)

stack-down: install ## stop everything `make stack` started, by PID; WIPE=1 also deletes its data
	$(CLI) stack down $(if $(WIPE),--wipe)

.PHONY: stack-restart
stack-restart: install ## restart one dead or hung stack component alone, as `stack status` names it (COMPONENT=daemon)
	$(CLI) stack restart $(COMPONENT)

# One Dagster version everywhere (tests/test_versions.py): every pin, image tag, CI variable and uv lock moved to
# VERSION at once, by one command (docs/upgrade.md, "Bumping Dagster"). DRY_RUN=1 lists the files, writes nothing.
.PHONY: dagster-upgrade
ifneq ($(filter dagster-upgrade,$(MAKECMDGOALS)),)
ifndef VERSION
$(error set VERSION=x.y.z, the new Dagster release, e.g. make dagster-upgrade VERSION=1.13.28 (DRY_RUN=1 to list only))
endif
endif
dagster-upgrade: install ## move every Dagster pin, image tag, CI variable and uv lock to VERSION=x.y.z (DRY_RUN=1 lists)
	$(CLI) dagster-upgrade --version '$(VERSION)' $(if $(DRY_RUN),--dry-run)

# The upgrade path, proved on this machine (docs/upgrade.md "Restore drill"): an older Dagster's run history in a
# throwaway Postgres, pg_dump, `dagster instance migrate`, a restore into a new database that the old version reads.
# DRILL_FLAGS='--from-version 1.11.16 --keep'.
.PHONY: upgrade-drill
upgrade-drill: install ## old Dagster's runs → pg_dump → migrate → restore drill, locally (DRILL_FLAGS=--from-version X.Y.Z)
	$(CLI) upgrade-drill $(DRILL_FLAGS)

# A running stack's code locations and credentials (docs/operations.md): register one more location (its own .venv,
# code server, workspace, webserver reload, the daemon's re-read awaited), take one off (its schedules and sensors
# stopped first), or give the database role a new password and restart what holds it.
.PHONY: stack-add-location stack-remove-location stack-rotate-pg-password
stack-add-location: install ## add a code location to the running stack: NAME=my-loc SOURCE=dir [MODULE=pkg.definitions]
	@$(if $(and $(NAME),$(SOURCE)),true,echo 'set NAME=<location> SOURCE=<dir with pyproject.toml and uv.lock>' >&2; exit 2)
	$(CLI) stack add-location --name '$(NAME)' --source '$(SOURCE)' $(if $(MODULE),--module '$(MODULE)')

stack-remove-location: install ## stop a location's schedules and sensors, unregister it and stop its code server: NAME=my-loc
	@$(if $(NAME),true,echo 'set NAME=<location>, as `stack status` names it' >&2; exit 2)
	$(CLI) stack remove-location '$(NAME)'

stack-rotate-pg-password: install ## new Postgres password for the stack: ALTER ROLE, stored 0600, components restarted one by one
	$(CLI) stack rotate-pg-password

# Previews of merge requests on the running stack (docs/stack.md "Previews of merge requests"): a checkout of another
# branch as <LOCATION>-mr-<MR> next to the registered location, through ci/previews.py as the CI jobs register them.
.PHONY: stack-add-preview stack-remove-preview
stack-add-preview: install ## a checkout as preview LOCATION-mr-MR on the running stack: LOCATION= MR= SOURCE=dir [MAX=2]
	@$(if $(and $(LOCATION),$(MR),$(SOURCE)),true,echo 'set LOCATION=<registered location> MR=<iid> SOURCE=<checkout>' >&2; exit 2)
	$(CLI) stack add-preview --location '$(LOCATION)' --mr '$(MR)' --source '$(SOURCE)' $(if $(MAX),--max-per-location '$(MAX)')

stack-remove-preview: install ## stop preview LOCATION-mr-MR's automation, deregister it, stop its code server: LOCATION= MR=
	@$(if $(and $(LOCATION),$(MR)),true,echo 'set LOCATION=<registered location> MR=<iid>' >&2; exit 2)
	$(CLI) stack remove-preview --location '$(LOCATION)' --mr '$(MR)'
