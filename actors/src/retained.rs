//! The retained-message store: topic -> last retained message (3.1.1 §3.3.1.3, 5.0 §3.3.1.3).
//!
//! A shared table like the route table. The publishing client writes it directly while it
//! handles the PUBLISH, so a retained message is in place before the publisher's PUBACK and
//! before any later SUBSCRIBE, whoever sends it; the retainer actor owns its upkeep (expiry
//! sweeps, statistics). It lives in the broker context, so a retainer restart loses nothing.
//!
//! Topics are kept in a trie by level so that a wildcard SUBSCRIBE visits only the branches its
//! filter can match, not every retained topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use beamq_protocol::ByteString;
use beamq_protocol::session::Message;
use parking_lot::RwLock;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<ByteString, Node, ahash::RandomState>,
    message: Option<Arc<Message>>,
}

/// Why a retained message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetainRefused {
    /// The store holds `max_retained_messages` already.
    #[error("retained message limit reached")]
    Full,
    /// The payload is larger than the retained payload limit.
    #[error("retained payload too large")]
    TooLarge,
}

/// The store.
#[derive(Debug)]
pub struct RetainedStore {
    root: RwLock<Node>,
    count: AtomicUsize,
    max_messages: usize,
    max_payload: usize,
}

impl RetainedStore {
    /// An empty store; `max_messages` 0 means unlimited.
    pub fn new(max_messages: usize, max_payload: usize) -> Self {
        RetainedStore {
            root: RwLock::new(Node::default()),
            count: AtomicUsize::new(0),
            max_messages,
            max_payload,
        }
    }

    /// Retained messages stored.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a PUBLISH with RETAIN 1: an empty payload removes the topic's retained message
    /// and is not stored [MQTT-3.3.1-6, MQTT-3.3.1-7]; anything else replaces it
    /// [MQTT-3.3.1-5].
    pub fn apply(&self, message: &Arc<Message>) -> Result<(), RetainRefused> {
        if message.payload.is_empty() {
            self.remove(&message.topic);
            return Ok(());
        }
        if message.payload.len() > self.max_payload {
            return Err(RetainRefused::TooLarge);
        }
        let mut root = self.root.write();
        let mut node = &mut *root;
        for level in message.topic.split('/') {
            node = node.children.entry(ByteString::from(level)).or_default();
        }
        if node.message.is_none() {
            if self.max_messages > 0 && self.len() >= self.max_messages {
                return Err(RetainRefused::Full);
            }
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        node.message = Some(message.clone());
        Ok(())
    }

    /// Removes the retained message of `topic`, pruning empty branches.
    pub fn remove(&self, topic: &str) -> bool {
        fn go(node: &mut Node, levels: &[&str]) -> bool {
            let Some((first, rest)) = levels.split_first() else {
                return node.message.take().is_some();
            };
            let Some(child) = node.children.get_mut(*first) else {
                return false;
            };
            let removed = go(child, rest);
            if child.message.is_none() && child.children.is_empty() {
                node.children.remove(*first);
            }
            removed
        }
        let levels: Vec<&str> = topic.split('/').collect();
        let removed = go(&mut self.root.write(), &levels);
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Every unexpired retained message whose topic matches `filter` (a valid filter without a
    /// share prefix). Wildcards at the first level skip `$` topics [MQTT-4.7.2-1].
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        fn all(node: &Node, now: Instant, out: &mut Vec<Arc<Message>>) {
            if let Some(m) = &node.message {
                if !m.is_expired(now) {
                    out.push(m.clone());
                }
            }
            for child in node.children.values() {
                all(child, now, out);
            }
        }
        fn go(
            node: &Node,
            levels: &[&str],
            at_root: bool,
            now: Instant,
            out: &mut Vec<Arc<Message>>,
        ) {
            let Some((first, rest)) = levels.split_first() else {
                if let Some(m) = &node.message {
                    if !m.is_expired(now) {
                        out.push(m.clone());
                    }
                }
                return;
            };
            let visible = |name: &ByteString| !(at_root && name.starts_with('$'));
            match *first {
                "#" => {
                    // "#" also matches the parent level [MQTT-4.7.1-2].
                    if !at_root {
                        if let Some(m) = &node.message {
                            if !m.is_expired(now) {
                                out.push(m.clone());
                            }
                        }
                    }
                    for (name, child) in &node.children {
                        if visible(name) {
                            all(child, now, out);
                        }
                    }
                }
                "+" => {
                    for (name, child) in &node.children {
                        if visible(name) {
                            go(child, rest, false, now, out);
                        }
                    }
                }
                level => {
                    if let Some(child) = node.children.get(level) {
                        go(child, rest, false, now, out);
                    }
                }
            }
        }
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        go(&self.root.read(), &levels, true, now, &mut out);
        out
    }

    /// Removes expired retained messages; returns how many.
    pub fn sweep_expired(&self, now: Instant) -> usize {
        fn go(node: &mut Node, now: Instant) -> usize {
            let mut n = 0;
            if node.message.as_ref().is_some_and(|m| m.is_expired(now)) {
                node.message = None;
                n += 1;
            }
            node.children.retain(|_, child| {
                n += go(child, now);
                child.message.is_some() || !child.children.is_empty()
            });
            n
        }
        let n = go(&mut self.root.write(), now);
        self.count.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Removes everything; returns how many were removed.
    pub fn clear(&self) -> usize {
        let mut root = self.root.write();
        *root = Node::default();
        self.count.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beamq_protocol::Bytes;
    use std::time::Duration;

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message::system(
            ByteString::from(topic),
            Bytes::from_static(payload),
            true,
        ))
    }

    fn topics(v: Vec<Arc<Message>>) -> Vec<String> {
        let mut t: Vec<String> = v.iter().map(|m| m.topic.to_string()).collect();
        t.sort();
        t
    }

    #[test]
    fn set_replace_and_clear_with_empty_payload() {
        let s = RetainedStore::new(0, 1024);
        let now = Instant::now();
        s.apply(&msg("a/b", b"1")).expect("stored");
        s.apply(&msg("a/b", b"2")).expect("replaced");
        assert_eq!(s.len(), 1);
        assert_eq!(&s.matching("a/b", now)[0].payload[..], b"2");
        s.apply(&msg("a/b", b"")).expect("cleared");
        assert_eq!(s.len(), 0);
        assert!(s.matching("#", now).is_empty());
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let s = RetainedStore::new(0, 1024);
        let now = Instant::now();
        for t in ["a", "a/b", "a/b/c", "a/x/c", "$SYS/up", "b"] {
            s.apply(&msg(t, b"x")).expect("stored");
        }
        assert_eq!(
            topics(s.matching("a/#", now)),
            ["a", "a/b", "a/b/c", "a/x/c"]
        );
        assert_eq!(topics(s.matching("a/+/c", now)), ["a/b/c", "a/x/c"]);
        assert_eq!(
            topics(s.matching("#", now)),
            ["a", "a/b", "a/b/c", "a/x/c", "b"]
        );
        assert_eq!(topics(s.matching("+", now)), ["a", "b"]);
        assert_eq!(topics(s.matching("$SYS/#", now)), ["$SYS/up"]);
    }

    #[test]
    fn limits_are_enforced() {
        let s = RetainedStore::new(1, 4);
        s.apply(&msg("a", b"x")).expect("stored");
        assert_eq!(s.apply(&msg("b", b"x")), Err(RetainRefused::Full));
        assert_eq!(s.apply(&msg("a", b"12345")), Err(RetainRefused::TooLarge));
        s.apply(&msg("a", b"y")).expect("replacing is not growing");
    }

    #[test]
    fn expired_messages_are_hidden_then_swept() {
        let s = RetainedStore::new(0, 1024);
        let t0 = Instant::now();
        let mut m = Message::system(ByteString::from("e"), Bytes::from_static(b"x"), true);
        m.expires_at = Some(t0 + Duration::from_secs(5));
        s.apply(&Arc::new(m)).expect("stored");
        assert_eq!(s.matching("e", t0).len(), 1);
        let later = t0 + Duration::from_secs(6);
        assert!(s.matching("e", later).is_empty());
        assert_eq!(s.sweep_expired(later), 1);
        assert_eq!(s.len(), 0);
    }

    mod reference {
        use super::*;
        use crate::testing::{filter_strategy, topic_strategy};
        use beamq_protocol::topic;
        use proptest::prelude::*;

        proptest! {
            /// The trie walk returns exactly the retained topics `topic::matches` accepts.
            #[test]
            fn matching_agrees_with_the_reference_matcher(
                topics in proptest::collection::btree_set(topic_strategy(), 1..16),
                filter in filter_strategy(),
            ) {
                let s = RetainedStore::new(0, 1024);
                let now = Instant::now();
                for t in &topics {
                    s.apply(&msg(t, b"x")).expect("stored");
                }
                let got = topics_of(s.matching(&filter, now));
                let want: Vec<String> = topics
                    .iter()
                    .filter(|t| topic::matches(&filter, t))
                    .cloned()
                    .collect();
                prop_assert_eq!(got, want);
            }
        }

        fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
            Arc::new(Message::system(
                ByteString::from(topic),
                Bytes::from_static(payload),
                true,
            ))
        }

        fn topics_of(v: Vec<Arc<Message>>) -> Vec<String> {
            let mut t: Vec<String> = v.iter().map(|m| m.topic.to_string()).collect();
            t.sort();
            t
        }
    }
}
