//! The whole network as this node's records describe it, for people to look at: every node
//! a record is held of, its topics, its distance from this node, and the links between them
//! (those both ends list, the links trees and paths use).

use bcos_p2p_core::NodeId;

use super::Topology;
use crate::Behaviour;

/// One node of a [`View`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewNode {
    /// The node.
    pub node: NodeId,
    /// Hops from this node over published links (0: this node); `None`: not reachable (its
    /// record is kept until it expires).
    pub hops: Option<u32>,
    /// The topics its record lists, sorted.
    pub topics: Vec<String>,
    /// The `(incarnation, version)` of the record held.
    pub record: (u64, u64),
}

/// The network as this node's flood records describe it ([`Behaviour::view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Every node a record is held of, this node included, sorted by NodeId.
    pub nodes: Vec<ViewNode>,
    /// The links both ends list, as pairs of indices into `nodes` (the smaller first), sorted.
    pub links: Vec<(usize, usize)>,
}

impl View {
    /// The index of `node` in [`View::nodes`].
    pub fn index_of(&self, node: &NodeId) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.node.cmp(node)).ok()
    }
}

impl Topology {
    /// The view of every record held (see [`View`]).
    pub(crate) fn view(&mut self) -> View {
        let hops: std::collections::HashMap<NodeId, u32> = self.distances().into_iter().collect();
        let mut ids: Vec<(&NodeId, u64)> =
            self.entries.iter().map(|(id, e)| (&e.node, *id)).collect();
        ids.sort_unstable();
        let index: std::collections::HashMap<u64, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, (_, id))| (*id, i))
            .collect();
        let mut links = Vec::new();
        for (i, (_, id)) in ids.iter().enumerate() {
            for n in &self.entries[id].neighbours {
                // Each link once, from its end of the smaller index; only links both ends list.
                if let Some(&j) = index.get(n)
                    && i < j
                    && self.linked(*id, *n)
                {
                    links.push((i, j));
                }
            }
        }
        links.sort_unstable();
        let nodes = ids
            .iter()
            .map(|(node, id)| {
                let e = &self.entries[id];
                ViewNode {
                    node: (*node).clone(),
                    hops: hops.get(*node).copied(),
                    topics: e.topics.iter().cloned().collect(),
                    record: (e.incarnation, e.version),
                }
            })
            .collect();
        View { nodes, links }
    }
}

impl Behaviour {
    /// The network as this node's flood records describe it: every node a record is held of
    /// (reachable or not yet expired), its topics and distance, and the links both ends list.
    /// Costs a walk over every record; meant for an operator's view, not a per-message path.
    pub fn view(&mut self) -> View {
        self.topology.view()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bcos_p2p_core::{KeyType, NodeKey};

    use super::*;
    use crate::topology::short_id;

    #[test]
    fn the_view_lists_every_record_and_only_links_both_ends_list() {
        let keys: Vec<NodeKey> = (0..4)
            .map(|_| NodeKey::generate(KeyType::Secp256k1).unwrap())
            .collect();
        let ids: Vec<NodeId> = keys.iter().map(|k| k.node_id().clone()).collect();
        let short = |i: usize| short_id(ids[i].as_bytes());
        let mut t = Topology::new(ids[0].clone(), 1, 16);
        // 0 - 1 - 2 both ways; 3 lists 2, which does not list it back.
        let lists: [(usize, Vec<usize>, &[&str]); 4] = [
            (0, vec![1], &["a"]),
            (1, vec![0, 2], &[]),
            (2, vec![1], &["<b>", "a"]),
            (3, vec![2], &["c"]),
        ];
        for (i, neighbours, topics) in lists {
            let neighbours: Vec<u64> = neighbours.into_iter().map(short).collect();
            let topics: BTreeSet<String> = topics.iter().map(|s| s.to_string()).collect();
            if i == 0 {
                t.publish(neighbours, topics, &keys[0]).unwrap();
            } else {
                let mut other = Topology::new(ids[i].clone(), 1, 16);
                let record = other.publish(neighbours, topics, &keys[i]).unwrap();
                assert!(matches!(
                    t.offer(ids[i].clone(), record),
                    super::super::Offer::Stored { .. }
                ));
            }
        }
        let view = t.view();
        assert_eq!(view.nodes.len(), 4);
        let mut sorted = ids.clone();
        sorted.sort();
        let got: Vec<NodeId> = view.nodes.iter().map(|n| n.node.clone()).collect();
        assert_eq!(got, sorted, "sorted by NodeId");
        let at = |i: usize| view.index_of(&ids[i]).unwrap();
        let link = |a: usize, b: usize| (at(a).min(at(b)), at(a).max(at(b)));
        let mut expected = vec![link(0, 1), link(1, 2)];
        expected.sort();
        assert_eq!(view.links, expected, "3 → 2 is listed by one end only");
        let node = |i: usize| &view.nodes[at(i)];
        assert_eq!(node(0).hops, Some(0));
        assert_eq!(node(1).hops, Some(1));
        assert_eq!(node(2).hops, Some(2));
        assert_eq!(node(3).hops, None, "no link both ends list reaches 3");
        assert_eq!(node(2).topics, vec!["<b>".to_string(), "a".to_string()]);
        assert_eq!(node(3).topics, vec!["c".to_string()]);
        assert_eq!(node(0).record.0, 1);
    }
}
