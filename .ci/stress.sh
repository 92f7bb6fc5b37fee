#!/usr/bin/env bash
# The test part of .ci/run, N times in a row, with busy loops beside it: a test that passes on an
# idle machine and fails on a loaded one is a race, and this is how to find it before CI does.
# Usage: bash .ci/stress.sh [--runs N] [--busy K] [--scratch-path DIR]   (defaults: 20 runs, 2 busy
#        loops, SwiftPM's own .build)
#   Build first (swift build --build-tests); it runs the built tests with --skip-build, against a
#   throwaway PostgreSQL of its own (.ci/postgres.sh), under CI=true (a skip is a failure).
#   A run that overstays its bound has its threads dumped (gdb, when installed) into
#   stress-hang-RUN-PART.txt, then is killed. Logs: stress-RUN-PART.log in $ORGSYNC_STRESS_DIR
#   (default: a new temporary directory, printed).
# Exit status: 0 when every run passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=20
busy=2
scratch=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --busy) busy="$2"; shift 2 ;;
    --scratch-path) scratch=(--scratch-path "$2"); shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "stress.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
logs="${ORGSYNC_STRESS_DIR:-$(mktemp -d /tmp/orgsync-stress.XXXXXX)}"
mkdir -p "$logs"
echo "stress: $runs runs, $busy busy loops; logs in $logs"

export CI=true
# shellcheck source=/dev/null
source .ci/postgres.sh >/dev/null || { echo "stress.sh: could not start PostgreSQL" >&2; exit 2; }
busy_pids=()
cleanup() {
  for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null; done
  orgsync_pg_stop >/dev/null 2>&1
}
trap cleanup EXIT
for _ in $(seq 1 "$busy"); do
  bash -c 'while :; do :; done' &
  busy_pids+=($!)
done

# name, bound in seconds, swift test arguments...
guarded() {
  local name=$1 bound=$2
  shift 2
  swift test --skip-build "${scratch[@]}" "$@" > "$logs/stress-$name.log" 2>&1 &
  local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    waited=$((waited + 1))
    if [ "$waited" -ge "$bound" ]; then
      local xctest
      xctest=$(pgrep -f "orgsyncPackageTests.xctest" | head -1)
      if [ -n "$xctest" ] && command -v gdb >/dev/null; then
        gdb -p "$xctest" -batch -ex "thread apply all bt 12" > "$logs/stress-hang-$name.txt" 2>&1
      fi
      pkill -KILL -f "orgsyncPackageTests.xctest"
      kill "$pid" 2>/dev/null
      echo "  $name: over its bound of $bound s (threads in $logs/stress-hang-$name.txt)"
      return 1
    fi
  done
  wait "$pid" || { echo "  $name: failed ($logs/stress-$name.log)"; return 1; }
}

failed_runs=0
for run in $(seq 1 "$runs"); do
  start=$(date +%s)
  failures=0
  # The same four invocations as .ci/run.
  guarded "$run-a" 600 --skip PostgresLinkTests --skip ConnectionLimitTests --skip BodyBudgetMemoryTests || failures=$((failures + 1))
  guarded "$run-b" 300 --filter PostgresLinkTests || failures=$((failures + 1))
  guarded "$run-c" 200 --filter ConnectionLimitTests || failures=$((failures + 1))
  guarded "$run-d" 300 --filter BodyBudgetMemoryTests || failures=$((failures + 1))
  [ "$failures" -gt 0 ] && failed_runs=$((failed_runs + 1))
  echo "run $run: $failures failing invocations, $(( $(date +%s) - start )) s, load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "stress: $((runs - failed_runs)) of $runs runs passed"
[ "$failed_runs" -eq 0 ]
