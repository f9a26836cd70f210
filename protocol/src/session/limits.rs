//! What the server allows: the limits a channel enforces and advertises in CONNACK.
//!
//! The broker fills one [`Limits`] from its configuration and shares it (behind an `Arc`) with
//! every channel; nothing here changes while a connection lives.

use crate::packet::QoS;

/// What happens when a session's message queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Drop the oldest queued message to make room (the default, as EMQX and Mosquitto do).
    #[default]
    DropOldest,
    /// Refuse the new message.
    DropNewest,
}

/// Server limits and capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest packet the server accepts, whole packet (CONNACK Maximum Packet Size).
    pub max_packet_size: u32,
    /// How many QoS 1/2 PUBLISH the client may have unacknowledged towards the server
    /// (CONNACK Receive Maximum) [MQTT-3.3.4-9].
    pub receive_maximum: u16,
    /// Cap on the server's own outbound window, whatever the client's Receive Maximum says.
    pub max_inflight: u16,
    /// Messages a session may queue (offline, or waiting for the window); 0 = unlimited.
    pub max_queued_messages: usize,
    /// Whether QoS 0 messages are queued too (offline sessions, full window).
    pub queue_qos0: bool,
    /// What to drop when the queue is full.
    pub drop_policy: DropPolicy,
    /// Topic aliases the client may use towards the server (CONNACK Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Maximum levels in a topic name or filter; 0 = unlimited.
    pub max_topic_levels: usize,
    /// Highest QoS the server supports (CONNACK Maximum QoS).
    pub max_qos: QoS,
    /// Whether retained messages are supported (CONNACK Retain Available).
    pub retain_available: bool,
    /// Whether wildcard subscriptions are allowed.
    pub wildcard_subscription_available: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers_available: bool,
    /// Whether shared subscriptions are supported.
    pub shared_subscription_available: bool,
    /// Session expiry given to 3.1/3.1.1 sessions with Clean Session 0 (they cannot say).
    pub v3_session_expiry: u32,
    /// Cap on the v5 Session Expiry Interval a client may ask for.
    pub max_session_expiry: u32,
    /// Cap on Keep Alive; above it a v5 client is told Server Keep Alive, an older one is refused.
    /// 0 disables the cap.
    pub max_keepalive: u16,
    /// Longest client identifier accepted.
    pub max_client_id_len: usize,
    /// Response Information sent when a v5 client requests it; `None` sends none. `{clientid}` in
    /// it is replaced by the client identifier.
    pub response_information: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: 1024 * 1024,
            receive_maximum: 32,
            max_inflight: 32,
            max_queued_messages: 1000,
            queue_qos0: true,
            drop_policy: DropPolicy::DropOldest,
            topic_alias_maximum: 65535,
            max_topic_levels: 128,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscription_available: true,
            subscription_identifiers_available: true,
            shared_subscription_available: true,
            v3_session_expiry: 2 * 60 * 60,
            max_session_expiry: u32::MAX,
            max_keepalive: 0,
            max_client_id_len: 65535,
            response_information: None,
        }
    }
}
