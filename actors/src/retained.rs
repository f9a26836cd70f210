//! The retained-message store: topic -> last retained message (3.1.1 §3.3.1.3, 5.0 §3.3.1.3).
//!
//! A shared table like the route table. The publishing client writes it directly while it
//! handles the PUBLISH, so a retained message is in place before the publisher's PUBACK and
//! before any later SUBSCRIBE, whoever sends it; the retainer actor owns its upkeep (expiry
//! sweeps, statistics). It lives in the broker context, so a retainer restart loses nothing.
//!
//! Topics are kept in a trie by level, children in order, so that a wildcard SUBSCRIBE visits
//! only the branches its filter can match, and reads them a page at a time ([`RetainedStore::page`]):
//! a subscriber owed a million retained messages holds a cursor, not a million references.
//! Every stored message carries a sequence number; a subscription reads only what was stored
//! before it was in place (its watermark), since later messages reach it live.
//!
//! Stored messages are detached from the frames they were decoded from
//! ([`Message::for_keeping`]): a retained message lives long, and a slice of a read buffer would
//! keep the whole buffer alive.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use beamq_protocol::ByteString;
use beamq_protocol::session::Message;
use parking_lot::RwLock;

#[derive(Debug, Default)]
struct Node {
    children: BTreeMap<ByteString, Node>,
    message: Option<(Arc<Message>, u64)>,
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
    /// Topic and payload bytes stored (for the admin's memory estimate).
    bytes: AtomicUsize,
    /// Sequence number of the last message stored (written under the write lock).
    seq: AtomicU64,
    max_messages: usize,
    max_payload: usize,
}

impl RetainedStore {
    /// An empty store; `max_messages` 0 means unlimited.
    pub fn new(max_messages: usize, max_payload: usize) -> Self {
        RetainedStore {
            root: RwLock::new(Node::default()),
            count: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            max_messages,
            max_payload,
        }
    }

    /// Retained messages stored.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Topic and payload bytes stored.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sequence number of the last message stored: a subscription that reads up to it sees
    /// everything stored before it was in place.
    pub fn watermark(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
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
        let kept = message.for_keeping();
        let mut root = self.root.write();
        let mut node = &mut *root;
        for level in message.topic.split('/') {
            // Look up before inserting: most retained publishes replace an existing topic,
            // and the key would be allocated for nothing.
            if !node.children.contains_key(level) {
                node.children
                    .insert(ByteString::from(level), Node::default());
            }
            let Some(child) = node.children.get_mut(level) else {
                return Ok(());
            };
            node = child;
        }
        if node.message.is_none() {
            if self.max_messages > 0 && self.len() >= self.max_messages {
                return Err(RetainRefused::Full);
            }
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        self.bytes.fetch_add(size(&kept), Ordering::Relaxed);
        if let Some((old, _)) = node.message.replace((kept, seq)) {
            self.bytes.fetch_sub(size(&old), Ordering::Relaxed);
        }
        self.seq.store(seq, Ordering::Release);
        Ok(())
    }

    /// Removes the retained message of `topic`, pruning empty branches.
    pub fn remove(&self, topic: &str) -> bool {
        fn go(node: &mut Node, levels: &[&str]) -> Option<usize> {
            let Some((first, rest)) = levels.split_first() else {
                return node.message.take().map(|(m, _)| size(&m));
            };
            let child = node.children.get_mut(*first)?;
            let removed = go(child, rest);
            if child.message.is_none() && child.children.is_empty() {
                node.children.remove(*first);
            }
            removed
        }
        let levels: Vec<&str> = topic.split('/').collect();
        let removed = go(&mut self.root.write(), &levels);
        if let Some(bytes) = removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        removed.is_some()
    }

    /// Up to `limit` unexpired retained messages whose topic matches `filter` (a valid filter
    /// without share prefix), stored no later than `watermark`, in topic order (level by
    /// level), starting after topic `after`. Fewer than `limit` means there are no more.
    /// Wildcards at the first level skip `$` topics [MQTT-4.7.2-1].
    pub fn page(
        &self,
        filter: &str,
        after: Option<&str>,
        watermark: u64,
        limit: usize,
        now: Instant,
    ) -> Vec<Arc<Message>> {
        let filter: Vec<&str> = filter.split('/').collect();
        let after: Option<Vec<&str>> = after.map(|a| a.split('/').collect());
        let mut walk = Walk {
            watermark,
            limit,
            now,
            out: Vec::new(),
        };
        let root = self.root.read();
        walk.matching(&root, &filter, after.as_deref().map(Pos::OnPath), true);
        walk.out
    }

    /// Every unexpired retained message matching `filter` (tests and small listings).
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        self.page(filter, None, u64::MAX, usize::MAX, now)
    }

    /// Removes expired retained messages; returns how many.
    pub fn sweep_expired(&self, now: Instant) -> usize {
        /// Removes expired messages below `node`; returns (messages, bytes) removed.
        fn go(node: &mut Node, now: Instant) -> (usize, usize) {
            let (mut n, mut bytes) = (0, 0);
            if node
                .message
                .as_ref()
                .is_some_and(|(m, _)| m.is_expired(now))
            {
                if let Some((m, _)) = node.message.take() {
                    bytes += size(&m);
                }
                n += 1;
            }
            node.children.retain(|_, child| {
                let (cn, cb) = go(child, now);
                n += cn;
                bytes += cb;
                child.message.is_some() || !child.children.is_empty()
            });
            (n, bytes)
        }
        let (n, bytes) = go(&mut self.root.write(), now);
        self.count.fetch_sub(n, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        n
    }

    /// Removes everything; returns how many were removed.
    pub fn clear(&self) -> usize {
        let mut root = self.root.write();
        *root = Node::default();
        self.bytes.store(0, Ordering::Relaxed);
        self.count.swap(0, Ordering::Relaxed)
    }
}

/// Bytes a retained message holds: its topic and payload.
fn size(m: &Message) -> usize {
    m.topic.len() + m.payload.len()
}

/// Where the walk stands relative to the `after` topic of a page.
#[derive(Debug, Clone, Copy)]
enum Pos<'a> {
    /// The path so far equals the first levels of `after`; these are its remaining levels.
    /// Topics here that are `after` itself or a prefix of it come before it: not taken.
    OnPath(&'a [&'a str]),
}

/// One page being read: what to take and where to stop.
struct Walk {
    watermark: u64,
    limit: usize,
    now: Instant,
    out: Vec<Arc<Message>>,
}

impl Walk {
    fn full(&self) -> bool {
        self.out.len() >= self.limit
    }

    /// Takes the message at `node` if the walk is past `after` (`bound` is `None`).
    fn take(&mut self, node: &Node, bound: Option<Pos<'_>>) {
        if bound.is_some() {
            return;
        }
        if let Some((m, seq)) = &node.message {
            if *seq <= self.watermark && !m.is_expired(self.now) {
                self.out.push(m.clone());
            }
        }
    }

    /// The children of `node` that can hold topics after `after`, in order, each with the
    /// bound its subtree is under.
    fn children<'n, 'b>(
        node: &'n Node,
        bound: Option<Pos<'b>>,
    ) -> impl Iterator<Item = (&'n ByteString, &'n Node, Option<Pos<'b>>)> {
        // Past the end of `after` every child extends it, so comes after it: no lower bound.
        let first = match bound {
            Some(Pos::OnPath(rest)) => rest.split_first().map(|(level, tail)| (*level, tail)),
            None => None,
        };
        let lower = first.map_or(Bound::Unbounded, |(level, _)| Bound::Included(level));
        node.children
            .range::<str, _>((lower, Bound::Unbounded))
            .map(move |(name, child)| {
                let child_bound = match first {
                    Some((level, tail)) if &**name == level => Some(Pos::OnPath(tail)),
                    _ => None,
                };
                (name, child, child_bound)
            })
    }

    fn matching(&mut self, node: &Node, filter: &[&str], bound: Option<Pos<'_>>, at_root: bool) {
        let Some((level, rest)) = filter.split_first() else {
            self.take(node, bound);
            return;
        };
        match *level {
            "#" => {
                // "#" also matches the parent level [MQTT-4.7.1-2], but not from the root.
                if !at_root {
                    self.take(node, bound);
                }
                self.everything_below(node, bound, at_root);
            }
            "+" => {
                for (name, child, child_bound) in Self::children(node, bound) {
                    if self.full() {
                        return;
                    }
                    if at_root && name.starts_with('$') {
                        continue;
                    }
                    self.matching(child, rest, child_bound, false);
                }
            }
            literal => {
                let Some(child) = node.children.get(literal) else {
                    return;
                };
                let child_bound = match bound {
                    None => None,
                    Some(Pos::OnPath(after)) => match after.split_first() {
                        None => None,
                        Some((a, tail)) if literal == *a => Some(Pos::OnPath(tail)),
                        // The whole subtree sorts before `after`.
                        Some((a, _)) if literal < *a => return,
                        Some(_) => None,
                    },
                };
                self.matching(child, rest, child_bound, false);
            }
        }
    }

    fn everything_below(&mut self, node: &Node, bound: Option<Pos<'_>>, at_root: bool) {
        for (name, child, child_bound) in Self::children(node, bound) {
            if self.full() {
                return;
            }
            if at_root && name.starts_with('$') {
                continue;
            }
            self.take(child, child_bound);
            if self.full() {
                return;
            }
            self.everything_below(child, child_bound, false);
        }
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
        v.iter().map(|m| m.topic.to_string()).collect()
    }

    fn sorted(v: Vec<Arc<Message>>) -> Vec<String> {
        let mut t = topics(v);
        t.sort();
        t
    }

    #[test]
    fn set_replace_and_clear_with_empty_payload() {
        let s = RetainedStore::new(0, 1024);
        let now = Instant::now();
        s.apply(&msg("a/b", b"1")).expect("stored");
        s.apply(&msg("a/b", b"22")).expect("replaced");
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.bytes(),
            3 + 2,
            "topic and payload of the replacement only"
        );
        assert_eq!(&s.matching("a/b", now)[0].payload[..], b"22");
        s.apply(&msg("a/b", b"")).expect("cleared");
        assert_eq!(s.len(), 0);
        assert_eq!(s.bytes(), 0);
        assert!(s.matching("#", now).is_empty());
        s.apply(&msg("c", b"x")).expect("stored");
        assert_eq!(s.bytes(), 2);
        s.clear();
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let s = RetainedStore::new(0, 1024);
        let now = Instant::now();
        for t in ["a", "a/b", "a/b/c", "a/x/c", "$SYS/up", "b"] {
            s.apply(&msg(t, b"x")).expect("stored");
        }
        assert_eq!(
            sorted(s.matching("a/#", now)),
            ["a", "a/b", "a/b/c", "a/x/c"]
        );
        assert_eq!(sorted(s.matching("a/+/c", now)), ["a/b/c", "a/x/c"]);
        assert_eq!(
            sorted(s.matching("#", now)),
            ["a", "a/b", "a/b/c", "a/x/c", "b"]
        );
        assert_eq!(sorted(s.matching("+", now)), ["a", "b"]);
        assert_eq!(sorted(s.matching("$SYS/#", now)), ["$SYS/up"]);
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

    #[test]
    fn pages_resume_after_the_last_topic_in_level_order() {
        let s = RetainedStore::new(0, 1024);
        let now = Instant::now();
        for t in ["a", "a/a", "a/b/c", "a/b", "b", "a/b/d", "c/x"] {
            s.apply(&msg(t, b"x")).expect("stored");
        }
        let all = topics(s.page("#", None, u64::MAX, usize::MAX, now));
        assert_eq!(all, ["a", "a/a", "a/b", "a/b/c", "a/b/d", "b", "c/x"]);
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = topics(s.page("#", after.as_deref(), u64::MAX, 2, now));
            let done = page.len() < 2;
            after = page.last().cloned().or(after);
            got.extend(page);
            if done {
                break;
            }
        }
        assert_eq!(got, all);
    }

    #[test]
    fn watermark_hides_later_messages() {
        let s = RetainedStore::new(0, 1024);
        let now = Instant::now();
        s.apply(&msg("a", b"x")).expect("stored");
        let mark = s.watermark();
        s.apply(&msg("b", b"x")).expect("stored");
        assert_eq!(topics(s.page("#", None, mark, 10, now)), ["a"]);
        // Replacing a message gives it a new sequence number: it is "later" too.
        s.apply(&msg("a", b"y")).expect("replaced");
        assert!(s.page("#", None, mark, 10, now).is_empty());
    }

    #[test]
    fn stored_messages_do_not_pin_the_frame_they_came_from() {
        let s = RetainedStore::new(0, 1024);
        let frame = Bytes::from(vec![b'x'; 4096]);
        let m = Arc::new(Message::system(
            ByteString::from("t"),
            frame.slice(0..8),
            true,
        ));
        s.apply(&m).expect("stored");
        let stored = &s.matching("t", Instant::now())[0];
        assert_eq!(&stored.payload[..], &frame[0..8]);
        assert_ne!(stored.payload.as_ptr(), frame.as_ptr());
    }

    mod reference {
        use super::*;
        use crate::testing::{filter_strategy, topic_strategy};
        use beamq_protocol::topic;
        use proptest::prelude::*;

        proptest! {
            /// The trie walk returns exactly the retained topics `topic::matches` accepts, and
            /// reading it in pages of any size gives the same sequence as reading it at once.
            #[test]
            fn paging_agrees_with_the_reference_matcher(
                topics_in in proptest::collection::btree_set(topic_strategy(), 1..16),
                filter in filter_strategy(),
                page in 1usize..5,
            ) {
                let s = RetainedStore::new(0, 1024);
                let now = Instant::now();
                for t in &topics_in {
                    s.apply(&msg(t, b"x")).expect("stored");
                }
                let whole = topics(s.page(&filter, None, u64::MAX, usize::MAX, now));
                let mut want: Vec<String> = topics_in
                    .iter()
                    .filter(|t| topic::matches(&filter, t))
                    .cloned()
                    .collect();
                want.sort();
                let mut got_sorted = whole.clone();
                got_sorted.sort();
                prop_assert_eq!(got_sorted, want);

                let mut paged = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let p = topics(s.page(&filter, after.as_deref(), u64::MAX, page, now));
                    let done = p.len() < page;
                    after = p.last().cloned().or(after);
                    paged.extend(p);
                    if done {
                        break;
                    }
                }
                prop_assert_eq!(paged, whole);
            }
        }
    }
}
