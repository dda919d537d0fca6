//! Shortest paths from this node, for routed connections (asked through
//! [`bcos_p2p_core::Paths`]): over the same links as the trees (those both ends list).

use std::collections::HashSet;

use bcos_p2p_core::NodeId;
use libp2p_identity::PeerId;

use super::{OUTSIDE, Topology, short_id};

impl Topology {
    /// The short id of the node with PeerId `peer`, if a record of it is held. Each node's
    /// PeerId is derived once (`peer_ids`); a key hash costs a hash, a key a point decoding.
    pub fn short_id_of_peer(&mut self, peer: &PeerId) -> Option<u64> {
        if let Some(id) = self.peer_ids.get(peer) {
            return self.entries.contains_key(id).then_some(*id);
        }
        if self.peer_ids.len() > 4 * self.max_entries {
            self.peer_ids.clear();
            self.peer_derived.clear();
        }
        for (id, e) in &self.entries {
            if self.peer_derived.insert(*id) {
                self.peer_ids.insert(e.node.to_peer_id(), *id);
            }
        }
        self.peer_ids
            .get(peer)
            .copied()
            .filter(|id| self.entries.contains_key(id))
    }

    /// A shortest path from this node to `to` over published links, through none of `avoid`
    /// if such a path exists (else through them): the nodes after this one, `to` last. None
    /// when `to` is unreachable or is this node.
    pub fn path_to(&mut self, to: u64, avoid: &[NodeId]) -> Option<Vec<NodeId>> {
        if to == self.me {
            return None;
        }
        let avoid: HashSet<u64> = avoid
            .iter()
            .map(|n| short_id(n.as_bytes()))
            .filter(|id| *id != to)
            .collect();
        if !avoid.is_empty()
            && let Some(p) = self.search(to, &avoid)
        {
            return Some(p);
        }
        self.search(to, &HashSet::new())
    }

    /// Hop counts from this node to every reachable node (itself 0).
    pub fn distances(&mut self) -> Vec<(NodeId, u32)> {
        let Some(tree) = self.tree(self.me) else {
            return Vec::new();
        };
        let mut depth = vec![0u32; tree.parent.len()];
        let mut out = Vec::with_capacity(tree.order.len());
        for &i in &tree.order {
            if let Some(p) = tree.parent(i) {
                depth[i as usize] = depth[p as usize].saturating_add(1);
            }
            let id = tree.graph.ids[i as usize];
            out.push((self.entries[&id].node.clone(), depth[i as usize]));
        }
        out
    }

    fn search(&mut self, to: u64, avoid: &HashSet<u64>) -> Option<Vec<NodeId>> {
        let graph = self.graph();
        let &from = graph.index.get(&self.me)?;
        let &target = graph.index.get(&to)?;
        let mut parent = vec![OUTSIDE; graph.ids.len()];
        parent[from as usize] = from;
        let mut queue = vec![from];
        let mut next = 0;
        while let Some(&a) = queue.get(next) {
            next += 1;
            if a == target {
                break;
            }
            for &b in graph.links_of(a) {
                if parent[b as usize] == OUTSIDE && !avoid.contains(&graph.ids[b as usize]) {
                    parent[b as usize] = a;
                    queue.push(b);
                }
            }
        }
        if parent[target as usize] == OUTSIDE {
            return None;
        }
        let mut path = Vec::new();
        let mut at = target;
        while at != from {
            path.push(self.entries[&graph.ids[at as usize]].node.clone());
            at = parent[at as usize];
        }
        path.reverse();
        Some(path)
    }
}
