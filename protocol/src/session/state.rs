//! The MQTT session: the state that outlives a network connection (3.1.1 §4.1, 5.0 §4.1).
//!
//! It is plain data so that a takeover can move it, whole, from one client actor to another:
//! subscriptions, QoS 1/2 messages in flight towards the client, the queue of messages waiting
//! for the window or for the client to come back, and the packet identifiers of QoS 2 messages
//! received but not yet released.

use std::collections::{HashMap, HashSet, VecDeque};

use bytestring::ByteString;

use crate::packet::{QoS, SubscriptionOptions};
use crate::session::limits::DropPolicy;
use crate::session::message::Delivery;

/// One subscription of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Options, with the QoS already capped to what was granted.
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier.
    pub id: Option<u32>,
}

/// Where a QoS 1/2 message sent to the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    AwaitAck,
    /// PUBREL sent, waiting for PUBCOMP (QoS 2).
    AwaitComp,
}

/// A message in flight towards the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// Packet identifier it was sent with; kept on resend [MQTT-4.4.0-1].
    pub packet_id: u16,
    /// The delivery.
    pub delivery: Delivery,
    /// Handshake phase.
    pub phase: Phase,
    /// False between a resumption and its resend: the message is still unacknowledged, but this
    /// connection has not seen it yet (it goes out as the new window allows).
    pub sent: bool,
}

/// Retained messages owed because of a subscription [MQTT-3.3.1-9 in 5.0, MQTT-3.3.1-6 in
/// 3.1.1], read from the retained store a page at a time as the window and the socket allow.
/// A cursor costs the same whether one message or a million match, so neither a wide filter
/// nor a flood of SUBSCRIBE packets can make a session hold copies of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedCursor {
    /// The filter (without any share prefix).
    pub filter: ByteString,
    /// The subscription the messages are sent for.
    pub subscription: Subscription,
    /// Topic of the last message taken; the next page starts after it.
    pub after: Option<ByteString>,
    /// Only messages stored up to this point of the store's history: later ones reach the
    /// subscription live, through the route table.
    pub watermark: u64,
    /// True once the store had nothing more.
    pub exhausted: bool,
}

/// Why a message meant for this session was not delivered (counted per client and per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The queue was full (drop policy applied).
    QueueFull,
    /// The Message Expiry Interval passed while queued [MQTT-3.3.2-5].
    Expired,
    /// Larger than the client's Maximum Packet Size [MQTT-3.1.2-24].
    TooLarge,
    /// QoS 0 while offline or congested, with QoS 0 queueing disabled.
    Qos0NotQueued,
}

impl DropReason {
    /// Stable label for counters and logs.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::TooLarge => "too_large",
            DropReason::Qos0NotQueued => "qos0_not_queued",
        }
    }
}

/// The session state.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Subscriptions by filter exactly as subscribed (including any `$share/{group}/` prefix).
    pub subscriptions: HashMap<ByteString, Subscription>,
    /// QoS 1/2 messages sent and not yet completed, in the order they were first sent.
    inflight: VecDeque<Inflight>,
    /// Their packet identifiers, so that finding a free one never scans a large window.
    inflight_ids: HashSet<u16>,
    /// How many of them this connection has not sent yet (after a resumption).
    unsent: usize,
    /// Messages waiting to be sent, oldest first; bounded by the queue limit.
    pub queue: VecDeque<Delivery>,
    /// Retained messages owed because of subscriptions, one cursor per filter. Never dropped
    /// for space: they are flow-controlled by the window and the write budget instead of being
    /// truncated.
    pub retained: VecDeque<RetainedCursor>,
    /// The page most recently read for the first cursor, not yet sent (at most one page).
    pub retained_page: VecDeque<Delivery>,
    /// Packet identifiers of QoS 2 messages received and not yet released (PUBREL).
    pub awaiting_rel: HashSet<u16>,
    /// Session Expiry Interval in seconds (`u32::MAX` = never).
    pub expiry_interval: u32,
    next_packet_id: u16,
    /// Topic and payload bytes of the messages in flight and queued (kept as they come and
    /// go, for `sessions top --by bytes`).
    bytes: usize,
}

/// Bytes a delivery holds: its topic and payload (shared with the other sessions it went to).
fn size(d: &Delivery) -> usize {
    d.message.topic.len() + d.message.payload.len()
}

impl SessionState {
    /// A new, empty session.
    pub fn new(expiry_interval: u32) -> Self {
        SessionState {
            expiry_interval,
            ..SessionState::default()
        }
    }

    /// The next free packet identifier, skipping those in flight [MQTT-2.2.1-3]. The caller
    /// makes sure the window is smaller than 65,535, so one is always free.
    pub fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                self.next_packet_id = 1;
            }
            let id = self.next_packet_id;
            if !self.inflight_ids.contains(&id) {
                return id;
            }
        }
    }

    /// Position of the in-flight message with this identifier. Acknowledgements usually come
    /// in order, so the search from the front is short.
    pub fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        if !self.inflight_ids.contains(&packet_id) {
            return None;
        }
        self.inflight.iter().position(|i| i.packet_id == packet_id)
    }

    /// The messages in flight, oldest first.
    pub fn inflight(&self) -> &VecDeque<Inflight> {
        &self.inflight
    }

    /// Adds a message in flight.
    pub fn push_inflight(&mut self, i: Inflight) {
        self.inflight_ids.insert(i.packet_id);
        if !i.sent {
            self.unsent += 1;
        }
        self.bytes += size(&i.delivery);
        self.inflight.push_back(i);
    }

    /// Removes the message in flight at `pos` (its exchange is complete).
    pub fn remove_inflight(&mut self, pos: usize) -> Option<Inflight> {
        let i = self.inflight.remove(pos)?;
        self.bytes = self.bytes.saturating_sub(size(&i.delivery));
        self.inflight_ids.remove(&i.packet_id);
        if !i.sent {
            self.unsent -= 1;
        }
        Some(i)
    }

    /// Moves the message in flight at `pos` to waiting for PUBCOMP.
    pub fn set_phase(&mut self, pos: usize, phase: Phase) {
        if let Some(i) = self.inflight.get_mut(pos) {
            i.phase = phase;
        }
    }

    /// Marks the message in flight at `pos` as sent on this connection.
    pub fn mark_sent(&mut self, pos: usize) {
        if let Some(i) = self.inflight.get_mut(pos) {
            if !i.sent {
                i.sent = true;
                self.unsent -= 1;
            }
        }
    }

    /// A new connection has seen none of the messages in flight.
    pub fn mark_all_unsent(&mut self) {
        for i in &mut self.inflight {
            i.sent = false;
        }
        self.unsent = self.inflight.len();
    }

    /// Messages in flight not yet sent on this connection.
    pub fn unsent(&self) -> usize {
        self.unsent
    }

    /// Queues a delivery under the limit and policy; returns a delivery that had to be dropped.
    pub fn enqueue(
        &mut self,
        delivery: Delivery,
        max: usize,
        policy: DropPolicy,
    ) -> Option<Delivery> {
        if max > 0 && self.queue.len() >= max {
            return match policy {
                DropPolicy::DropNewest => Some(delivery),
                DropPolicy::DropOldest => {
                    let oldest = self.pop_queued();
                    self.bytes += size(&delivery);
                    self.queue.push_back(delivery);
                    oldest
                }
            };
        }
        self.bytes += size(&delivery);
        self.queue.push_back(delivery);
        None
    }

    /// Takes the oldest queued message.
    pub fn pop_queued(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.bytes = self.bytes.saturating_sub(size(&d));
        Some(d)
    }

    /// Topic and payload bytes of the messages in flight and queued.
    pub fn pending_bytes(&self) -> usize {
        self.bytes
    }

    /// Removes and returns every message the client has not accepted and that may still go
    /// elsewhere: queued, retained owed, and QoS 1 in flight. Used when the session ends, so
    /// that shared-subscription messages can go to another member of their group. QoS 2
    /// messages already sent are not returned: they must not reach another client
    /// [MQTT-4.8.2-5].
    pub fn take_undelivered(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        let inflight = std::mem::take(&mut self.inflight);
        self.inflight_ids.clear();
        self.unsent = 0;
        self.bytes = 0;
        out.extend(
            inflight
                .into_iter()
                .filter(|i| i.phase == Phase::AwaitAck && i.delivery.qos == QoS::AtLeastOnce)
                .map(|i| i.delivery),
        );
        out.extend(self.queue.drain(..));
        // Retained messages owed are not the session's to hand on: they are still in the store.
        self.retained.clear();
        self.retained_page.clear();
        out
    }

    /// Everything owed to the client, for moving the session to another node: messages in
    /// flight that the client has not acknowledged (QoS 1, and QoS 2 before PUBREC), in the
    /// order they were sent, then the queue. They go out again as new PUBLISH packets there.
    /// QoS 2 messages past PUBREC are not returned: the client has them [MQTT-4.3.3-1 ..].
    pub fn take_for_migration(&mut self) -> Vec<Delivery> {
        let inflight = std::mem::take(&mut self.inflight);
        self.inflight_ids.clear();
        self.unsent = 0;
        self.bytes = 0;
        let mut out: Vec<Delivery> = inflight
            .into_iter()
            .filter(|i| i.phase == Phase::AwaitAck)
            .map(|i| i.delivery)
            .collect();
        out.extend(self.queue.drain(..));
        self.retained.clear();
        self.retained_page.clear();
        out
    }

    /// Messages held for the client: in flight plus queued plus a retained page read ahead.
    pub fn pending_len(&self) -> usize {
        self.inflight.len() + self.queue.len() + self.retained_page.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::message::Message;
    use std::sync::Arc;

    fn d(n: u8) -> Delivery {
        let m = Message::system(ByteString::from("t"), bytes::Bytes::from(vec![n]), false);
        Delivery::new(Arc::new(m), QoS::AtLeastOnce, false)
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_flight() {
        let mut s = SessionState::new(0);
        s.next_packet_id = u16::MAX - 1;
        assert_eq!(s.next_packet_id(), u16::MAX);
        s.push_inflight(Inflight {
            packet_id: 1,
            delivery: d(0),
            phase: Phase::AwaitAck,
            sent: true,
        });
        assert_eq!(s.next_packet_id(), 2);
    }

    #[test]
    fn pending_bytes_follow_the_queue_and_the_inflight_window() {
        let mut s = SessionState::new(0);
        s.enqueue(d(1), 0, DropPolicy::DropNewest);
        s.enqueue(d(2), 0, DropPolicy::DropNewest);
        assert_eq!(s.pending_bytes(), 4);
        let first = s.pop_queued().expect("queued");
        assert_eq!(s.pending_bytes(), 2);
        s.push_inflight(Inflight {
            packet_id: 1,
            delivery: first,
            phase: Phase::AwaitAck,
            sent: true,
        });
        assert_eq!(s.pending_bytes(), 4);
        s.remove_inflight(0);
        assert_eq!(s.pending_bytes(), 2);
        assert_eq!(s.take_for_migration().len(), 1);
        assert_eq!(s.pending_bytes(), 0);
    }

    #[test]
    fn queue_drop_oldest_and_newest() {
        let mut s = SessionState::new(0);
        assert!(s.enqueue(d(1), 2, DropPolicy::DropOldest).is_none());
        assert!(s.enqueue(d(2), 2, DropPolicy::DropOldest).is_none());
        let dropped = s.enqueue(d(3), 2, DropPolicy::DropOldest).expect("dropped");
        assert_eq!(dropped.message.payload[0], 1);
        let dropped = s.enqueue(d(4), 2, DropPolicy::DropNewest).expect("dropped");
        assert_eq!(dropped.message.payload[0], 4);
        let left: Vec<u8> = s.queue.iter().map(|d| d.message.payload[0]).collect();
        assert_eq!(left, vec![2, 3]);
        // Topic "t" and one payload byte each, whatever was dropped on the way.
        assert_eq!(s.pending_bytes(), 4);
    }

    #[test]
    fn unlimited_queue_when_max_is_zero() {
        let mut s = SessionState::new(0);
        for i in 0..100 {
            assert!(s.enqueue(d(i), 0, DropPolicy::DropNewest).is_none());
        }
        assert_eq!(s.queue.len(), 100);
    }
}
