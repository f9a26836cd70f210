//! Helpers of the hostile-input, limits and isolation tests (tests/malformed.rs, limits.rs,
//! isolation.rs): builders of raw packets, with every field under the test's control, and the
//! "witnesses", well-behaved clients of both versions that must keep working while another
//! client misbehaves, is refused or crashes.
#![allow(dead_code)]

use beamq_protocol::{Packet, ProtocolVersion, ReasonCode};

use crate::common::*;

/// A Variable Byte Integer.
pub fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A two-byte length followed by the bytes (UTF-8 string or binary data).
pub fn s(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// `props` (property bytes without their length) as a v5 property block; nothing before v5.
fn properties(version: ProtocolVersion, props: &[u8]) -> Vec<u8> {
    if version.is_v5() {
        let mut out = varint(props.len());
        out.extend_from_slice(props);
        out
    } else {
        assert!(props.is_empty(), "properties exist only in v5");
        Vec::new()
    }
}

/// A CONNECT with protocol `name` and `level`, connect `flags`, keep alive, v5 properties (for
/// level 5) and the payload as given (client id and the rest, built with [`s`]).
pub fn connect_named(
    name: &[u8],
    level: u8,
    flags: u8,
    keep_alive: u16,
    props: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = s(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.extend_from_slice(&varint(props.len()));
        body.extend_from_slice(props);
    }
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

/// A CONNECT named "MQTT" for 3.1.1 or 5.0.
pub fn connect(
    version: ProtocolVersion,
    flags: u8,
    keep_alive: u16,
    props: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    connect_named(b"MQTT", version.level(), flags, keep_alive, props, payload)
}

/// A clean-start CONNECT for `id` with the given keep alive and no properties.
pub fn connect_simple(version: ProtocolVersion, id: &str, keep_alive: u16) -> Vec<u8> {
    connect(version, 0x02, keep_alive, &[], &s(id.as_bytes()))
}

/// A PUBLISH. `qos` may be 3 (invalid) and `packet_id` is written whenever given.
pub fn publish(
    version: ProtocolVersion,
    qos: u8,
    retain: bool,
    topic: &[u8],
    packet_id: Option<u16>,
    props: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = s(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(&properties(version, props));
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// A SUBSCRIBE with the given packet id and (filter, options byte) pairs.
pub fn subscribe(
    version: ProtocolVersion,
    packet_id: u16,
    props: &[u8],
    filters: &[(&[u8], u8)],
) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(&properties(version, props));
    for (filter, options) in filters {
        body.extend_from_slice(&s(filter));
        body.push(*options);
    }
    frame(0x82, &body)
}

/// An UNSUBSCRIBE.
pub fn unsubscribe(version: ProtocolVersion, packet_id: u16, filters: &[&[u8]]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(&properties(version, &[]));
    for filter in filters {
        body.extend_from_slice(&s(filter));
    }
    frame(0xA2, &body)
}

/// PUBACK (first byte 0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP (0x70) with success.
pub fn ack(first: u8, packet_id: u16) -> Vec<u8> {
    frame(first, &packet_id.to_be_bytes())
}

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// The reason code of the DISCONNECT in `got`, which must be the only packet.
pub fn only_disconnect(got: &[Packet]) -> ReasonCode {
    match got {
        [Packet::Disconnect(d)] => d.reason_code,
        other => panic!("expected exactly one DISCONNECT before the close, got {other:?}"),
    }
}

/// After a violation: a v5 client gets exactly one DISCONNECT with `reason` and the connection
/// closes [MQTT-4.13.1-1 in 5.0]; a 3.1.1 client's connection is closed with nothing sent
/// [MQTT-4.8.0-1 in 3.1.1].
pub async fn expect_dropped(raw: &mut Raw, reason: ReasonCode) {
    let got = raw.expect_close().await;
    if raw.version.is_v5() {
        assert_eq!(only_disconnect(&got), reason, "DISCONNECT reason code");
    } else {
        assert!(
            got.is_empty(),
            "3.1.1 gets nothing before the close, got {got:?}"
        );
    }
}

/// Opens a connection with a valid CONNECT of `version` and checks the CONNACK.
pub async fn session(broker: &TestBroker, version: ProtocolVersion, id: &str) -> Raw {
    let mut raw = Raw::connect(broker).await;
    raw.handshake(version, id).await;
    raw
}

/// Connects, sends `bytes` after a valid CONNECT, and expects the violation handling of
/// [`expect_dropped`].
pub async fn send_bad(
    broker: &TestBroker,
    version: ProtocolVersion,
    id: &str,
    bytes: &[u8],
    reason: ReasonCode,
) {
    let mut raw = session(broker, version, id).await;
    raw.send(bytes).await;
    expect_dropped(&mut raw, reason).await;
}

/// The error counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errors {
    /// `malformed_packets`.
    pub malformed: u64,
    /// `protocol_errors`.
    pub protocol: u64,
}

/// Current error counters.
pub fn errors(broker: &TestBroker) -> Errors {
    let m = &broker.broker().metrics;
    Errors {
        malformed: m.malformed_packets.get(),
        protocol: m.protocol_errors.get(),
    }
}

/// Waits until the error counters went up by exactly (`malformed`, `protocol`) from `before`.
pub async fn expect_errors(broker: &TestBroker, before: Errors, malformed: u64, protocol: u64) {
    let want = Errors {
        malformed: before.malformed + malformed,
        protocol: before.protocol + protocol,
    };
    eventually(&format!("error counters reach {want:?}"), || {
        errors(broker) == want
    })
    .await;
    // Nothing else was counted (a double count would show up here too).
    assert_eq!(errors(broker), want);
}

/// Well-behaved clients of both versions, connected next to a misbehaving one: two subscribers
/// and two publishers. [`Witness::check`] proves they all still work.
pub struct Witness {
    sub3: v3::Client,
    sub5: v5::Client,
    pub3: v3::Client,
    pub5: v5::Client,
    round: u32,
}

impl Witness {
    /// Subscriptions the witnesses hold (`w-sub3` and `w-sub5` on `witness/#`).
    pub const SUBSCRIPTIONS: usize = 2;
    /// Sessions the witnesses hold.
    pub const SESSIONS: u64 = 4;

    /// Connects the four witnesses and subscribes the two subscribers.
    pub async fn start(broker: &TestBroker) -> Witness {
        let mut sub3 = v3::Client::connect(broker, "w-sub3").await;
        sub3.subscribe("witness/#", v3::QoS::AtLeastOnce).await;
        let mut sub5 = v5::Client::connect(broker, "w-sub5").await;
        sub5.subscribe("witness/#", v5::QoS::AtLeastOnce).await;
        let pub3 = v3::Client::connect(broker, "w-pub3").await;
        let pub5 = v5::Client::connect(broker, "w-pub5").await;
        let mut w = Witness {
            sub3,
            sub5,
            pub3,
            pub5,
            round: 0,
        };
        w.check().await;
        w
    }

    /// Both publishers publish at QoS 1 and both subscribers receive both messages.
    pub async fn check(&mut self) {
        self.round += 1;
        let t3 = format!("witness/3/{}", self.round);
        let t5 = format!("witness/5/{}", self.round);
        self.pub3
            .publish(&t3, v3::QoS::AtLeastOnce, false, b"w3")
            .await;
        self.pub5
            .publish(&t5, v5::QoS::AtLeastOnce, false, b"w5")
            .await;
        let mut want = vec![t3.clone(), t5.clone()];
        want.sort();
        let mut got3 = vec![
            self.sub3.next_publish().await.topic,
            self.sub3.next_publish().await.topic,
        ];
        got3.sort();
        assert_eq!(got3, want, "3.1.1 witness receives both");
        let mut got5 = Vec::new();
        for _ in 0..2 {
            let p = self.sub5.next_publish().await;
            got5.push(String::from_utf8_lossy(&p.topic).into_owned());
        }
        got5.sort();
        assert_eq!(got5, want, "5.0 witness receives both");
    }
}
