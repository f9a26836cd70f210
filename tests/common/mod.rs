//! Shared harness of the integration tests: an in-process node on 127.0.0.1:0, clients from an
//! MQTT library this project did not write (rumqttc, for 3.1.1 and 5.0), a raw TCP client for
//! malformed and edge-case bytes, and waiting on conditions with deadlines (never fixed sleeps).
#![allow(dead_code)]

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

        /// The next packet matching `pred`, skipping others.
        pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
            loop {
                match self.next().await {
                    Ok(p) if pred(&p) => return p,
                    Ok(_) => continue,
                    Err(e) => panic!("connection error while waiting for {what}: {e}"),
                }
            }
        }

        /// Subscribes and waits for the SUBACK; returns its codes.
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
            self.client.subscribe(filter, qos).await.expect("queue SUBSCRIBE");
            match self.wait_for("SUBACK", |p| matches!(p, Packet::SubAck(_))).await {
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
                    self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
                }
                QoS::ExactlyOnce => {
                    self.wait_for("PUBCOMP", |p| matches!(p, Packet::PubComp(_))).await;
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

        /// The next packet matching `pred`, skipping others.
        pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
            loop {
                match self.next().await {
                    Ok(p) if pred(&p) => return p,
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
            match self.wait_for("SUBACK", |p| matches!(p, Packet::SubAck(_))).await {
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
            assert!(got > 0, "connection closed with {} of {n} bytes", self.buf.len());
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
        let mut v = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00];
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
