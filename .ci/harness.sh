#!/usr/bin/env bash
# End-to-end fault harness (issue 7): crash, outage, flap, corruption, disk-full, plugin-fault,
# bad-input, crash-under-retrying-producers, power-loss (issue 13), capture and cluster (issue 18)
# scenarios against the built `orgsync`, a throwaway PostgreSQL and three throwaway nats-servers;
# first the power-loss filesystem's self-test.
# Usage: bash .ci/harness.sh [--short|--long] [--only kill,outage,...,retry] [--seed N] [--keep] [--allow-skip]
#   ORGSYNC_BIN   the executable (default .build/debug/orgsync; build it first)
#   ORGSYNC_TEST_PG_*  a running cluster from .ci/postgres.sh; when unset, this script starts
#                 its own and stops it at exit (also on failure).
# Exit status: 0 when every scenario passed, 1 otherwise (a skipped scenario, e.g. disk full when
# not root, counts as not passed unless --allow-skip), 2 on a setup problem.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export ORGSYNC_BIN="${ORGSYNC_BIN:-.build/debug/orgsync}"
if [ ! -x "$ORGSYNC_BIN" ]; then
  echo "harness.sh: $ORGSYNC_BIN is missing: run swift build first (or set ORGSYNC_BIN)" >&2
  exit 2
fi
if [ -z "${ORGSYNC_TEST_PG_HOST:-}" ]; then
  # shellcheck source=/dev/null
  source .ci/postgres.sh || { echo "harness.sh: could not start PostgreSQL" >&2; exit 2; }
  ORGSYNC_TEST_PG_STARTED_HERE=1
  trap 'orgsync_pg_stop' EXIT
fi
# The power-loss scenario's filesystem (Tests/harness/powerfs.py) runs on libfuse3 (Debian
# fuse3) through mfusepy (PyPI, pinned), installed in a temporary virtualenv; the harness itself
# stays standard-library Python. ORGSYNC_POWERFS_PYTHON set: that interpreter already has it.
if [ -z "${ORGSYNC_POWERFS_PYTHON:-}" ]; then
  MFUSEPY_VERSION=3.1.1
  if ! command -v fusermount3 >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "harness.sh: install fuse3 (or run as root)" >&2; exit 2; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
  fi
  powerfs_venv="$(mktemp -d /tmp/orgsync-powerfs-venv.XXXXXX)"
  trap 'rm -rf "$powerfs_venv"; [ -z "${ORGSYNC_TEST_PG_STARTED_HERE:-}" ] || orgsync_pg_stop' EXIT
  # shellcheck source=/dev/null
  source .ci/venv.sh
  orgsync_make_venv "$powerfs_venv" "mfusepy==$MFUSEPY_VERSION"
  export ORGSYNC_POWERFS_PYTHON="$powerfs_venv/bin/python"
fi
# The cluster scenario runs three nats-servers (Debian's nats-server, JetStream clustering works
# in its 2.9.10).
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  [ "$(id -u)" = 0 ] || { echo "harness.sh: install nats-server (or run as root)" >&2; exit 2; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
echo "harness.sh: powerfs self-test (the power-loss scenario's filesystem)"
python3 -B Tests/harness/test_powerfs.py
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--short)
python3 -B Tests/harness/harness.py "${args[@]}"
