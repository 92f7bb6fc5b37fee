#!/usr/bin/env bash
# Checks the HTTP API with a client nobody on the project wrote (issue 8): schemathesis, from
# PyPI in a temporary virtualenv, generates requests from the broker's own OpenAPI document
# (GET /openapi.yaml) and runs every check on every answer: no 5xx, status codes, content
# types, headers and bodies as documented, invalid data rejected, valid data accepted, 405 for
# undocumented methods, auth not ignored.
#
# The broker runs with auth ON (a produce and an admin token, passed through the environment
# as the configuration's token_env says); schemathesis sends the admin token, and its
# ignored_auth check sends requests without it. Two runs, each recorded as a HAR file:
#   1. negative data only (coverage and fuzzing phases);
#   2. every phase (examples, coverage, fuzzing, stateful), positive and negative data.
# After each, the stream's end offset must have moved by exactly the number of entries in the
# 201 answers (nothing else appends), and no answer may be a 5xx.
# One worker: hypothesis under Python 3.11 hits a CPython AST SystemError when two threads
# describe strategies at once.
#
# Usage: ORGSYNC_BIN=.build/debug/orgsync bash .ci/schemathesis.sh
# Env: SCHEMATHESIS_EXAMPLES (per operation, default 30), SCHEMATHESIS_SEED (default fixed, so
# CI is repeatable; set another to explore), KEEP_TEMP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
start=$(date +%s)
log() { printf 'schemathesis-check [%ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

ORGSYNC_BIN="${ORGSYNC_BIN:-.build/debug/orgsync}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-30}"
SEED="${SCHEMATHESIS_SEED:-20261125}"
SCHEMATHESIS_VERSION=4.32.5
if [ ! -x "$ORGSYNC_BIN" ]; then
  echo "schemathesis-check: $ORGSYNC_BIN is not an executable (build first, or set ORGSYNC_BIN)" >&2
  exit 2
fi
ORGSYNC_BIN="$(cd "$(dirname "$ORGSYNC_BIN")" && pwd)/$(basename "$ORGSYNC_BIN")"

work="$(mktemp -d /tmp/orgsync-schemathesis.XXXXXX)"
# shellcheck source=/dev/null
source .ci/broker.sh
cleanup() {
  orgsync_broker_stop
  if [ "${KEEP_TEMP:-}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

log "installing schemathesis $SCHEMATHESIS_VERSION in a temporary virtualenv"
# shellcheck source=/dev/null
source .ci/venv.sh
orgsync_make_venv "$work/venv" "schemathesis==$SCHEMATHESIS_VERSION"

# Tokens made for this run only; the broker reads them from the environment.
ORGSYNC_PRODUCE_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
ORGSYNC_ADMIN_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
export ORGSYNC_PRODUCE_TOKEN ORGSYNC_ADMIN_TOKEN
cat > "$work/orgsync.yaml" <<EOF
data_dir: $work/state
server: { host: 127.0.0.1, port: 0, entry_bytes_max: 65536, body_bytes_max: 1048576, request_entries_max: 1000 }
log: { level: warning }
auth:
  enabled: true
  tokens:
    - { name: producer, role: produce, token_env: ORGSYNC_PRODUCE_TOKEN }
    - { name: operator, role: admin, token_env: ORGSYNC_ADMIN_TOKEN }
streams:
  - name: events
links:
  - name: demo
    stream: events
    adapter: sqlite
    settings: { path: demo.sqlite, primary_key: org_key }
EOF

orgsync_broker_start "$ORGSYNC_BIN" "$work/orgsync.yaml" "$work" || { echo "schemathesis-check: no broker" >&2; exit 1; }
port="$broker_port"
base="http://127.0.0.1:$port"
log "broker on $base (auth on)"

end_offset() {
  python3 - "$base" <<'PY'
import json, os, sys, urllib.request
request = urllib.request.Request(sys.argv[1] + "/v1/streams/events")
request.add_header("Authorization", "Bearer " + os.environ["ORGSYNC_PRODUCE_TOKEN"])
with urllib.request.urlopen(request, timeout=10) as response:
    print(json.load(response)["end_offset"])
PY
}

schemathesis() {
  local name="$1"; shift
  # The token goes in a header only; the output sanitizer masks it in what schemathesis prints.
  # Run from the temporary directory: schemathesis keeps a cache in its working directory.
  (cd "$work" && SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$repo/.ci" \
  timeout 150 "$work/venv/bin/schemathesis" run "$base/openapi.yaml" \
    --header "Authorization: Bearer $ORGSYNC_ADMIN_TOKEN" \
    --checks all --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 \
    --generation-database none --request-timeout 10 --no-color \
    --report har --report-har-path "$work/$name.har" "$@") >"$work/$name.txt" 2>&1 || {
      status=$?
      cat "$work/$name.txt"
      echo "schemathesis-check: the $name run failed (exit $status); broker log:" >&2
      tail -n 40 "$work/broker.log" >&2
      exit 1
    }
  tail -n 25 "$work/$name.txt"
}

# Checks a run's HAR file: no 5xx, and the end offset moved by exactly the number of entries
# that 201 answers acknowledged (every other answer appended nothing).
account() {
  python3 - "$work/$1.har" "$2" "$3" "$4" <<'PY'
import json, sys
har, before, after, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
entries = json.load(open(har))["log"]["entries"]
acked, appends, statuses = 0, 0, {}
for entry in entries:
    status = entry["response"]["status"]
    statuses[status] = statuses.get(status, 0) + 1
    if entry["request"]["method"] == "POST" and entry["request"]["url"].split("?")[0].endswith("/entries"):
        appends += 1
        # A 201 with Idempotent-Replayed answers a retry of a key already seen: it appended
        # nothing (the original 201 counted its entries).
        replayed = any(h["name"].lower() == "idempotent-replayed" and h["value"] == "true"
                       for h in entry["response"].get("headers", []))
        if status == 201 and replayed:
            statuses["201 replayed"] = statuses.get("201 replayed", 0) + 1
        elif status == 201:
            acked += json.loads(entry["response"]["content"]["text"])["count"]
print(f"schemathesis-check: {run}: {len(entries)} requests ({appends} appends), statuses "
      f"{dict(sorted(statuses.items(), key=str))}; {acked} entries acknowledged, end offset {before} -> {after}")
if any(isinstance(status, int) and status >= 500 for status in statuses):
    sys.exit(f"schemathesis-check: {run}: a 5xx answer")
if after - before != acked:
    sys.exit(f"schemathesis-check: {run}: the end offset moved by {after - before}, but 201 answers acknowledged {acked} entries")
PY
}

# --- 1. negative data only (coverage and fuzzing phases: the examples and stateful phases
#        send valid data whatever the mode): negative_data_rejection must hold for every
#        request, and the end offset may move only by what a 201 acknowledged.
before="$(end_offset)"
log "run 1: negative data (end offset $before)"
schemathesis negative --mode negative --phases coverage,fuzzing
after="$(end_offset)"
account negative "$before" "$after" negative

# --- 2. everything: all phases, positive and negative data
before="$after"
log "run 2: all phases, positive and negative (end offset $before)"
schemathesis all --mode all
after="$(end_offset)"
account all "$before" "$after" all
if [ "$after" = "$before" ]; then
  echo "schemathesis-check: no append was acknowledged: the generated valid entries never reached the log" >&2
  exit 1
fi
log "passed"
