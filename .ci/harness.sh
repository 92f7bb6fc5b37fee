#!/usr/bin/env bash
# End-to-end fault harness (issue 7): crash, outage, flap, corruption, disk-full, plugin-fault,
# bad-input and crash-under-retrying-producers scenarios against the built `orgsync` and a
# throwaway PostgreSQL.
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
  trap 'orgsync_pg_stop' EXIT
fi
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--short)
python3 -B Tests/harness/harness.py "${args[@]}"
