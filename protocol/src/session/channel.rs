//! The per-connection protocol state machine (EMQX calls it the channel).
//!
//! A [`Channel`] is fed decoded packets from its client and deliveries from other clients, and
//! answers by encoding packets into its `out` buffer and by returning [`Effect`]s for what needs
//! the rest of the broker (subscribing in the route table, sending retained messages, closing).
//! Publishing is synchronous through the [`Dispatcher`] the caller passes in, because the
//! acknowledgement of a QoS 1/2 PUBLISH depends on its outcome (v5 0x10 No matching
//! subscribers). It never does I/O and never reads the clock: `now` is an argument.
//!
//! Packets written into `out` must only reach the socket after the effects returned by the same
//! call have been carried out: that is what makes a SUBACK mean "the subscription is in place".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use bytestring::ByteString;

use crate::codec;
use crate::packet::{
    AckProperties, Connack, Connect, Disconnect, LastWill, Packet, ProtocolVersion, PubAck,
    Publish, PublishProperties, QoS, Suback, Subscribe, SubscriptionOptions, Unsuback, Unsubscribe,
};
use crate::reason::ReasonCode;
use crate::session::connect::Accepted;
use crate::session::limits::Limits;
use crate::session::message::{Delivery, Message};
use crate::session::state::{
    DropReason, Inflight, Phase, RetainedCursor, SessionState, Subscription,
};
use crate::topic;

/// Routes accepted application messages. Implemented by the broker; tests use a recorder.
pub trait Dispatcher {
    /// May this client publish to `topic`? A refusal drops the message: v5 clients get
    /// 0x87 Not authorized in PUBACK/PUBREC, older ones a plain acknowledgement (3.1.1 has no
    /// way to say no).
    fn authorize_publish(&mut self, topic: &str) -> bool;

    /// Routes `message` to every matching subscription and returns how many matched.
    fn dispatch(&mut self, message: Arc<Message>) -> usize;

    /// Up to `limit` retained messages whose topic matches `filter` (a filter without share
    /// prefix), stored no later than `watermark`, in topic order, starting after topic `after`.
    /// Fewer than `limit` means there are no more.
    fn retained_page(
        &mut self,
        filter: &str,
        after: Option<&str>,
        watermark: u64,
        limit: usize,
    ) -> Vec<Arc<Message>>;
}

/// How many retained messages are read from the store at a time for one subscription.
const RETAINED_PAGE: usize = 64;

/// What the caller must do after feeding the channel, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Add or replace a subscription in the route table before the SUBACK is sent.
    Subscribe {
        /// Filter exactly as subscribed (may carry `$share/{group}/`).
        filter: ByteString,
        /// Granted options and identifier.
        subscription: Subscription,
    },
    /// Remove a subscription from the route table.
    Unsubscribe {
        /// Filter exactly as subscribed.
        filter: ByteString,
    },
    /// The subscription is in place: start sending the retained messages matching `filter`
    /// with [`Channel::push_retained`], passing the store's current watermark (3.1.1
    /// [MQTT-3.3.1-6], 5.0 [MQTT-3.3.1-9], [MQTT-3.8.4-4]).
    SendRetained {
        /// Filter without any share prefix.
        filter: ByteString,
        /// The subscription they are sent for.
        subscription: Subscription,
    },
    /// A message for this client was not delivered; count it.
    Dropped(DropReason),
    /// The client sent DISCONNECT: close the connection. `publish_will` is true for v5 reason
    /// 0x04 [MQTT-3.14.4-3]; otherwise the will is discarded [MQTT-3.1.2-10].
    ClientDisconnect {
        /// Whether to publish the will.
        publish_will: bool,
        /// The client's reason code.
        reason: ReasonCode,
    },
}

/// A client broke a rule that ends the connection. In v5 the server sends DISCONNECT with the
/// reason first [MQTT-4.13.1-1]; older clients are simply disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Violation {
    /// Reason code for the DISCONNECT.
    pub reason: ReasonCode,
    /// What happened, for logs.
    pub detail: &'static str,
}

fn violation(reason: ReasonCode, detail: &'static str) -> Violation {
    Violation { reason, detail }
}

/// The protocol state of one client, connected or not.
#[derive(Debug)]
pub struct Channel {
    version: ProtocolVersion,
    client_id: ByteString,
    keep_alive: u16,
    limits: Arc<Limits>,
    client_receive_maximum: u16,
    client_max_packet_size: u32,
    client_topic_alias_maximum: u16,
    session_expiry_at_connect: u32,
    will: Option<LastWill>,
    connected: bool,
    write_budget: usize,
    inbound_aliases: HashMap<u16, ByteString>,
    outbound_aliases: HashMap<ByteString, u16>,
    sent_publishes: u64,
    /// The session; moved whole on takeover.
    pub session: SessionState,
    /// Encoded packets waiting to be written, in order.
    pub out: BytesMut,
}

impl Channel {
    /// Opens a channel for an accepted CONNECT with the given session (new or taken over).
    pub fn new(
        connect: Connect,
        accepted: &Accepted,
        limits: Arc<Limits>,
        mut session: SessionState,
    ) -> Channel {
        session.expiry_interval = accepted.session_expiry;
        let p = &connect.properties;
        Channel {
            version: connect.protocol,
            client_id: accepted.client_id.clone(),
            keep_alive: accepted.keep_alive,
            client_receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
            client_max_packet_size: p
                .maximum_packet_size
                .unwrap_or(codec::MAX_REMAINING_LENGTH as u32 + 5),
            client_topic_alias_maximum: p.topic_alias_maximum.unwrap_or(0),
            session_expiry_at_connect: accepted.session_expiry,
            will: connect.will,
            connected: true,
            write_budget: usize::MAX,
            inbound_aliases: HashMap::new(),
            outbound_aliases: HashMap::new(),
            sent_publishes: 0,
            limits,
            session,
            out: BytesMut::new(),
        }
    }

    /// Protocol version of the current connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Client identifier.
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    /// Keep alive in effect, seconds.
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// PUBLISH packets written so far (first sends and resends).
    pub fn sent_publishes(&self) -> u64 {
        self.sent_publishes
    }

    /// True while a network connection is attached.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The will of the current connection, if any (cleared once published or discarded).
    pub fn will(&self) -> Option<&LastWill> {
        self.will.as_ref()
    }

    /// Takes the will out, to publish or discard it.
    pub fn take_will(&mut self) -> Option<LastWill> {
        self.will.take()
    }

    /// The outbound window: the client's Receive Maximum capped by the server's own limit.
    fn window(&self) -> usize {
        usize::from(
            self.client_receive_maximum
                .min(self.limits.max_inflight)
                .max(1),
        )
    }

    /// Sets how many more bytes may be encoded before the socket catches up. Deliveries beyond
    /// it wait in the queue, so a slow reader cannot grow the write buffer without limit.
    pub fn set_write_budget(&mut self, bytes: usize) {
        self.write_budget = bytes;
    }

    /// Writes CONNACK and, for a resumed session, resends what was in flight and drains the
    /// queue [MQTT-4.4.0-1].
    pub fn start(
        &mut self,
        accepted: &Accepted,
        session_present: bool,
        now: Instant,
        dispatcher: &mut dyn Dispatcher,
        effects: &mut Vec<Effect>,
    ) {
        let connack = Connack {
            session_present,
            reason_code: ReasonCode::Success,
            properties: accepted.connack_properties.clone(),
        };
        self.write(&Packet::Connack(connack));
        // Everything unacknowledged is resent first, as the new window allows
        // [MQTT-4.4.0-1]; then the queue.
        self.session.mark_all_unsent();
        self.drain(now, dispatcher, effects);
    }

    /// True while messages wait for the window or the write budget: the caller drains again
    /// when either frees up.
    pub fn has_backlog(&self) -> bool {
        !self.session.queue.is_empty()
            || !self.session.retained.is_empty()
            || self.session.unsent() > 0
    }

    /// The network connection is gone; the session stays until it expires or is taken over.
    /// Unsent bytes are discarded: QoS 1/2 messages among them are still in flight and are
    /// resent on resumption.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.out.clear();
        self.inbound_aliases.clear();
        self.outbound_aliases.clear();
    }

    /// Handles one packet from the client.
    pub fn handle(
        &mut self,
        packet: Packet,
        now: Instant,
        dispatcher: &mut dyn Dispatcher,
        effects: &mut Vec<Effect>,
    ) -> Result<(), Violation> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, now, dispatcher),
            Packet::Puback(ack) => {
                self.on_puback(ack);
                self.drain(now, dispatcher, effects);
                Ok(())
            }
            Packet::Pubrec(ack) => {
                self.on_pubrec(ack);
                self.drain(now, dispatcher, effects);
                Ok(())
            }
            Packet::Pubcomp(ack) => {
                if let Some(pos) = self.session.inflight_position(ack.packet_id) {
                    if self.session.inflight()[pos].phase == Phase::AwaitComp {
                        self.session.remove_inflight(pos);
                    }
                }
                self.drain(now, dispatcher, effects);
                Ok(())
            }
            Packet::Pubrel(rel) => {
                self.on_pubrel(rel);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s, effects),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u, effects);
                Ok(())
            }
            Packet::Pingreq => {
                // [MQTT-3.12.4-1]
                self.write(&Packet::Pingresp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(d, effects),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
            Packet::Connect(_) => Err(violation(ReasonCode::ProtocolError, "second CONNECT")),
            // Enhanced authentication is not offered, so AUTH is never expected [MQTT-3.15.2-1].
            Packet::Auth(_) => Err(violation(ReasonCode::ProtocolError, "unexpected AUTH")),
            Packet::Connack(_) | Packet::Suback(_) | Packet::Unsuback(_) | Packet::Pingresp => {
                Err(violation(
                    ReasonCode::ProtocolError,
                    "server-to-client packet sent by a client",
                ))
            }
        }
    }

    fn on_publish(
        &mut self,
        mut p: Publish,
        now: Instant,
        dispatcher: &mut dyn Dispatcher,
    ) -> Result<(), Violation> {
        let limits = self.limits.clone();
        if p.qos > limits.max_qos {
            // [MQTT-3.2.2-11]
            return Err(violation(
                ReasonCode::QoSNotSupported,
                "QoS above Maximum QoS",
            ));
        }
        if p.retain && !limits.retain_available {
            // [MQTT-3.2.2-14]
            return Err(violation(
                ReasonCode::RetainNotSupported,
                "retain not available",
            ));
        }
        if !p.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6] identifiers are the server's to add on the way out.
            return Err(violation(
                ReasonCode::ProtocolError,
                "subscription identifier in a client PUBLISH",
            ));
        }
        if p.properties
            .response_topic
            .as_deref()
            .is_some_and(|t| topic::validate_name(t, 0).is_err())
        {
            // [MQTT-3.3.2-14] a Response Topic is a Topic Name: no wildcards, not empty.
            return Err(violation(
                ReasonCode::ProtocolError,
                "invalid response topic",
            ));
        }
        let topic = self.resolve_alias(&mut p)?;
        if topic::validate_name(&topic, limits.max_topic_levels).is_err() {
            return Err(violation(
                ReasonCode::TopicNameInvalid,
                "invalid topic name",
            ));
        }

        if p.qos == QoS::ExactlyOnce {
            let Some(packet_id) = p.packet_id else {
                return Err(violation(
                    ReasonCode::ProtocolError,
                    "QoS 2 without packet id",
                ));
            };
            if self.session.awaiting_rel.contains(&packet_id) {
                // A resend of a message already accepted: acknowledge again, never route
                // twice [MQTT-4.3.3-9, MQTT-4.3.3-10].
                self.write(&Packet::Pubrec(PubAck::new(packet_id)));
                return Ok(());
            }
            if self.version.is_v5()
                && self.session.awaiting_rel.len() >= usize::from(limits.receive_maximum)
            {
                // [MQTT-3.3.4-9]
                return Err(violation(
                    ReasonCode::ReceiveMaximumExceeded,
                    "more QoS 2 messages unreleased than Receive Maximum",
                ));
            }
        }

        let qos = p.qos;
        let packet_id = p.packet_id;
        // v5 §3.3.2.3.2: the server may check a payload that claims to be UTF-8.
        let bad_format = p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err();

        let allowed = !bad_format && dispatcher.authorize_publish(&topic);
        let matched = if allowed {
            let message = Message::from_publish(p, topic, self.client_id.clone(), now);
            dispatcher.dispatch(Arc::new(message))
        } else {
            0
        };

        let reason = if bad_format {
            ReasonCode::PayloadFormatInvalid
        } else if !allowed && self.version.is_v5() {
            ReasonCode::NotAuthorized
        } else if !allowed {
            ReasonCode::Success
        } else if matched == 0 && self.version.is_v5() {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => {}
            (QoS::AtLeastOnce, Some(id)) => {
                self.write(&Packet::Puback(PubAck::with_reason(id, reason)));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // A failed PUBREC ends the exchange, so only successes await PUBREL.
                if !reason.is_error() {
                    self.session.awaiting_rel.insert(id);
                }
                self.write(&Packet::Pubrec(PubAck::with_reason(id, reason)));
            }
        }
        Ok(())
    }

    /// Resolves the v5 Topic Alias of an incoming PUBLISH (§3.3.2.3.4) and returns the topic.
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<ByteString, Violation> {
        let Some(alias) = p.properties.topic_alias.take() else {
            if p.topic.is_empty() {
                return Err(violation(
                    ReasonCode::ProtocolError,
                    "empty topic without alias",
                ));
            }
            return Ok(p.topic.clone());
        };
        if alias == 0 || alias > self.limits.topic_alias_maximum {
            // [MQTT-3.3.2-9, MQTT-3.3.2-10]
            return Err(violation(
                ReasonCode::TopicAliasInvalid,
                "topic alias out of range",
            ));
        }
        if p.topic.is_empty() {
            self.inbound_aliases
                .get(&alias)
                .cloned()
                .ok_or(violation(ReasonCode::ProtocolError, "unknown topic alias"))
        } else {
            // A copy, not a slice: a slice would keep the whole received frame (payload
            // included) alive for as long as the alias is bound.
            self.inbound_aliases
                .insert(alias, ByteString::from(&*p.topic));
            Ok(p.topic.clone())
        }
    }

    fn on_puback(&mut self, ack: PubAck) {
        if let Some(pos) = self.session.inflight_position(ack.packet_id) {
            let i = &self.session.inflight()[pos];
            if i.phase == Phase::AwaitAck && i.delivery.qos == QoS::AtLeastOnce {
                self.session.remove_inflight(pos);
            }
        }
    }

    fn on_pubrec(&mut self, ack: PubAck) {
        let found = self
            .session
            .inflight_position(ack.packet_id)
            .filter(|&pos| self.session.inflight()[pos].delivery.qos == QoS::ExactlyOnce);
        match found {
            Some(pos) if ack.reason_code.is_error() => {
                // v5 §4.3.3: a PUBREC with an error ends the exchange; no PUBREL.
                self.session.remove_inflight(pos);
            }
            Some(pos) => {
                self.session.set_phase(pos, Phase::AwaitComp);
                self.write(&Packet::Pubrel(PubAck::new(ack.packet_id)));
            }
            None => {
                // v5: answer with 0x92; 3.1.1 has no codes, a plain PUBREL is harmless.
                let reason = if self.version.is_v5() {
                    ReasonCode::PacketIdentifierNotFound
                } else {
                    ReasonCode::Success
                };
                self.write(&Packet::Pubrel(PubAck::with_reason(ack.packet_id, reason)));
            }
        }
    }

    fn on_pubrel(&mut self, rel: PubAck) {
        // [MQTT-4.3.3-11] PUBCOMP with the same identifier; the message is released.
        let known = self.session.awaiting_rel.remove(&rel.packet_id);
        let reason = if known || !self.version.is_v5() {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.write(&Packet::Pubcomp(PubAck::with_reason(rel.packet_id, reason)));
    }

    fn on_subscribe(&mut self, s: Subscribe, effects: &mut Vec<Effect>) -> Result<(), Violation> {
        let sub_id = s.properties.subscription_identifier;
        if sub_id.is_some() && !self.limits.subscription_identifiers_available {
            return Err(violation(
                ReasonCode::SubscriptionIdentifiersNotSupported,
                "subscription identifiers not supported",
            ));
        }
        // Check every filter before changing anything: a violation in the third filter must not
        // leave the first two in the session without their routes.
        let checks = s
            .filters
            .iter()
            .map(|(filter, options)| self.check_filter(filter, options))
            .collect::<Result<Vec<_>, Violation>>()?;
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for ((filter, options), check) in s.filters.into_iter().zip(checks) {
            match check {
                Err(code) => codes.push(code),
                Ok(shared) => {
                    let granted = options.qos.min(self.limits.max_qos);
                    let subscription = Subscription {
                        options: SubscriptionOptions {
                            qos: granted,
                            ..options
                        },
                        id: sub_id,
                    };
                    // [MQTT-3.8.4-3] an identical filter replaces the existing subscription.
                    let existed = self
                        .session
                        .subscriptions
                        .insert(filter.clone(), subscription)
                        .is_some();
                    effects.push(Effect::Subscribe {
                        filter: filter.clone(),
                        subscription,
                    });
                    codes.push(match granted {
                        QoS::AtMostOnce => ReasonCode::Success,
                        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
                    });
                    // Retained messages are not sent for shared subscriptions (v5 §4.8.2), and
                    // Retain Handling decides for the others [MQTT-3.3.1-9, MQTT-3.3.1-10].
                    let send = !shared
                        && match options.retain_handling {
                            crate::packet::RetainHandling::SendAtSubscribe => true,
                            crate::packet::RetainHandling::SendAtSubscribeIfNew => !existed,
                            crate::packet::RetainHandling::DoNotSend => false,
                        };
                    if send {
                        retained.push(Effect::SendRetained {
                            filter,
                            subscription,
                        });
                    }
                }
            }
        }
        self.write(&Packet::Suback(Suback {
            packet_id: s.packet_id,
            reason_codes: codes,
            properties: AckProperties::default(),
        }));
        effects.extend(retained);
        Ok(())
    }

    /// Checks one filter of a SUBSCRIBE: `Ok(Ok(shared))` to accept, `Ok(Err(code))` to refuse
    /// it in the SUBACK, `Err` when the whole connection must go.
    fn check_filter(
        &self,
        filter: &str,
        options: &SubscriptionOptions,
    ) -> Result<Result<bool, ReasonCode>, Violation> {
        let v5 = self.version.is_v5();
        let invalid = if v5 {
            ReasonCode::TopicFilterInvalid
        } else {
            ReasonCode::UnspecifiedError
        };
        let Ok(split) = topic::split_shared(filter) else {
            return Ok(Err(invalid));
        };
        if topic::validate_filter(split.filter, self.limits.max_topic_levels).is_err() {
            return Ok(Err(invalid));
        }
        let shared = split.group.is_some();
        if shared {
            if !self.limits.shared_subscription_available {
                return Ok(Err(if v5 {
                    ReasonCode::SharedSubscriptionsNotSupported
                } else {
                    ReasonCode::UnspecifiedError
                }));
            }
            if options.no_local {
                // [MQTT-3.8.3-4]
                return Err(violation(
                    ReasonCode::ProtocolError,
                    "No Local on a shared subscription",
                ));
            }
        }
        if !self.limits.wildcard_subscription_available && topic::has_wildcards(split.filter) {
            return Ok(Err(if v5 {
                ReasonCode::WildcardSubscriptionsNotSupported
            } else {
                ReasonCode::UnspecifiedError
            }));
        }
        Ok(Ok(shared))
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe, effects: &mut Vec<Effect>) {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in u.filters {
            if self.session.subscriptions.remove(&filter).is_some() {
                effects.push(Effect::Unsubscribe { filter });
                codes.push(ReasonCode::Success);
            } else {
                codes.push(ReasonCode::NoSubscriptionExisted);
            }
        }
        if !self.version.is_v5() {
            codes.clear();
        }
        // [MQTT-3.10.4-4] UNSUBACK even when nothing was removed.
        self.write(&Packet::Unsuback(Unsuback {
            packet_id: u.packet_id,
            reason_codes: codes,
            properties: AckProperties::default(),
        }));
    }

    fn on_disconnect(&mut self, d: Disconnect, effects: &mut Vec<Effect>) -> Result<(), Violation> {
        if let Some(expiry) = d.properties.session_expiry_interval {
            if self.session_expiry_at_connect == 0 && expiry != 0 {
                // v5 §3.14.2.2.2 (unnumbered): a Protocol Error.
                return Err(violation(
                    ReasonCode::ProtocolError,
                    "session expiry set at DISCONNECT after 0 at CONNECT",
                ));
            }
            self.session.expiry_interval = expiry.min(self.limits.max_session_expiry);
        }
        let publish_will = d.reason_code == ReasonCode::DisconnectWithWill;
        if !publish_will {
            // [MQTT-3.1.2-10] a normal DISCONNECT discards the will.
            self.will = None;
        }
        effects.push(Effect::ClientDisconnect {
            publish_will,
            reason: d.reason_code,
        });
        Ok(())
    }

    /// Hands the channel a message for its client. It joins the queue (bounded; drops are
    /// reported as effects) and the queue is drained as far as the window and the write budget
    /// allow, so order is kept and nothing waits that could go.
    pub fn deliver(
        &mut self,
        delivery: Delivery,
        now: Instant,
        dispatcher: &mut dyn Dispatcher,
        effects: &mut Vec<Effect>,
    ) {
        if delivery.message.is_expired(now) {
            effects.push(Effect::Dropped(DropReason::Expired));
            return;
        }
        if delivery.qos == QoS::AtMostOnce
            && !self.limits.queue_qos0
            && !self.can_send_now(&delivery)
        {
            effects.push(Effect::Dropped(DropReason::Qos0NotQueued));
            return;
        }
        let mut delivery = delivery;
        if !self.connected {
            // Kept until the client comes back: not a slice of somebody's read buffer.
            delivery.message = delivery.message.for_keeping();
        }
        let max = self.limits.max_queued_messages;
        if self
            .session
            .enqueue(delivery, max, self.limits.drop_policy)
            .is_some()
        {
            effects.push(Effect::Dropped(DropReason::QueueFull));
        }
        self.drain(now, dispatcher, effects);
    }

    fn can_send_now(&self, delivery: &Delivery) -> bool {
        self.connected
            && self.session.queue.is_empty()
            && self.session.retained.is_empty()
            && self.write_budget > 0
            && (delivery.qos == QoS::AtMostOnce || self.session.inflight().len() < self.window())
    }

    /// Starts sending the retained messages matching `filter` for a subscription whose route is
    /// in place, up to the store's `watermark`. Subscribing again to the same filter replaces
    /// what was still owed for it [MQTT-3.8.4-3].
    pub fn push_retained(
        &mut self,
        filter: ByteString,
        subscription: Subscription,
        watermark: u64,
        now: Instant,
        dispatcher: &mut dyn Dispatcher,
        effects: &mut Vec<Effect>,
    ) {
        if let Some(pos) = self
            .session
            .retained
            .iter()
            .position(|c| c.filter == filter)
        {
            if pos == 0 {
                self.session.retained_page.clear();
            }
            self.session.retained.remove(pos);
        }
        self.session.retained.push_back(RetainedCursor {
            filter,
            subscription,
            after: None,
            watermark,
            exhausted: false,
        });
        self.drain(now, dispatcher, effects);
    }

    /// Sends what waits while the window and the write budget allow: first the in-flight
    /// messages of a resumed session not yet resent, then retained messages owed, then the
    /// queue, each in order.
    pub fn drain(
        &mut self,
        now: Instant,
        dispatcher: &mut dyn Dispatcher,
        effects: &mut Vec<Effect>,
    ) {
        if !self.connected {
            return;
        }
        self.resend_inflight(now, effects);
        while self.write_budget > 0 {
            let from_retained = self.fill_retained_page(dispatcher);
            let front = if from_retained {
                self.session.retained_page.front()
            } else {
                self.session.queue.front()
            };
            let Some(front) = front else { break };
            if front.qos != QoS::AtMostOnce && self.session.inflight().len() >= self.window() {
                break;
            }
            let delivery = if from_retained {
                self.session.retained_page.pop_front()
            } else {
                self.session.pop_queued()
            };
            let Some(delivery) = delivery else { break };
            if delivery.message.is_expired(now) {
                effects.push(Effect::Dropped(DropReason::Expired));
                continue;
            }
            self.send_delivery(delivery, now, effects);
        }
    }

    /// Makes sure the page of the first retained cursor holds something if the cursor has
    /// anything left; returns true when retained messages are next in line.
    fn fill_retained_page(&mut self, dispatcher: &mut dyn Dispatcher) -> bool {
        while self.session.retained_page.is_empty() {
            let Some(cursor) = self.session.retained.front_mut() else {
                return false;
            };
            if cursor.exhausted {
                self.session.retained.pop_front();
                continue;
            }
            let page = dispatcher.retained_page(
                &cursor.filter,
                cursor.after.as_deref(),
                cursor.watermark,
                RETAINED_PAGE,
            );
            cursor.exhausted = page.len() < RETAINED_PAGE;
            if let Some(last) = page.last() {
                cursor.after = Some(last.topic.clone());
            }
            let sub = cursor.subscription;
            self.session
                .retained_page
                .extend(page.into_iter().map(|message| Delivery {
                    qos: message.qos.min(sub.options.qos),
                    // Retained messages sent because of a subscription carry RETAIN 1
                    // (3.1.1 [MQTT-3.3.1-8], 5.0 §3.3.1.3).
                    retain: true,
                    subscription_ids: sub.id.into_iter().collect(),
                    share: None,
                    message,
                }));
        }
        true
    }

    fn send_delivery(&mut self, delivery: Delivery, now: Instant, effects: &mut Vec<Effect>) {
        let packet_id = match delivery.qos {
            QoS::AtMostOnce => None,
            _ => Some(self.session.next_packet_id()),
        };
        let mut publish = self.publish_packet(&delivery, packet_id, false, now);
        let new_alias = self.apply_outbound_alias(&mut publish);
        let size = match codec::publish_encoded_len(&publish, self.version) {
            Ok(size) => size,
            Err(_) => usize::MAX,
        };
        let encoded = size <= self.client_max_packet_size as usize
            && codec::encode_publish(&publish, self.version, &mut self.out).is_ok();
        if !encoded {
            // [MQTT-3.1.2-24, MQTT-3.1.2-25] discard and behave as if it had been sent. An alias
            // bound by this PUBLISH was never told to the client: unbind it, or the next PUBLISH
            // on the topic would carry an alias the client cannot resolve.
            if new_alias {
                self.outbound_aliases.remove(&publish.topic);
            }
            effects.push(Effect::Dropped(DropReason::TooLarge));
            return;
        }
        self.write_budget = self.write_budget.saturating_sub(size);
        self.sent_publishes += 1;
        if let Some(packet_id) = packet_id {
            self.session.push_inflight(Inflight {
                packet_id,
                delivery,
                phase: Phase::AwaitAck,
                sent: true,
            });
        }
    }

    /// Builds the PUBLISH for a delivery. Properties are forwarded unaltered except the
    /// Message Expiry Interval, which is what is left of it [MQTT-3.3.2-6].
    fn publish_packet(
        &self,
        delivery: &Delivery,
        packet_id: Option<u16>,
        dup: bool,
        now: Instant,
    ) -> Publish {
        let m = &delivery.message;
        let properties = if self.version.is_v5() {
            let p = &m.properties;
            PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: m.remaining_expiry(now),
                topic_alias: None,
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
                subscription_identifiers: delivery.subscription_ids.clone(),
                content_type: p.content_type.clone(),
            }
        } else {
            PublishProperties::default()
        };
        Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: m.topic.clone(),
            packet_id,
            properties,
            payload: m.payload.clone(),
        }
    }

    /// Uses a topic alias when the client allows them (v5 §3.3.2.3.4): the first PUBLISH on a
    /// topic carries topic and alias, later ones the alias alone. Aliases are handed out until
    /// the client's maximum is reached and never reassigned within a connection.
    /// Returns true when this PUBLISH binds a new alias (it carries topic and alias).
    fn apply_outbound_alias(&mut self, publish: &mut Publish) -> bool {
        if self.client_topic_alias_maximum == 0 {
            return false;
        }
        if let Some(&alias) = self.outbound_aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = ByteString::new();
            return false;
        }
        let used = self.outbound_aliases.len();
        if used < usize::from(self.client_topic_alias_maximum) {
            let alias = (used + 1) as u16;
            self.outbound_aliases.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
            return true;
        }
        false
    }

    /// Resends, with their original identifiers, the PUBLISH packets not yet acknowledged (DUP
    /// set) and the PUBREL packets not yet completed [MQTT-4.4.0-1, MQTT-3.3.1-1], no more at a
    /// time than the new connection's window allows [MQTT-3.3.4-9 in 5.0]. Expiry is not
    /// re-checked: onward delivery has started [MQTT-3.3.2-5]. No topic aliases: they do not
    /// survive the connection [MQTT-3.3.2-7]. A PUBLISH now larger than the client accepts is
    /// discarded as if delivered [MQTT-3.1.2-25].
    fn resend_inflight(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        if self.session.unsent() == 0 {
            return;
        }
        let window = self.window();
        let mut sent = self.session.inflight().len() - self.session.unsent();
        let mut idx = 0;
        while idx < self.session.inflight().len() && sent < window {
            let i = &self.session.inflight()[idx];
            if i.sent {
                idx += 1;
                continue;
            }
            let packet = match i.phase {
                Phase::AwaitAck => {
                    Packet::Publish(self.publish_packet(&i.delivery, Some(i.packet_id), true, now))
                }
                Phase::AwaitComp => Packet::Pubrel(PubAck::new(i.packet_id)),
            };
            let fits = codec::encoded_len(&packet, self.version)
                .is_ok_and(|n| n <= self.client_max_packet_size as usize);
            if !fits {
                self.session.remove_inflight(idx);
                effects.push(Effect::Dropped(DropReason::TooLarge));
                continue;
            }
            if matches!(packet, Packet::Publish(_)) {
                self.sent_publishes += 1;
            }
            self.write(&packet);
            self.session.mark_sent(idx);
            sent += 1;
            idx += 1;
        }
    }

    /// Encodes a packet into `out`. Packets built here are always encodable (bounded fields,
    /// known version); a failure would be a bug, and dropping the packet is safer than writing
    /// a partial frame.
    fn write(&mut self, packet: &Packet) {
        let _ = codec::encode(packet, self.version, &mut self.out);
    }

    /// Encodes a server DISCONNECT for v5 clients (older versions have none). The reason string
    /// is left out if it would make the packet larger than the client accepts [MQTT-3.1.2-25].
    pub fn write_disconnect(&mut self, reason: ReasonCode, detail: Option<&str>) {
        if !self.version.is_v5() {
            return;
        }
        let mut d = Disconnect::new(reason);
        d.properties.reason_string = detail.map(ByteString::from);
        let fits = codec::encoded_len(&Packet::Disconnect(d.clone()), self.version)
            .is_ok_and(|n| n <= self.client_max_packet_size as usize);
        if !fits {
            d.properties.reason_string = None;
        }
        self.write(&Packet::Disconnect(d));
    }
}
