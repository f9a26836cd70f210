//! The application message as it travels inside the broker, and what a subscriber receives.
//!
//! A PUBLISH is turned into one [`Message`] behind an `Arc` the moment it is accepted; every
//! subscriber gets a [`Delivery`] that points at the same `Arc`, so topic, payload and properties
//! are never copied per subscriber (DESIGN §4: keep binaries shared).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::packet::{LastWill, Publish, PublishProperties, QoS, UserProperty};

/// The properties of a PUBLISH that travel with the message from publisher to subscribers
/// (v5 §3.3.2.3). Topic Alias and Subscription Identifier are per-connection and do not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProperties {
    /// 0x01 Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// 0x03 Content Type.
    pub content_type: Option<ByteString>,
    /// 0x08 Response Topic.
    pub response_topic: Option<ByteString>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x26 User Property, order preserved [MQTT-3.3.2-17].
    pub user_properties: Vec<UserProperty>,
}

/// An application message accepted by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic Name (aliases already resolved).
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS the publisher used.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties forwarded unaltered [MQTT-3.3.2-15 .. MQTT-3.3.2-20].
    pub properties: MessageProperties,
    /// When the Message Expiry Interval runs out; `None` means never.
    pub expires_at: Option<Instant>,
    /// Client identifier of the publisher (empty for messages the broker makes itself), used for
    /// No Local [MQTT-3.8.3-3].
    pub publisher: ByteString,
    /// The copy made for keeping, shared by everyone who keeps this message (see
    /// [`Message::for_keeping`]).
    kept: KeptCopy,
}

/// A detached copy of a message, made at most once. Not part of the message's value: clones
/// start without one and equality ignores it.
#[derive(Default)]
struct KeptCopy {
    copy: OnceLock<Arc<Message>>,
    /// True for a message that owns its memory already (it is its own kept copy).
    owned: bool,
}

impl Clone for KeptCopy {
    fn clone(&self) -> Self {
        KeptCopy {
            copy: OnceLock::new(),
            owned: self.owned,
        }
    }
}

impl PartialEq for KeptCopy {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KeptCopy {}

impl std::fmt::Debug for KeptCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.owned { "owned" } else { "sliced" })
    }
}

impl Message {
    /// Builds the message from an accepted PUBLISH whose topic has been resolved.
    pub fn from_publish(
        p: Publish,
        topic: ByteString,
        publisher: ByteString,
        now: Instant,
    ) -> Self {
        let PublishProperties {
            payload_format_indicator,
            message_expiry_interval,
            response_topic,
            correlation_data,
            user_properties,
            content_type,
            ..
        } = p.properties;
        Message {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: MessageProperties {
                payload_format_indicator,
                content_type,
                response_topic,
                correlation_data,
                user_properties,
            },
            expires_at: expiry_deadline(message_expiry_interval, now),
            publisher,
            kept: KeptCopy::default(),
        }
    }

    /// Builds the message of a will (v5 §3.1.3.2: the will properties become the PUBLISH's).
    pub fn from_will(will: LastWill, publisher: ByteString, now: Instant) -> Self {
        let p = will.properties;
        Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: MessageProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
            },
            expires_at: expiry_deadline(p.message_expiry_interval, now),
            publisher,
            kept: KeptCopy::default(),
        }
    }

    /// A message the broker publishes itself (`$SYS`), QoS 0.
    pub fn system(topic: ByteString, payload: Bytes, retain: bool) -> Self {
        Message {
            topic,
            payload,
            qos: QoS::AtMostOnce,
            retain,
            properties: MessageProperties::default(),
            expires_at: None,
            publisher: ByteString::new(),
            kept: KeptCopy::default(),
        }
    }

    /// A copy that owns its memory. A decoded message's topic, payload and properties are
    /// slices of the buffer the frame was read into, and a slice keeps that whole buffer alive;
    /// a message kept for long (retained, queued for an absent client) should not pin the other
    /// frames of its read.
    pub fn detached(&self) -> Message {
        let s = |b: &ByteString| ByteString::from(&**b);
        let p = &self.properties;
        Message {
            topic: s(&self.topic),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: MessageProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.as_ref().map(s),
                response_topic: p.response_topic.as_ref().map(s),
                correlation_data: p
                    .correlation_data
                    .as_ref()
                    .map(|c| Bytes::copy_from_slice(c)),
                user_properties: p
                    .user_properties
                    .iter()
                    .map(|(k, v)| (s(k), s(v)))
                    .collect(),
            },
            expires_at: self.expires_at,
            publisher: s(&self.publisher),
            kept: KeptCopy {
                copy: OnceLock::new(),
                owned: true,
            },
        }
    }

    /// The version of this message to keep for long (retained, queued for an absent client):
    /// detached from the received frame, made once and shared by every keeper, so keeping a
    /// message for a thousand offline sessions costs one copy, and the read buffer it came in
    /// is freed as soon as the transient deliveries are done.
    pub fn for_keeping(self: &Arc<Self>) -> Arc<Message> {
        if self.kept.owned {
            return self.clone();
        }
        self.kept
            .copy
            .get_or_init(|| Arc::new(self.detached()))
            .clone()
    }

    /// True once the Message Expiry Interval has passed [MQTT-3.3.2-5].
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The Message Expiry Interval to send onward: the time left, rounded up so that a message
    /// with time left is never sent as "0 seconds" [MQTT-3.3.2-6].
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

fn expiry_deadline(interval: Option<u32>, now: Instant) -> Option<Instant> {
    interval.map(|secs| now + Duration::from_secs(u64::from(secs)))
}

/// A message on its way to one subscriber, with what the subscriptions that matched decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS to deliver with: the minimum of the message's and the subscription's [MQTT-3.8.4-8];
    /// with overlapping subscriptions the maximum over them [MQTT-3.3.4-2].
    pub qos: QoS,
    /// RETAIN flag to send: set for retained messages sent because of a new subscription
    /// [MQTT-3.3.1-8], otherwise the published flag if Retain As Published, else 0
    /// [MQTT-3.3.1-12, MQTT-3.3.1-13].
    pub retain: bool,
    /// Subscription identifiers of every matching subscription [MQTT-3.3.4-3, MQTT-3.3.4-4].
    pub subscription_ids: Vec<u32>,
    /// The shared-subscription group and filter this delivery came through, if any. A message in
    /// flight to a member that goes away is redelivered to another member through it.
    pub share: Option<ShareRef>,
}

/// Identifies a shared subscription: group name and topic filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShareRef {
    /// Share name.
    pub group: ByteString,
    /// Topic filter (without the `$share/{group}/` prefix).
    pub filter: ByteString,
}

impl Delivery {
    /// A delivery of `message` at `qos` with no subscription identifiers.
    pub fn new(message: Arc<Message>, qos: QoS, retain: bool) -> Self {
        Delivery {
            message,
            qos,
            retain,
            subscription_ids: Vec::new(),
            share: None,
        }
    }
}
