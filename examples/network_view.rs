//! The operator's network view of a small network: N nodes on localhost in one process (a
//! ring with a few chords, some topics subscribed), node 0 serving its metrics and view. Open
//! the printed address in a browser; the page redraws as the network changes.
//!
//! `cargo run --example network_view -- [NODES] [IP:PORT]` (8 nodes and 127.0.0.1:9898 by
//! default); stops on Ctrl-C.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bcos_p2p::{
    KeyType, NodeKey,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, DEFAULT_MODULE, PeerAddr},
    metrics::{MetricsServer, Registry},
    node::{Node, NodeEvent},
};
use bytes::Bytes;
use futures::StreamExt as _;

/// Topics the nodes subscribe to, node `i` taking topic `i % TOPICS.len()` (and none for some).
const TOPICS: [Option<&str>; 5] = [
    None,
    Some("blocks"),
    Some("tx-pool"),
    None,
    Some("amop/orders"),
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8);
    let addr: SocketAddr = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or_else(|| "127.0.0.1:9898".parse().expect("an address"));
    if !(3..=64).contains(&n) {
        return Err("the network size must be 3 to 64".into());
    }
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=view CA", Period::days(1))?;
    let mut nodes: Vec<Node> = Vec::new();
    let mut registry = Registry::default();
    for i in 0..n {
        let key = NodeKey::generate(KeyType::Secp256k1)?;
        let cert = ca.issue_node(&key, &format!("CN=node{i}"), Period::days(1))?;
        let tls = ca_tls::Config::new(&key, ca.node_chain(cert)?, vec![ca.root_der()?])?;
        let mut config = Config::default();
        config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        // A ring, and a chord from every third node across it.
        let mut peers = Vec::new();
        if i > 0 {
            peers.push(i - 1);
        }
        if i == n - 1 {
            peers.push(0);
        }
        if i % 3 == 0 && i >= n / 2 {
            peers.push(i - n / 2);
        }
        config.network.peers = peers
            .into_iter()
            .map(|p| PeerAddr(nodes[p].listen_addrs()[0].clone()))
            .collect();
        config.connection.share_one_host();
        let mut node = if i == 0 {
            Node::start_with_metrics(key, tls, config, &mut registry).await?
        } else {
            Node::start(key, tls, config).await?
        };
        if let Some(topic) = TOPICS[i % TOPICS.len()] {
            node.subscribe(topic).await?;
        }
        let mut events = node.events().expect("first call");
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let NodeEvent::Request {
                    payload, responder, ..
                } = event
                {
                    let _ = responder.respond(payload).await;
                }
            }
        });
        nodes.push(node);
    }
    let server = MetricsServer::bind_with_node(addr, Arc::new(registry), nodes[0].clone()).await?;
    println!("node 0's view: http://{}/network", server.local_addr());
    // Once the views settle, a request to the node farthest from node 0 opens a routed
    // connection to it (shown apart from the direct ones).
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(far) = nodes[0]
        .network()
        .await?
        .into_iter()
        .max_by_key(|m| m.hops)
        .filter(|m| m.hops > 1)
    {
        match nodes[0]
            .request(&far.node, DEFAULT_MODULE, Bytes::from_static(b"hello"))
            .await
        {
            Ok(_) => println!("routed connection to {} open", far.node.short()),
            Err(e) => println!("request to {} failed: {e}", far.node.short()),
        }
    }
    tokio::signal::ctrl_c().await?;
    for node in &nodes {
        let _ = node.shutdown().await;
    }
    Ok(())
}
