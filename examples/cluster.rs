//! A cluster of N nodes on localhost, in one process: each node dials the ones started before
//! it; once the mesh is up, every node broadcasts once and the example counts the deliveries.
//!
//! `cargo run --example cluster -- 8`

use std::time::{Duration, Instant};

use bcos_p2p::{
    KeyType, NodeKey,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, PeerAddr},
    flood,
    node::{Node, NodeEvent, NodeStats},
};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `bcos-p2p` binary and the scale bench run their nodes.
    bcos_p2p::malloc::tune();
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5);
    if !(2..=128).contains(&n) {
        return Err("the cluster size must be 2 to 128".into());
    }
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=cluster CA", Period::days(1))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let key = NodeKey::generate(KeyType::Secp256k1)?;
        let cert = ca.issue_node(&key, &format!("CN=node{i}"), Period::days(1))?;
        let tls = ca_tls::Config::new(&key, ca.node_chain(cert)?, vec![ca.root_der()?])?;
        let mut config = Config::default();
        config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        config.network.peers = nodes
            .iter()
            .map(|p| PeerAddr(p.listen_addrs()[0].clone()))
            .collect();
        // All nodes share 127.0.0.1.
        config.connection.share_one_host();
        let mut node = Node::start(key, tls, config).await?;
        let mut events = node.events().expect("first call");
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let _ = tx.send((i, event));
            }
        });
        println!(
            "node{i} {}… on {}",
            node.node_id().short(),
            node.listen_addrs()[0]
        );
        nodes.push(node);
    }
    let (mut ends, mut delivered, mut disconnects) = (0, 0, 0);
    // Why connections were lost, digits left out so that alike reasons count together.
    let mut reasons = std::collections::BTreeMap::new();
    // Which origins' broadcasts each node got.
    let mut got = vec![std::collections::HashSet::new(); n];
    // When the broadcasts went out, and how long after that each delivery came.
    let mut sent = None;
    let mut latencies = Vec::new();
    // Forming a full mesh takes time that grows with the number of links (TLS handshakes on
    // every one); the broadcasts then get 30 s.
    let limit = Duration::from_secs(30 + n as u64);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let outcome: Result<(), String> = loop {
        tokio::select! {
            Some((i, event)) = rx.recv() => match event {
                NodeEvent::Disconnected { reason, .. } => {
                    disconnects += 1;
                    if disconnects <= 5 {
                        println!("node{i} lost a connection after {:?}: {reason}", started.elapsed());
                    }
                    let kind: String = reason.to_string().chars().filter(|c| !c.is_ascii_digit()).collect();
                    *reasons.entry(kind).or_insert(0usize) += 1;
                }
                NodeEvent::Connected { .. } => {
                    ends += 1;
                    if ends == n * (n - 1) {
                        println!("full mesh of {} connections in {:?}", n * (n - 1) / 2, started.elapsed());
                        sent = Some(Instant::now());
                        // All at once: one after the other, each would wait for its node's
                        // task to come round while the others work.
                        let sends = nodes.iter().map(|node| {
                            node.broadcast(Bytes::from(format!("hello from {}", node.node_id().short())))
                        });
                        for result in futures::future::join_all(sends).await {
                            result?;
                        }
                        println!("{n} broadcasts handed to the nodes in {:?}", sent.map(|t| t.elapsed()).unwrap_or_default());
                        deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(30));
                    }
                }
                NodeEvent::Flood(flood::Event::Message { origin, hops, .. }) => {
                    delivered += 1;
                    got[i].insert(origin.clone());
                    latencies.extend(sent.map(|t| t.elapsed()));
                    if delivered <= n {
                        println!("node{i} got {}…'s broadcast ({hops} hop)", origin.short());
                    }
                    if delivered == n * (n - 1) {
                        println!("all {delivered} broadcast deliveries done in {:?}", started.elapsed());
                        break Ok(());
                    }
                }
                _ => {}
            },
            _ = &mut deadline => {
                let what = if ends < n * (n - 1) {
                    format!("the mesh did not form in {limit:?}")
                } else {
                    let lacking: Vec<String> = got
                        .iter()
                        .enumerate()
                        .filter(|(_, g)| g.len() < n - 1)
                        .map(|(i, g)| format!("node{i} lacks {}", n - 1 - g.len()))
                        .collect();
                    format!(
                        "the broadcasts did not all arrive in 30 s ({delivered} of {}): {}",
                        n * (n - 1),
                        lacking.join(", ")
                    )
                };
                break Err(what);
            }
        }
    };
    println!("{disconnects} connection ends lost on the way");
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (reason, count) in reasons.iter().take(5) {
        println!("  {count} × {reason}");
    }
    latencies.sort();
    if !latencies.is_empty() {
        let q = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "delivery after sending: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    }
    // What the flood protocol cost, summed over the nodes.
    let mut stats = Vec::with_capacity(n);
    for node in &nodes {
        stats.push(node.stats().await?);
    }
    let total = |f: fn(&NodeStats) -> u64| stats.iter().map(f).sum::<u64>();
    println!(
        "flood: {} frames, {} bytes sent; data frames {}, duplicates {}; records sent {}, \
         stored {} ({} over the pace); control frames over budget {}; summaries {}; IHAVE {} ({} ids), IWANT {}, repaired {}; dropped {}, \
         non-members {}",
        total(|s| s.flood_traffic.frames_out),
        total(|s| s.flood_traffic.bytes_out),
        total(|s| s.flood.frames_sent),
        total(|s| s.flood.duplicates),
        total(|s| s.flood.records_sent),
        total(|s| s.flood.records_stored),
        total(|s| s.flood.records_over_pace),
        total(|s| s.flood.control_over_budget),
        total(|s| s.flood.summaries_sent),
        total(|s| s.flood.ihave_sent),
        total(|s| s.flood.ihave_ids),
        total(|s| s.flood.iwant_sent),
        total(|s| s.flood.repaired),
        total(|s| s.flood.dropped),
        total(|s| s.flood.non_members),
    );
    // All at once, as a whole cluster stops (also after a failure: dropping the handles would
    // leave each node to notice on its own): one by one, each node's peers would see its
    // connections close and start redialling it while the next one stops.
    let stopping = Instant::now();
    for result in futures::future::join_all(nodes.iter().map(|node| node.shutdown())).await {
        result?;
    }
    println!("{n} nodes shut down in {:?}", stopping.elapsed());
    Ok(outcome?)
}
