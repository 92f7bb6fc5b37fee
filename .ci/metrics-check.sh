#!/usr/bin/env bash
# Checks the broker's metrics with Prometheus' own tool (issue 16), promtool from Debian's
# `prometheus` package:
#   1. the example alert rules (docs/prometheus/) load: `promtool check rules`;
#   2. they fire as their unit tests say: `promtool test rules`;
#   3. a live broker's /metrics, after its link applied entries and dead-lettered one (and a
#      notification of it was attempted) and its PostgreSQL capture source measured its lag, passes
#      `promtool check metrics` (HELP and TYPE on every family, counters named _total, ...);
#   4. every metric the rules use is in that scrape (a renamed metric would silence an alert).
#
# Usage: ORGSYNC_BIN=.build/debug/orgsync bash .ci/metrics-check.sh   (KEEP_TEMP=1 keeps the temp dir)
# Needs the throwaway PostgreSQL of .ci/postgres.sh (its ORGSYNC_TEST_PG_* exported), as .ci/run has.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ORGSYNC_BIN="${ORGSYNC_BIN:-.build/debug/orgsync}"
say() { printf 'metrics-check: %s\n' "$*"; }
command -v promtool >/dev/null 2>&1 || { say "promtool is missing (Debian: apt-get install prometheus)" >&2; exit 2; }
[ -x "$ORGSYNC_BIN" ] || { say "$ORGSYNC_BIN is not an executable (build first, or set ORGSYNC_BIN)" >&2; exit 2; }

promtool check rules docs/prometheus/orgsync-alerts.yaml
(cd docs/prometheus && promtool test rules orgsync-alerts.test.yaml)

work="$(mktemp -d /tmp/orgsync-metrics.XXXXXX)"
# shellcheck source=/dev/null
source .ci/broker.sh
# The source metrics come from a real capture: a PostgreSQL source on the throwaway server of
# .ci/postgres.sh (wal_level = logical), reading an empty table of its own.
if [ -z "${ORGSYNC_TEST_PG_HOST:-}" ]; then
  say "needs the throwaway PostgreSQL for a capture source (source .ci/postgres.sh first)" >&2
  exit 2
fi
pg_psql() {
  PGPASSWORD="${ORGSYNC_TEST_PG_PASSWORD:-}" "${ORGSYNC_PG_BIN:-/usr/lib/postgresql/15/bin}/psql" -X -q -v ON_ERROR_STOP=1 \
    -h "$ORGSYNC_TEST_PG_HOST" -p "$ORGSYNC_TEST_PG_PORT" -U "$ORGSYNC_TEST_PG_USER" -d "$ORGSYNC_TEST_PG_DB" -c "$1"
}
source_tag="metrics_check_$$"
pg_psql "CREATE SCHEMA $source_tag; CREATE TABLE $source_tag.t (id int PRIMARY KEY)" >/dev/null
cleanup() {
  orgsync_broker_stop
  pg_psql "SELECT pg_drop_replication_slot('$source_tag') FROM pg_replication_slots WHERE slot_name = '$source_tag'" >/dev/null 2>&1 || true
  pg_psql "DROP PUBLICATION IF EXISTS $source_tag; DROP SCHEMA IF EXISTS $source_tag CASCADE" >/dev/null 2>&1 || true
  if [ "${KEEP_TEMP:-}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# A notification target that refuses connections (port 1): the rejected entry's event is
# attempted and retried, so the notification families are in the scrape too.
ORGSYNC_NOTIFY_SECRET="whsec_$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
export ORGSYNC_NOTIFY_SECRET
cat > "$work/orgsync.yaml" <<YAML
data_dir: $work/state
server: { host: 127.0.0.1, port: 0 }
log: { level: error }
auth: { enabled: false }
streams: [ { name: events } ]
links:
  - name: demo
    stream: events
    adapter: sqlite
    settings: { path: demo.sqlite, primary_key: org_key }
notifications:
  - { name: ops, url: "http://127.0.0.1:1/hook", secret_env: ORGSYNC_NOTIFY_SECRET, rejected_summary_ms: 0 }
sources:
  - name: crm
    kind: postgres
    stream: events
    settings: { host: "$ORGSYNC_TEST_PG_HOST", port: $ORGSYNC_TEST_PG_PORT, user: "$ORGSYNC_TEST_PG_USER",
                password_env: ORGSYNC_TEST_PG_PASSWORD, database: "$ORGSYNC_TEST_PG_DB", tables: "$source_tag.t",
                slot: "$source_tag", publication: "$source_tag", sslmode: disable }
YAML
orgsync_broker_start "$ORGSYNC_BIN" "$work/orgsync.yaml" "$work" || { say "no broker" >&2; exit 1; }
port="$broker_port"

# 20 entries, one of which the SQLite adapter rejects (a field named like its own `key`
# column); then wait, bounded, until the link has taken all of them and the exporter (every
# second) has recorded its status and the notification of the rejection was attempted, and scrape.
python3 - "http://127.0.0.1:$port" "$work/metrics.txt" <<'PY'
import json, sys, time, urllib.request
base, out = sys.argv[1], sys.argv[2]
def entry(i, fields):
    return json.dumps({"org": "o", "object": "Contact", "op": "upsert", "key": f"k{i}",
                       "ts": "2026-11-27T00:00:00Z", "fields": fields})
body = "\n".join([entry(i, {"Name": f"n{i}"}) for i in range(19)] + [entry(19, {"key": "rejected"})]) + "\n"
request = urllib.request.Request(base + "/v1/streams/events/entries", data=body.encode(),
                                 headers={"Content-Type": "application/x-ndjson"}, method="POST")
with urllib.request.urlopen(request, timeout=10) as answer:
    assert answer.status == 201, answer.status
deadline = time.monotonic() + 30
while True:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    if ('orgsync_link_cursor{link="demo",stream="events"} 20.0' in text and "orgsync_link_rejected_entries_total" in text
            and 'orgsync_notification_deliveries_total{notification="ops",result="retried"}' in text
            and 'orgsync_source_lag_bytes{source="crm",stream="events"}' in text
            and 'orgsync_source_lag_seconds{source="crm",stream="events"}' in text):
        break
    if time.monotonic() > deadline:
        sys.exit("metrics-check: the link's metrics did not show 20 entries taken (and the source its lag) within 30 s:\n" + text)
    time.sleep(0.1)
open(out, "w").write(text)
PY
promtool check metrics < "$work/metrics.txt"
say "promtool check metrics: clean ($(grep -c '^# TYPE' "$work/metrics.txt") families)"

python3 - docs/prometheus/orgsync-alerts.yaml "$work/metrics.txt" <<'PY'
import re, sys
rules, scraped = open(sys.argv[1]).read(), open(sys.argv[2]).read()
used = set(re.findall(r"\b((?:orgsync|process)_[a-z_]+)\b", "\n".join(
    line for line in rules.splitlines() if line.strip().startswith("expr:"))))
families = set(re.findall(r"^# TYPE (\S+)", scraped, re.M))
missing = sorted(used - families)
if missing:
    sys.exit(f"metrics-check: the alert rules use metrics the broker does not expose: {missing}")
print(f"metrics-check: the rules' {len(used)} metrics are all exposed: {sorted(used)}")
PY
