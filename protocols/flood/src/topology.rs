//! The network-wide link-state database: every node's neighbours and topics, and the
//! forwarding trees computed from it.
//!
//! Each node floods a small record (its flood neighbours and its topics) when they change. With
//! every record, every node knows the whole graph, so for a message from origin O each node can
//! compute the same breadth-first tree rooted at O and forward only to its own children in it —
//! pruned to the branches that hold a subscriber of the topic. Every reachable node then gets
//! one copy, in as few hops as the graph allows, with nothing on the wire but the message.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use bcos_p2p_core::{KeyError, NodeId, NodeKey};
use libp2p_identity::PeerId;
// foldhash, not SipHash: the keys are short ids (SHA-256 prefixes no peer picks freely), and
// hashing them was a tenth of a 128-node mesh's CPU. foldhash is hashbrown's own default
// hasher (already built here) and seeds itself per process.
use foldhash::{HashMap, HashMapExt as _, HashSet};
use sha2::{Digest as _, Sha256};

use crate::wire;

/// A node's short id: the first 8 bytes of SHA-256 over its NodeId bytes. Records list
/// neighbours by short id (8 bytes instead of 64 or more).
pub fn short_id(node_bytes: &[u8]) -> u64 {
    let hash = Sha256::digest(node_bytes);
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

/// One node's record, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub node: NodeId,
    pub incarnation: u64,
    pub version: u64,
    /// Sorted, without duplicates.
    pub neighbours: Vec<u64>,
    pub topics: BTreeSet<String>,
    /// The record as its node signed it, sent on as it came (`None` only for our own before
    /// its first publication).
    signed: Option<wire::Record>,
    /// Since when the node has not been reachable from us (None: reachable, or not computed).
    unreachable_since: Option<Instant>,
}

/// What storing a record did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// It was newer and is stored; topics it added and removed compared with the old record.
    Stored {
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// We already had it or a newer one.
    Stale,
    /// A record of ours newer than our own (from an earlier run): ours must outgrow it.
    OwnNewer {
        /// Its incarnation.
        incarnation: u64,
        /// Its version.
        version: u64,
    },
    /// The database is full; new origins are not taken.
    Full,
}

/// Where a message from some origin goes next from this node.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Our children in the origin's tree that lead to someone who wants the message or carries
    /// it for repair.
    pub children: Vec<u64>,
    /// The origin's tree (a neighbour outside it is reached by nobody else): see
    /// [`Route::in_tree`].
    tree: Arc<Tree>,
    /// Our neighbours in the tree, not our children, that want the message or lead to someone
    /// who does, and whose announcers we are (see [`Topology::route`]): we announce the
    /// message's id to them, so they can pull it if their parent did not pass it on.
    pub lazy: Vec<u64>,
}

impl Route {
    /// Whether node `id` is in the origin's tree.
    pub fn in_tree(&self, id: u64) -> bool {
        self.tree
            .graph
            .index
            .get(&id)
            .is_some_and(|&i| self.tree.contains(i))
    }

    /// The parent of node `id` in the origin's tree (None for the origin and nodes outside).
    pub fn parent_in_tree(&self, id: u64) -> Option<u64> {
        let graph = &self.tree.graph;
        let &i = graph.index.get(&id)?;
        self.tree.parent(i).map(|p| graph.ids[p as usize])
    }
}

mod paths;
pub(crate) mod view;

/// The database and its caches.
#[derive(Debug)]
pub(crate) struct Topology {
    me: u64,
    /// PeerId → short id of nodes whose PeerId was derived (for paths asked by PeerId).
    peer_ids: HashMap<PeerId, u64>,
    /// The nodes whose PeerId is in `peer_ids`.
    peer_derived: HashSet<u64>,
    entries: HashMap<u64, Entry>,
    max_entries: usize,
    /// Routes per (origin, topic); cleared whenever the graph or any topic set changes.
    routes: HashMap<RouteKey, Option<Arc<Route>>>,
    /// The graph trees are searched on, kept up to date once built (`relink`).
    graph: Option<Arc<Graph>>,
    /// Trees per origin: BFS order and parents; cleared with `routes`.
    trees: HashMap<u64, Arc<Tree>>,
    reachable: Option<Arc<Vec<u64>>>,
    digest: Option<u64>,
}

/// The graph as trees are searched on it: the nodes with a record, numbered densely, and each
/// one's links (those both ends list) in ascending short-id order. Kept up to date as records
/// change (a record moves only its own node's links and those of the nodes it lists or listed)
/// and shared by the trees computed on it: a search walks plain arrays instead of looking up
/// records and neighbour lists in hash maps, and a changed record costs its own links, not a
/// new graph. (Searching the records themselves made the trees of a 128-node mesh, one per
/// origin on every node and computed anew after every record while the mesh forms, the
/// largest part of its CPU time for broadcasts.)
#[derive(Debug, Clone)]
struct Graph {
    /// Short id per index.
    ids: Vec<u64>,
    index: HashMap<u64, u32>,
    /// The indices each node links with, in ascending short-id order.
    links: Vec<Vec<u32>>,
}

impl Graph {
    /// The nodes `i` links with, in ascending short-id order.
    fn links_of(&self, i: u32) -> &[u32] {
        &self.links[i as usize]
    }

    /// The index of `id`, a new one if it has none.
    fn index_of(&mut self, id: u64) -> u32 {
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        // At most `max_entries` records, far below u32::MAX.
        let i = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.push(id);
        self.index.insert(id, i);
        self.links.push(Vec::new());
        i
    }
}

/// No parent: the node is outside the tree.
const OUTSIDE: u32 = u32::MAX;

/// A breadth-first tree of the graph from one root, in the graph's indices.
#[derive(Debug)]
struct Tree {
    graph: Arc<Graph>,
    /// Nodes in BFS order (the root first).
    order: Vec<u32>,
    /// Each node's parent; the root's is itself, [`OUTSIDE`] for nodes outside the tree.
    parent: Vec<u32>,
}

impl Tree {
    fn root(&self) -> u32 {
        self.order[0]
    }

    fn contains(&self, i: u32) -> bool {
        self.parent[i as usize] != OUTSIDE
    }

    /// The parent of `i`; None for the root and nodes outside the tree.
    fn parent(&self, i: u32) -> Option<u32> {
        let p = self.parent[i as usize];
        (p != OUTSIDE && i != self.root()).then_some(p)
    }
}

/// What a cached route is for: origin, topic, announcers per node and per child of the origin.
type RouteKey = (u64, Option<String>, usize, usize);

/// Most cached routes before the cache starts over.
const MAX_ROUTES: usize = 8192;

/// How many announcers a node has by default (`Config::repair_announcers`).
pub(crate) const DEFAULT_ANNOUNCERS: usize = 3;

impl Topology {
    pub fn new(me: NodeId, incarnation: u64, max_entries: usize) -> Self {
        let id = short_id(me.as_bytes());
        let mut entries = HashMap::new();
        entries.insert(
            id,
            Entry {
                node: me,
                incarnation,
                version: 0,
                neighbours: Vec::new(),
                topics: BTreeSet::new(),
                signed: None,
                unreachable_since: None,
            },
        );
        Topology {
            me: id,
            peer_ids: HashMap::new(),
            peer_derived: HashSet::default(),
            entries,
            max_entries: max_entries.max(1),
            routes: HashMap::new(),
            graph: None,
            trees: HashMap::new(),
            reachable: None,
            digest: None,
        }
    }

    pub fn me(&self) -> u64 {
        self.me
    }

    /// Drops what a change of the graph makes stale: routes, trees and the digest always, the
    /// set of reachable nodes unless `keep_reachable` (the change cannot move it).
    fn changed(&mut self, keep_reachable: bool) {
        self.routes.clear();
        self.trees.clear();
        if !keep_reachable {
            self.reachable = None;
        }
        self.digest = None;
    }

    /// A record of `id` that listed `old` before (sorted; empty for a new node) is now
    /// stored: drops what it makes stale, then moves the kept graph to it (after: routes and
    /// trees share the graph, so it moves in place once they are gone).
    fn stored(&mut self, id: u64, old: &[u64], keep_reachable: bool) {
        self.changed(keep_reachable);
        self.relink(id, old);
    }

    /// Whether `id` listing `new` neighbours (sorted, deduplicated) instead of `old` (the
    /// same) leaves the reachable nodes as they are: no link goes, and no new link joins a
    /// reachable node to an unreachable one. Checking this (a few binary searches) saves a
    /// search of the whole graph per record while a mesh forms and links only come.
    fn keeps_reachable(&self, id: u64, old: &[u64], new: &[u64]) -> bool {
        let Some(reachable) = &self.reachable else {
            return false;
        };
        let is_reachable = |n: &u64| reachable.binary_search(n).is_ok();
        if old.iter().any(|n| new.binary_search(n).is_err()) {
            return false;
        }
        let inside = is_reachable(&id);
        new.iter()
            .filter(|n| old.binary_search(n).is_err())
            .all(|n| !self.linked(id, *n) || is_reachable(n) == inside)
    }

    /// Publishes a new version of our own record, signed with `key` (ours); returns it for
    /// sending. Nothing changes if signing fails.
    pub fn publish(
        &mut self,
        mut neighbours: Vec<u64>,
        topics: BTreeSet<String>,
        key: &NodeKey,
    ) -> Result<wire::Record, KeyError> {
        let me = self.entries.get_mut(&self.me).expect("own entry");
        neighbours.sort_unstable();
        neighbours.dedup();
        let mut record = wire::Record {
            key_type: me.node.key_type().code(),
            origin: bytes::Bytes::copy_from_slice(me.node.as_bytes()),
            incarnation: me.incarnation,
            // Saturates: only our own (signed) records can move this, so a peer cannot wrap it.
            version: me.version.saturating_add(1),
            neighbours,
            topics: topics.iter().cloned().collect(),
            signature: bytes::Bytes::new(),
        };
        record.signature = key.sign(&record.signed_message())?.into();
        let keep = self.keeps_reachable(
            self.me,
            &self.entries[&self.me].neighbours,
            &record.neighbours,
        );
        let me = self.entries.get_mut(&self.me).expect("own entry");
        me.version = record.version;
        let old = std::mem::replace(&mut me.neighbours, record.neighbours.clone());
        me.topics = topics;
        me.signed = Some(record.clone());
        self.stored(self.me, &old, keep);
        Ok(record)
    }

    /// Makes our record continue from `(incarnation, version)`: the next [`Self::publish`]
    /// is newer than a record of ours the network still holds.
    pub fn outgrow(&mut self, incarnation: u64, version: u64) {
        let me = self.entries.get_mut(&self.me).expect("own entry");
        me.incarnation = me.incarnation.max(incarnation);
        me.version = version;
    }

    /// The stored record of `node`, as its node signed it.
    pub fn record(&self, node: u64) -> Option<wire::Record> {
        self.entries.get(&node).and_then(|e| e.signed.clone())
    }

    /// The header of every stored record: `(short id, incarnation, version)`, in short-id
    /// order (what a SUMMARY lists).
    pub fn headers(&self) -> Vec<wire::Header> {
        let mut headers: Vec<wire::Header> = self
            .entries
            .iter()
            .filter(|(_, e)| e.signed.is_some())
            .map(|(short, e)| wire::Header {
                node: *short,
                incarnation: e.incarnation,
                version: e.version,
            })
            .collect();
        headers.sort_unstable_by_key(|h| h.node);
        headers
    }

    /// The `(incarnation, version)` held for `node`, if any.
    pub fn held(&self, node: u64) -> Option<(u64, u64)> {
        self.entries.get(&node).map(|e| (e.incarnation, e.version))
    }

    /// The published neighbours of `node`.
    pub fn neighbours_of(&self, node: u64) -> &[u64] {
        self.entries.get(&node).map_or(&[], |e| &e.neighbours)
    }

    /// Stores `record` of `node` if it is newer than what we hold. The caller has checked its
    /// signature.
    pub fn offer(&mut self, node: NodeId, record: wire::Record) -> Offer {
        let signed = record.clone();
        let id = short_id(&record.origin);
        if id == self.me {
            let mine = &self.entries[&self.me];
            return if (record.incarnation, record.version) > (mine.incarnation, mine.version) {
                Offer::OwnNewer {
                    incarnation: record.incarnation,
                    version: record.version,
                }
            } else {
                Offer::Stale // our own, echoed back
            };
        }
        let mut neighbours = record.neighbours;
        neighbours.sort_unstable();
        neighbours.dedup();
        let topics: BTreeSet<String> = record.topics.into_iter().collect();
        let full = self.entries.len() >= self.max_entries;
        let keep = self.keeps_reachable(id, self.neighbours_of(id), &neighbours);
        let (added, removed, listed) = match self.entries.get_mut(&id) {
            Some(old) if (record.incarnation, record.version) <= (old.incarnation, old.version) => {
                return Offer::Stale;
            }
            Some(old) => {
                let added = topics.difference(&old.topics).cloned().collect();
                let removed = old.topics.difference(&topics).cloned().collect();
                old.incarnation = record.incarnation;
                old.version = record.version;
                let listed = std::mem::replace(&mut old.neighbours, neighbours);
                old.topics = topics;
                old.signed = Some(signed);
                (added, removed, listed)
            }
            None if full => return Offer::Full,
            None => {
                let added = topics.iter().cloned().collect();
                self.entries.insert(
                    id,
                    Entry {
                        node,
                        incarnation: record.incarnation,
                        version: record.version,
                        neighbours,
                        topics,
                        signed: Some(signed),
                        unreachable_since: None,
                    },
                );
                (added, Vec::new(), Vec::new())
            }
        };
        self.stored(id, &listed, keep);
        Offer::Stored { added, removed }
    }

    /// Whether we and `node` list each other.
    pub fn linked_with_me(&self, node: u64) -> bool {
        self.linked(self.me, node) && self.linked(node, self.me)
    }

    /// Whether `a` and `b` list each other: only links both ends publish are used, so every
    /// node computes the same trees from the same records.
    fn linked(&self, a: u64, b: u64) -> bool {
        lists(&self.entries, b, a)
    }

    /// The graph of the records held now (see [`Graph`]), built from them if it is not kept.
    fn graph(&mut self) -> Arc<Graph> {
        if let Some(g) = &self.graph {
            return g.clone();
        }
        let mut graph = Graph {
            ids: Vec::with_capacity(self.entries.len()),
            index: HashMap::with_capacity(self.entries.len()),
            links: Vec::with_capacity(self.entries.len()),
        };
        for &a in self.entries.keys() {
            graph.index_of(a);
        }
        for i in 0..graph.ids.len() {
            graph.links[i] = links_from_record(&self.entries, &graph.index, graph.ids[i]);
        }
        let graph = Arc::new(graph);
        self.graph = Some(graph.clone());
        graph
    }

    /// Moves the kept graph (if any) to `a`'s record, now stored, which listed `old` before
    /// (sorted; empty for a new node): `a`'s own links, and `a` in the links of the nodes it
    /// lists or listed. Called by [`Topology::stored`] once routes and trees are dropped.
    fn relink(&mut self, a: u64, old: &[u64]) {
        let Some(graph) = self.graph.as_mut() else {
            return; // built from the records when next needed
        };
        let entries = &self.entries;
        // Not shared (routes and trees are gone): moves in place.
        let g = Arc::make_mut(graph);
        let ia = g.index_of(a);
        g.links[ia as usize] = links_from_record(entries, &g.index, a);
        let new = &entries[&a].neighbours;
        for &b in old {
            if b != a
                && new.binary_search(&b).is_err()
                && let Some(&ib) = g.index.get(&b)
            {
                g.links[ib as usize].retain(|&c| c != ia);
            }
        }
        for &b in new {
            if b != a
                && old.binary_search(&b).is_err()
                && lists(entries, b, a)
                && let Some(&ib) = g.index.get(&b)
            {
                let ids = &g.ids;
                let links = &mut g.links[ib as usize];
                if let Err(at) = links.binary_search_by_key(&a, |&c| ids[c as usize]) {
                    links.insert(at, ia);
                }
            }
        }
    }

    fn tree(&mut self, root: u64) -> Option<Arc<Tree>> {
        if let Some(t) = self.trees.get(&root) {
            return Some(t.clone());
        }
        if self.trees.len() >= MAX_ROUTES {
            self.trees.clear();
        }
        let graph = self.graph();
        let &r = graph.index.get(&root)?;
        let mut parent = vec![OUTSIDE; graph.ids.len()];
        parent[r as usize] = r;
        let mut order = vec![r];
        // `order` is the queue: nodes are appended as they are reached and searched in turn.
        let mut next = 0;
        while let Some(&a) = order.get(next) {
            next += 1;
            // Links are in short-id order: ties are broken the same way on every node.
            for &b in graph.links_of(a) {
                if parent[b as usize] == OUTSIDE {
                    parent[b as usize] = a;
                    order.push(b);
                }
            }
        }
        let tree = Arc::new(Tree {
            graph,
            order,
            parent,
        });
        self.trees.insert(root, tree.clone());
        Some(tree)
    }

    /// Where a message from `origin` (for `topic`, or a broadcast) goes next from this node;
    /// None when the origin is unknown or we are not in its tree (the caller then floods).
    ///
    /// The announcers of a node Y (other than the origin) are up to `announcers` of its
    /// neighbours in the tree other than its parent and the origin: those that are not Y's
    /// children before its children, and in each group those that get the message anyway
    /// first; ties in Y's ascending short-id order starting after its parent (so different
    /// origins pick different announcers). A node whose parent is the origin has one
    /// announcer: only the origin's own link can fail it (an honest origin sends its own
    /// messages); out of step the caller asks for more ([`Topology::route_with`]). The announcers of a node that wants the message and whose parent is not the
    /// origin carry it (with their paths from the origin): `children` includes them, so a
    /// multicast's subscriber cut off from its branch can be repaired from another (SPEC.md
    /// §5).
    #[cfg(test)]
    pub fn route(&mut self, origin: u64, topic: Option<&str>) -> Option<Arc<Route>> {
        self.route_with(origin, topic, DEFAULT_ANNOUNCERS, DEFAULT_ANNOUNCERS.min(1))
    }

    /// [`Topology::route`] with `announcers` announcers per node, and `of_children` for the
    /// origin's children.
    pub fn route_with(
        &mut self,
        origin: u64,
        topic: Option<&str>,
        announcers: usize,
        of_children: usize,
    ) -> Option<Arc<Route>> {
        let key = (origin, topic.map(str::to_string), announcers, of_children);
        if let Some(r) = self.routes.get(&key) {
            return r.clone();
        }
        let route = self.compute_route(origin, topic, announcers, of_children);
        if self.routes.len() >= MAX_ROUTES {
            self.routes.clear();
        }
        self.routes.insert(key, route.clone());
        route
    }

    fn compute_route(
        &mut self,
        origin: u64,
        topic: Option<&str>,
        announcers: usize,
        of_children: usize,
    ) -> Option<Arc<Route>> {
        let tree = self.tree(origin)?;
        let g = tree.graph.clone();
        let me = *g.index.get(&self.me)?;
        if !tree.contains(me) {
            return None;
        }
        let root = tree.root();
        // Which subtrees hold someone who wants the message: leaves up.
        let wants = |i: u32| match topic {
            None => true,
            Some(t) => self.entries[&g.ids[i as usize]].topics.contains(t),
        };
        let mut needed = vec![false; g.ids.len()];
        for &i in tree.order.iter().rev() {
            if i != root && (needed[i as usize] || wants(i)) {
                needed[i as usize] = true;
                if let Some(p) = tree.parent(i) {
                    needed[p as usize] = true;
                }
            }
        }
        // The announcers of a node behind a relay must hold the message to repair it: they
        // and their paths from the origin carry it too (a multicast's pruned tree alone may
        // have no other way round a relay).
        let mut carry = needed.clone();
        for &y in &tree.order {
            let Some(parent) = tree.parent(y) else {
                continue;
            };
            if parent == root || !needed[y as usize] {
                continue;
            }
            for a in announcers_of(&tree, y, announcers, |i| needed[i as usize]) {
                let mut at = Some(a);
                while let Some(x) = at {
                    if x == root || carry[x as usize] {
                        break; // its path is in already
                    }
                    carry[x as usize] = true;
                    at = tree.parent(x);
                }
            }
        }
        let mut children: Vec<u64> = tree
            .order
            .iter()
            .filter(|&&i| tree.parent(i) == Some(me) && carry[i as usize])
            .map(|&i| g.ids[i as usize])
            .collect();
        children.sort_unstable();
        let mut lazy = Vec::new();
        // Our links, in short-id order: `lazy` comes out sorted, so callers can search it.
        for &y in g.links_of(me) {
            let Some(parent) = tree.parent(y) else {
                continue; // the origin, or outside the tree
            };
            if parent == me || !carry[y as usize] {
                continue;
            }
            let count = if parent == root {
                of_children
            } else {
                announcers
            };
            if announcers_of(&tree, y, count, |i| needed[i as usize]).contains(&me) {
                lazy.push(g.ids[y as usize]);
            }
        }
        Some(Arc::new(Route {
            children,
            tree,
            lazy,
        }))
    }

    /// Whether `a`'s record lists `b` or `b`'s lists `a`: then `a` sends `b` its records
    /// itself (SPEC.md §3).
    pub fn listed_either(&self, a: u64, b: u64) -> bool {
        lists(&self.entries, a, b) || lists(&self.entries, b, a)
    }

    /// Whether this node passes `origin`'s record header on to its neighbour `to` (SPEC.md
    /// §3). Not when the records held list them with each other ([`Topology::listed_either`]).
    /// When both are in the origin's tree as the records say, only `to`'s parent there and
    /// its first `backups` announcers do, as a message goes down the tree and is announced:
    /// each node hears of a record from a few of its neighbours, not from every one that
    /// stored it. When either is outside the tree (the records do not link them to the origin
    /// yet), nobody can tell who reaches `to`, and this node does.
    pub fn passes_header(&mut self, origin: u64, to: u64, backups: usize) -> bool {
        if self.listed_either(origin, to) {
            return false;
        }
        let Some(tree) = self.tree(origin) else {
            return true;
        };
        let g = &tree.graph;
        let (Some(&t), Some(&me)) = (g.index.get(&to), g.index.get(&self.me)) else {
            return true;
        };
        if !tree.contains(t) || !tree.contains(me) || tree.parent(t) == Some(me) {
            return true;
        }
        announcers_of(&tree, t, backups, |_| true).contains(&me)
    }

    /// Short ids of the nodes reachable from us over published links (us included), sorted.
    fn reachable_ids(&mut self) -> Arc<Vec<u64>> {
        if let Some(r) = &self.reachable {
            return r.clone();
        }
        let mut ids = match self.tree(self.me) {
            Some(t) => t.order.iter().map(|&i| t.graph.ids[i as usize]).collect(),
            None => vec![self.me],
        };
        // Sorted: `keeps_reachable` and `digest` want them so.
        ids.sort_unstable();
        let ids = Arc::new(ids);
        self.reachable = Some(ids.clone());
        ids
    }

    /// The nodes reachable from us (ourselves excluded).
    pub fn reachable(&mut self) -> Vec<NodeId> {
        let ids = self.reachable_ids();
        ids.iter()
            .filter(|id| **id != self.me)
            .map(|id| self.entries[id].node.clone())
            .collect()
    }

    /// Reachable nodes (ourselves included) that subscribe to `topic`.
    pub fn subscribers(&mut self, topic: &str) -> Vec<NodeId> {
        let ids = self.reachable_ids();
        ids.iter()
            .filter(|id| self.entries[id].topics.contains(topic))
            .map(|id| self.entries[id].node.clone())
            .collect()
    }

    /// The topics of a reachable node.
    pub fn topics_of(&mut self, node: &NodeId) -> Option<Vec<String>> {
        let id = short_id(node.as_bytes());
        let ids = self.reachable_ids();
        if !ids.contains(&id) {
            return None;
        }
        Some(self.entries[&id].topics.iter().cloned().collect())
    }

    /// A digest of the reachable records' versions: equal digests mean equal views.
    pub fn digest(&mut self) -> u64 {
        if let Some(d) = self.digest {
            return d;
        }
        let ids = self.reachable_ids();
        let mut hash = Sha256::new();
        for &id in ids.iter() {
            let e = &self.entries[&id];
            hash.update(id.to_be_bytes());
            hash.update(e.incarnation.to_be_bytes());
            hash.update(e.version.to_be_bytes());
        }
        let d = u64::from_be_bytes(hash.finalize()[..8].try_into().expect("8 bytes"));
        // 0 means "no settled view" on the wire.
        let d = d.max(1);
        self.digest = Some(d);
        d
    }

    /// Forgets records that have been unreachable for longer than `ttl`; returns how many.
    pub fn collect_garbage(&mut self, now: Instant, ttl: Duration) -> usize {
        let reachable: HashSet<u64> = self.reachable_ids().iter().copied().collect();
        let before = self.entries.len();
        self.entries.retain(|id, e| {
            if reachable.contains(id) {
                e.unreachable_since = None;
                return true;
            }
            let since = *e.unreachable_since.get_or_insert(now);
            now.duration_since(since) < ttl
        });
        let removed = before - self.entries.len();
        if removed > 0 {
            // Only unreachable records go; the graph is built afresh without them.
            self.graph = None;
            self.changed(true);
        }
        removed
    }

    /// How many records are stored (ours included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Whether `x`'s record lists `y`.
fn lists(entries: &HashMap<u64, Entry>, x: u64, y: u64) -> bool {
    entries
        .get(&x)
        .is_some_and(|e| e.neighbours.binary_search(&y).is_ok())
}

/// The graph indices (in `index`) of the nodes `a`'s record lists that list `a` back: its
/// links, in short-id order as its (sorted) list is.
fn links_from_record(entries: &HashMap<u64, Entry>, index: &HashMap<u64, u32>, a: u64) -> Vec<u32> {
    entries[&a]
        .neighbours
        .iter()
        .filter(|&&b| lists(entries, b, a))
        .filter_map(|b| index.get(b).copied())
        .collect()
}

/// The first `count` announcers of `y` in `tree` ([`Topology::route`]), those that get the
/// message anyway (`needed`, by index) first in each group.
fn announcers_of(tree: &Tree, y: u32, count: usize, needed: impl Fn(u32) -> bool) -> Vec<u32> {
    if count == 0 {
        return Vec::new();
    }
    let parent = tree.parent(y);
    // Only links both ends list, in short-id order: start after the parent's place, wrapping
    // round.
    let (ids, links) = (&tree.graph.ids, tree.graph.links_of(y));
    let start = parent.map_or(0, |p| {
        links.partition_point(|&c| ids[c as usize] <= ids[p as usize])
    });
    let cyclic = links[start..].iter().chain(&links[..start]);
    // The groups in order (not y's children before its children; in each, those that get
    // the message anyway first), each in the cyclic order, and the first `count` of them
    // all. Once the first group has `count`, the rest cannot make it: stop there. (Sorting
    // every candidate instead cost O(degree) per node per route, a cube per node in a
    // full mesh, where this stops at the first.)
    let mut groups: [Vec<u32>; 4] = Default::default();
    for &c in cyclic {
        if Some(c) == parent || c == tree.root() || !tree.contains(c) {
            continue;
        }
        let group = 2 * usize::from(tree.parent(c) == Some(y)) + usize::from(!needed(c));
        if groups[group].len() < count {
            groups[group].push(c);
        }
        if groups[0].len() == count {
            break;
        }
    }
    groups.into_iter().flatten().take(count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bcos_p2p_core::KeyType;
    use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

    /// Keys of `n` nodes and their NodeIds; node 0 is the one whose view the tests build.
    fn nodes(n: usize) -> (Vec<NodeKey>, Vec<NodeId>) {
        let keys: Vec<NodeKey> = (0..n)
            .map(|_| NodeKey::generate(KeyType::Secp256k1).unwrap())
            .collect();
        let ids = keys.iter().map(|k| k.node_id().clone()).collect();
        (keys, ids)
    }

    /// A record of `id` as the tests offer it (`offer` does not check signatures).
    fn record(
        id: &NodeId,
        (incarnation, version): (u64, u64),
        neighbours: Vec<u64>,
    ) -> wire::Record {
        wire::Record {
            key_type: id.key_type().code(),
            origin: bytes::Bytes::copy_from_slice(id.as_bytes()),
            incarnation,
            version,
            neighbours,
            topics: vec![],
            signature: bytes::Bytes::from_static(b"unchecked"),
        }
    }

    /// Node 0's view of a graph given as edges between indexes; `subscribed` nodes hold "t".
    fn view(keys: &[NodeKey], edges: &[(usize, usize)], subscribed: &[usize]) -> Topology {
        let ids: Vec<NodeId> = keys.iter().map(|k| k.node_id().clone()).collect();
        let short: Vec<u64> = ids.iter().map(|n| short_id(n.as_bytes())).collect();
        let nbrs = |i: usize| -> Vec<u64> {
            edges
                .iter()
                .filter_map(|&(a, b)| match (a == i, b == i) {
                    (true, _) => Some(short[b]),
                    (_, true) => Some(short[a]),
                    _ => None,
                })
                .collect()
        };
        let topics = |i: usize| -> BTreeSet<String> {
            if subscribed.contains(&i) {
                BTreeSet::from(["t".to_string()])
            } else {
                BTreeSet::new()
            }
        };
        let mut t = Topology::new(ids[0].clone(), 1, 100);
        t.publish(nbrs(0), topics(0), &keys[0]).unwrap();
        for (i, id) in ids.iter().enumerate().skip(1) {
            let rec = wire::Record {
                topics: topics(i).into_iter().collect(),
                ..record(id, (1, 1), nbrs(i))
            };
            assert!(matches!(t.offer(id.clone(), rec), Offer::Stored { .. }));
        }
        t
    }

    /// The reachable set kept across changes (`keeps_reachable`) is always the one a search of
    /// the whole graph finds: records of a growing and shrinking random graph, the digest and
    /// the reachable nodes compared after each with a view built from scratch.
    #[test]
    fn reachable_nodes_kept_across_changes_match_a_fresh_search() {
        let (keys, ids) = nodes(12);
        let short: Vec<u64> = ids.iter().map(|n| short_id(n.as_bytes())).collect();
        let mut lists: Vec<Vec<u64>> = vec![Vec::new(); 12];
        let mut versions = [1u64; 12];
        let mut t = Topology::new(ids[0].clone(), 1, 100);
        let mut rng = StdRng::seed_from_u64(0x2545_f491_4f6c_dd1d);
        let mut rand = |n: usize| rng.random_range(0..n);
        for step in 0..400 {
            // Mostly links come (a mesh forming), now and then one goes.
            let (i, j) = (rand(12), rand(12));
            if i == j {
                continue;
            }
            if rand(5) == 0 {
                lists[i].retain(|n| *n != short[j]);
            } else if !lists[i].contains(&short[j]) {
                lists[i].push(short[j]);
            }
            if i == 0 {
                t.publish(lists[0].clone(), BTreeSet::new(), &keys[0])
                    .unwrap();
            } else {
                versions[i] += 1;
                let rec = record(&ids[i], (1, versions[i]), lists[i].clone());
                assert!(matches!(t.offer(ids[i].clone(), rec), Offer::Stored { .. }));
            }
            let mut fresh = Topology::new(ids[0].clone(), 1, 100);
            let (_, own) = t.held(short[0]).unwrap();
            if own > 0 {
                fresh.outgrow(1, own - 1);
                fresh
                    .publish(lists[0].clone(), BTreeSet::new(), &keys[0])
                    .unwrap();
            }
            for k in 1..12 {
                if t.held(short[k]).is_some() {
                    let rec = record(&ids[k], t.held(short[k]).unwrap(), lists[k].clone());
                    fresh.offer(ids[k].clone(), rec);
                }
            }
            let sorted = |mut v: Vec<NodeId>| {
                v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                v
            };
            assert_eq!(
                sorted(t.reachable()),
                sorted(fresh.reachable()),
                "step {step}"
            );
            assert_eq!(t.digest(), fresh.digest(), "step {step}");
        }
    }

    /// Announcers as the SPEC words them, by sorting every candidate and in short ids, from
    /// the records themselves: what the early-stopping `announcers_of` on the dense graph must
    /// give, on every node alike.
    fn announcers_by_sorting(
        t: &Topology,
        tree: &Tree,
        y: u64,
        count: usize,
        needed: &HashSet<u64>,
    ) -> Vec<u64> {
        let id = |i: u32| tree.graph.ids[i as usize];
        let parent_of = |n: u64| tree.parent(tree.graph.index[&n]).map(id);
        let in_tree = |n: u64| tree.graph.index.get(&n).is_some_and(|&i| tree.contains(i));
        let parent = parent_of(y);
        let neighbours = &t.entries[&y].neighbours;
        let start = parent.map_or(0, |p| neighbours.partition_point(|&c| c <= p));
        let mut candidates: Vec<u64> = neighbours[start..]
            .iter()
            .chain(&neighbours[..start])
            .copied()
            .filter(|&c| Some(c) != parent && c != id(tree.root()) && in_tree(c) && t.linked(y, c))
            .collect();
        candidates.sort_by_key(|&c| (parent_of(c) == Some(y), !needed.contains(&c)));
        candidates.truncate(count);
        candidates
    }

    #[test]
    fn announcers_stop_early_but_pick_as_sorting_all_would() {
        let (keys, _) = nodes(16);
        let mut rng = StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
        let mut rand = |n: u64| rng.random_range(0..n);
        for round in 0..20 {
            let edges: Vec<(usize, usize)> = (0..16)
                .flat_map(|a| (a + 1..16).map(move |b| (a, b)))
                .filter(|_| rand(3) > 0)
                .collect();
            let mut t = view(&keys, &edges, &[]);
            let ids: Vec<u64> = t.entries.keys().copied().collect();
            for &origin in &ids {
                let Some(tree) = t.tree(origin) else { continue };
                let needed: HashSet<u64> = ids.iter().copied().filter(|_| rand(4) > 0).collect();
                let by_index: Vec<bool> =
                    tree.graph.ids.iter().map(|n| needed.contains(n)).collect();
                for &y in &tree.order {
                    for count in 0..4 {
                        let dense: Vec<u64> =
                            announcers_of(&tree, y, count, |i| by_index[i as usize])
                                .into_iter()
                                .map(|i| tree.graph.ids[i as usize])
                                .collect();
                        assert_eq!(
                            dense,
                            announcers_by_sorting(
                                &t,
                                &tree,
                                tree.graph.ids[y as usize],
                                count,
                                &needed
                            ),
                            "round {round}"
                        );
                    }
                }
            }
        }
    }

    /// The tree as the SPEC words it, searched on the records themselves: breadth first from
    /// the root, each node's listed neighbours in ascending short-id order, a link used only
    /// when both ends list it. Returns the BFS order and each node's parent, in short ids.
    fn tree_by_records(t: &Topology, root: u64) -> (Vec<u64>, HashMap<u64, u64>) {
        let mut order = vec![root];
        let mut parent = HashMap::new();
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(a) = queue.pop_front() {
            for &b in &t.entries[&a].neighbours {
                if b != root
                    && !parent.contains_key(&b)
                    && t.entries.contains_key(&b)
                    && t.linked(a, b)
                {
                    parent.insert(b, a);
                    order.push(b);
                    queue.push_back(b);
                }
            }
        }
        (order, parent)
    }

    /// Every tree of `t` against [`tree_by_records`].
    fn assert_trees_match_records(t: &mut Topology, context: &str) {
        let mut held: Vec<u64> = t.entries.keys().copied().collect();
        held.sort_unstable();
        let mut in_graph = t.graph().ids.clone();
        in_graph.sort_unstable();
        assert_eq!(
            in_graph, held,
            "{context}: the graph has every record's node, no other"
        );
        let roots: Vec<u64> = t.entries.keys().copied().collect();
        for root in roots {
            let (order, parent) = tree_by_records(t, root);
            let tree = t.tree(root).expect("root has a record");
            let id = |i: u32| tree.graph.ids[i as usize];
            let dense: Vec<u64> = tree.order.iter().map(|&i| id(i)).collect();
            assert_eq!(dense, order, "{context}");
            for &i in &tree.order {
                assert_eq!(
                    tree.parent(i).map(id),
                    parent.get(&id(i)).copied(),
                    "{context}"
                );
            }
            for (i, n) in tree.graph.ids.iter().enumerate() {
                let i = u32::try_from(i).unwrap();
                assert_eq!(tree.contains(i), order.contains(n), "{context}");
            }
        }
    }

    #[test]
    fn trees_on_the_kept_graph_are_the_trees_of_the_records() {
        let (keys, ids) = nodes(24);
        let short = |i: usize| short_id(ids[i].as_bytes());
        let mut rng = StdRng::seed_from_u64(0x5eed_0f7e_e5ed);
        let mut rand = |n: u64| rng.random_range(0..n);
        for round in 0..8 {
            // 16 nodes to start with; the others join on the way.
            let edges: Vec<(usize, usize)> = (0..16)
                .flat_map(|a| (a + 1..16).map(move |b| (a, b)))
                .filter(|_| rand(6) == 0)
                .collect();
            let mut t = view(&keys[..16], &edges, &[]);
            let mut versions = [1u64; 24];
            for step in 0..40 {
                // The graph is built at the first check and then kept across the changes.
                assert_trees_match_records(&mut t, &format!("round {round} step {step}"));
                // A node lists a new set: some links made, some dropped, some one-sided, some
                // to nodes without a record.
                let i = rand(24) as usize;
                let mut listed: Vec<u64> = (0..24)
                    .filter(|&j| j != i && rand(5) == 0)
                    .map(short)
                    .collect();
                if rand(3) == 0 {
                    listed.push(rand(u64::MAX));
                }
                if i == 0 {
                    t.publish(listed, BTreeSet::new(), &keys[0]).unwrap();
                } else {
                    versions[i] += 1;
                    let rec = record(&ids[i], (1, versions[i]), listed);
                    assert!(matches!(t.offer(ids[i].clone(), rec), Offer::Stored { .. }));
                }
                if step % 10 == 9 {
                    // Forgetting unreachable records builds the graph afresh.
                    let later = Instant::now() + Duration::from_secs(120);
                    t.collect_garbage(Instant::now(), Duration::from_secs(60));
                    t.collect_garbage(later, Duration::from_secs(60));
                }
            }
        }
    }

    #[test]
    fn full_mesh_origin_covers_everyone_and_nobody_forwards() {
        let (keys, ids) = nodes(5);
        let edges: Vec<_> = (0..5)
            .flat_map(|a| (a + 1..5).map(move |b| (a, b)))
            .collect();
        let mut t = view(&keys, &edges, &[1, 3]);
        let me = t.me();
        let all = t.route(me, None).unwrap();
        assert_eq!(all.children.len(), 4);
        let some = t.route(me, Some("t")).unwrap();
        assert_eq!(some.children.len(), 2, "only the subscribers");
        let from_other = t.route(short_id(ids[2].as_bytes()), None).unwrap();
        assert!(from_other.children.is_empty(), "the origin reached all");
        assert_eq!(t.subscribers("t").len(), 2);
        assert_eq!(t.reachable().len(), 4);
    }

    #[test]
    fn line_forwards_only_towards_subscribers() {
        // 1 - 0 - 2 - 3 ; 4 isolated
        let (keys, ids) = nodes(5);
        let mut t = view(&keys, &[(0, 1), (0, 2), (2, 3)], &[3]);
        let from1 = t.route(short_id(ids[1].as_bytes()), Some("t")).unwrap();
        assert_eq!(from1.children, vec![short_id(ids[2].as_bytes())]);
        let from3 = t.route(short_id(ids[3].as_bytes()), Some("t")).unwrap();
        assert!(from3.children.is_empty(), "nobody towards 1 subscribes");
        let from3_all = t.route(short_id(ids[3].as_bytes()), None).unwrap();
        assert_eq!(from3_all.children, vec![short_id(ids[1].as_bytes())]);
        assert!(t.route(short_id(ids[4].as_bytes()), None).is_none());
        assert_eq!(t.reachable().len(), 3);
    }

    /// On the square 0-1-3-2-0 with origin 1, node 2 hangs off whichever of 0 and 3 has the
    /// smaller short id (breadth-first, ascending ids): the other one is its announcer. For a
    /// multicast only 2 subscribes to, the origin sends to both: one relays, one carries the
    /// message to announce it should the relay drop it.
    #[test]
    fn the_neighbour_that_is_not_the_parent_announces_and_carries() {
        let (keys, ids) = nodes(4);
        let short = |i: usize| short_id(ids[i].as_bytes());
        let via_0 = short(0) < short(3);
        let mut t = view(&keys, &[(0, 1), (0, 2), (1, 3), (2, 3)], &[2]);
        let all = t.route(short(1), None).unwrap();
        if via_0 {
            assert_eq!(
                (all.children.clone(), all.lazy.clone()),
                (vec![short(2)], vec![])
            );
        } else {
            assert_eq!(
                (all.children.clone(), all.lazy.clone()),
                (vec![], vec![short(2)])
            );
        }
        // Node 0's neighbour 1 is the origin: never announced to.
        let multicast = t.route(short(1), Some("t")).unwrap();
        assert_eq!(multicast.lazy, all.lazy);
        // The origin's own view (node 1 first).
        let order = [1, 0, 2, 3];
        let keys1: Vec<NodeKey> = order.iter().map(|&i| keys[i].clone()).collect();
        let mut origin = view(&keys1, &[(1, 0), (1, 2), (0, 3), (2, 3)], &[2]);
        let mut both = vec![short(0), short(3)];
        both.sort_unstable();
        assert_eq!(origin.route(short(1), Some("t")).unwrap().children, both);
        assert!(origin.route(short(1), None).unwrap().lazy.is_empty());
    }

    #[test]
    fn one_sided_links_are_not_used() {
        let (keys, ids) = nodes(3);
        let mut t = view(&keys, &[(0, 1)], &[]);
        // Node 2 claims a link to 0 that 0 does not publish.
        let rec = record(&ids[2], (1, 2), vec![t.me()]);
        assert!(matches!(
            t.offer(ids[2].clone(), rec.clone()),
            Offer::Stored { .. }
        ));
        assert_eq!(t.offer(ids[2].clone(), rec), Offer::Stale);
        assert_eq!(t.reachable().len(), 1);
    }

    #[test]
    fn a_newer_record_of_our_own_is_outgrown() {
        let (keys, ids) = nodes(1);
        let mut t = Topology::new(ids[0].clone(), 5, 10);
        let ours = t.publish(vec![], BTreeSet::new(), &keys[0]).unwrap();
        assert_eq!(
            t.offer(ids[0].clone(), ours.clone()),
            Offer::Stale,
            "an echo"
        );
        let left_over = wire::Record {
            incarnation: 9,
            version: 3,
            ..ours
        };
        assert_eq!(
            t.offer(ids[0].clone(), left_over),
            Offer::OwnNewer {
                incarnation: 9,
                version: 3
            }
        );
        t.outgrow(9, 3);
        let next = t.publish(vec![], BTreeSet::new(), &keys[0]).unwrap();
        assert!((next.incarnation, next.version) > (9, 3));
    }

    #[test]
    fn newer_incarnation_wins_and_unreachable_records_expire() {
        let (keys, ids) = nodes(2);
        let mut t = view(&keys, &[(0, 1)], &[1]);
        let old = t.record(short_id(ids[1].as_bytes())).unwrap();
        let restarted = wire::Record {
            incarnation: 2,
            version: 1,
            neighbours: vec![],
            topics: vec!["u".into()],
            ..old.clone()
        };
        assert_eq!(
            t.offer(ids[1].clone(), restarted),
            Offer::Stored {
                added: vec!["u".into()],
                removed: vec!["t".into()]
            }
        );
        assert_eq!(t.offer(ids[1].clone(), old), Offer::Stale);
        let now = Instant::now();
        assert_eq!(t.collect_garbage(now, Duration::from_secs(1)), 0);
        assert_eq!(
            t.collect_garbage(now + Duration::from_secs(2), Duration::from_secs(1)),
            1
        );
        assert_eq!(t.len(), 1);
    }
}
