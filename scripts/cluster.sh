#!/usr/bin/env bash
# Starts a local three-node beamq cluster for trying things out:
#   b1@127.0.0.1 (MQTT 127.0.0.1:1881, cluster port 4371)
#   b2@127.0.0.1 (MQTT 127.0.0.1:1882, cluster port 4372)
#   b3@127.0.0.1 (MQTT 127.0.0.1:1883, cluster port 4373)
# b2 and b3 are seeded with b1 only and find each other through it.
#
#   scripts/cluster.sh          build (release) and start the three nodes in the background
#   scripts/cluster.sh stop     stop them (SIGTERM: graceful)
#
# Logs and data go to ${BEAMQ_CLUSTER_DIR:-/tmp/beamq-cluster}/bN/.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${BEAMQ_CLUSTER_DIR:-/tmp/beamq-cluster}
COOKIE=${BEAMQ_COOKIE:-beamq-local-cluster}

stop() {
    for n in 1 2 3; do
        pidfile="$DIR/b$n/pid"
        if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            kill -TERM "$(cat "$pidfile")"
            echo "stopped b$n"
        fi
        rm -f "$pidfile"
    done
}

if [[ ${1:-} == stop ]]; then
    stop
    exit 0
fi

cargo build --release --quiet
BIN=target/release/beamq
stop
for n in 1 2 3; do
    mkdir -p "$DIR/b$n"
    seeds=()
    [[ $n != 1 ]] && seeds=(--seeds b1@127.0.0.1)
    "$BIN" start --node "b$n@127.0.0.1" --cookie "$COOKIE" "${seeds[@]}" \
        --listen "127.0.0.1:188$n" --data-dir "$DIR/b$n/data" \
        >"$DIR/b$n/beamq.log" 2>&1 &
    echo $! >"$DIR/b$n/pid"
done

# Wait (bounded) until every node accepts MQTT and b1 has linked with both others.
for _ in $(seq 1 100); do
    linked=$(grep -c "cluster peer linked" "$DIR/b1/beamq.log" 2>/dev/null || true)
    if [[ ${linked:-0} -ge 2 ]]; then
        echo "cluster up: b1 127.0.0.1:1881, b2 127.0.0.1:1882, b3 127.0.0.1:1883 (logs in $DIR)"
        exit 0
    fi
    sleep 0.1
done
echo "the cluster did not form within 10 s; see $DIR/b*/beamq.log" >&2
exit 1
