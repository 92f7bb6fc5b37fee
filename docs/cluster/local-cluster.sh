#!/usr/bin/env bash
# A 3-member orgsync cluster on this machine: three nats-servers clustered on loopback (JetStream,
# R3 streams) and three brokers (members a, b, c) on HTTP ports 7071-7073. Member a runs the
# demo link into a SQLite file; appends go to any member.
#
#   bash docs/cluster/local-cluster.sh start [DIR]   start everything under DIR (default /tmp/orgsync-cluster)
#   bash docs/cluster/local-cluster.sh stop  [DIR]   stop what start started (SIGTERM: brokers first)
#
# Needs nats-server 2.9 or newer (Debian: apt-get install nats-server) and a built orgsync
# (swift build -c release; ORGSYNC_BIN names another binary).
set -euo pipefail

command=${1:-}
dir=${2:-/tmp/orgsync-cluster}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
orgsync=${ORGSYNC_BIN:-$here/.build/release/orgsync}
nats=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
client_ports=(4231 4232 4233)
route_ports=(6231 6232 6233)
http_ports=(7071 7072 7073)
nodes=(a b c)

stop() {
    for pidfile in "$dir"/broker-*.pid "$dir"/nats-*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
}

wait_for_line() {  # file, pattern, what
    for _ in $(seq 1 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "local-cluster: $3 did not come up; see $1" >&2
    exit 1
}

case "$command" in
start)
    [ -x "$nats" ] || { echo "local-cluster: nats-server not found (apt-get install nats-server, or NATS_SERVER_BIN)" >&2; exit 1; }
    [ -x "$orgsync" ] || { echo "local-cluster: $orgsync not built (swift build -c release, or ORGSYNC_BIN)" >&2; exit 1; }
    mkdir -p "$dir"
    stop
    routes=$(printf 'nats://127.0.0.1:%s,' "${route_ports[@]}")
    routes=${routes%,}
    urls=$(printf '"nats://127.0.0.1:%s", ' "${client_ports[@]}")
    urls=${urls%, }
    for i in 0 1 2; do
        "$nats" -n "n$((i + 1))" -a 127.0.0.1 -p "${client_ports[$i]}" -js -sd "$dir/nats-$i" \
            --cluster_name orgsync --cluster "nats://127.0.0.1:${route_ports[$i]}" --routes "$routes" \
            > "$dir/nats-$i.log" 2>&1 &
        echo $! > "$dir/nats-$i.pid"
    done
    for i in 0 1 2; do wait_for_line "$dir/nats-$i.log" "Server is ready" "nats-server $i"; done
    for i in 0 1 2; do
        node=${nodes[$i]}
        cat > "$dir/$node.yaml" <<EOF
auth: { enabled: false }
server: { port: ${http_ports[$i]} }
cluster: { node: $node, nats_urls: [$urls], replicas: 3 }
streams: [ { name: events } ]
links:
  - { name: demo, stream: events, adapter: sqlite, node: a, settings: { path: demo.sqlite, primary_key: org_key } }
EOF
        # The first member makes the streams; JetStream may still be electing its leaders:
        # retry its start a few times.
        for attempt in 1 2 3 4 5; do
            "$orgsync" serve --config "$dir/$node.yaml" --data-dir "$dir/$node" > "$dir/broker-$node.out" 2> "$dir/broker-$node.log" &
            echo $! > "$dir/broker-$node.pid"
            for _ in $(seq 1 100); do
                grep -q "listening on" "$dir/broker-$node.out" 2>/dev/null && break
                kill -0 "$(cat "$dir/broker-$node.pid")" 2>/dev/null || break
                sleep 0.1
            done
            grep -q "listening on" "$dir/broker-$node.out" 2>/dev/null && break
            [ "$attempt" = 5 ] && { echo "local-cluster: member $node did not start; see $dir/broker-$node.log" >&2; exit 1; }
            sleep 1
        done
    done
    cat <<EOF
3 nats-servers (127.0.0.1:${client_ports[*]}) and 3 members:
  a http://127.0.0.1:${http_ports[0]}  (runs link demo into $dir/a/demo.sqlite)
  b http://127.0.0.1:${http_ports[1]}
  c http://127.0.0.1:${http_ports[2]}
Append through any member:
  $orgsync produce --url http://127.0.0.1:${http_ports[1]} --stream events data/sample-events.jsonl
Logs and state under $dir; stop with: bash docs/cluster/local-cluster.sh stop $dir
EOF
    ;;
stop)
    stop
    ;;
*)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
