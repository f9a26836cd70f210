#!/usr/bin/env bash
# Interoperability with clients this project did not write: the mosquitto command-line clients
# (Debian package mosquitto-clients) and Eclipse Paho's Python client (PyPI paho-mqtt), against a
# fresh broker on a free loopback port, MQTT 3.1, 3.1.1 and 5.0. Installs what is missing.
#
#   scripts/interop.sh [path/to/beamq]     (default: the debug build, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-${CARGO_TARGET_DIR:-target}/debug/beamq}
[ -x "$BIN" ] || cargo build --bin beamq

if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
  echo "== installing mosquitto-clients"
  apt-get update -qq && apt-get install -y -qq mosquitto-clients >/dev/null
fi
if ! python3 -c 'import paho.mqtt, sys; sys.exit(int(paho.mqtt.__version__.split(".")[0]) < 2)' 2>/dev/null; then
  echo "== installing paho-mqtt"
  python3 -m pip install -q --disable-pip-version-check 'paho-mqtt>=2,<3'
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA=$(mktemp -d)
LOG="$DATA/beamq.log"
"$BIN" start --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-level warn >"$LOG" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),0.2)" 2>/dev/null && break
  sleep 0.1
done

echo "== mosquitto clients"
# Waits (bounded) until FILE has at least N lines matching PATTERN.
wait_lines() {
  local file=$1 pattern=$2 n=$3
  for _ in $(seq 100); do
    [ "$(grep -c -- "$pattern" "$file" 2>/dev/null || true)" -ge "$n" ] && return 0
    sleep 0.1
  done
  echo "timed out waiting for $n lines matching $pattern in $file" >&2
  return 1
}

for V in mqttv31 mqttv311 mqttv5; do
  OUT="$DATA/sub-$V.out"
  : >"$OUT"
  mosquitto_sub -h 127.0.0.1 -p "$PORT" -V "$V" -t "interop/$V/#" -q 2 -W 20 -v >"$OUT" &
  SUB=$!
  # The subscription is in place once a probe published after it comes through.
  for _ in $(seq 50); do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -V "$V" -t "interop/$V/probe" -m probe -q 1
    grep -q probe "$OUT" && break
    sleep 0.1
  done
  for Q in 0 1 2; do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -V "$V" -t "interop/$V/q$Q" -m "m$Q" -q "$Q"
  done
  wait_lines "$OUT" "interop/$V/q" 3
  kill "$SUB" 2>/dev/null || true
  wait "$SUB" 2>/dev/null || true
  grep "interop/$V/q" "$OUT" | diff - <(printf 'interop/%s/q0 m0\ninterop/%s/q1 m1\ninterop/%s/q2 m2\n' "$V" "$V" "$V")
  echo "mosquitto $V: ok"
done

echo "== paho-mqtt"
python3 scripts/interop.py 127.0.0.1 "$PORT"

echo "== graceful stop"
kill -TERM "$PID"
wait "$PID"
echo "exit status 0 after SIGTERM: ok"
trap - EXIT
rm -rf "$DATA"
