//! Routed unicast (`routed3_*`): 1 KiB requests with 1 KiB replies, 64 in flight, from one end
//! of a line of four nodes to the other: 3 hops, through two relays, over a routed connection
//! (CA-TLS end to end inside the relays' CA-TLS links). Beside it, the same load from the same
//! node to its direct neighbour (`routed3_direct_*`), so that both figures come from one
//! harness: four full nodes ([`bcos_p2p::node::Node`]) in this process on one 2-worker tokio
//! runtime, as the routed path needs the relays to run too.

use std::time::{Duration, Instant};

use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, PeerAddr},
    node::{Node, NodeEvent},
};
use bytes::Bytes;
use futures::{StreamExt as _, stream::FuturesUnordered};

use super::Outcome;

const MODULE: u16 = 1;

/// Direct and routed figures of one run each, back to back.
pub struct Pair {
    pub direct: Outcome,
    pub routed: Outcome,
}

fn node_key(ca: &CertificateAuthority) -> (NodeKey, ca_tls::Config) {
    let key = NodeKey::generate(KeyType::Secp256k1).unwrap();
    let cert = ca
        .issue_node(&key, "CN=node,O=bench", Period::days(1))
        .unwrap();
    let chain = ca.node_chain(cert).unwrap();
    let tls = ca_tls::Config::new(&key, chain, vec![ca.root_der().unwrap()]).unwrap();
    (key, tls)
}

/// Keeps answering requests by echo.
fn echo(mut events: impl futures::Stream<Item = NodeEvent> + Send + Unpin + 'static) {
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
}

/// `requests` requests of 1 KiB from `from` to `to`, `in_flight` at a time.
async fn drive(from: &Node, to: &NodeId, requests: usize, in_flight: usize) -> Outcome {
    let payload = Bytes::from(super::noise(1024));
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    let mut rtts_us = Vec::with_capacity(requests);
    while rtts_us.len() < requests {
        while pending.len() < in_flight && sent < requests {
            let (node, to, payload) = (from.clone(), to.clone(), payload.clone());
            pending.push(async move {
                let t = Instant::now();
                let reply = node.request(&to, MODULE, payload).await.expect("request");
                assert_eq!(reply.len(), 1024);
                t.elapsed()
            });
            sent += 1;
        }
        let rtt = pending.next().await.expect("in flight");
        rtts_us.push(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
    }
    Outcome {
        secs: start.elapsed().as_secs_f64(),
        cpu_ns: None,
        rtts_us,
        bytes: requests * 2048,
    }
}

/// Runs `reps` pairs of `requests` requests (direct, then routed over 3 hops).
pub fn run(requests: usize, reps: usize) -> Vec<Pair> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca =
            CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap();
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..4 {
            let (key, tls) = node_key(&ca);
            let mut config = Config::default();
            config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
            if i > 0 {
                config.network.peers = vec![PeerAddr(nodes[i - 1].listen_addrs()[0].clone())];
            }
            let mut node = Node::start(key, tls, config).await.unwrap();
            echo(node.events().unwrap());
            nodes.push(node);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while nodes[0].reachable().await.unwrap().len() < 3 {
            assert!(Instant::now() < deadline, "the line did not form");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (near, far) = (nodes[1].node_id().clone(), nodes[3].node_id().clone());
        // Warm-up, not counted: opens the routed connection and grows the buffers.
        drive(&nodes[0], &near, 2000, 64).await;
        drive(&nodes[0], &far, 2000, 64).await;
        let mut pairs = Vec::new();
        for _ in 0..reps {
            let direct = drive(&nodes[0], &near, requests, 64).await;
            let routed = drive(&nodes[0], &far, requests, 64).await;
            pairs.push(Pair { direct, routed });
        }
        let peers = nodes[0].peers().await.unwrap();
        let route = peers
            .iter()
            .find(|p| p.node == far)
            .and_then(|p| p.relays.clone());
        assert_eq!(
            route.map(|r| r.len()),
            Some(2),
            "the far end is 2 relays away"
        );
        for n in &nodes {
            let _ = n.shutdown().await;
        }
        pairs
    })
}
