#!/usr/bin/env python3
"""Interoperability smoke test with the Eclipse Paho Python client (paho-mqtt 2.x).

Against a running broker (default 127.0.0.1:1883), for MQTT 3.1, 3.1.1 and 5.0: connect,
subscribe, publish at QoS 0/1/2 and receive, a retained message, a will on an abnormal close.
Exits non-zero on the first failure. scripts/interop.sh installs what it needs and runs it
against a fresh broker together with the mosquitto command-line clients.
"""

import socket
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

HOST = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 1883
TIMEOUT = 10

VERSIONS = {
    "3.1": mqtt.MQTTv31,
    "3.1.1": mqtt.MQTTv311,
    "5.0": mqtt.MQTTv5,
}


class Collector:
    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    def on_message(self, _client, _userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait(self, n):
        deadline = time.time() + TIMEOUT
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"expected {n} messages, got {len(self.messages)}")
                self.cond.wait(left)
            return list(self.messages)

    def wait_for(self, what, pred):
        deadline = time.time() + TIMEOUT
        with self.cond:
            while not any(pred(m) for m in self.messages):
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self.cond.wait(left)


def client(version, cid, **kw):
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=cid,
        protocol=VERSIONS[version],
        **kw,
    )
    return c


def connect(c):
    done = threading.Event()
    result = {}

    def on_connect(_c, _u, _flags, reason_code, _props=None):
        result["rc"] = reason_code
        done.set()

    c.on_connect = on_connect
    c.connect(HOST, PORT, keepalive=30)
    c.loop_start()
    if not done.wait(TIMEOUT):
        raise AssertionError("no CONNACK")
    if result["rc"].is_failure:
        raise AssertionError(f"connect refused: {result['rc']}")


def subscribe(c, topic, qos):
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic, qos)
    if not done.wait(TIMEOUT):
        raise AssertionError("no SUBACK")


def run(version):
    tag = uuid.uuid4().hex[:8]
    base = f"interop/{tag}/{version}"
    sub = client(version, f"sub-{tag}")
    coll = Collector()
    sub.on_message = coll.on_message
    connect(sub)
    subscribe(sub, f"{base}/#", 2)

    pub = client(version, f"pub-{tag}")
    connect(pub)
    for qos in (0, 1, 2):
        pub.publish(f"{base}/q{qos}", f"qos{qos}".encode(), qos=qos).wait_for_publish(TIMEOUT)
    got = coll.wait(3)
    payloads = sorted(m.payload.decode() for m in got)
    assert payloads == ["qos0", "qos1", "qos2"], payloads

    # Retained: a later subscriber gets it with the retain flag.
    pub.publish(f"{base}/retained", b"kept", qos=1, retain=True).wait_for_publish(TIMEOUT)
    late = client(version, f"late-{tag}")
    late_coll = Collector()
    late.on_message = late_coll.on_message
    connect(late)
    subscribe(late, f"{base}/retained", 1)
    m = late_coll.wait(1)[0]
    assert m.payload == b"kept" and m.retain, (m.payload, m.retain)
    pub.publish(f"{base}/retained", b"", qos=1, retain=True).wait_for_publish(TIMEOUT)

    # Will: published when the connection drops without DISCONNECT.
    will = client(version, f"will-{tag}")
    will.will_set(f"{base}/will", b"gone", qos=1)
    connect(will)
    will.loop_stop()
    will.socket().shutdown(socket.SHUT_RDWR)
    coll.wait_for("the will", lambda m: m.topic == f"{base}/will" and m.payload == b"gone")

    for c in (sub, pub, late):
        c.disconnect()
        c.loop_stop()
    print(f"paho-mqtt {version}: ok")


def main():
    for version in VERSIONS:
        run(version)


if __name__ == "__main__":
    main()
