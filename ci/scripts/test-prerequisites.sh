#!/bin/sh
# The system packages `make test` needs beyond Python and make: PostgreSQL's server binaries (the throwaway
# database of tests/local), Chromium (the browser tests), Node with npm (gitlab-ci-local, tests/ci), rsync
# (gitlab-ci-local copies a job's files with it), Prometheus with promtool and Alertmanager (the alert rules' unit
# tests, the local stack's monitoring). As root with apt, what is missing is installed; otherwise one line
# names the missing packages and the command that installs them, and make stops before anything else runs.
set -eu

need=""
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v npm >/dev/null 2>&1 || need="$need nodejs npm"
command -v rsync >/dev/null 2>&1 || need="$need rsync"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v prometheus-alertmanager >/dev/null 2>&1 || need="$need prometheus-alertmanager"
[ -z "$need" ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "make test: installing the system packages it needs:$need" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086  # a list of package names
  apt-get install -y -qq --no-install-recommends $need >/dev/null
  exit 0
fi
echo "make test needs the system packages$need; install them: sudo apt-get install -y$need (Debian/Ubuntu)" >&2
exit 2
