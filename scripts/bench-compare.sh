#!/usr/bin/env bash
# Runs the standard load scenarios against beamq and Mosquitto in the same run, alternating the
# two broker by broker, round by round, and prints beamq/Mosquitto ratios of the medians.
#
#   scripts/bench-compare.sh [--rounds N] [--duration SECS] [--only "fan-in-qos0 conn ..."]
#                            [--out DIR]
#
# Each measurement starts a fresh broker (so peak memory is the run's own), runs one
# `beamq bench` scenario with --broker-pid, and stops the broker. Both brokers get the same
# limits: 32 QoS 1 messages in flight per subscriber, 1000 queued. Machines here are small and
# noisy: only ratios from one run mean anything. Results (JSON per run, summary.md) go to DIR
# (default target/bench-compare/<date>).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
duration=5
only=""
out="target/bench-compare/$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "bench-compare: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ "$rounds" -lt 3 ]; then
    echo "bench-compare: at least 3 rounds (medians of fewer mean little here)" >&2
    exit 2
fi

if ! command -v mosquitto >/dev/null 2>&1; then
    echo "== installing mosquitto (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

cargo build --release --quiet
BEAMQ=target/release/beamq
mkdir -p "$out"

BEAMQ_PORT=18831
MOSQ_PORT=18832
cat > "$out/beamq.toml" <<EOF
[listeners.tcp.default]
bind = "127.0.0.1:$BEAMQ_PORT"
[mqtt]
max_inflight = 32
max_queued_messages = 1000
[log]
level = "warn"
[sys]
interval = "0s"
EOF
cat > "$out/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
max_inflight_messages 32
max_queued_messages 1000
persistence false
log_dest none
EOF

# Each broker may hold as many sockets as this machine allows a process.
ulimit -n "$(ulimit -Hn)"

broker_pid=""
start_broker() {
    local which=$1 port
    case "$which" in
        beamq)
            port=$BEAMQ_PORT
            "$BEAMQ" start --config "$out/beamq.toml" --data-dir "$out/data" >"$out/beamq.log" 2>&1 &
            ;;
        mosquitto)
            port=$MOSQ_PORT
            "$MOSQUITTO" -c "$out/mosquitto.conf" >"$out/mosquitto.log" 2>&1 &
            ;;
    esac
    broker_pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench-compare: $which did not start (see $out/$which.log)" >&2
    exit 1
}
stop_broker() {
    kill -TERM "$broker_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
}
trap 'stop_broker' EXIT

scenarios="fan-in-qos0 fan-in-qos1 fan-out-qos0 fan-out-qos1 p2p-qos0 p2p-qos1 latency-qos0 latency-qos1 conn"
[ -n "$only" ] && scenarios="$only"

run_one() {
    local scenario=$1 which=$2 round=$3 port args
    case "$which" in beamq) port=$BEAMQ_PORT ;; mosquitto) port=$MOSQ_PORT ;; esac
    case "$scenario" in
        conn) args=(conn --count 19000 --concurrency 64 --hold 3) ;;
        *-qos0) args=("${scenario%-qos0}" --qos 0 --duration "$duration" --warmup 1) ;;
        *-qos1) args=("${scenario%-qos1}" --qos 1 --duration "$duration" --warmup 1) ;;
        *) echo "bench-compare: unknown scenario $scenario" >&2; exit 2 ;;
    esac
    start_broker "$which"
    "$BEAMQ" bench "${args[@]}" --port "$port" --broker-pid "$broker_pid" --label "$which" \
        --quiet --json "$out/$scenario.$which.$round.json" >"$out/$scenario.$which.$round.txt"
    stop_broker
    printf '%-14s round %d %-9s ' "$scenario" "$round" "$which"
    grep -E '^(throughput|connections|latency|broker memory)' "$out/$scenario.$which.$round.txt" \
        | tr '\n' ' ' | cut -c1-160
}

echo "== $rounds rounds, ${duration}s windows, results in $out"
for round in $(seq 1 "$rounds"); do
    for scenario in $scenarios; do
        # Alternate which broker goes first, so neither always gets the fresher machine.
        if [ $((round % 2)) -eq 1 ]; then order="beamq mosquitto"; else order="mosquitto beamq"; fi
        for which in $order; do
            run_one "$scenario" "$which" "$round"
        done
    done
done

python3 - "$out" "$rounds" $scenarios <<'EOF' | tee "$out/summary.md"
import json, statistics, sys, platform, os
out, rounds, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def load(s, b):
    runs = []
    for r in range(1, rounds + 1):
        try:
            with open(f"{out}/{s}.{b}.{r}.json") as f:
                runs.append(json.load(f))
        except FileNotFoundError:
            pass
    return runs

def med(runs, get):
    vals = [v for v in (get(r) for r in runs) if v is not None]
    return statistics.median(vals) if vals else None

def fmt(v, unit=""):
    if v is None:
        return "-"
    return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:,.1f}{unit}"

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
      f"medians of {rounds} rounds, beamq and Mosquitto alternated.\n")
print("| scenario | figure | beamq | Mosquitto | beamq/Mosquitto | beamq CPU | Mosquitto CPU | beamq peak RSS | Mosquitto peak RSS | lost (beamq/Mosquitto) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for s in scenarios:
    b, m = load(s, "beamq"), load(s, "mosquitto")
    cpu_b = med(b, lambda r: (r.get("broker_process") or {}).get("cpu_pct"))
    cpu_m = med(m, lambda r: (r.get("broker_process") or {}).get("cpu_pct"))
    hwm_b = med(b, lambda r: (r.get("broker_process") or {}).get("peak_rss_kib"))
    hwm_m = med(m, lambda r: (r.get("broker_process") or {}).get("peak_rss_kib"))
    lost = lambda runs: sum(((r.get("throughput") or {}).get("lost") or 0) for r in runs)
    rows = []
    if s == "conn":
        rows.append(("connects/s", lambda r: r["connections"]["rate_per_s"], ""))
        rows.append(("broker B/connection", lambda r: r["connections"].get("broker_bytes_per_connection"), ""))
    elif s.startswith("latency"):
        rows.append(("p50 us", lambda r: r["latency"]["p50_us"], ""))
        rows.append(("p99 us", lambda r: r["latency"]["p99_us"], ""))
    else:
        rows.append(("delivered msg/s", lambda r: r["throughput"]["delivered_per_s"], ""))
        rows.append(("p99 us", lambda r: r["latency"]["p99_us"], ""))
    for i, (name, get, unit) in enumerate(rows):
        vb, vm = med(b, get), med(m, get)
        ratio = f"{vb / vm:.2f}x" if vb is not None and vm else "-"
        extra = (f"{fmt(cpu_b, '%')} | {fmt(cpu_m, '%')} | {fmt(hwm_b and hwm_b / 1024, ' MiB')} | "
                 f"{fmt(hwm_m and hwm_m / 1024, ' MiB')} | {lost(b)}/{lost(m)}") if i == 0 else "| | | |"
        print(f"| {s if i == 0 else ''} | {name} | {fmt(vb, unit)} | {fmt(vm, unit)} | {ratio} | {extra} |")
gen = [r["generator_cpu_pct"] for s in scenarios for b in ("beamq", "mosquitto") for r in load(s, b)]
if gen:
    print(f"\nLoad generator CPU: median {statistics.median(gen):.0f}% of one core, max {max(gen):.0f}%.")
EOF
