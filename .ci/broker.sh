# Sourced by the CI checks that run the real broker: starts `orgsync serve` in the background
# and stops it, also on failure.
#   orgsync_broker_start BIN CONFIG DIR   starts it (stdout/stderr to DIR/broker.out, DIR/broker.log),
#                                         waits (bounded, 30 s) for its "listening" line; sets
#                                         broker_pid and broker_port
#   orgsync_broker_stop                   SIGTERM, up to 10 s, then SIGKILL
broker_pid=""
broker_port=""

orgsync_broker_start() {
  local bin="$1" config="$2" dir="$3"
  "$bin" serve --config "$config" >"$dir/broker.out" 2>"$dir/broker.log" &
  broker_pid=$!
  broker_port=""
  for _ in $(seq 1 300); do
    broker_port="$(sed -n 's#^orgsync: listening on https\{0,1\}://127.0.0.1:\([0-9]*\)$#\1#p' "$dir/broker.out")"
    [ -n "$broker_port" ] && return 0
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      cat "$dir/broker.log" >&2
      echo "the broker exited before listening" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "the broker did not listen within 30 s" >&2
  return 1
}

orgsync_broker_stop() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$broker_pid" 2>/dev/null || true
  fi
  broker_pid=""
}
