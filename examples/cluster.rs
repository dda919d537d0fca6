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
    node::{Node, NodeEvent},
};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    let (mut ends, mut delivered) = (0, 0);
    // Forming a full mesh takes time that grows with the number of links (TLS handshakes on
    // every one); the broadcasts then get 30 s.
    let limit = Duration::from_secs(30 + n as u64);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let outcome: Result<(), String> = loop {
        tokio::select! {
            Some((i, event)) = rx.recv() => match event {
                NodeEvent::Connected { .. } => {
                    ends += 1;
                    if ends == n * (n - 1) {
                        println!("full mesh of {} connections in {:?}", n * (n - 1) / 2, started.elapsed());
                        for node in &nodes {
                            node.broadcast(Bytes::from(format!("hello from {}", node.node_id().short()))).await?;
                        }
                        deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(30));
                    }
                }
                NodeEvent::Flood(flood::Event::Message { origin, hops, .. }) => {
                    delivered += 1;
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
                    format!("the broadcasts did not all arrive in 30 s ({delivered} of {})", n * (n - 1))
                };
                break Err(what);
            }
        }
    };
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
