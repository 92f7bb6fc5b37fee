#!/usr/bin/env bash
# Builds the libFuzzer executable (Fuzz/, only with ORGSYNC_FUZZ=1) and runs every fuzz target
# for a bounded time. Fails on any crash, sanitizer report, leak, timeout or out-of-memory, and
# on a target that cannot run. Prints executions and coverage per target.
#
# Usage: bash .ci/fuzz.sh [--short | --long] [--only T[,T...]] [--time SECONDS] [--runs N] [--jobs N]
#                         [--optimize | --no-optimize] [--leaks-per-input | --leaks-at-exit]
#                         [--scratch-path DIR] [--seeds] [--totals]
#   --short      (default; .ci/run) each target for 10 s from the committed corpus: a smoke test
#                (every seed and regression input replayed, a few seconds of new inputs).
#   --long       each target until 10 million executions (--runs) or 4 h (--time), whichever
#                comes first, optimized (below); the working corpus in .build-fuzz/corpus/
#                grows across runs, so repeated long runs add up.
#   --only       a comma-separated list of targets (default: all).
#   --time/--runs override the bound per target; --jobs N runs N targets at once.
#   --leaks-per-input  (default with --short) libFuzzer checks for leaks after every input that
#                allocated more than it freed, and stops at the first with that input. A target
#                that keeps state between inputs (log, http) pays a heap scan for most of them (a
#                half to a sixth of the executions), so --long checks once, at exit, instead:
#                LeakSanitizer still reports every leak, with the stack that allocated it (find the
#                input with a --short run on the corpus). --leaks-at-exit asks for that in short runs.
#   --optimize   (default with --long) our modules compiled with -O as well as instrumented:
#                up to 5 times the executions a second, twice the build time. Built in
#                .build-fuzz-optimized unless --scratch-path says otherwise.
#   --scratch-path  the build folder (default .build-fuzz, a build of its own). `.ci/run` passes
#                .build: the dependencies, which are not instrumented, are then reused from the
#                main build (about 90 s instead of 9 minutes on 2 cores) and only the broker's
#                modules are compiled again, instrumented — the main build's objects of those are
#                replaced, so use it only as the last step, as `.ci/run` does.
#   --seeds      regenerate the seed files Fuzz/corpus/<target>/seed-* and exit.
#   --totals     print the executions each target has run in all recorded runs, and exit.
# Whatever the build folder, the working corpus, findings, logs and the history of runs are in
# .build-fuzz/ (so debug and optimized runs build on each other). Findings land in
# .build-fuzz/artifacts/<target>-{crash,leak,timeout,oom}-<sha1>; replay one with:
# ORGSYNC_FUZZ_TARGET=<target> <build folder>/debug/OrgSyncFuzz <file>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=short only="" seconds="" runs="" jobs=1 seeds=false totals=false optimize="" leaks_per_input="" scratch="" work=.build-fuzz
while [ $# -gt 0 ]; do
  case "$1" in
    --short) mode=short ;;
    --long) mode=long ;;
    --only) only="$2"; shift ;;
    --time) seconds="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --scratch-path) scratch="$2"; shift ;;
    --seeds) seeds=true ;;
    --totals) totals=true ;;
    --optimize) optimize=true ;;
    --no-optimize) optimize=false ;;
    --leaks-per-input) leaks_per_input=true ;;
    --leaks-at-exit) leaks_per_input=false ;;
    *) echo "unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$mode" = short ]; then seconds=${seconds:-10}; runs=${runs:--1}; else seconds=${seconds:-14400}; runs=${runs:-10000000}; fi
if [ -z "$optimize" ]; then if [ "$mode" = long ]; then optimize=true; else optimize=false; fi; fi
if [ -z "$leaks_per_input" ]; then if [ "$mode" = long ]; then leaks_per_input=false; else leaks_per_input=true; fi; fi
if [ -z "$scratch" ]; then if $optimize; then scratch=.build-fuzz-optimized; else scratch=.build-fuzz; fi; fi

all_targets=(json entry batch log smallfiles lines plugin config pgoutput nats clusterappend http)
if [ -n "$only" ]; then IFS=, read -r -a targets <<<"$only"; else targets=("${all_targets[@]}"); fi

if $totals; then
  # One line per run and target in the history: sum the executions of each target.
  printf '%-13s %12s %6s\n' target executions runs
  for target in "${all_targets[@]}"; do
    sed -n "s/^[^ ]* [a-z-]* $target executions=\([0-9]*\) .*/\1/p" "$work/fuzz-history.txt" 2>/dev/null \
      | awk -v t="$target" '{ s += $1; n++ } END { printf "%-13s %12d %6d\n", t, s, n }'
  done
  exit 0
fi

binary=$scratch/debug/OrgSyncFuzz
start=$(date +%s)
if $optimize; then export ORGSYNC_FUZZ_OPTIMIZE=1; else unset ORGSYNC_FUZZ_OPTIMIZE; fi
echo "== building the fuzz executable in $scratch (ORGSYNC_FUZZ=1, -sanitize=fuzzer,address$($optimize && echo ', -O'); warnings are errors)"
# -warnings-as-errors as in the main build: the dependencies' compile commands then match the
# main build's, so with --scratch-path .build they are reused rather than compiled again.
ORGSYNC_FUZZ=1 swift build --scratch-path "$scratch" --product OrgSyncFuzz -Xswiftc -warnings-as-errors 2>&1 \
  | grep -v -e "Cannot export local symbol" -e "unhandled; explicitly declare them" -e "/checkouts/.*CMakeLists.txt" || true
[ -x "$binary" ] || { echo "the fuzz build failed" >&2; exit 1; }
echo "== built in $(( $(date +%s) - start ))s"

# Swift's own crash backtracer fights the sanitizers' handlers; libFuzzer prints the stack.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"

if $seeds; then
  ORGSYNC_FUZZ_WRITE_SEEDS=Fuzz/corpus "$binary"
  echo "seeds written to Fuzz/corpus/<target>/seed-*"
  exit 0
fi

mkdir -p "$work/artifacts" "$work/logs"
run_target() {
  local target=$1 corpus="$work/corpus/$1" log="$work/logs/$1.log"
  mkdir -p "$corpus" "Fuzz/corpus/$target"
  # New inputs go to the working corpus (first directory); the committed seeds and regression
  # inputs are read, and replayed first, every run.
  ORGSYNC_FUZZ_TARGET=$target "$binary" "$corpus" "Fuzz/corpus/$target" \
    -max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -detect_leaks="$($leaks_per_input && echo 1 || echo 0)" \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$work/artifacts/$target-" >"$log" 2>&1
}

failed=()
pids=()
for target in "${targets[@]}"; do
  run_target "$target" &
  pids+=("$!:$target")
  if [ "${#pids[@]}" -ge "$jobs" ]; then
    for entry in "${pids[@]}"; do wait "${entry%%:*}" || failed+=("${entry#*:}"); done
    pids=()
  fi
done
for entry in "${pids[@]}"; do wait "${entry%%:*}" || failed+=("${entry#*:}"); done

printf '%-11s %12s %8s %8s %8s  %s\n' target executions exec/s cov ft result
for target in "${targets[@]}"; do
  log="$work/logs/$target.log"
  executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
  result=ok
  if [[ " ${failed[*]} " == *" $target "* ]]; then
    result="FAILED: $(grep -m1 -E 'fuzz property broken|ERROR: |SUMMARY: ' "$log" || echo "see $log")"
  fi
  printf '%-11s %12s %8s %8s %8s  %s\n' "$target" "${executions:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result"
  echo "$(date -u +%FT%TZ) $mode$($optimize && echo -optimized) $target executions=${executions:-?} cov=${cov:-?} ft=${ft:-?} $result" >>"$work/fuzz-history.txt"
done
ls "$work"/artifacts/ 2>/dev/null | sed 's/^/artifact: /' || true
echo "== fuzzing took $(( $(date +%s) - start ))s (logs in $work/logs/, one line per run and target in $work/fuzz-history.txt; --totals sums them)"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
