//! Shared harness of the integration tests: an in-process node on 127.0.0.1:0, clients from an
//! MQTT library this project did not write (rumqttc, for 3.1.1 and 5.0), a raw TCP client for
//! malformed and edge-case bytes, and waiting on conditions with deadlines (never fixed sleeps).
#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beamq::Node;
use beamq_actors::Broker;
use beamq_actors::config::{Config, DurationStr};
use beamq_protocol::{BytesMut, Packet, ProtocolVersion, codec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub mod process;

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A node running in this process.
pub struct TestBroker {
    node: Option<Node>,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    /// A node with the default configuration, bound to an ephemeral loopback port.
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    /// A node with the default configuration changed by `f`.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.node.data_dir = dir.path().to_path_buf();
        if let Some(l) = config.listeners.tcp.get_mut("default") {
            l.bind = "127.0.0.1:0".parse().expect("addr");
        }
        // In-process nodes share the default node name; the admin socket is tested through
        // the binary (tests/admin.rs).
        config.admin.enable = false;
        // $SYS values every 10 s would only add noise; tests that need them set it.
        config.sys.interval = DurationStr(Some(Duration::ZERO));
        f(&mut config);
        config.validate().expect("test config is valid");
        let node = Node::start(config).await.expect("node starts");
        let addr = node.mqtt_addr().expect("listener bound");
        TestBroker {
            node: Some(node),
            addr,
            _dir: dir,
        }
    }

    /// The listener port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The broker context (counters, tables).
    pub fn broker(&self) -> &Arc<Broker> {
        self.node.as_ref().expect("running").broker()
    }

    /// The node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("running")
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }
}

/// Waits until `cond` holds, polling, failing the test after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits `fut` for at most [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT 3.1.1 client (rumqttc)
// ---------------------------------------------------------------------------------------------

pub mod v3 {
    use super::*;
    pub use rumqttc::{
        AsyncClient, ConnAck, ConnectReturnCode, Event, LastWill, MqttOptions, Packet, Publish,
        QoS, SubscribeReasonCode,
    };

    /// A rumqttc 3.1.1 client whose event loop runs in a task; incoming packets arrive on a
    /// channel. The loop stops at the first connection error (no silent reconnects).
    pub struct Client {
        pub client: AsyncClient,
        events: mpsc::UnboundedReceiver<Result<Packet, String>>,
        /// PUBLISH packets that arrived while `wait_for` looked for something else.
        backlog: std::collections::VecDeque<Packet>,
        task: JoinHandle<()>,
        pub connack: ConnAck,
    }

    /// Options for `id` against the test broker.
    pub fn options(broker: &TestBroker, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", broker.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    impl Client {
        /// Connects with default options (clean session).
        pub async fn connect(broker: &TestBroker, id: &str) -> Client {
            Self::connect_with(options(broker, id)).await
        }

        /// Connects with the given options; panics unless CONNACK is a success.
        pub async fn connect_with(options: MqttOptions) -> Client {
            let c = Self::try_connect(options).await;
            match c {
                Ok(c) => c,
                Err(e) => panic!("connect failed: {e}"),
            }
        }

        /// Connects; `Err` carries the refusal or the error.
        pub async fn try_connect(options: MqttOptions) -> Result<Client, String> {
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            let (tx, mut rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(p)) => {
                            if tx.send(Ok(p)).is_err() {
                                return;
                            }
                        }
                        Ok(Event::Outgoing(_)) => {}
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    }
                }
            });
            let first = within("CONNACK", rx.recv()).await;
            match first {
                Some(Ok(Packet::ConnAck(connack))) => Ok(Client {
                    client,
                    events: rx,
                    backlog: Default::default(),
                    task,
                    connack,
                }),
                Some(Ok(other)) => Err(format!("expected CONNACK, got {other:?}")),
                Some(Err(e)) => Err(e),
                None => Err("event loop ended".into()),
            }
        }

        /// The next incoming packet (PINGRESP skipped).
        pub async fn next(&mut self) -> Result<Packet, String> {
            if let Some(p) = self.backlog.pop_front() {
                return Ok(p);
            }
            self.receive().await
        }

        async fn receive(&mut self) -> Result<Packet, String> {
            loop {
                match within("next packet", self.events.recv()).await {
                    Some(Ok(Packet::PingResp)) => continue,
                    Some(r) => return r,
                    None => return Err("event loop ended".into()),
                }
            }
        }

        /// The next PUBLISH, skipping acknowledgements.
        pub async fn next_publish(&mut self) -> Publish {
            loop {
                match self.next().await {
                    Ok(Packet::Publish(p)) => return p,
                    Ok(_) => continue,
                    Err(e) => panic!("connection error while waiting for PUBLISH: {e}"),
                }
            }
        }

        /// The next packet matching `pred`. PUBLISH packets passed over are kept for `next`,
        /// other packets are skipped.
        pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
            if let Some(i) = self.backlog.iter().position(&pred) {
                if let Some(p) = self.backlog.remove(i) {
                    return p;
                }
            }
            loop {
                match self.receive().await {
                    Ok(p) if pred(&p) => return p,
                    Ok(p @ Packet::Publish(_)) => self.backlog.push_back(p),
                    Ok(_) => continue,
                    Err(e) => panic!("connection error while waiting for {what}: {e}"),
                }
            }
        }

        /// Subscribes and waits for the SUBACK; returns its codes.
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
            self.client
                .subscribe(filter, qos)
                .await
                .expect("queue SUBSCRIBE");
            match self
                .wait_for("SUBACK", |p| matches!(p, Packet::SubAck(_)))
                .await
            {
                Packet::SubAck(s) => s.return_codes,
                _ => unreachable!(),
            }
        }

        /// Publishes and, for QoS > 0, waits for the acknowledgement to complete.
        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.client
                .publish(topic, qos, retain, payload.to_vec())
                .await
                .expect("queue PUBLISH");
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_)))
                        .await;
                }
                QoS::ExactlyOnce => {
                    self.wait_for("PUBCOMP", |p| matches!(p, Packet::PubComp(_)))
                        .await;
                }
            }
        }

        /// Waits until the broker closes the connection (an error from the event loop).
        pub async fn closed(&mut self) -> String {
            loop {
                match within("connection close", self.events.recv()).await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return e,
                    None => return "event loop ended".into(),
                }
            }
        }

        /// Sends DISCONNECT and stops the event loop.
        pub async fn disconnect(mut self) {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(WAIT, self.closed()).await;
            self.task.abort();
        }

        /// Drops the network connection without DISCONNECT (an abnormal close).
        pub fn kill(self) {
            self.task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0 client (rumqttc::v5)
// ---------------------------------------------------------------------------------------------

pub mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectReturnCode, Disconnect, DisconnectReasonCode, Filter, LastWill, Packet,
        Publish, PublishProperties, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
    };
    pub use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    /// A rumqttc v5 client whose event loop runs in a task.
    pub struct Client {
        pub client: AsyncClient,
        events: mpsc::UnboundedReceiver<Result<Packet, String>>,
        /// PUBLISH packets that arrived while `wait_for` looked for something else.
        backlog: std::collections::VecDeque<Packet>,
        task: JoinHandle<()>,
        pub connack: ConnAck,
    }

    /// Options for `id` against the test broker.
    pub fn options(broker: &TestBroker, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", broker.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    impl Client {
        /// Connects with default options (clean start).
        pub async fn connect(broker: &TestBroker, id: &str) -> Client {
            Self::connect_with(options(broker, id)).await
        }

        /// Connects with the given options; panics unless CONNACK is a success.
        pub async fn connect_with(options: MqttOptions) -> Client {
            match Self::try_connect(options).await {
                Ok(c) => c,
                Err(e) => panic!("connect failed: {e}"),
            }
        }

        /// Connects; `Err` carries the refusal or the error.
        pub async fn try_connect(options: MqttOptions) -> Result<Client, String> {
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            let (tx, mut rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(p)) => {
                            if tx.send(Ok(p)).is_err() {
                                return;
                            }
                        }
                        Ok(Event::Outgoing(_)) => {}
                        // rumqttc reports a server DISCONNECT as an error; hand it to the test
                        // as the packet it was, so `closed()` can return its reason code.
                        Err(rumqttc::v5::ConnectionError::MqttState(
                            rumqttc::v5::StateError::ServerDisconnect {
                                reason_code,
                                reason_string,
                            },
                        )) => {
                            let properties = reason_string.map(|r| {
                                rumqttc::v5::mqttbytes::v5::DisconnectProperties {
                                    session_expiry_interval: None,
                                    reason_string: Some(r),
                                    user_properties: Vec::new(),
                                    server_reference: None,
                                }
                            });
                            let _ = tx.send(Ok(Packet::Disconnect(Disconnect {
                                reason_code,
                                properties,
                            })));
                            let _ = tx.send(Err("server disconnected".into()));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("{e:?}")));
                            return;
                        }
                    }
                }
            });
            match within("CONNACK", rx.recv()).await {
                Some(Ok(Packet::ConnAck(connack))) => Ok(Client {
                    client,
                    events: rx,
                    backlog: Default::default(),
                    task,
                    connack,
                }),
                Some(Ok(other)) => Err(format!("expected CONNACK, got {other:?}")),
                Some(Err(e)) => Err(e),
                None => Err("event loop ended".into()),
            }
        }

        /// The next incoming packet (PINGRESP skipped).
        pub async fn next(&mut self) -> Result<Packet, String> {
            if let Some(p) = self.backlog.pop_front() {
                return Ok(p);
            }
            self.receive().await
        }

        async fn receive(&mut self) -> Result<Packet, String> {
            loop {
                match within("next packet", self.events.recv()).await {
                    Some(Ok(Packet::PingResp(_))) => continue,
                    Some(r) => return r,
                    None => return Err("event loop ended".into()),
                }
            }
        }

        /// The next PUBLISH, skipping acknowledgements.
        pub async fn next_publish(&mut self) -> Publish {
            loop {
                match self.next().await {
                    Ok(Packet::Publish(p)) => return p,
                    Ok(_) => continue,
                    Err(e) => panic!("connection error while waiting for PUBLISH: {e}"),
                }
            }
        }

        /// The next packet matching `pred`. PUBLISH packets passed over are kept for `next`,
        /// other packets are skipped.
        pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
            if let Some(i) = self.backlog.iter().position(&pred) {
                if let Some(p) = self.backlog.remove(i) {
                    return p;
                }
            }
            loop {
                match self.receive().await {
                    Ok(p) if pred(&p) => return p,
                    Ok(p @ Packet::Publish(_)) => self.backlog.push_back(p),
                    Ok(_) => continue,
                    Err(e) => panic!("connection error while waiting for {what}: {e}"),
                }
            }
        }

        /// Subscribes with `filter` options and waits for the SUBACK; returns its codes.
        pub async fn subscribe_filter(
            &mut self,
            filter: Filter,
            props: Option<SubscribeProperties>,
        ) -> Vec<SubscribeReasonCode> {
            match props {
                Some(p) => self
                    .client
                    .subscribe_many_with_properties(vec![filter], p)
                    .await
                    .expect("queue SUBSCRIBE"),
                None => self
                    .client
                    .subscribe_many(vec![filter])
                    .await
                    .expect("queue SUBSCRIBE"),
            }
            match self
                .wait_for("SUBACK", |p| matches!(p, Packet::SubAck(_)))
                .await
            {
                Packet::SubAck(s) => s.return_codes,
                _ => unreachable!(),
            }
        }

        /// Subscribes to `filter` at `qos` and waits for the SUBACK.
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
            self.subscribe_filter(Filter::new(filter, qos), None).await
        }

        /// Publishes and, for QoS > 0, waits for the acknowledgement; returns the PUBACK/PUBREC
        /// packet (or None for QoS 0).
        pub async fn publish(
            &mut self,
            topic: &str,
            qos: QoS,
            retain: bool,
            payload: &[u8],
        ) -> Option<Packet> {
            self.client
                .publish(topic, qos, retain, payload.to_vec())
                .await
                .expect("queue PUBLISH");
            self.await_ack(qos).await
        }

        /// Publishes with properties, then waits as [`Client::publish`].
        pub async fn publish_with(
            &mut self,
            topic: &str,
            qos: QoS,
            retain: bool,
            payload: &[u8],
            props: PublishProperties,
        ) -> Option<Packet> {
            self.client
                .publish_with_properties(topic, qos, retain, payload.to_vec(), props)
                .await
                .expect("queue PUBLISH");
            self.await_ack(qos).await
        }

        async fn await_ack(&mut self, qos: QoS) -> Option<Packet> {
            match qos {
                QoS::AtMostOnce => None,
                QoS::AtLeastOnce => Some(
                    self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_)))
                        .await,
                ),
                QoS::ExactlyOnce => Some(
                    self.wait_for("PUBREC", |p| matches!(p, Packet::PubRec(_)))
                        .await,
                ),
            }
        }

        /// Waits until the broker closes the connection; returns the DISCONNECT it sent, if any.
        pub async fn closed(&mut self) -> Option<Disconnect> {
            let mut disconnect = None;
            loop {
                match within("connection close", self.events.recv()).await {
                    Some(Ok(Packet::Disconnect(d))) => disconnect = Some(d),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return disconnect,
                }
            }
        }

        /// Sends DISCONNECT (reason 0) and stops the event loop.
        pub async fn disconnect(mut self) {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(WAIT, self.closed()).await;
            self.task.abort();
        }

        /// Drops the network connection without DISCONNECT.
        pub fn kill(self) {
            self.task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw bytes
// ---------------------------------------------------------------------------------------------

/// A TCP client that writes hand-made bytes and reads whatever comes back.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Raw {
    /// Opens a socket to the broker.
    pub async fn connect(broker: &TestBroker) -> Raw {
        let stream = TcpStream::connect(broker.addr).await.expect("tcp connect");
        Raw {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V3_1_1,
        }
    }

    /// Writes bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let got = within("bytes", self.stream.read_buf(&mut self.buf))
                .await
                .expect("read");
            assert!(
                got > 0,
                "connection closed with {} of {n} bytes",
                self.buf.len()
            );
        }
        self.buf.split_to(n).to_vec()
    }

    /// The next packet from the broker, decoded; `None` when the connection closed.
    pub async fn recv(&mut self) -> Option<Packet> {
        loop {
            match codec::decode(&mut self.buf, self.version, u32::MAX) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("broker sent an undecodable packet: {e}"),
            }
            match within("packet", self.stream.read_buf(&mut self.buf)).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Asserts that the broker closes the connection, after possibly sending packets; returns
    /// what it sent before closing.
    pub async fn expect_close(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }

    /// A 3.1.1 CONNECT with clean session and keep alive 60 for `id`.
    pub fn connect_v311(id: &str) -> Vec<u8> {
        let mut v = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C];
        v.extend_from_slice(&(id.len() as u16).to_be_bytes());
        v.extend_from_slice(id.as_bytes());
        frame(0x10, &v)
    }

    /// A 5.0 CONNECT with clean start, keep alive 60, no properties, for `id`.
    pub fn connect_v5(id: &str) -> Vec<u8> {
        let mut v = vec![
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00,
        ];
        v.extend_from_slice(&(id.len() as u16).to_be_bytes());
        v.extend_from_slice(id.as_bytes());
        frame(0x10, &v)
    }

    /// Connects with a 3.1.1 or 5.0 CONNECT and checks the CONNACK accepts it.
    pub async fn handshake(&mut self, version: ProtocolVersion, id: &str) {
        self.version = version;
        let connect = match version {
            ProtocolVersion::V5 => Self::connect_v5(id),
            _ => Self::connect_v311(id),
        };
        self.send(&connect).await;
        match self.recv().await {
            Some(Packet::Connack(c)) => {
                assert_eq!(c.reason_code, beamq_protocol::ReasonCode::Success)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

/// A frame: first byte, remaining length (variable byte integer), body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// Hand-made packets for `Raw` (session, will and retained tests)
// ---------------------------------------------------------------------------------------------

/// Client packets built byte by byte from the spec's figures, not with the broker's codec, so
/// that a misreading of the format is not shared by both sides.
pub mod wire {
    use super::frame;

    /// A UTF-8 string or binary data field: two-byte length, then the bytes.
    pub fn string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    /// A variable byte integer.
    pub fn varint(mut n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            v.push(b);
            if n == 0 {
                return v;
            }
        }
    }

    /// A v5 property block: its length, then the properties.
    pub fn props(p: &[u8]) -> Vec<u8> {
        let mut v = varint(p.len());
        v.extend_from_slice(p);
        v
    }

    /// A four-byte integer property (0x02 Message Expiry, 0x11 Session Expiry, 0x18 Will Delay).
    pub fn prop_u32(id: u8, value: u32) -> Vec<u8> {
        let mut v = vec![id];
        v.extend_from_slice(&value.to_be_bytes());
        v
    }

    /// A string or binary property (0x03 Content Type, 0x08 Response Topic, 0x09 Correlation
    /// Data).
    pub fn prop_str(id: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![id];
        v.extend(string(value));
        v
    }

    /// A User Property (0x26).
    pub fn prop_user(key: &str, value: &str) -> Vec<u8> {
        let mut v = vec![0x26];
        v.extend(string(key.as_bytes()));
        v.extend(string(value.as_bytes()));
        v
    }

    /// A will for [`connect`]. `props` are v5 will properties without their length.
    #[derive(Debug, Clone, Default)]
    pub struct Will {
        /// Will Topic.
        pub topic: String,
        /// Will Payload.
        pub payload: Vec<u8>,
        /// Will QoS.
        pub qos: u8,
        /// Will Retain.
        pub retain: bool,
        /// v5 will properties (ignored for 3.1.1).
        pub props: Vec<u8>,
    }

    impl Will {
        /// A QoS 0, non-retained will without properties.
        pub fn new(topic: &str, payload: &[u8]) -> Will {
            Will {
                topic: topic.to_string(),
                payload: payload.to_vec(),
                ..Will::default()
            }
        }
    }

    /// A CONNECT (3.1.1 or 5.0). `props` are v5 CONNECT properties without their length.
    pub fn connect(
        v5: bool,
        id: &str,
        clean: bool,
        keep_alive: u16,
        props: &[u8],
        will: Option<&Will>,
    ) -> Vec<u8> {
        let mut flags = 0u8;
        if clean {
            flags |= 0x02;
        }
        if let Some(w) = will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        let mut v = string(b"MQTT");
        v.push(if v5 { 5 } else { 4 });
        v.push(flags);
        v.extend_from_slice(&keep_alive.to_be_bytes());
        if v5 {
            v.extend(self::props(props));
        }
        v.extend(string(id.as_bytes()));
        if let Some(w) = will {
            if v5 {
                v.extend(self::props(&w.props));
            }
            v.extend(string(w.topic.as_bytes()));
            v.extend(string(&w.payload));
        }
        frame(0x10, &v)
    }

    /// A PUBLISH (v5: with the given properties, without their length).
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        v5: bool,
        topic: &str,
        qos: u8,
        retain: bool,
        dup: bool,
        packet_id: u16,
        props: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let first = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
        let mut v = string(topic.as_bytes());
        if qos > 0 {
            v.extend_from_slice(&packet_id.to_be_bytes());
        }
        if v5 {
            v.extend(self::props(props));
        }
        v.extend_from_slice(payload);
        frame(first, &v)
    }

    /// A SUBSCRIBE of one filter with the given options byte (QoS in bits 0-1; v5 No Local,
    /// Retain As Published and Retain Handling above).
    pub fn subscribe(v5: bool, packet_id: u16, filter: &str, options: u8) -> Vec<u8> {
        let mut v = packet_id.to_be_bytes().to_vec();
        if v5 {
            v.push(0);
        }
        v.extend(string(filter.as_bytes()));
        v.push(options);
        frame(0x82, &v)
    }

    /// PUBACK with only the packet identifier (reason Success in v5).
    pub fn puback(packet_id: u16) -> Vec<u8> {
        frame(0x40, &packet_id.to_be_bytes())
    }

    /// PUBREC with only the packet identifier.
    pub fn pubrec(packet_id: u16) -> Vec<u8> {
        frame(0x50, &packet_id.to_be_bytes())
    }

    /// PUBREL with only the packet identifier.
    pub fn pubrel(packet_id: u16) -> Vec<u8> {
        frame(0x62, &packet_id.to_be_bytes())
    }

    /// PUBCOMP with only the packet identifier.
    pub fn pubcomp(packet_id: u16) -> Vec<u8> {
        frame(0x70, &packet_id.to_be_bytes())
    }

    /// A 3.1.1 DISCONNECT.
    pub fn disconnect_v311() -> Vec<u8> {
        vec![0xE0, 0x00]
    }

    /// A v5 DISCONNECT with a reason code and properties (without their length).
    pub fn disconnect_v5(reason: u8, props: &[u8]) -> Vec<u8> {
        let mut v = vec![reason];
        v.extend(self::props(props));
        frame(0xE0, &v)
    }
}

impl Raw {
    /// Opens a socket, sends `connect` (made with [`wire::connect`]) and returns the CONNACK.
    pub async fn start_session(
        broker: &TestBroker,
        v5: bool,
        connect: &[u8],
    ) -> (Raw, beamq_protocol::Connack) {
        let mut raw = Raw::connect(broker).await;
        raw.version = if v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        };
        raw.send(connect).await;
        match raw.recv().await {
            Some(Packet::Connack(c)) => (raw, c),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next packet, which must be there (the connection must not close first).
    pub async fn next_packet(&mut self) -> Packet {
        match self.recv().await {
            Some(p) => p,
            None => panic!("connection closed while waiting for a packet"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One client API over both versions
// ---------------------------------------------------------------------------------------------

/// The rumqttc 3.1.1 and 5.0 clients behind one API, for behaviours that the two versions share,
/// so that one test body runs against both.
pub mod either {
    use super::*;

    /// Protocol version of a client.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum V {
        /// MQTT 3.1.1.
        V311,
        /// MQTT 5.0.
        V5,
    }

    impl V {
        /// True for 5.0.
        pub fn is_v5(self) -> bool {
            self == V::V5
        }
    }

    /// A PUBLISH as received, whatever the version.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Msg {
        /// Topic.
        pub topic: String,
        /// Payload.
        pub payload: Vec<u8>,
        /// QoS 0, 1 or 2.
        pub qos: u8,
        /// RETAIN flag.
        pub retain: bool,
        /// DUP flag.
        pub dup: bool,
        /// Packet identifier (0 for QoS 0).
        pub pkid: u16,
    }

    /// Connection options shared by both versions.
    #[derive(Debug, Clone)]
    pub struct Opts {
        /// Clean Session (3.1.1) / Clean Start (5.0).
        pub clean: bool,
        /// v5 Session Expiry Interval (3.1.1 sessions with clean 0 get the broker's setting).
        pub session_expiry: u32,
        /// Acknowledge QoS 1/2 only with [`Client::ack`].
        pub manual_acks: bool,
        /// Will: topic, payload, QoS, retain.
        pub will: Option<(String, Vec<u8>, u8, bool)>,
    }

    impl Opts {
        /// Clean Session 1 / Clean Start 1 with no session expiry.
        pub fn clean() -> Opts {
            Opts {
                clean: true,
                session_expiry: 0,
                manual_acks: false,
                will: None,
            }
        }

        /// Clean Session 0 / Clean Start 0 with a 300 s Session Expiry Interval (v5).
        pub fn persistent() -> Opts {
            Opts {
                clean: false,
                session_expiry: 300,
                ..Opts::clean()
            }
        }

        /// With manual acknowledgements.
        pub fn manual_acks(mut self) -> Opts {
            self.manual_acks = true;
            self
        }

        /// With a will.
        pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Opts {
            self.will = Some((topic.to_string(), payload.to_vec(), qos, retain));
            self
        }
    }

    fn q3(qos: u8) -> v3::QoS {
        match qos {
            0 => v3::QoS::AtMostOnce,
            1 => v3::QoS::AtLeastOnce,
            _ => v3::QoS::ExactlyOnce,
        }
    }

    fn q5(qos: u8) -> v5::QoS {
        match qos {
            0 => v5::QoS::AtMostOnce,
            1 => v5::QoS::AtLeastOnce,
            _ => v5::QoS::ExactlyOnce,
        }
    }

    /// A connected client of either version. Not boxed: a handful live per test, and the
    /// variants are matched on directly.
    #[allow(clippy::large_enum_variant)]
    pub enum Client {
        /// 3.1.1.
        V3(v3::Client),
        /// 5.0.
        V5(v5::Client),
    }

    impl Client {
        /// Connects; panics unless accepted.
        pub async fn connect(broker: &TestBroker, v: V, id: &str, opts: &Opts) -> Client {
            match Self::try_connect(broker, v, id, opts).await {
                Ok(c) => c,
                Err(e) => panic!("connect failed: {e}"),
            }
        }

        /// Connects with a clean session.
        pub async fn clean(broker: &TestBroker, v: V, id: &str) -> Client {
            Self::connect(broker, v, id, &Opts::clean()).await
        }

        /// Connects; `Err` carries the refusal or the error.
        pub async fn try_connect(
            broker: &TestBroker,
            v: V,
            id: &str,
            opts: &Opts,
        ) -> Result<Client, String> {
            match v {
                V::V311 => {
                    let mut o = v3::options(broker, id);
                    o.set_clean_session(opts.clean);
                    o.set_manual_acks(opts.manual_acks);
                    if let Some((t, p, q, r)) = &opts.will {
                        o.set_last_will(v3::LastWill::new(t, p.clone(), q3(*q), *r));
                    }
                    v3::Client::try_connect(o).await.map(Client::V3)
                }
                V::V5 => {
                    let mut o = v5::options(broker, id);
                    o.set_clean_start(opts.clean);
                    if opts.session_expiry > 0 {
                        o.set_session_expiry_interval(Some(opts.session_expiry));
                    }
                    o.set_manual_acks(opts.manual_acks);
                    if let Some((t, p, q, r)) = &opts.will {
                        o.set_last_will(v5::LastWill::new(t, p.clone(), q5(*q), *r, None));
                    }
                    v5::Client::try_connect(o).await.map(Client::V5)
                }
            }
        }

        /// Session Present in the CONNACK.
        pub fn session_present(&self) -> bool {
            match self {
                Client::V3(c) => c.connack.session_present,
                Client::V5(c) => c.connack.session_present,
            }
        }

        /// Subscribes at `qos` and returns the granted QoS (`None` when refused).
        pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Option<u8> {
            match self {
                Client::V3(c) => match c.subscribe(filter, q3(qos)).await.first() {
                    Some(v3::SubscribeReasonCode::Success(q)) => Some(*q as u8),
                    _ => None,
                },
                Client::V5(c) => match c.subscribe(filter, q5(qos)).await.first() {
                    Some(v5::SubscribeReasonCode::Success(q)) => Some(*q as u8),
                    _ => None,
                },
            }
        }

        /// Publishes and waits for the acknowledgement (PUBACK, PUBCOMP for 3.1.1 / PUBREC for
        /// 5.0).
        pub async fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
            match self {
                Client::V3(c) => c.publish(topic, q3(qos), retain, payload).await,
                Client::V5(c) => {
                    c.publish(topic, q5(qos), retain, payload).await;
                }
            }
        }

        /// The next PUBLISH received.
        pub async fn next_msg(&mut self) -> Msg {
            match self {
                Client::V3(c) => {
                    let p = c.next_publish().await;
                    Msg {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        qos: p.qos as u8,
                        retain: p.retain,
                        dup: p.dup,
                        pkid: p.pkid,
                    }
                }
                Client::V5(c) => {
                    let p = c.next_publish().await;
                    Msg {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        qos: p.qos as u8,
                        retain: p.retain,
                        dup: p.dup,
                        pkid: p.pkid,
                    }
                }
            }
        }

        /// Acknowledges a message received with manual acknowledgements.
        pub async fn ack(&self, m: &Msg) {
            match self {
                Client::V3(c) => {
                    let mut p = v3::Publish::new(&m.topic, q3(m.qos), m.payload.clone());
                    p.pkid = m.pkid;
                    c.client.ack(&p).await.expect("queue ack");
                }
                Client::V5(c) => {
                    let mut p = v5::Publish::new(&m.topic, q5(m.qos), m.payload.clone(), None);
                    p.pkid = m.pkid;
                    c.client.ack(&p).await.expect("queue ack");
                }
            }
        }

        /// Waits until the broker closes the connection; returns the v5 DISCONNECT reason
        /// code, if one came.
        pub async fn closed(&mut self) -> Option<u8> {
            match self {
                Client::V3(c) => {
                    c.closed().await;
                    None
                }
                Client::V5(c) => {
                    let mut reason = None;
                    loop {
                        match c.next().await {
                            Ok(v5::Packet::Disconnect(d)) => reason = Some(d.reason_code as u8),
                            Ok(_) => continue,
                            Err(e) => return reason.or_else(|| v5_disconnect_reason(&e)),
                        }
                    }
                }
            }
        }

        /// Sends DISCONNECT (normal) and waits for the close.
        pub async fn disconnect(self) {
            match self {
                Client::V3(c) => c.disconnect().await,
                Client::V5(c) => c.disconnect().await,
            }
        }

        /// Drops the connection without DISCONNECT.
        pub fn kill(self) {
            match self {
                Client::V3(c) => c.kill(),
                Client::V5(c) => c.kill(),
            }
        }
    }
}

/// The reason code of a server DISCONNECT as rumqttc v5 reports it: not as an incoming packet
/// but as the error that ends its event loop (`MqttState(ServerDisconnect { reason_code: .. })`),
/// which is why [`v5::Client::closed`] does not see it. `err` is that error as the harness
/// formats it.
///
/// rumqttc 0.25 also loses a DISCONNECT whose Remaining Length is 1 (reason code, no property
/// length: valid per 5.0 §3.14.2.2.1, and what beamq and Mosquitto send) and reports
/// `ConnectionAborted`: check such reason codes with [`Raw`].
pub fn v5_disconnect_reason(err: &str) -> Option<u8> {
    let rest = &err[err.find("ServerDisconnect { reason_code: ")? + 32..];
    let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
    (0..=u8::MAX).find(|&b| {
        v5::DisconnectReasonCode::try_from(b).is_ok_and(|code| format!("{code:?}") == name)
    })
}
