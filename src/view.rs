//! The operator's view of the network: the whole network as this node's flood records
//! describe it ([`Node::view`](crate::node::Node::view)), and the JSON that the HTTP endpoint
//! serves of it and of the connected peers ([`crate::metrics::MetricsServer`]: `GET
//! /network.json`, `GET /peers`).
//!
//! Topics are chosen by peers: the JSON carries them as they are (JSON escaping only), and
//! whatever shows them to people must escape them (the `/network` page sets them as text,
//! never as markup).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{NodeId, behaviour::Behaviour, flood, netstatus, node::PeerInfo};

/// Most topics of one node the JSON lists (a record may carry more; `topics_more` counts the
/// rest), and most characters of one topic it shows: a page stays readable and a response
/// bounded whatever peers subscribe to.
pub const MAX_TOPICS_SHOWN: usize = 32;
/// See [`MAX_TOPICS_SHOWN`].
pub const MAX_TOPIC_CHARS: usize = 64;

/// How a node of the view is connected to this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// A direct connection.
    Direct,
    /// A routed connection (a circuit through relays).
    Routed,
}

impl Connection {
    /// `direct` or `routed`, as the JSON says.
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Direct => "direct",
            Connection::Routed => "routed",
        }
    }
}

/// One node of a [`NetworkView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewNode {
    /// The node.
    pub node: NodeId,
    /// This node itself.
    pub me: bool,
    /// Its connection to this node, if it has one.
    pub connection: Option<Connection>,
    /// Hops from this node over the links of the view; None: not reachable over them (a
    /// record not yet expired, or a connected peer whose record has not come yet).
    pub hops: Option<u32>,
    /// The topics its record lists (reserved ones left out), sorted.
    pub topics: Vec<String>,
}

/// The whole network as this node's flood records describe it, with this node's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkView {
    /// This node.
    pub node: NodeId,
    /// Every node a record is held of, and every connected peer, sorted by NodeId.
    pub nodes: Vec<ViewNode>,
    /// The links both ends list (the links flood's trees use), as index pairs into `nodes`
    /// (the smaller first), sorted.
    pub links: Vec<(usize, usize)>,
}

impl NetworkView {
    /// The index of `node` in [`NetworkView::nodes`].
    pub fn index_of(&self, node: &NodeId) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.node.cmp(node)).ok()
    }

    /// Builds the view from flood's records and the connection manager's connections.
    pub(crate) fn of(b: &mut Behaviour) -> NetworkView {
        let me = b.flood.local_node().clone();
        let records = b.flood.view();
        let connected: Vec<(NodeId, Connection)> = b
            .connection
            .connected()
            .into_iter()
            .map(|(peer, _)| {
                let connection = match b.connection.is_routed(&peer) {
                    Some(true) => Connection::Routed,
                    _ => Connection::Direct,
                };
                (peer, connection)
            })
            .collect();
        Self::merge(me, &records, connected)
    }

    /// The view of flood's `records` (reserved topics left out) with this node's `connected`
    /// peers marked, those without a record added.
    fn merge(
        me: NodeId,
        records: &flood::View,
        connected: Vec<(NodeId, Connection)>,
    ) -> NetworkView {
        let mut nodes: BTreeMap<NodeId, ViewNode> = BTreeMap::new();
        for n in &records.nodes {
            nodes.insert(
                n.node.clone(),
                ViewNode {
                    me: n.node == me,
                    connection: None,
                    hops: n.hops,
                    topics: n
                        .topics
                        .iter()
                        .filter(|t| !netstatus::is_reserved(t))
                        .cloned()
                        .collect(),
                    node: n.node.clone(),
                },
            );
        }
        for (peer, connection) in connected {
            nodes
                .entry(peer.clone())
                .or_insert_with(|| ViewNode {
                    node: peer.clone(),
                    me: false,
                    connection: None,
                    hops: None,
                    topics: Vec::new(),
                })
                .connection = Some(connection);
        }
        // `nodes` is sorted by NodeId as the records' view is; map the records' indices.
        let index: BTreeMap<&NodeId, usize> =
            nodes.keys().enumerate().map(|(i, n)| (n, i)).collect();
        let mut links: Vec<(usize, usize)> = records
            .links
            .iter()
            .filter_map(|&(a, b)| {
                let a = *index.get(&records.nodes.get(a)?.node)?;
                let b = *index.get(&records.nodes.get(b)?.node)?;
                Some((a.min(b), a.max(b)))
            })
            .collect();
        links.sort_unstable();
        links.dedup();
        NetworkView {
            node: me,
            nodes: nodes.into_values().collect(),
            links,
        }
    }

    /// The JSON of `GET /network.json` (the shape is in the README, *Network view*).
    pub fn to_json(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "node_id": n.node.to_string(),
                    "short": n.node.short(),
                    "me": n.me,
                    "connection": n.connection.map(Connection::as_str),
                    "hops": n.hops,
                    "topics": n.topics.iter().take(MAX_TOPICS_SHOWN).map(|t| shorten(t)).collect::<Vec<_>>(),
                    "topics_more": n.topics.len().saturating_sub(MAX_TOPICS_SHOWN),
                })
            })
            .collect();
        let links: Vec<[usize; 2]> = self.links.iter().map(|&(a, b)| [a, b]).collect();
        json!({
            "node_id": self.node.to_string(),
            "nodes": nodes,
            "links": links,
        })
    }
}

/// The JSON of `GET /peers`: this node and its connected peers (the shape is in the README,
/// *Network view*), sorted by NodeId.
pub fn peers_json(me: &NodeId, peers: &[PeerInfo]) -> Value {
    let mut peers: Vec<&PeerInfo> = peers.iter().collect();
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    let peers: Vec<Value> = peers
        .into_iter()
        .map(|p| {
            json!({
                "node_id": p.node.to_string(),
                "addr": p.addr.to_string(),
                "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                "status_seq": p.status_seq,
                "bytes_in": p.bytes_in,
                "bytes_out": p.bytes_out,
                "routed": p.relays.is_some(),
                "relays": p.relays.as_ref().map(|r| r.iter().map(NodeId::to_string).collect::<Vec<_>>()),
            })
        })
        .collect();
    json!({ "node_id": me.to_string(), "peers": peers })
}

/// `topic`, cut to [`MAX_TOPIC_CHARS`] characters (with `…` when cut).
fn shorten(topic: &str) -> String {
    match topic.char_indices().nth(MAX_TOPIC_CHARS) {
        Some((at, _)) => format!("{}…", &topic[..at]),
        None => topic.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{KeyType, NodeKey};

    fn ids(n: usize) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = (0..n)
            .map(|_| {
                NodeKey::generate(KeyType::Secp256k1)
                    .unwrap()
                    .node_id()
                    .clone()
            })
            .collect();
        ids.sort();
        ids
    }

    /// Flood's view of `ids` (sorted) with `links` between them and `topics` per node.
    fn records(ids: &[NodeId], links: &[(usize, usize)], topics: &[&[&str]]) -> flood::View {
        flood::View {
            nodes: ids
                .iter()
                .enumerate()
                .map(|(i, node)| flood::ViewNode {
                    node: node.clone(),
                    hops: Some(u32::try_from(i).unwrap()),
                    topics: topics
                        .get(i)
                        .map(|t| t.iter().map(|s| s.to_string()).collect())
                        .unwrap_or_default(),
                    record: (1, 1),
                })
                .collect(),
            links: links.to_vec(),
        }
    }

    #[test]
    fn merging_marks_connections_adds_peers_without_records_and_keeps_links_on_their_nodes() {
        // Random sets of records and connections: whatever the mix, the nodes come sorted,
        // each once, every link joins the same two nodes as in the records, every connected
        // peer is there with its connection, and reserved topics are gone.
        use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};
        let all = ids(12);
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..50 {
            let held: Vec<NodeId> = all
                .iter()
                .filter(|_| rng.random_bool(0.6))
                .cloned()
                .collect();
            if held.is_empty() {
                continue;
            }
            let mut links = Vec::new();
            for a in 0..held.len() {
                for b in a + 1..held.len() {
                    if rng.random_bool(0.3) {
                        links.push((a, b));
                    }
                }
            }
            let topics: Vec<&[&str]> = held
                .iter()
                .map(|_| &["t", netstatus::STATUS_TOPIC][..])
                .collect();
            let flood_view = records(&held, &links, &topics);
            let me = held[0].clone();
            let mut connected: Vec<(NodeId, Connection)> = Vec::new();
            for n in all.iter().filter(|n| **n != me) {
                if rng.random_bool(0.4) {
                    let c = if rng.random_bool(0.5) {
                        Connection::Direct
                    } else {
                        Connection::Routed
                    };
                    connected.push((n.clone(), c));
                }
            }
            let view = NetworkView::merge(me.clone(), &flood_view, connected.clone());
            let context = format!("round {round}");
            let listed: Vec<&NodeId> = view.nodes.iter().map(|n| &n.node).collect();
            let mut expected: Vec<&NodeId> = held
                .iter()
                .chain(connected.iter().map(|(n, _)| n))
                .collect();
            expected.sort();
            expected.dedup();
            assert_eq!(listed, expected, "{context}");
            assert_eq!(view.nodes.iter().filter(|n| n.me).count(), 1, "{context}");
            assert!(view.nodes[view.index_of(&me).unwrap()].me, "{context}");
            for (n, c) in &connected {
                let i = view.index_of(n).unwrap();
                assert_eq!(view.nodes[i].connection, Some(*c), "{context}");
                if !held.contains(n) {
                    assert_eq!(view.nodes[i].hops, None, "{context}");
                    assert!(view.nodes[i].topics.is_empty(), "{context}");
                }
            }
            for n in &view.nodes {
                let connected = connected.iter().any(|(c, _)| *c == n.node);
                assert_eq!(n.connection.is_some(), connected, "{context}");
                if held.contains(&n.node) {
                    assert_eq!(n.topics, vec!["t".to_string()], "{context}");
                }
            }
            let mut by_node: Vec<(NodeId, NodeId)> = view
                .links
                .iter()
                .map(|&(a, b)| {
                    assert!(a < b, "{context}");
                    (view.nodes[a].node.clone(), view.nodes[b].node.clone())
                })
                .collect();
            let mut from_records: Vec<(NodeId, NodeId)> = links
                .iter()
                .map(|&(a, b)| (held[a].clone(), held[b].clone()))
                .collect();
            by_node.sort();
            from_records.sort();
            assert_eq!(by_node, from_records, "{context}");
            let mut sorted = view.links.clone();
            sorted.sort();
            assert_eq!(sorted, view.links, "{context}");
        }
    }

    #[test]
    fn the_view_json_has_every_node_link_and_topic_cut_to_bounds() {
        let ids = ids(3);
        let many: Vec<String> = (0..MAX_TOPICS_SHOWN + 3)
            .map(|i| format!("t{i:03}"))
            .collect();
        let long = "é".repeat(MAX_TOPIC_CHARS + 10);
        let view = NetworkView {
            node: ids[1].clone(),
            nodes: vec![
                ViewNode {
                    node: ids[0].clone(),
                    me: false,
                    connection: Some(Connection::Routed),
                    hops: Some(2),
                    topics: vec!["<script>\"x\"</script>".into(), long.clone()],
                },
                ViewNode {
                    node: ids[1].clone(),
                    me: true,
                    connection: None,
                    hops: Some(0),
                    topics: many.clone(),
                },
                ViewNode {
                    node: ids[2].clone(),
                    me: false,
                    connection: Some(Connection::Direct),
                    hops: None,
                    topics: vec![],
                },
            ],
            links: vec![(0, 1), (1, 2)],
        };
        let json = view.to_json();
        let text = json.to_string();
        assert_eq!(json["node_id"], ids[1].to_string());
        assert_eq!(json["links"], json!([[0, 1], [1, 2]]));
        let nodes = json["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0]["connection"], "routed");
        assert_eq!(nodes[1]["connection"], Value::Null);
        assert_eq!(nodes[2]["connection"], "direct");
        assert_eq!(nodes[2]["hops"], Value::Null);
        assert_eq!(nodes[1]["me"], true);
        assert_eq!(nodes[0]["short"], ids[0].short());
        // The topic comes back as it was (JSON escapes only its quotes).
        assert_eq!(nodes[0]["topics"][0], "<script>\"x\"</script>");
        assert!(text.contains(r#"<script>\"x\"</script>"#), "{text}");
        let cut = nodes[0]["topics"][1].as_str().unwrap();
        assert_eq!(cut.chars().count(), MAX_TOPIC_CHARS + 1);
        assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
        assert_eq!(
            nodes[1]["topics"].as_array().unwrap().len(),
            MAX_TOPICS_SHOWN
        );
        assert_eq!(nodes[1]["topics"][0], many[0]);
        assert_eq!(nodes[1]["topics_more"], 3);
        assert_eq!(nodes[0]["topics_more"], 0);
    }

    #[test]
    fn peers_json_lists_each_peer_sorted_with_traffic_and_route() {
        let ids = ids(4);
        let addr: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/30300".parse().unwrap();
        let peers = vec![
            PeerInfo {
                node: ids[3].clone(),
                addr: addr.clone(),
                status_seq: None,
                rtt: None,
                relays: Some(vec![ids[2].clone()]),
                bytes_in: 0,
                bytes_out: u64::MAX,
                dropped_events: 0,
            },
            PeerInfo {
                node: ids[1].clone(),
                addr: addr.clone(),
                status_seq: Some(7),
                rtt: Some(Duration::from_micros(1500)),
                relays: None,
                bytes_in: 10,
                bytes_out: 20,
                dropped_events: 0,
            },
        ];
        let json = peers_json(&ids[0], &peers);
        assert_eq!(json["node_id"], ids[0].to_string());
        let list = json["peers"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["node_id"], ids[1].to_string(), "sorted by NodeId");
        assert_eq!(list[0]["addr"], "/ip4/127.0.0.1/tcp/30300");
        assert_eq!(list[0]["rtt_ms"], 1.5);
        assert_eq!(list[0]["status_seq"], 7);
        assert_eq!(
            (list[0]["bytes_in"].clone(), list[0]["bytes_out"].clone()),
            (json!(10), json!(20))
        );
        assert_eq!(list[0]["routed"], false);
        assert_eq!(list[0]["relays"], Value::Null);
        assert_eq!(list[1]["rtt_ms"], Value::Null);
        assert_eq!(list[1]["status_seq"], Value::Null);
        assert_eq!(list[1]["bytes_out"], u64::MAX);
        assert_eq!(list[1]["routed"], true);
        assert_eq!(list[1]["relays"], json!([ids[2].to_string()]));
    }
}
