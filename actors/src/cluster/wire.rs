//! What nodes say to each other: the messages of the cluster bridge and their encoding.
//!
//! The bridge is the only remotable actor of a node (DESIGN §10: every remotable actor is
//! mirrored on every peer, so client actors stay local). Its message type implements
//! `ractor::Message` by hand: the [`Wire`] variants travel as bincode 2 inside ractor_cluster's
//! frames, the local variants never leave the node (serializing one is refused, and ractor
//! only serializes for a remote recipient).

use std::sync::Arc;
use std::time::{Duration, Instant};

use beamq_protocol::packet::{RetainHandling, SubscriptionOptions};
use beamq_protocol::session::{Delivery, Message, MessageProperties, SessionState, Subscription};
use beamq_protocol::{ByteString, QoS};
use bytes::Bytes;
use ractor::RpcReplyPort;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::{Deserialize, Serialize};

/// Name of the ractor process group every node's bridge joins.
pub const BRIDGE_GROUP: &str = "beamq.bridge";

/// Messages between bridges of different nodes. Every one names its sender: ractor's node ids
/// are per link and change on reconnect, node names do not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Wire {
    /// First words on a new link, and the answer to them: who I am and every filter I route
    /// (a full sync replaces what the receiver knew of the sender).
    Hello {
        /// Sender's node name.
        from: String,
        /// Increases each time the sender's bridge starts, so a peer can tell a restart.
        incarnation: u64,
        /// Every filter with a subscriber on the sender.
        filters: Vec<String>,
        /// The sender's linked peers, so the receiver links with all of them.
        peers: Vec<String>,
        /// True when the receiver should answer with its own Hello.
        reply: bool,
    },
    /// Filters that gained their first or lost their last subscriber on the sender.
    Routes {
        /// Sender's node name.
        from: String,
        /// Filters added.
        add: Vec<String>,
        /// Filters removed.
        del: Vec<String>,
    },
    /// Messages published on the sender for subscribers of the receiver: dispatch to local
    /// subscribers only, never forward again. Retained ones are also stored.
    Forward {
        /// Sender's node name.
        from: String,
        /// The messages, in publish order, each with what to deliver it to.
        messages: Vec<WireForward>,
    },
    /// Retained messages of the sender, for the receiver's store only (sync after a link
    /// comes up); no subscriber receives them as new publishes.
    Retained {
        /// Sender's node name.
        from: String,
        /// The messages.
        messages: Vec<WireMessage>,
    },
    /// Credit back for `count` forwarded messages the sender has dispatched.
    Ack {
        /// Sender's node name.
        from: String,
        /// Messages dispatched since the last Ack.
        count: u64,
    },
    /// A client connected on the sender: whoever holds a session with this client id closes
    /// its connection (v5 DISCONNECT 0x8E) and hands the session over with `SessionHandoff`,
    /// unless its own connection is newer (two nodes racing: the newest connection wins).
    TakeSession {
        /// Sender's node name.
        from: String,
        /// Request number, echoed in the answer.
        req: u64,
        /// The client id.
        client_id: ByteString,
        /// The newcomer's Clean Start: the old session is discarded, not handed over.
        clean_start: bool,
        /// When the newcomer's actor started, microseconds since the epoch.
        started_us: u64,
    },
    /// Answer to `TakeSession`: the session, if this node held one to hand over.
    SessionHandoff {
        /// Sender's node name.
        from: String,
        /// The request answered.
        req: u64,
        /// The session.
        session: Option<WireSession>,
    },
    /// The sender leaves the cluster (`beamq ctl cluster leave`): forget it, do not dial it.
    Leaving {
        /// Sender's node name.
        from: String,
    },
    /// Forget `node` and close its links (`beamq ctl cluster force-leave NODE`).
    Forget {
        /// Sender's node name.
        from: String,
        /// The node removed.
        node: String,
    },
    /// Liveness.
    Ping {
        /// Sender's node name.
        from: String,
    },
}

/// A forwarded message and what the receiver delivers it to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireForward {
    /// The message.
    pub message: WireMessage,
    /// Deliver to direct subscribers.
    pub direct: bool,
    /// Deliver to one member of each of these shared groups (group, filter).
    pub shares: Vec<(ByteString, ByteString)>,
}

/// An application message on the wire. Expiry travels as time left, so it is decremented by
/// the time spent on the sender and counts down again on the receiver's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// Topic.
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS as published.
    pub qos: u8,
    /// RETAIN as published.
    pub retain: bool,
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// Content Type.
    pub content_type: Option<ByteString>,
    /// Response Topic.
    pub response_topic: Option<ByteString>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// Milliseconds of expiry left; `None` for never.
    pub expires_in_ms: Option<u64>,
    /// Publisher's client id (No Local applies to it on every node).
    pub publisher: ByteString,
}

impl WireMessage {
    /// The wire form of `m` as of `now`.
    pub fn from_message(m: &Message, now: Instant) -> WireMessage {
        let p = &m.properties;
        WireMessage {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos as u8,
            retain: m.retain,
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            expires_in_ms: m
                .expires_at
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
            publisher: m.publisher.clone(),
        }
    }

    /// The message again, its expiry counted from `now`. `None` for a QoS that does not exist
    /// (a peer that sends one is broken; the message is dropped and counted by the caller).
    pub fn into_message(self, now: Instant) -> Option<Arc<Message>> {
        let qos = QoS::from_u8(self.qos)?;
        let mut m = Message::system(self.topic, self.payload, self.retain);
        m.qos = qos;
        m.properties = MessageProperties {
            payload_format_indicator: self.payload_format_indicator,
            content_type: self.content_type,
            response_topic: self.response_topic,
            correlation_data: self.correlation_data,
            user_properties: self.user_properties,
        };
        m.expires_at = self.expires_in_ms.map(|ms| now + Duration::from_millis(ms));
        m.publisher = self.publisher;
        Some(Arc::new(m))
    }
}

/// A session moving to another node: its subscriptions, the QoS 2 packet ids the client is
/// still to release, and every message owed to the client (in flight and unacknowledged, then
/// queued), which the new node sends as new PUBLISH packets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireSession {
    /// Session Expiry Interval, seconds.
    pub expiry_interval: u32,
    /// Subscriptions as subscribed (with any share prefix).
    pub subscriptions: Vec<WireSubscription>,
    /// QoS 2 packet ids received and not released yet.
    pub awaiting_rel: Vec<u16>,
    /// Messages owed, in order.
    pub messages: Vec<WireDelivery>,
}

/// One subscription of a moving session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireSubscription {
    /// Filter.
    pub filter: ByteString,
    /// Granted QoS.
    pub qos: u8,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling (0, 1, 2).
    pub retain_handling: u8,
    /// Subscription Identifier.
    pub id: Option<u32>,
}

/// One message owed to the client of a moving session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireDelivery {
    /// The message.
    pub message: WireMessage,
    /// QoS to deliver with.
    pub qos: u8,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers.
    pub subscription_ids: Vec<u32>,
}

impl WireSession {
    /// The wire form of `session` plus `extra` messages that reached it during the handover.
    pub fn from_state(mut session: SessionState, extra: Vec<Delivery>, now: Instant) -> Self {
        let mut messages: Vec<WireDelivery> = session
            .take_for_migration()
            .into_iter()
            .chain(extra)
            .map(|d| WireDelivery {
                message: WireMessage::from_message(&d.message, now),
                qos: d.qos as u8,
                retain: d.retain,
                subscription_ids: d.subscription_ids,
            })
            .collect();
        messages.shrink_to_fit();
        WireSession {
            expiry_interval: session.expiry_interval,
            subscriptions: session
                .subscriptions
                .iter()
                .map(|(filter, s)| WireSubscription {
                    filter: filter.clone(),
                    qos: s.options.qos as u8,
                    no_local: s.options.no_local,
                    retain_as_published: s.options.retain_as_published,
                    retain_handling: s.options.retain_handling as u8,
                    id: s.id,
                })
                .collect(),
            awaiting_rel: session.awaiting_rel.iter().copied().collect(),
            messages,
        }
    }

    /// The session again, and the messages to deliver into it. Entries a broken peer got
    /// wrong (a QoS that does not exist) are left out; returns how many.
    pub fn into_state(self, now: Instant) -> (SessionState, Vec<Delivery>, usize) {
        let mut bad = 0;
        let mut state = SessionState::new(self.expiry_interval);
        for s in self.subscriptions {
            let Some(qos) = QoS::from_u8(s.qos) else {
                bad += 1;
                continue;
            };
            let retain_handling = match s.retain_handling {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendAtSubscribeIfNew,
                _ => RetainHandling::DoNotSend,
            };
            state.subscriptions.insert(
                s.filter,
                Subscription {
                    options: SubscriptionOptions {
                        qos,
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        retain_handling,
                    },
                    id: s.id,
                },
            );
        }
        state.awaiting_rel.extend(self.awaiting_rel);
        let mut deliveries = Vec::with_capacity(self.messages.len());
        for d in self.messages {
            match (QoS::from_u8(d.qos), d.message.into_message(now)) {
                (Some(qos), Some(message)) => deliveries.push(Delivery {
                    message,
                    qos,
                    retain: d.retain,
                    subscription_ids: d.subscription_ids,
                    share: None,
                }),
                _ => bad += 1,
            }
        }
        (state, deliveries, bad)
    }
}

/// Local events for the bridge.
#[derive(Debug)]
pub enum Local {
    /// A filter gained its first subscriber on this node (from a router).
    FilterAdded(ByteString),
    /// A filter lost its last subscriber on this node (from a router).
    FilterRemoved(ByteString),
    /// Heartbeat timer.
    Tick,
    /// Who are the peers now, as the bridge sees them.
    Peers(RpcReplyPort<Vec<PeerStatus>>),
    /// A client connected here: ask every peer for its session (answered once all have
    /// answered or the wait is over).
    TakeSession {
        /// The client id.
        client_id: ByteString,
        /// Its Clean Start.
        clean_start: bool,
        /// When its actor started, microseconds since the epoch.
        started_us: u64,
        /// Gets the session, if a peer handed one over.
        reply: RpcReplyPort<Option<WireSession>>,
    },
    /// A summary of the bridge's state, for `actor show`.
    Describe(RpcReplyPort<beamq_supervisors::probe::Summary>),
}

/// One peer as the bridge sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Node name.
    pub name: String,
    /// Milliseconds since it was last heard from.
    pub last_heard_ms: u64,
    /// Forwarded messages it has not acknowledged yet.
    pub in_flight: u64,
    /// Filters it routes.
    pub routes: usize,
}

/// The bridge's messages.
#[derive(Debug)]
pub enum BridgeMsg {
    /// From another node.
    Remote(Wire),
    /// From this node.
    Local(Local),
}

const VARIANT: &str = "wire";

fn codec() -> impl bincode::config::Config {
    // A bound on what one decoded message may claim, below ractor_cluster's frame limit.
    bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>()
}

impl beamq_supervisors::probe::Describe for BridgeMsg {
    fn describe(reply: RpcReplyPort<beamq_supervisors::probe::Summary>) -> Self {
        BridgeMsg::Local(Local::Describe(reply))
    }
}

impl ractor::Message for BridgeMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            BridgeMsg::Remote(wire) => {
                let args =
                    bincode::serde::encode_to_vec(&wire, codec()).map_err(|_| BoxedDowncastErr)?;
                Ok(SerializedMessage::Cast {
                    variant: VARIANT.to_string(),
                    args,
                    metadata: None,
                })
            }
            // Local events are never addressed to another node.
            BridgeMsg::Local(_) => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(m: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match m {
            SerializedMessage::Cast { variant, args, .. } if variant == VARIANT => {
                let (wire, _) = bincode::serde::decode_from_slice::<Wire, _>(&args, codec())
                    .map_err(|_| BoxedDowncastErr)?;
                Ok(BridgeMsg::Remote(wire))
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::Message as _;

    #[test]
    fn wire_messages_round_trip_through_ractor_serialization() {
        let now = Instant::now();
        let mut m = Message::system("a/b".into(), Bytes::from_static(b"hello"), true);
        m.qos = QoS::ExactlyOnce;
        m.expires_at = Some(now + Duration::from_secs(30));
        m.properties.user_properties = vec![("k".into(), "v".into())];
        m.properties.correlation_data = Some(Bytes::from_static(b"c"));
        m.publisher = "pub-1".into();
        let wire = Wire::Forward {
            from: "b1@127.0.0.1".into(),
            messages: vec![WireForward {
                message: WireMessage::from_message(&m, now),
                direct: true,
                shares: vec![("g".into(), "a/+".into())],
            }],
        };
        let ser = BridgeMsg::Remote(wire.clone())
            .serialize()
            .expect("serializes");
        let BridgeMsg::Remote(back) = BridgeMsg::deserialize(ser).expect("deserializes") else {
            panic!("local variant from the wire");
        };
        assert_eq!(back, wire);
        let Wire::Forward { messages, .. } = back else {
            panic!("variant changed");
        };
        let again = messages
            .into_iter()
            .next()
            .and_then(|w| w.message.into_message(now))
            .expect("valid");
        assert_eq!(again.payload, m.payload);
        assert_eq!(again.qos, QoS::ExactlyOnce);
        assert_eq!(again.properties, m.properties);
        assert_eq!(again.expires_at, m.expires_at);
        assert_eq!(again.publisher, m.publisher);
    }

    #[test]
    fn garbage_from_a_peer_is_refused_not_a_panic() {
        for args in [vec![], vec![0xff; 7], vec![2, 0xff, 0xff, 0xff, 0xff, 0x0f]] {
            let r = BridgeMsg::deserialize(SerializedMessage::Cast {
                variant: VARIANT.into(),
                args,
                metadata: None,
            });
            assert!(r.is_err());
        }
        assert!(BridgeMsg::Local(Local::Tick).serialize().is_err());
    }
}
