//! The global route table: topic filter -> the other nodes that have a subscriber for it.
//!
//! Each node announces a filter when its first local subscriber appears and withdraws it when
//! the last goes (DESIGN §5), and a shared subscription `$share/{group}/{filter}` when the group
//! gets its first member on that node; this table is what a node has heard from its peers. A
//! publish looks the topic up here, like the local table, under a read lock: it forwards the
//! message once to each node with a direct route, and for each shared group the publisher's
//! node picks one node (itself included) to deliver to one member. Only the bridge writes it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use beamq_protocol::session::ShareRef;
use beamq_protocol::{ByteString, topic};
use parking_lot::RwLock;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// A node name, shared by every entry that names it.
pub type PeerName = Arc<str>;

/// Who routes a filter: a node, directly or for one shared group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dest {
    node: PeerName,
    share: Option<ShareRef>,
}

/// The nodes found for a topic.
#[derive(Debug, Default)]
pub struct RemoteMatches {
    /// Nodes with a matching direct subscription, each once, sorted.
    pub nodes: Vec<PeerName>,
    /// Shared groups with members on other nodes, and those nodes.
    pub shares: Vec<(ShareRef, Vec<PeerName>)>,
}

impl RemoteMatches {
    /// Empties it, keeping the allocations.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.shares.clear();
    }

    fn push(&mut self, d: &Dest) {
        match &d.share {
            None => self.nodes.push(d.node.clone()),
            Some(share) => match self.shares.iter_mut().find(|(s, _)| s == share) {
                Some((_, nodes)) => {
                    if !nodes.contains(&d.node) {
                        nodes.push(d.node.clone());
                    }
                }
                None => self.shares.push((share.clone(), vec![d.node.clone()])),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Level {
    children: FastMap<ByteString, Level>,
    nodes: Vec<Dest>,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.nodes.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    exact: FastMap<ByteString, Vec<Dest>>,
    wildcard: Level,
    by_node: FastMap<PeerName, HashSet<ByteString>>,
}

/// The table.
#[derive(Debug, Default)]
pub struct RemoteRoutes {
    inner: RwLock<Inner>,
}

impl RemoteRoutes {
    /// True when no peer routes anything (the publish path skips the lookup then).
    pub fn is_empty(&self) -> bool {
        self.inner.read().by_node.is_empty()
    }

    /// Number of (filter, node) routes.
    pub fn len(&self) -> usize {
        self.inner.read().by_node.values().map(HashSet::len).sum()
    }

    /// Filters routed by `node`, sorted.
    pub fn filters_of(&self, node: &str) -> Vec<ByteString> {
        let inner = self.inner.read();
        let mut v: Vec<ByteString> = inner
            .by_node
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `node` routes `filter` (which may be `$share/{group}/...`). Invalid filters from a peer
    /// are ignored (false).
    pub fn add(&self, node: &PeerName, filter: ByteString) -> bool {
        let Some((inner, dest)) = parse(node, &filter) else {
            return false;
        };
        let mut inner_table = self.inner.write();
        let known = inner_table.by_node.entry(node.clone()).or_default();
        if !known.insert(canonical(&dest, &inner)) {
            return true;
        }
        let list = if topic::has_wildcards(&inner) {
            let mut level = &mut inner_table.wildcard;
            for part in inner.split('/') {
                level = level.children.entry(ByteString::from(part)).or_default();
            }
            &mut level.nodes
        } else {
            inner_table.exact.entry(inner).or_default()
        };
        if !list.contains(&dest) {
            list.push(dest);
        }
        true
    }

    /// `node` no longer routes `filter`.
    pub fn remove(&self, node: &str, filter: &str) {
        let Some((inner_filter, dest)) = parse(&PeerName::from(node), filter) else {
            return;
        };
        let key = canonical(&dest, &inner_filter);
        let mut inner = self.inner.write();
        let Some(known) = inner.by_node.get_mut(node) else {
            return;
        };
        if !known.remove(&key) {
            return;
        }
        if known.is_empty() {
            inner.by_node.remove(node);
        }
        unlink(&mut inner, node, &key);
    }

    /// Replaces everything known of `node` with `filters` (a full sync).
    pub fn replace(&self, node: &PeerName, filters: Vec<String>) {
        self.purge(node);
        for f in filters {
            self.add(node, ByteString::from(f));
        }
    }

    /// Forgets every route of `node` (it is down or left). Returns how many there were.
    pub fn purge(&self, node: &str) -> usize {
        let mut inner = self.inner.write();
        let Some(known) = inner.by_node.remove(node) else {
            return 0;
        };
        for filter in &known {
            unlink(&mut inner, node, filter);
        }
        known.len()
    }

    /// The nodes with a filter matching `topic`, into `out` (cleared first). Wildcards at the
    /// first level never match a `$` topic [MQTT-4.7.2-1].
    pub fn lookup(&self, topic: &str, out: &mut RemoteMatches) {
        out.clear();
        let inner = self.inner.read();
        if let Some(dests) = inner.exact.get(topic) {
            dests.iter().for_each(|d| out.push(d));
        }
        if !inner.wildcard.is_empty() {
            walk(
                &inner.wildcard,
                topic.split('/'),
                true,
                topic.starts_with('$'),
                out,
            );
        }
        if out.nodes.len() > 1 {
            out.nodes.sort();
            out.nodes.dedup();
        }
    }
}

/// One spelling per route (`$queue/f` and `$share/$queue/f` are the same group), so that a
/// route announced one way can be withdrawn the other.
fn canonical(dest: &Dest, inner: &ByteString) -> ByteString {
    match &dest.share {
        None => inner.clone(),
        Some(share) => ByteString::from(format!("$share/{}/{}", share.group, inner)),
    }
}

/// The inner filter and the destination of a route as announced.
fn parse(node: &PeerName, filter: &str) -> Option<(ByteString, Dest)> {
    let split = topic::split_shared(filter).ok()?;
    topic::validate_filter(split.filter, 1024).ok()?;
    let inner = ByteString::from(split.filter);
    let share = split.group.map(|g| ShareRef {
        group: ByteString::from(g),
        filter: inner.clone(),
    });
    Some((
        inner,
        Dest {
            node: node.clone(),
            share,
        },
    ))
}

fn walk<'a>(
    level: &Level,
    mut parts: std::str::Split<'a, char>,
    at_root: bool,
    dollar: bool,
    out: &mut RemoteMatches,
) {
    let wild_ok = !(at_root && dollar);
    if wild_ok {
        if let Some(hash) = level.children.get("#") {
            hash.nodes.iter().for_each(|d| out.push(d));
        }
    }
    let Some(part) = parts.next() else {
        level.nodes.iter().for_each(|d| out.push(d));
        return;
    };
    if let Some(child) = level.children.get(part) {
        walk(child, parts.clone(), false, dollar, out);
    }
    if wild_ok {
        if let Some(plus) = level.children.get("+") {
            walk(plus, parts, false, dollar, out);
        }
    }
}

/// Removes the route `filter` of `node` and prunes what becomes empty.
fn unlink(inner: &mut Inner, node: &str, filter: &str) {
    let Some((inner_filter, dest)) = parse(&PeerName::from(node), filter) else {
        return;
    };
    if !topic::has_wildcards(&inner_filter) {
        if let Some(list) = inner.exact.get_mut(&inner_filter) {
            list.retain(|d| *d != dest);
            if list.is_empty() {
                inner.exact.remove(&inner_filter);
            }
        }
        return;
    }
    let parts: Vec<&str> = inner_filter.split('/').collect();
    prune(&mut inner.wildcard, &parts, &dest);
}

fn prune(level: &mut Level, parts: &[&str], dest: &Dest) {
    match parts.split_first() {
        None => level.nodes.retain(|d| d != dest),
        Some((first, rest)) => {
            if let Some(child) = level.children.get_mut(*first) {
                prune(child, rest, dest);
                if child.is_empty() {
                    level.children.remove(*first);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> PeerName {
        Arc::from(s)
    }

    fn found(t: &RemoteRoutes, topic: &str) -> Vec<String> {
        let mut out = RemoteMatches::default();
        t.lookup(topic, &mut out);
        out.nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn shared_routes_are_found_per_group_with_their_nodes() {
        let t = RemoteRoutes::default();
        let (b2, b3) = (name("b2@h"), name("b3@h"));
        assert!(t.add(&b2, "$share/g/a/+".into()));
        assert!(t.add(&b3, "$share/g/a/+".into()));
        assert!(t.add(&b3, "$queue/a/b".into()));
        assert!(t.add(&b2, "a/b".into()));
        assert!(!t.add(&b2, "$share/g".into()), "invalid share ignored");
        let mut out = RemoteMatches::default();
        t.lookup("a/b", &mut out);
        assert_eq!(out.nodes, std::slice::from_ref(&b2));
        let mut shares: Vec<(String, String, Vec<String>)> = out
            .shares
            .iter()
            .map(|(s, n)| {
                let mut n: Vec<String> = n.iter().map(|x| x.to_string()).collect();
                n.sort();
                (s.group.to_string(), s.filter.to_string(), n)
            })
            .collect();
        shares.sort();
        assert_eq!(
            shares,
            [
                ("$queue".into(), "a/b".into(), vec!["b3@h".to_string()]),
                (
                    "g".into(),
                    "a/+".into(),
                    vec!["b2@h".to_string(), "b3@h".to_string()]
                ),
            ]
        );
        t.remove("b3@h", "$share/g/a/+");
        t.remove("b3@h", "$share/$queue/a/b");
        t.lookup("a/b", &mut out);
        assert_eq!(
            out.shares.len(),
            1,
            "both spellings of a $queue route are one route"
        );
        t.lookup("a/x", &mut out);
        assert_eq!(out.shares.len(), 1);
        assert_eq!(out.shares[0].1, std::slice::from_ref(&b2));
        assert_eq!(t.purge("b2@h"), 2);
        t.lookup("a/x", &mut out);
        assert!(out.shares.is_empty() && out.nodes.is_empty());
    }

    #[test]
    fn lookup_finds_each_node_once_and_purge_forgets_a_node() {
        let t = RemoteRoutes::default();
        let (b2, b3) = (name("b2@h"), name("b3@h"));
        assert!(t.add(&b2, "a/b".into()));
        assert!(t.add(&b2, "a/+".into()));
        assert!(t.add(&b3, "#".into()));
        assert!(!t.add(&b3, "a/#/b".into()), "invalid filter ignored");
        assert_eq!(found(&t, "a/b"), ["b2@h", "b3@h"]);
        assert_eq!(found(&t, "x"), ["b3@h"]);
        assert_eq!(found(&t, "$SYS/x"), Vec::<String>::new(), "[MQTT-4.7.2-1]");
        assert_eq!(t.len(), 3);
        assert_eq!(t.purge("b3@h"), 1);
        assert_eq!(found(&t, "x"), Vec::<String>::new());
        t.remove("b2@h", "a/+");
        assert_eq!(found(&t, "a/c"), Vec::<String>::new());
        assert_eq!(found(&t, "a/b"), ["b2@h"]);
        t.replace(&b2, vec!["c".into()]);
        assert_eq!(found(&t, "a/b"), Vec::<String>::new());
        assert_eq!(found(&t, "c"), ["b2@h"]);
        assert!(t.purge("b2@h") == 1 && t.is_empty());
    }

    proptest! {
        /// The table agrees with matching every announced filter one by one.
        #[test]
        fn lookup_agrees_with_filter_matching(
            routes in proptest::collection::vec(
                (0..3usize, proptest::sample::select(vec![
                    "a", "a/b", "a/+", "+/b", "#", "a/#", "+/+", "$SYS/#", "+", "a/b/c",
                ])),
                0..20,
            ),
            topic in proptest::sample::select(vec!["a", "a/b", "a/c", "x/b", "a/b/c", "$SYS/x", "b"]),
        ) {
            let t = RemoteRoutes::default();
            let names = [name("n0"), name("n1"), name("n2")];
            for (n, f) in &routes {
                t.add(&names[*n], ByteString::from(*f));
            }
            let mut expected: Vec<String> = routes
                .iter()
                .filter(|(_, f)| topic::matches(f, topic))
                .map(|(n, _)| format!("n{n}"))
                .collect();
            expected.sort();
            expected.dedup();
            prop_assert_eq!(found(&t, topic), expected);
        }
    }
}
