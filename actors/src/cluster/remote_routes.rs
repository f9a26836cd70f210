//! The global route table: topic filter -> the other nodes that have a subscriber for it.
//!
//! Each node announces a filter when its first local subscriber appears and withdraws it when
//! the last goes (DESIGN §5); this table is what a node has heard from its peers. A publish
//! looks the topic up here, like the local table, under a read lock, and forwards the message
//! once to each node found. Only the bridge actor writes it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use beamq_protocol::{ByteString, topic};
use parking_lot::RwLock;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// A node name, shared by every entry that names it.
pub type PeerName = Arc<str>;

#[derive(Debug, Default)]
struct Level {
    children: FastMap<ByteString, Level>,
    nodes: Vec<PeerName>,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.nodes.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    exact: FastMap<ByteString, Vec<PeerName>>,
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

    /// Nodes that route `filter` exactly (as announced), sorted.
    pub fn nodes_for_filter(&self, filter: &str) -> Vec<PeerName> {
        let inner = self.inner.read();
        let mut v: Vec<PeerName> = inner
            .by_node
            .iter()
            .filter(|(_, fs)| fs.contains(filter))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// `node` routes `filter`. Invalid filters from a peer are ignored (false).
    pub fn add(&self, node: &PeerName, filter: ByteString) -> bool {
        if topic::validate_filter(&filter, 1024).is_err() {
            return false;
        }
        let mut inner = self.inner.write();
        let known = inner.by_node.entry(node.clone()).or_default();
        if !known.insert(filter.clone()) {
            return true;
        }
        let list = if topic::has_wildcards(&filter) {
            let mut level = &mut inner.wildcard;
            for part in filter.split('/') {
                level = level.children.entry(ByteString::from(part)).or_default();
            }
            &mut level.nodes
        } else {
            inner.exact.entry(filter).or_default()
        };
        if !list.iter().any(|n| n == node) {
            list.push(node.clone());
        }
        true
    }

    /// `node` no longer routes `filter`.
    pub fn remove(&self, node: &str, filter: &str) {
        let mut inner = self.inner.write();
        let Some(known) = inner.by_node.get_mut(node) else {
            return;
        };
        if !known.remove(filter) {
            return;
        }
        if known.is_empty() {
            inner.by_node.remove(node);
        }
        unlink(&mut inner, node, filter);
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

    /// The nodes with a filter matching `topic`, each once, into `out` (cleared first).
    /// Wildcards at the first level never match a `$` topic [MQTT-4.7.2-1].
    pub fn lookup(&self, topic: &str, out: &mut Vec<PeerName>) {
        out.clear();
        let inner = self.inner.read();
        if let Some(nodes) = inner.exact.get(topic) {
            out.extend(nodes.iter().cloned());
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
        if out.len() > 1 {
            out.sort();
            out.dedup();
        }
    }
}

fn walk<'a>(
    level: &Level,
    mut parts: std::str::Split<'a, char>,
    at_root: bool,
    dollar: bool,
    out: &mut Vec<PeerName>,
) {
    let wild_ok = !(at_root && dollar);
    if wild_ok {
        if let Some(hash) = level.children.get("#") {
            out.extend(hash.nodes.iter().cloned());
        }
    }
    let Some(part) = parts.next() else {
        out.extend(level.nodes.iter().cloned());
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

/// Removes `node` from `filter`'s entry and prunes what becomes empty.
fn unlink(inner: &mut Inner, node: &str, filter: &str) {
    if !topic::has_wildcards(filter) {
        if let Some(list) = inner.exact.get_mut(filter) {
            list.retain(|n| &**n != node);
            if list.is_empty() {
                inner.exact.remove(filter);
            }
        }
        return;
    }
    let parts: Vec<&str> = filter.split('/').collect();
    prune(&mut inner.wildcard, &parts, node);
}

fn prune(level: &mut Level, parts: &[&str], node: &str) {
    match parts.split_first() {
        None => level.nodes.retain(|n| &**n != node),
        Some((first, rest)) => {
            if let Some(child) = level.children.get_mut(*first) {
                prune(child, rest, node);
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
        let mut out = Vec::new();
        t.lookup(topic, &mut out);
        out.iter().map(|n| n.to_string()).collect()
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
