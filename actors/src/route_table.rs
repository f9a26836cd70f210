//! The route table: topic filter -> subscribers, the ETS analogue of DESIGN §4.
//!
//! Publishing clients read it directly, concurrently, under read locks; only router actors write
//! it. It lives in the [`crate::broker::Broker`] context, above the routers, so a router that
//! crashes and restarts finds every subscription still in place.
//!
//! Filters without wildcards sit in a sharded hash map (one lookup per publish); wildcard
//! filters sit in a trie walked level by level. A filter's subscribers are either direct
//! (one per client id) or members of shared-subscription groups.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use beamq_protocol::session::{ShareRef, Subscription};
use beamq_protocol::topic::{self, SplitFilter};
use beamq_protocol::{ByteString, QoS};
use parking_lot::RwLock;

use crate::config::ShareStrategy;
use crate::link::ClientHandle;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

const SHARDS: usize = 16;

/// A subscriber of one filter.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// Who.
    pub client: ClientHandle,
    /// With which options.
    pub subscription: Subscription,
}

#[derive(Debug)]
struct ShareGroup {
    name: ByteString,
    members: Vec<RouteEntry>,
    /// Round-robin position, or the sticky member's index.
    cursor: AtomicUsize,
}

#[derive(Debug, Default)]
struct FilterSubs {
    /// The filter (without share prefix), for [`ShareRef`]s.
    filter: ByteString,
    direct: FastMap<ByteString, RouteEntry>,
    groups: Vec<ShareGroup>,
}

impl FilterSubs {
    fn new(filter: ByteString) -> Self {
        FilterSubs {
            filter,
            ..FilterSubs::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.groups.is_empty()
    }
}

#[derive(Debug, Default)]
struct Node {
    children: FastMap<ByteString, Node>,
    subs: Option<FilterSubs>,
}

/// One subscriber that a publish reaches, with what its matching subscriptions decided.
#[derive(Debug, Clone)]
pub struct Match {
    /// Who.
    pub client: ClientHandle,
    /// Highest granted QoS over the matching subscriptions [MQTT-3.3.4-2].
    pub qos: QoS,
    /// Retain As Published on any matching subscription.
    pub retain_as_published: bool,
    /// Subscription identifiers of the matching subscriptions.
    pub subscription_ids: Vec<u32>,
    /// Set for a shared-subscription delivery.
    pub share: Option<ShareRef>,
}

/// Reusable buffer for the result of a lookup. Direct matches of the same client are merged
/// into one (one PUBLISH carrying every subscription identifier); shared ones never are.
#[derive(Debug, Default)]
pub struct Matches {
    /// The matches.
    pub list: Vec<Match>,
    index: FastMap<usize, usize>,
}

impl Matches {
    /// Empties the buffer, keeping its allocation.
    pub fn clear(&mut self) {
        self.list.clear();
        self.index.clear();
    }

    fn push_direct(&mut self, e: &RouteEntry) {
        let key = Arc::as_ptr(&e.client) as usize;
        let found = if self.list.len() <= 8 {
            self.list
                .iter()
                .position(|m| m.share.is_none() && Arc::as_ptr(&m.client) as usize == key)
        } else {
            if self.index.is_empty() {
                for (i, m) in self.list.iter().enumerate() {
                    if m.share.is_none() {
                        self.index.insert(Arc::as_ptr(&m.client) as usize, i);
                    }
                }
            }
            self.index.get(&key).copied()
        };
        let opts = &e.subscription.options;
        match found {
            Some(i) => {
                let m = &mut self.list[i];
                m.qos = m.qos.max(opts.qos);
                m.retain_as_published |= opts.retain_as_published;
                m.subscription_ids.extend(e.subscription.id);
            }
            None => {
                if !self.index.is_empty() {
                    self.index.insert(key, self.list.len());
                }
                self.list.push(Match {
                    client: e.client.clone(),
                    qos: opts.qos,
                    retain_as_published: opts.retain_as_published,
                    subscription_ids: e.subscription.id.into_iter().collect(),
                    share: None,
                });
            }
        }
    }
}

/// The table.
#[derive(Debug)]
pub struct RouteTable {
    exact: Vec<RwLock<FastMap<ByteString, FilterSubs>>>,
    wildcard: RwLock<Node>,
    wildcard_filters: AtomicUsize,
    subscriptions: AtomicUsize,
    filters: AtomicUsize,
    hasher: ahash::RandomState,
    strategy: ShareStrategy,
}

impl RouteTable {
    /// An empty table with the given shared-subscription strategy.
    pub fn new(strategy: ShareStrategy) -> Self {
        RouteTable {
            exact: (0..SHARDS)
                .map(|_| RwLock::new(FastMap::default()))
                .collect(),
            wildcard: RwLock::new(Node::default()),
            wildcard_filters: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
            filters: AtomicUsize::new(0),
            hasher: ahash::RandomState::new(),
            strategy,
        }
    }

    fn shard(&self, topic: &str) -> &RwLock<FastMap<ByteString, FilterSubs>> {
        let i = (self.hasher.hash_one(topic) as usize) % SHARDS;
        &self.exact[i]
    }

    /// Subscriptions in the table (a shared-group member counts as one).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Distinct filters (shared groups count with their filter).
    pub fn filter_count(&self) -> usize {
        self.filters.load(Ordering::Relaxed)
    }

    /// Adds or replaces `client`'s subscription to `filter` (which may carry a share prefix).
    /// Returns false for a filter that is not valid (the channel refuses those first).
    pub fn insert(&self, filter: &ByteString, entry: RouteEntry) -> bool {
        let Ok(split) = topic::split_shared(filter) else {
            return false;
        };
        let inner = inner_filter(filter, &split);
        self.with_subs_mut(&inner, true, |subs| {
            let Some(subs) = subs else { return };
            let added = match split.group {
                None => subs
                    .direct
                    .insert(entry.client.client_id.clone(), entry)
                    .is_none(),
                Some(group) => add_member(subs, group, entry),
            };
            if added {
                self.subscriptions.fetch_add(1, Ordering::Relaxed);
            }
        });
        true
    }

    /// Removes `client`'s subscription to `filter`, but only if the entry still belongs to this
    /// very client actor: after a takeover the new actor's entry must stay.
    pub fn remove(&self, filter: &ByteString, client: &ClientHandle) -> bool {
        let Ok(split) = topic::split_shared(filter) else {
            return false;
        };
        let inner = inner_filter(filter, &split);
        let mut removed = false;
        self.with_subs_mut(&inner, false, |subs| {
            let Some(subs) = subs else { return };
            match split.group {
                None => {
                    let mine = subs
                        .direct
                        .get(&client.client_id)
                        .is_some_and(|e| Arc::ptr_eq(&e.client, client));
                    if mine {
                        subs.direct.remove(&client.client_id);
                        removed = true;
                    }
                }
                Some(group) => {
                    if let Some(gi) = subs.groups.iter().position(|g| &*g.name == group) {
                        let g = &mut subs.groups[gi];
                        if let Some(mi) = g
                            .members
                            .iter()
                            .position(|m| Arc::ptr_eq(&m.client, client))
                        {
                            g.members.remove(mi);
                            removed = true;
                        }
                        if g.members.is_empty() {
                            subs.groups.remove(gi);
                        }
                    }
                }
            }
        });
        if removed {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// True when `filter` as subscribed has a subscriber here: for a plain filter a direct
    /// subscriber, for `$share/{group}/{filter}` a member of that group. This is what a node
    /// announces to its cluster peers.
    pub fn has_route(&self, filter: &str) -> bool {
        let Ok(split) = topic::split_shared(filter) else {
            return false;
        };
        let has = |subs: &FilterSubs| match split.group {
            None => !subs.direct.is_empty(),
            Some(group) => subs.groups.iter().any(|g| &*g.name == group),
        };
        let inner = split.filter;
        if !topic::has_wildcards(inner) {
            return self.shard(inner).read().get(inner).is_some_and(has);
        }
        let root = self.wildcard.read();
        let mut node = &*root;
        for level in inner.split('/') {
            match node.children.get(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.subs.as_ref().is_some_and(has)
    }

    /// Client ids subscribed to `filter` exactly as given (a `$share/{group}/` prefix selects
    /// that group's members), sorted; for inspection.
    pub fn subscribers_of(&self, filter: &str) -> Vec<String> {
        let Ok(split) = topic::split_shared(filter) else {
            return Vec::new();
        };
        let ids = |subs: &FilterSubs| -> Vec<String> {
            match split.group {
                None => subs.direct.keys().map(|k| k.to_string()).collect(),
                Some(group) => subs
                    .groups
                    .iter()
                    .filter(|g| &*g.name == group)
                    .flat_map(|g| g.members.iter().map(|m| m.client.client_id.to_string()))
                    .collect(),
            }
        };
        let inner = split.filter;
        let mut out = if !topic::has_wildcards(inner) {
            self.shard(inner)
                .read()
                .get(inner)
                .map(ids)
                .unwrap_or_default()
        } else {
            let root = self.wildcard.read();
            let mut node = Some(&*root);
            for level in inner.split('/') {
                node = node.and_then(|n| n.children.get(level));
            }
            node.and_then(|n| n.subs.as_ref())
                .map(ids)
                .unwrap_or_default()
        };
        out.sort();
        out
    }

    /// Every route of this node, as announced to cluster peers: filters with a direct
    /// subscriber, and `$share/{group}/{filter}` for each shared group with a member.
    pub fn announced_filters(&self) -> Vec<ByteString> {
        let mut out = Vec::new();
        self.for_each_filter(|s| {
            if !s.direct.is_empty() {
                out.push(s.filter.clone());
            }
            for g in &s.groups {
                out.push(ByteString::from(format!("$share/{}/{}", g.name, s.filter)));
            }
        });
        out
    }

    /// Every subscription in the table: filter as subscribed (with its share prefix), client
    /// id and granted QoS. Unordered; for the admin listing, which sorts and pages it.
    pub fn all_subscriptions(&self) -> Vec<(ByteString, ByteString, u8)> {
        let mut out = Vec::new();
        self.for_each_filter(|s| {
            for (id, e) in &s.direct {
                out.push((
                    s.filter.clone(),
                    id.clone(),
                    e.subscription.options.qos as u8,
                ));
            }
            for g in &s.groups {
                let filter = ByteString::from(format!("$share/{}/{}", g.name, s.filter));
                for m in &g.members {
                    out.push((
                        filter.clone(),
                        m.client.client_id.clone(),
                        m.subscription.options.qos as u8,
                    ));
                }
            }
        });
        out
    }

    /// Calls `f` with every filter's subscriber set, one read lock at a time.
    fn for_each_filter(&self, mut f: impl FnMut(&FilterSubs)) {
        for shard in &self.exact {
            for s in shard.read().values() {
                f(s);
            }
        }
        fn walk(node: &Node, f: &mut impl FnMut(&FilterSubs)) {
            if let Some(s) = &node.subs {
                f(s);
            }
            for child in node.children.values() {
                walk(child, f);
            }
        }
        walk(&self.wildcard.read(), &mut f);
    }

    /// Runs `f` on the subscriber set of `filter` under the write lock, creating it if asked,
    /// and removes it (and empty trie nodes) when `f` leaves it empty.
    fn with_subs_mut(
        &self,
        filter: &ByteString,
        create: bool,
        f: impl FnOnce(Option<&mut FilterSubs>),
    ) {
        if !topic::has_wildcards(filter) {
            let mut shard = self.shard(filter).write();
            if create && !shard.contains_key(filter) {
                shard.insert(filter.clone(), FilterSubs::new(filter.clone()));
                self.filters.fetch_add(1, Ordering::Relaxed);
            }
            f(shard.get_mut(filter));
            if shard.get(filter).is_some_and(FilterSubs::is_empty) {
                shard.remove(filter);
                self.filters.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let mut root = self.wildcard.write();
        let levels: Vec<&str> = filter.split('/').collect();
        if create {
            let mut node = &mut *root;
            for level in &levels {
                node = node.children.entry(ByteString::from(*level)).or_default();
            }
            if node.subs.is_none() {
                node.subs = Some(FilterSubs::new(filter.clone()));
                self.filters.fetch_add(1, Ordering::Relaxed);
                self.wildcard_filters.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut f = Some(f);
        let emptied = node_at(&mut root, &levels, &mut |subs| {
            if let Some(f) = f.take() {
                f(subs)
            }
        });
        if emptied {
            self.filters.fetch_sub(1, Ordering::Relaxed);
            self.wildcard_filters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Finds every subscriber `topic` reaches. `publisher` is the publishing client's id (for No
    /// Local [MQTT-3.8.3-3]); it and the topic feed the hash strategies.
    pub fn lookup(&self, topic: &str, publisher: &str, out: &mut Matches) {
        out.clear();
        {
            let shard = self.shard(topic).read();
            if let Some(subs) = shard.get(topic) {
                self.collect(subs, publisher, topic, out);
            }
        }
        if self.wildcard_filters.load(Ordering::Relaxed) > 0 {
            let root = self.wildcard.read();
            let dollar = topic.starts_with('$');
            self.walk(&root, topic.split('/'), true, dollar, topic, publisher, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn walk<'a>(
        &self,
        node: &Node,
        mut levels: std::str::Split<'a, char>,
        at_root: bool,
        dollar: bool,
        topic: &str,
        publisher: &str,
        out: &mut Matches,
    ) {
        // Wildcards at the first level never match a `$` topic [MQTT-4.7.2-1].
        let wild_ok = !(at_root && dollar);
        if wild_ok {
            if let Some(hash) = node.children.get("#") {
                if let Some(subs) = &hash.subs {
                    self.collect(subs, publisher, topic, out);
                }
            }
        }
        let Some(level) = levels.next() else {
            if let Some(subs) = &node.subs {
                self.collect(subs, publisher, topic, out);
            }
            return;
        };
        if let Some(child) = node.children.get(level) {
            self.walk(child, levels.clone(), false, dollar, topic, publisher, out);
        }
        if wild_ok {
            if let Some(plus) = node.children.get("+") {
                self.walk(plus, levels, false, dollar, topic, publisher, out);
            }
        }
    }

    fn collect(&self, subs: &FilterSubs, publisher: &str, topic: &str, out: &mut Matches) {
        for e in subs.direct.values() {
            if e.subscription.options.no_local && &*e.client.client_id == publisher {
                continue;
            }
            out.push_direct(e);
        }
        for g in &subs.groups {
            if let Some(e) = self.pick(g, publisher, topic) {
                out.list.push(Match {
                    client: e.client.clone(),
                    qos: e.subscription.options.qos,
                    retain_as_published: e.subscription.options.retain_as_published,
                    subscription_ids: e.subscription.id.into_iter().collect(),
                    share: Some(ShareRef {
                        group: g.name.clone(),
                        filter: subs.filter.clone(),
                    }),
                });
            }
        }
    }

    /// Picks one member of a share group by the configured strategy, preferring members that
    /// are online: an offline member would only queue the message.
    fn pick<'g>(&self, g: &'g ShareGroup, publisher: &str, topic: &str) -> Option<&'g RouteEntry> {
        let n = g.members.len();
        if n == 0 {
            return None;
        }
        let start = match self.strategy {
            ShareStrategy::RoundRobin => g.cursor.fetch_add(1, Ordering::Relaxed) % n,
            ShareStrategy::Sticky => g.cursor.load(Ordering::Relaxed) % n,
            ShareStrategy::Random => (fast_random() as usize) % n,
            ShareStrategy::HashClientid => (stable_hash(publisher) as usize) % n,
            ShareStrategy::HashTopic => (stable_hash(topic) as usize) % n,
        };
        let chosen = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| g.members[i].client.is_online())
            .unwrap_or(start);
        if self.strategy == ShareStrategy::Sticky && chosen != start {
            g.cursor.store(chosen, Ordering::Relaxed);
        }
        Some(&g.members[chosen])
    }

    /// Picks a member of `share` other than `exclude`, for redelivering a message whose member
    /// went away. `None` when no other member exists.
    pub fn pick_other(&self, share: &ShareRef, exclude: &ClientHandle) -> Option<RouteEntry> {
        let find = |subs: &FilterSubs| -> Option<RouteEntry> {
            let g = subs.groups.iter().find(|g| g.name == share.group)?;
            let others: Vec<&RouteEntry> = g
                .members
                .iter()
                .filter(|m| !Arc::ptr_eq(&m.client, exclude))
                .collect();
            if others.is_empty() {
                return None;
            }
            let start = g.cursor.fetch_add(1, Ordering::Relaxed) % others.len();
            let i = (0..others.len())
                .map(|k| (start + k) % others.len())
                .find(|&i| others[i].client.is_online())
                .unwrap_or(start);
            Some(others[i].clone())
        };
        if topic::has_wildcards(&share.filter) {
            let root = self.wildcard.read();
            let mut node = &*root;
            for level in share.filter.split('/') {
                node = node.children.get(level)?;
            }
            node.subs.as_ref().and_then(find)
        } else {
            let shard = self.shard(&share.filter).read();
            shard.get(&*share.filter).and_then(find)
        }
    }
}

/// The filter without a share prefix, as a `ByteString` sharing the original's bytes.
fn inner_filter(full: &ByteString, split: &SplitFilter<'_>) -> ByteString {
    if split.group.is_none() {
        return full.clone();
    }
    let offset = full.len() - split.filter.len();
    full.slice_ref(&full[offset..])
}

fn add_member(subs: &mut FilterSubs, group: &str, entry: RouteEntry) -> bool {
    let gi = match subs.groups.iter().position(|g| &*g.name == group) {
        Some(gi) => gi,
        None => {
            subs.groups.push(ShareGroup {
                name: ByteString::from(group),
                members: Vec::new(),
                cursor: AtomicUsize::new(0),
            });
            subs.groups.len() - 1
        }
    };
    let g = &mut subs.groups[gi];
    match g
        .members
        .iter()
        .position(|m| m.client.client_id == entry.client.client_id)
    {
        Some(mi) => {
            g.members[mi] = entry;
            false
        }
        None => {
            g.members.push(entry);
            true
        }
    }
}

/// Walks to the node of `levels`, applies `f` to its subscriber set, and prunes the set and any
/// node left without children. Returns true when the set was removed.
fn node_at(node: &mut Node, levels: &[&str], f: &mut dyn FnMut(Option<&mut FilterSubs>)) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        f(node.subs.as_mut());
        if node.subs.as_ref().is_some_and(FilterSubs::is_empty) {
            node.subs = None;
            return true;
        }
        return false;
    };
    let Some(child) = node.children.get_mut(*first) else {
        f(None);
        return false;
    };
    let emptied = node_at(child, rest, f);
    if child.subs.is_none() && child.children.is_empty() {
        node.children.remove(*first);
    }
    emptied
}

fn stable_hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// xorshift64*: cheap randomness for the random strategy, one state per thread.
fn fast_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            ahash::RandomState::new().hash_one(std::thread::current().id()) | 1
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientMsg;
    use crate::link::ClientLink;
    use crate::testing::{filter_strategy, topic_strategy};
    use beamq_protocol::SubscriptionOptions;
    use proptest::prelude::*;
    use ractor::{Actor, ActorProcessingErr, ActorRef};

    /// A stand-in for a client actor: the table only needs something to point at.
    struct Stub;

    impl Actor for Stub {
        type Msg = ClientMsg;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<ClientMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    async fn client(id: &str) -> ClientHandle {
        let (actor, _) = Actor::spawn(None, Stub, ()).await.expect("stub starts");
        Arc::new(ClientLink::new(ByteString::from(id), actor, 100))
    }

    fn sub(qos: QoS, id: Option<u32>) -> Subscription {
        Subscription {
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
            id,
        }
    }

    fn entry(client: &ClientHandle, s: Subscription) -> RouteEntry {
        RouteEntry {
            client: client.clone(),
            subscription: s,
        }
    }

    fn matched(table: &RouteTable, topic: &str, publisher: &str) -> Vec<(String, QoS, Vec<u32>)> {
        let mut m = Matches::default();
        table.lookup(topic, publisher, &mut m);
        let mut v: Vec<_> = m
            .list
            .iter()
            .map(|m| {
                let mut ids = m.subscription_ids.clone();
                ids.sort();
                (m.client.client_id.to_string(), m.qos, ids)
            })
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn overlapping_subscriptions_merge_into_one_match() {
        // [MQTT-3.3.4-2] (5.0): one delivery with the highest QoS and every identifier.
        let t = RouteTable::new(ShareStrategy::RoundRobin);
        let a = client("a").await;
        t.insert(
            &ByteString::from("x/+"),
            entry(&a, sub(QoS::AtMostOnce, Some(1))),
        );
        t.insert(
            &ByteString::from("x/#"),
            entry(&a, sub(QoS::ExactlyOnce, Some(2))),
        );
        t.insert(
            &ByteString::from("x/y"),
            entry(&a, sub(QoS::AtLeastOnce, None)),
        );
        assert_eq!(
            matched(&t, "x/y", "p"),
            vec![("a".to_string(), QoS::ExactlyOnce, vec![1, 2])]
        );
        assert_eq!(t.subscription_count(), 3);
        assert_eq!(t.filter_count(), 3);
    }

    #[tokio::test]
    async fn no_local_skips_the_publisher_only() {
        let t = RouteTable::new(ShareStrategy::RoundRobin);
        let a = client("a").await;
        let b = client("b").await;
        let mut nl = sub(QoS::AtMostOnce, None);
        nl.options.no_local = true;
        t.insert(&ByteString::from("t"), entry(&a, nl));
        t.insert(&ByteString::from("t"), entry(&b, nl));
        let got: Vec<String> = matched(&t, "t", "a").into_iter().map(|m| m.0).collect();
        assert_eq!(got, vec!["b"]);
    }

    #[tokio::test]
    async fn removal_only_by_the_owning_actor() {
        // After a takeover the new actor's entry must survive the old actor's cleanup.
        let t = RouteTable::new(ShareStrategy::RoundRobin);
        let old = client("same").await;
        let new = client("same").await;
        let f = ByteString::from("a/+");
        t.insert(&f, entry(&old, sub(QoS::AtMostOnce, None)));
        t.insert(&f, entry(&new, sub(QoS::AtMostOnce, None)));
        assert!(!t.remove(&f, &old));
        assert_eq!(matched(&t, "a/b", "p").len(), 1);
        assert!(t.remove(&f, &new));
        assert!(matched(&t, "a/b", "p").is_empty());
        assert_eq!(t.subscription_count(), 0);
        assert_eq!(t.filter_count(), 0);
    }

    #[tokio::test]
    async fn shared_group_round_robin_and_redelivery_target() {
        let t = RouteTable::new(ShareStrategy::RoundRobin);
        let members = [client("m1").await, client("m2").await, client("m3").await];
        let f = ByteString::from("$share/g/s/#");
        for m in &members {
            t.insert(&f, entry(m, sub(QoS::AtLeastOnce, None)));
        }
        let mut counts = std::collections::HashMap::new();
        for _ in 0..30 {
            let got = matched(&t, "s/1", "p");
            assert_eq!(got.len(), 1, "exactly one member per message");
            *counts.entry(got[0].0.clone()).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n == 10), "{counts:?}");
        let share = ShareRef {
            group: ByteString::from("g"),
            filter: ByteString::from("s/#"),
        };
        for _ in 0..10 {
            let other = t.pick_other(&share, &members[0]).expect("another member");
            assert!(!Arc::ptr_eq(&other.client, &members[0]));
        }
        assert!(t.remove(&f, &members[1]));
        assert!(t.remove(&f, &members[2]));
        assert!(t.pick_other(&share, &members[0]).is_none());
    }

    #[tokio::test]
    async fn shared_group_prefers_online_members() {
        let t = RouteTable::new(ShareStrategy::RoundRobin);
        let on = client("on").await;
        let off = client("off").await;
        off.set_online(false);
        let f = ByteString::from("$queue/q");
        t.insert(&f, entry(&off, sub(QoS::AtLeastOnce, None)));
        t.insert(&f, entry(&on, sub(QoS::AtLeastOnce, None)));
        for _ in 0..5 {
            assert_eq!(matched(&t, "q", "p")[0].0, "on");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The table finds exactly the filters that `topic::matches` (the reference written
        /// from the spec's examples) says match.
        #[test]
        fn lookup_agrees_with_the_reference_matcher(
            filters in proptest::collection::vec(filter_strategy(), 1..12),
            topics in proptest::collection::vec(topic_strategy(), 1..12),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async {
                let t = RouteTable::new(ShareStrategy::RoundRobin);
                let mut clients = Vec::new();
                for (i, f) in filters.iter().enumerate() {
                    let c = client(&format!("c{i}")).await;
                    t.insert(&ByteString::from(f.as_str()), entry(&c, sub(QoS::AtMostOnce, None)));
                    clients.push(c);
                }
                for topic in &topics {
                    let got: Vec<String> = matched(&t, topic, "p").into_iter().map(|m| m.0).collect();
                    let mut want: Vec<String> = filters
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| topic::matches(f, topic))
                        .map(|(i, _)| format!("c{i}"))
                        .collect();
                    want.sort();
                    prop_assert_eq!(got, want, "topic {}", topic);
                }
                Ok(())
            })?;
        }
    }
}
