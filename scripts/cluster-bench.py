#!/usr/bin/env python3
"""Cross-node cost of a beamq cluster, measured against the same broker on one node.

Starts two release nodes (b1, b2 on 127.0.0.1, MQTT 18831/18832) and, for comparison, uses b1
alone. Two measurements, each bounded in count and time:

- throughput: one mosquitto_pub -l process sends N messages (QoS 0 and QoS 1, 64-byte payloads)
  on one node; one mosquitto_sub on the same node or on the other counts them; the rate is N
  over the time from the first publish to the last message received;
- latency: a paho-mqtt client publishes at a fixed 1,000 msg/s for 5 s (QoS 1) and measures
  publish-to-receive time of each message through one node and across nodes (both clients in
  one process, so the clock is the same; Python's own overhead is in both figures alike).

Usage: scripts/cluster-bench.py [N]   (needs target/release/beamq, mosquitto-clients, paho-mqtt)
"""
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "beamq")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
PAYLOAD = "x" * 64


def start_node(i, seeds, tmp):
    args = [BIN, "start", "--node", f"b{i}@127.0.0.1", "--cookie", "bench",
            "--listen", f"127.0.0.1:1883{i}", "--data-dir", os.path.join(tmp, f"b{i}"),
            "--log-level", "warn"]
    if seeds:
        args += ["--seeds", seeds]
    # Unbounded session queue and a large mailbox: the burst measures speed, not the default
    # drop policy (1000 queued messages per session, drop oldest), which would drop most of it.
    env = dict(os.environ, BEAMQ__SYS__INTERVAL="0s", BEAMQ__MQTT__MAX_QUEUED_MESSAGES="0",
               BEAMQ__BROKER__MAX_MAILBOX="10000000")
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_route(pub_port, sub_port, topic):
    """Probe until a message published on pub_port reaches a subscriber on sub_port."""
    got = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-sub-{sub_port}")
    sub.on_message = lambda c, u, m: got.set()
    sub.connect("127.0.0.1", sub_port)
    sub.subscribe(topic, 0)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-pub-{pub_port}")
    pub.connect("127.0.0.1", pub_port)
    pub.loop_start()
    deadline = time.time() + 15
    while not got.is_set():
        if time.time() > deadline:
            raise SystemExit("route never spread")
        pub.publish(topic, "probe", 0)
        got.wait(0.1)
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()


def throughput(pub_port, sub_port, qos):
    """Delivered messages per second at the subscriber: count over the time between the first
    and the last message it received (mosquitto_sub stamps each one). mosquitto_pub -l may stop
    before sending all N at QoS 1 (it disconnects at end of input), so the count is reported
    rather than assumed."""
    topic = f"bench/tp/{pub_port}/{sub_port}/{qos}"
    out = tempfile.NamedTemporaryFile("w+", delete=False)
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(sub_port), "-t", topic, "-q", str(qos),
                            "-C", str(N), "-W", "30", "-F", "%U"], stdout=out)
    # The subscription must be in place (and routed) before the burst starts.
    wait_route(pub_port, sub_port, topic)
    time.sleep(0.5)
    lines = (PAYLOAD + "\n") * N
    pub = subprocess.Popen(["mosquitto_pub", "-p", str(pub_port), "-t", topic, "-q", str(qos),
                            "-l"], stdin=subprocess.PIPE)
    pub.communicate(lines.encode(), timeout=120)
    sub.wait(timeout=120)
    out.seek(0)
    stamps = [float(l) for l in out.read().split() if l]
    os.unlink(out.name)
    # Drop the probes of wait_route, which arrived before the burst.
    stamps = stamps[-N:] if len(stamps) > N else stamps
    if len(stamps) < 2:
        return 0.0, len(stamps)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)


def latency(pub_port, sub_port, seconds=5, rate=1000):
    topic = f"bench/lat/{pub_port}/{sub_port}"
    wait_route(pub_port, sub_port, topic)
    samples = []
    done = threading.Event()
    total = seconds * rate

    def on_message(c, u, m):
        samples.append(time.perf_counter() - float(m.payload.decode()))
        if len(samples) >= total:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lat-sub-{sub_port}")
    sub.on_message = on_message
    sub.connect("127.0.0.1", sub_port)
    sub.subscribe(topic, 1)
    sub.loop_start()
    time.sleep(0.5)  # let the SUBACK land; the route is already in place
    samples.clear()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lat-pub-{pub_port}")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", pub_port)
    pub.loop_start()
    start = time.perf_counter()
    for i in range(total):
        # Sleep, not spin: a spinning loop holds the GIL and delays the network threads.
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pub.publish(topic, repr(time.perf_counter()), 1)
    done.wait(30)
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()
    us = sorted(s * 1e6 for s in samples)
    pick = lambda q: us[min(len(us) - 1, int(q * len(us)))]
    return len(us), pick(0.5), pick(0.99), statistics.mean(us)


def main():
    tmp = tempfile.mkdtemp(prefix="beamq-cluster-bench-")
    nodes = [start_node(1, None, tmp)]
    time.sleep(0.5)
    nodes.append(start_node(2, "b1@127.0.0.1", tmp))
    try:
        print(f"N = {N} messages of {len(PAYLOAD)} bytes")
        for qos in (0, 1):
            for name, pub, sub in (("one node", 18831, 18831), ("across nodes", 18831, 18832)):
                rate, got = throughput(pub, sub, qos)
                print(f"throughput QoS {qos} {name:13}: {rate:10.0f} msg/s ({got} delivered)")
        for name, pub, sub in (("one node", 18831, 18831), ("across nodes", 18831, 18832)):
            n, p50, p99, mean = latency(pub, sub)
            print(f"latency QoS 1 at 1000 msg/s {name:13}: n={n} p50={p50:.0f}us "
                  f"p99={p99:.0f}us mean={mean:.0f}us")
    finally:
        for p in nodes:
            p.send_signal(signal.SIGTERM)
        for p in nodes:
            p.wait(timeout=15)


if __name__ == "__main__":
    main()
