//! The typed configuration tree (DESIGN §7).
//!
//! Every key has a default here and in `config/beamq.toml` (the embedded default file); the
//! binary layers a file, environment variables and flags on top with the `config` crate and
//! deserializes into [`Config`]. Unknown keys are refused (`deny_unknown_fields`), and
//! [`Config::validate`] checks ranges once at start, naming the key in its error.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use beamq_protocol::QoS;
use beamq_protocol::session::{DropPolicy, Limits};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// Logging.
    pub log: LogConfig,
    /// Listeners by transport, then by name (`listeners.tcp.default`).
    pub listeners: ListenersConfig,
    /// MQTT protocol limits and session behaviour.
    pub mqtt: MqttConfig,
    /// Retained messages.
    pub retainer: RetainerConfig,
    /// `$SYS` topics.
    pub sys: SysConfig,
    /// Internal sizing of the actor system.
    pub broker: BrokerConfig,
    /// Linking nodes into one broker.
    pub cluster: ClusterConfig,
    /// The admin endpoint (`beamq ctl`).
    pub admin: AdminConfig,
    /// Test-only switches; never enable in production.
    pub debug: DebugConfig,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node name, `name@host`.
    pub name: String,
    /// Directory for the node's files (created if missing).
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "beamq@127.0.0.1".into(),
            data_dir: PathBuf::from("data"),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `beamq_actors=debug,info`, ... `RUST_LOG` wins.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[listeners]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersConfig {
    /// Plain TCP listeners by name.
    pub tcp: BTreeMap<String, TcpListenerConfig>,
}

impl Default for ListenersConfig {
    fn default() -> Self {
        let mut tcp = BTreeMap::new();
        tcp.insert("default".to_string(), TcpListenerConfig::default());
        ListenersConfig { tcp }
    }
}

/// `[listeners.tcp.NAME]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpListenerConfig {
    /// Whether the listener is started.
    pub enable: bool,
    /// Address and port to bind.
    pub bind: SocketAddr,
    /// Connections this listener accepts at once; more are closed at accept.
    pub max_connections: usize,
    /// Socket accept backlog.
    pub backlog: u32,
}

impl Default for TcpListenerConfig {
    fn default() -> Self {
        TcpListenerConfig {
            enable: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_connections: 1_000_000,
            backlog: 1024,
        }
    }
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Largest packet accepted from a client (and advertised to v5 clients).
    pub max_packet_size: ByteSize,
    /// Longest client identifier accepted.
    pub max_clientid_len: usize,
    /// Maximum levels in a topic name or filter (1 ..= 1024).
    pub max_topic_levels: usize,
    /// Highest QoS supported (0, 1 or 2).
    pub max_qos_allowed: u8,
    /// Topic aliases a v5 client may use towards the broker (0 disables them).
    pub max_topic_alias: u16,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are allowed.
    pub wildcard_subscription: bool,
    /// Whether shared subscriptions are supported.
    pub shared_subscription: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers: bool,
    /// How a shared subscription group picks a member.
    pub shared_subscription_strategy: ShareStrategy,
    /// Unacknowledged QoS 1/2 messages a v5 client may send the broker (Receive Maximum).
    pub receive_maximum: u16,
    /// Cap on QoS 1/2 messages in flight from the broker to one client.
    pub max_inflight: u16,
    /// Messages a session may queue; 0 = unlimited.
    pub max_queued_messages: usize,
    /// Whether QoS 0 messages are queued for offline or busy clients.
    pub queue_qos0: bool,
    /// What to drop when a queue is full.
    pub drop_policy: DropPolicyConfig,
    /// Session expiry given to 3.1/3.1.1 clients that connect with Clean Session 0.
    pub session_expiry_interval: DurationStr,
    /// Cap on the Session Expiry Interval a v5 client may ask for ("0s" = no sessions survive a
    /// disconnect; "never" = no cap).
    pub max_session_expiry_interval: DurationStr,
    /// Cap on Keep Alive; "0s" = no cap. Above it a v5 client gets Server Keep Alive and an older
    /// client is refused.
    pub max_keepalive: DurationStr,
    /// Time a new socket has to send CONNECT.
    pub connect_timeout: DurationStr,
    /// Most client connections this node holds at once.
    pub max_clients: usize,
    /// Most sessions this node holds at once, connected or waiting for their client. A new
    /// client id beyond it is refused (Quota exceeded); resuming a session is not.
    pub max_sessions: usize,
    /// Response Information for v5 clients that request it ("" = none); `{clientid}` is
    /// replaced by the client identifier.
    pub response_information: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size: ByteSize(1024 * 1024),
            max_clientid_len: 65535,
            max_topic_levels: 128,
            max_qos_allowed: 2,
            max_topic_alias: 65535,
            retain_available: true,
            wildcard_subscription: true,
            shared_subscription: true,
            subscription_identifiers: true,
            shared_subscription_strategy: ShareStrategy::RoundRobin,
            receive_maximum: 32,
            max_inflight: 32,
            max_queued_messages: 1000,
            queue_qos0: true,
            drop_policy: DropPolicyConfig::DropOldest,
            session_expiry_interval: DurationStr(Some(Duration::from_secs(2 * 3600))),
            max_session_expiry_interval: DurationStr(None),
            max_keepalive: DurationStr(Some(Duration::ZERO)),
            connect_timeout: DurationStr(Some(Duration::from_secs(15))),
            max_clients: 1_000_000,
            max_sessions: 1_000_000,
            response_information: String::new(),
        }
    }
}

/// Shared subscription strategies (EMQX's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShareStrategy {
    /// Members take turns.
    #[default]
    RoundRobin,
    /// A random member each time.
    Random,
    /// The same member until it goes away.
    Sticky,
    /// A member chosen by a hash of the publisher's client identifier.
    HashClientid,
    /// A member chosen by a hash of the topic.
    HashTopic,
}

/// Queue drop policy as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicyConfig {
    /// Drop the oldest message.
    DropOldest,
    /// Drop the new message.
    DropNewest,
}

/// `[retainer]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetainerConfig {
    /// Most retained messages kept (0 = unlimited); beyond it new topics are not retained and
    /// the refusal is counted.
    pub max_retained_messages: usize,
    /// Largest payload kept as a retained message.
    pub max_payload_size: ByteSize,
    /// How often expired retained messages are swept.
    pub expiry_check_interval: DurationStr,
}

impl Default for RetainerConfig {
    fn default() -> Self {
        RetainerConfig {
            max_retained_messages: 0,
            max_payload_size: ByteSize(1024 * 1024),
            expiry_check_interval: DurationStr(Some(Duration::from_secs(10))),
        }
    }
}

/// `[sys]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// How often `$SYS/brokers/...` topics are published ("0s" disables them).
    pub interval: DurationStr,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            interval: DurationStr(Some(Duration::from_secs(10))),
        }
    }
}

/// `[broker]`: sizing of the actor system.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Router actors; filters are spread over them by hash.
    pub routers: usize,
    /// Deliveries that may wait in one client's mailbox before new ones are dropped (counted as
    /// `mailbox_full`). Bounds memory when a client actor cannot keep up.
    pub max_mailbox: usize,
    /// Bytes that may wait to be written to one client's socket before deliveries queue in the
    /// session instead.
    pub write_buffer_high_watermark: ByteSize,
    /// Time allowed to a client that is being closed to take its last bytes.
    pub close_flush_timeout: DurationStr,
    /// A client that accepts no bytes for this long while the broker has some for it is
    /// disconnected (as EMQX's `send_timeout`): it is gone, or not reading.
    pub send_timeout: DurationStr,
    /// Time allowed at shutdown for clients to receive DISCONNECT and close.
    pub shutdown_timeout: DurationStr,
    /// Runtime worker threads; 0 = one per CPU core. One thread avoids cross-thread wake-ups
    /// (lower latency at low rates) at the cost of using one core (docs/BENCHMARKS.md).
    pub worker_threads: usize,
    /// Serve packets that arrive together on different connections strictly in arrival order
    /// (tokio's LIFO slot off). Off by default: the slot runs a task woken by the running one
    /// next on the same thread, which halves latency and CPU at low rates; the price is that of
    /// two packets from two connections read in one wake-up, the later may be handled first
    /// (MQTT orders per connection only). See README "Arrival order".
    pub arrival_order: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            routers: 4,
            max_mailbox: 10_000,
            write_buffer_high_watermark: ByteSize(256 * 1024),
            close_flush_timeout: DurationStr(Some(Duration::from_secs(5))),
            send_timeout: DurationStr(Some(Duration::from_secs(15))),
            shutdown_timeout: DurationStr(Some(Duration::from_secs(10))),
            worker_threads: 0,
            arrival_order: false,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin socket (its path follows from the node name; requests need the cookie).
    pub enable: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { enable: true }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Whether this node opens its cluster port and links with others. Also turned on by the
    /// `--node`, `--cookie` and `--seeds` flags.
    pub enable: bool,
    /// Shared secret; nodes with different cookies refuse each other.
    pub cookie: String,
    /// Port of the cluster link listener; 0 derives it from the node name as EMQX does:
    /// 4370 plus the numeric suffix of the name (`b1@host` -> 4371, `beamq@host` -> 4370).
    pub port: u16,
    /// Address the cluster listener binds; empty means the host part of the node name.
    pub bind: String,
    /// How members are found: `manual` (only `beamq ctl cluster join`), `static` (`seeds`) or
    /// `dns` (`dns.name`).
    pub discovery: DiscoveryStrategy,
    /// Node names to link with (static discovery), e.g. `["b2@127.0.0.1"]`.
    pub seeds: Vec<String>,
    /// DNS discovery.
    pub dns: DnsDiscoveryConfig,
    /// How often a node tells each peer it is alive.
    pub heartbeat_interval: DurationStr,
    /// A peer not heard from for this long is declared down and its link closed.
    pub failure_timeout: DurationStr,
    /// A link that has not authenticated within this time is closed.
    pub handshake_timeout: DurationStr,
    /// Longest wait between two attempts to reach a known member that is down.
    pub reconnect_max_backoff: DurationStr,
    /// Messages forwarded to one peer and not yet acknowledged by it; beyond this, forwards to
    /// that peer are dropped and counted (`cluster_dropped`), so a slow peer cannot grow this
    /// node's memory without limit.
    pub send_window: usize,
    /// TLS on cluster links.
    pub tls: ClusterTlsConfig,
}

/// `[cluster.tls]`: mutual TLS between nodes. Each node presents `cert_file` and accepts only
/// peers whose certificate is signed by `ca_file`; a node's certificate must be valid for the
/// host part of its node name (an IP address SAN for `b1@10.0.0.7`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTlsConfig {
    /// Encrypt and authenticate cluster links.
    pub enable: bool,
    /// This node's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA that signs every node's certificate (PEM).
    pub ca_file: PathBuf,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enable: false,
            cookie: "beamqsecretcookie".into(),
            port: 0,
            bind: String::new(),
            discovery: DiscoveryStrategy::Static,
            seeds: Vec::new(),
            dns: DnsDiscoveryConfig::default(),
            heartbeat_interval: DurationStr(Some(Duration::from_secs(1))),
            failure_timeout: DurationStr(Some(Duration::from_secs(5))),
            handshake_timeout: DurationStr(Some(Duration::from_secs(5))),
            reconnect_max_backoff: DurationStr(Some(Duration::from_secs(5))),
            send_window: 100_000,
            tls: ClusterTlsConfig::default(),
        }
    }
}

/// How cluster members are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryStrategy {
    /// Only by explicit joins.
    Manual,
    /// From `cluster.seeds`.
    Static,
    /// From the DNS records of `cluster.dns.name` (`cluster.dns.record_type`).
    Dns,
}

/// Which records DNS discovery reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DnsRecordType {
    /// A and AAAA records: each address is a member `{app}@{address}`.
    #[default]
    A,
    /// SRV records: each target host is a member `{app}@{target}` (a Kubernetes headless
    /// service gives one stable name per pod this way).
    Srv,
}

/// `[cluster.dns]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsDiscoveryConfig {
    /// Name whose records are the members' hosts (a Kubernetes headless service).
    pub name: String,
    /// Node name part of every member: a record `10.0.0.7` means `{app}@10.0.0.7`.
    pub app: String,
    /// `a` (A and AAAA records, the default) or `srv`.
    pub record_type: DnsRecordType,
    /// DNS server to ask, `ip` or `ip:port`; empty: the system's (`/etc/resolv.conf`, and
    /// for `a` records the hosts file too).
    pub server: String,
    /// How often the name is resolved again.
    pub interval: DurationStr,
}

impl DnsDiscoveryConfig {
    /// `server` as a socket address (port 53 when none is given); `None` for the system's.
    pub fn server_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let s = self.server.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if let Ok(a) = s.parse::<std::net::SocketAddr>() {
            return Ok(Some(a));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Some(std::net::SocketAddr::new(ip, 53)))
            .map_err(|_| "expected an IP address, optionally with a port (\"10.0.0.10:53\")".into())
    }
}

impl Default for DnsDiscoveryConfig {
    fn default() -> Self {
        DnsDiscoveryConfig {
            name: String::new(),
            app: "beamq".into(),
            record_type: DnsRecordType::A,
            server: String::new(),
            interval: DurationStr(Some(Duration::from_secs(10))),
        }
    }
}

/// A node name, `name@host`, split and checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeName {
    /// The part before `@`.
    pub name: String,
    /// The part after `@`: a host name or an address.
    pub host: String,
}

impl NodeName {
    /// Parses `name@host`: both parts non-empty, the name of letters, digits, `_`, `-` and `.`.
    pub fn parse(s: &str) -> Result<NodeName, String> {
        let (name, host) = s
            .split_once('@')
            .ok_or_else(|| format!("expected NAME@HOST, got \"{s}\""))?;
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok || host.is_empty() || host.contains('@') || host.contains(char::is_whitespace) {
            return Err(format!(
                "expected NAME@HOST (NAME of letters, digits, _ - .), got \"{s}\""
            ));
        }
        Ok(NodeName {
            name: name.to_string(),
            host: host.to_string(),
        })
    }

    /// The cluster port that follows from the name: 4370 plus its numeric suffix, as EMQX
    /// derives its distribution port (`emqx1` -> 4371, `emqx` -> 4370).
    pub fn derived_port(&self) -> u16 {
        let digits = self.name.len()
            - self
                .name
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .count();
        let suffix: u32 = self.name[digits..].parse().unwrap_or(0);
        u16::try_from(4370 + suffix.min(60_000)).unwrap_or(u16::MAX)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.host)
    }
}

impl ClusterConfig {
    /// The port this node's cluster listener uses, given its name.
    pub fn port_for(&self, node: &NodeName) -> u16 {
        if self.port == 0 {
            node.derived_port()
        } else {
            self.port
        }
    }
}

/// `[debug]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Enables the fault-injection topics used by the isolation tests: a PUBLISH to
    /// `$beamq/fault/client` panics the publishing client's actor, one to
    /// `$beamq/fault/router` panics a router. Off by default; never enable in production.
    pub fault_injection: bool,
}

/// A configuration error, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {problem}")]
pub struct ConfigError {
    /// Dotted key, e.g. `mqtt.receive_maximum`.
    pub key: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

impl Config {
    /// Checks ranges and relations that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.mqtt;
        let size = m.max_packet_size.0;
        if !(64..=268_435_460).contains(&size) {
            return Err(bad(
                "mqtt.max_packet_size",
                "expected a size between 64B and 256MB",
            ));
        }
        if m.max_qos_allowed > 2 {
            return Err(bad("mqtt.max_qos_allowed", "expected 0, 1 or 2"));
        }
        if m.receive_maximum == 0 {
            return Err(bad("mqtt.receive_maximum", "expected 1 ..= 65535"));
        }
        if m.max_inflight == 0 {
            return Err(bad("mqtt.max_inflight", "expected 1 ..= 65535"));
        }
        if m.max_clientid_len < 23 {
            // Both 3.1.1 and 5.0 [MQTT-3.1.3-5]: a server MUST accept identifiers of 1 to 23
            // characters.
            return Err(bad("mqtt.max_clientid_len", "expected at least 23"));
        }
        if m.max_keepalive.0.is_none_or(|d| d.as_secs() > 65535) {
            return Err(bad(
                "mqtt.max_keepalive",
                "expected a duration up to 65535s (\"0s\" for no cap)",
            ));
        }
        if m.connect_timeout.0.is_none_or(|d| d.is_zero()) {
            return Err(bad(
                "mqtt.connect_timeout",
                "expected a non-zero duration such as \"15s\"",
            ));
        }
        if m.max_clients == 0 {
            return Err(bad("mqtt.max_clients", "expected at least 1"));
        }
        if m.max_sessions == 0 {
            return Err(bad("mqtt.max_sessions", "expected at least 1"));
        }
        if !(1..=1024).contains(&m.max_topic_levels) {
            // The tables walk topics level by level; a bound keeps that walk's depth sane.
            return Err(bad("mqtt.max_topic_levels", "expected 1 ..= 1024"));
        }
        NodeName::parse(&self.node.name).map_err(|e| bad("node.name", e))?;
        let c = &self.cluster;
        if c.cookie.is_empty() {
            return Err(bad("cluster.cookie", "expected a non-empty secret"));
        }
        for (i, seed) in c.seeds.iter().enumerate() {
            NodeName::parse(seed).map_err(|e| bad(&format!("cluster.seeds[{i}]"), e))?;
        }
        if c.discovery == DiscoveryStrategy::Dns && c.dns.name.is_empty() {
            return Err(bad(
                "cluster.dns.name",
                "expected a DNS name when cluster.discovery = \"dns\"",
            ));
        }
        c.dns
            .server_addr()
            .map_err(|e| bad("cluster.dns.server", e))?;
        for (key, d) in [
            ("cluster.heartbeat_interval", c.heartbeat_interval),
            ("cluster.failure_timeout", c.failure_timeout),
            ("cluster.handshake_timeout", c.handshake_timeout),
            ("cluster.reconnect_max_backoff", c.reconnect_max_backoff),
            ("cluster.dns.interval", c.dns.interval),
        ] {
            if d.0.is_none_or(|d| d.is_zero()) {
                return Err(bad(key, "expected a non-zero duration such as \"5s\""));
            }
        }
        if c.failure_timeout.0 <= c.heartbeat_interval.0 {
            return Err(bad(
                "cluster.failure_timeout",
                "expected a duration longer than cluster.heartbeat_interval",
            ));
        }
        if c.send_window == 0 {
            return Err(bad("cluster.send_window", "expected at least 1"));
        }
        if c.tls.enable {
            for (key, path) in [
                ("cluster.tls.cert_file", &c.tls.cert_file),
                ("cluster.tls.key_file", &c.tls.key_file),
                ("cluster.tls.ca_file", &c.tls.ca_file),
            ] {
                if path.as_os_str().is_empty() {
                    return Err(bad(
                        key,
                        "expected a PEM file when cluster.tls.enable = true",
                    ));
                }
            }
        }
        if self.broker.routers == 0 || self.broker.routers > 256 {
            return Err(bad("broker.routers", "expected 1 ..= 256"));
        }
        if self.broker.worker_threads > 1024 {
            return Err(bad(
                "broker.worker_threads",
                "expected 0 (one per core) to 1024",
            ));
        }
        if self.broker.max_mailbox == 0 {
            return Err(bad("broker.max_mailbox", "expected at least 1"));
        }
        if self.broker.send_timeout.0.is_none_or(|d| d.is_zero()) {
            return Err(bad(
                "broker.send_timeout",
                "expected a non-zero duration such as \"15s\"",
            ));
        }
        if self.broker.write_buffer_high_watermark.0 < 1024 {
            return Err(bad(
                "broker.write_buffer_high_watermark",
                "expected at least 1KB",
            ));
        }
        if self.sys.interval.0.is_none() {
            return Err(bad("sys.interval", "expected a duration (\"0s\" disables)"));
        }
        if self
            .retainer
            .expiry_check_interval
            .0
            .is_none_or(|d| d.is_zero())
        {
            return Err(bad(
                "retainer.expiry_check_interval",
                "expected a non-zero duration",
            ));
        }
        for (name, l) in &self.listeners.tcp {
            if l.max_connections == 0 {
                return Err(bad(
                    &format!("listeners.tcp.{name}.max_connections"),
                    "expected at least 1",
                ));
            }
        }
        if !self.listeners.tcp.values().any(|l| l.enable) {
            return Err(bad(
                "listeners.tcp",
                "at least one listener must be enabled",
            ));
        }
        Ok(())
    }

    /// The protocol limits every channel enforces.
    pub fn limits(&self) -> Limits {
        let m = &self.mqtt;
        let secs = |d: &DurationStr| d.0.map_or(u32::MAX, |d| clamp_u32(d.as_secs()));
        Limits {
            max_packet_size: clamp_u32(m.max_packet_size.0),
            receive_maximum: m.receive_maximum,
            max_inflight: m.max_inflight.min(65534),
            max_queued_messages: m.max_queued_messages,
            queue_qos0: m.queue_qos0,
            drop_policy: match m.drop_policy {
                DropPolicyConfig::DropOldest => DropPolicy::DropOldest,
                DropPolicyConfig::DropNewest => DropPolicy::DropNewest,
            },
            topic_alias_maximum: m.max_topic_alias,
            max_topic_levels: m.max_topic_levels,
            max_qos: QoS::from_u8(m.max_qos_allowed).unwrap_or(QoS::ExactlyOnce),
            retain_available: m.retain_available,
            wildcard_subscription_available: m.wildcard_subscription,
            subscription_identifiers_available: m.subscription_identifiers,
            shared_subscription_available: m.shared_subscription,
            v3_session_expiry: secs(&m.session_expiry_interval),
            max_session_expiry: secs(&m.max_session_expiry_interval),
            max_keepalive: m
                .max_keepalive
                .0
                .map_or(0, |d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX)),
            max_client_id_len: m.max_clientid_len,
            response_information: (!m.response_information.is_empty())
                .then(|| m.response_information.clone()),
        }
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A duration written as `"500ms"`, `"15s"`, `"2m"`, `"2h"`, `"7d"`, a bare number of seconds,
/// or `"never"` / `"infinity"` (stored as `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationStr(pub Option<Duration>);

impl DurationStr {
    /// The duration, or `None` for never.
    pub fn get(self) -> Option<Duration> {
        self.0
    }

    /// Parses the textual form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("never") || s.eq_ignore_ascii_case("infinity") {
            return Ok(DurationStr(None));
        }
        let (n, unit) = number_and_unit(s, "a duration like \"15s\"")?;
        let d = match unit {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            other => {
                return Err(format!(
                    "unknown duration unit \"{other}\" (use ms, s, m, h, d)"
                ));
            }
        };
        Ok(DurationStr(Some(d)))
    }
}

impl fmt::Display for DurationStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("never"),
            Some(d) if d.subsec_millis() != 0 => write!(f, "{}ms", d.as_millis()),
            Some(d) => write!(f, "{}s", d.as_secs()),
        }
    }
}

/// A value written either as a bare number or as text with a unit (`15`, `"15s"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

/// Splits `"15s"` into `15` and `"s"`; `what` names the expected form in the error.
fn number_and_unit<'a>(s: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n = num
        .parse()
        .map_err(|_| format!("expected {what}, got \"{s}\""))?;
    Ok((n, unit.trim()))
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => Ok(DurationStr(Some(Duration::from_secs(n)))),
            NumOrText::Text(s) => DurationStr::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for DurationStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size written as `"1MB"`, `"64KB"`, `"512B"` or a bare number of bytes (KB = 1024 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses the textual form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s, "a size like \"1MB\"")?;
        let mult = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "KB" | "K" => 1024,
            "MB" | "M" => 1024 * 1024,
            "GB" | "G" => 1024 * 1024 * 1024,
            other => return Err(format!("unknown size unit \"{other}\" (use B, KB, MB, GB)")),
        };
        Ok(ByteSize(n.saturating_mul(mult)))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 20 && n % (1 << 20) == 0 {
            write!(f, "{}MB", n >> 20)
        } else if n >= 1 << 10 && n % (1 << 10) == 0 {
            write!(f, "{}KB", n >> 10)
        } else {
            write!(f, "{n}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => Ok(ByteSize(n)),
            NumOrText::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            DurationStr::parse("15s"),
            Ok(DurationStr(Some(Duration::from_secs(15))))
        );
        assert_eq!(
            DurationStr::parse("2h"),
            Ok(DurationStr(Some(Duration::from_secs(7200))))
        );
        assert_eq!(
            DurationStr::parse("250ms"),
            Ok(DurationStr(Some(Duration::from_millis(250))))
        );
        assert_eq!(DurationStr::parse("never"), Ok(DurationStr(None)));
        assert!(DurationStr::parse("5 parsecs").is_err());
        assert!(DurationStr::parse("abc").is_err());
        assert_eq!(
            DurationStr(Some(Duration::from_secs(90))).to_string(),
            "90s"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("1MB"), Ok(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("64kb"), Ok(ByteSize(64 << 10)));
        assert_eq!(ByteSize::parse("100"), Ok(ByteSize(100)));
        assert!(ByteSize::parse("1 lightyear").is_err());
        assert_eq!(ByteSize(1 << 20).to_string(), "1MB");
    }

    #[test]
    fn defaults_validate_and_map_to_limits() {
        let c = Config::default();
        c.validate().expect("defaults are valid");
        let l = c.limits();
        assert_eq!(l.max_queued_messages, 1000);
        assert_eq!(l.max_keepalive, 0);
        assert_eq!(l.max_session_expiry, u32::MAX);
        assert_eq!(l.v3_session_expiry, 7200);
    }

    #[test]
    fn node_names_and_derived_ports() {
        let n = NodeName::parse("b1@127.0.0.1").expect("valid");
        assert_eq!(n.derived_port(), 4371);
        assert_eq!(
            NodeName::parse("beamq@host").map(|n| n.derived_port()),
            Ok(4370)
        );
        assert_eq!(
            NodeName::parse("emqx12@h").map(|n| n.derived_port()),
            Ok(4382)
        );
        assert_eq!(n.to_string(), "b1@127.0.0.1");
        for bad in ["b1", "@host", "b1@", "b 1@h", "a@b@c"] {
            assert!(NodeName::parse(bad).is_err(), "{bad}");
        }
        let mut c = Config::default();
        c.cluster.seeds = vec!["b2@127.0.0.1".into(), "nonsense".into()];
        assert_eq!(c.validate().expect_err("bad seed").key, "cluster.seeds[1]");
    }

    #[test]
    fn dns_server_is_an_address_with_an_optional_port() {
        let mut c = Config::default();
        for (server, want) in [
            ("", None),
            ("10.0.0.10", Some("10.0.0.10:53")),
            ("127.0.0.1:5353", Some("127.0.0.1:5353")),
            ("[::1]:53", Some("[::1]:53")),
        ] {
            c.cluster.dns.server = server.into();
            let got = c.cluster.dns.server_addr().expect("valid");
            assert_eq!(got.map(|a| a.to_string()).as_deref(), want, "{server}");
        }
        c.cluster.dns.server = "dns.example:53".into();
        assert_eq!(
            c.validate().expect_err("a name, not an address").key,
            "cluster.dns.server"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Config::default();
        c.mqtt.receive_maximum = 0;
        let e = c.validate().expect_err("invalid");
        assert_eq!(e.key, "mqtt.receive_maximum");
        assert!(e.to_string().contains("mqtt.receive_maximum"));
    }
}
