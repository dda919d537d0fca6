//! Embedding bcos-p2p in your own swarm: your behaviour holds ours next to your own protocols,
//! and your event loop sees everything.
//!
//! Two nodes in one process with certificates made on the fly: node B asks node A over
//! unicast, A answers, then A broadcasts.
//!
//! `cargo run --example embed`

use std::time::Duration;

use bcos_p2p::{
    KeyType, NodeKey,
    behaviour::{self, build_swarm_with},
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, DEFAULT_MODULE},
    flood, unicast,
};
use bytes::Bytes;
use futures::StreamExt as _;
use libp2p::{
    Swarm,
    swarm::{NetworkBehaviour, SwarmEvent},
};

/// Your node's behaviour: bcos-p2p next to your own protocols (here libp2p-stream, with which
/// you would open raw streams of a protocol of yours).
#[derive(NetworkBehaviour)]
struct MyBehaviour {
    p2p: behaviour::Behaviour,
    mine: libp2p_stream::Behaviour,
}

fn node(ca: &CertificateAuthority) -> Result<Swarm<MyBehaviour>, Box<dyn std::error::Error>> {
    let key = NodeKey::generate(KeyType::Secp256k1)?;
    let cert = ca.issue_node(&key, "CN=node,O=example", Period::days(1))?;
    let tls = ca_tls::Config::new(&key, ca.node_chain(cert)?, vec![ca.root_der()?])?;
    let swarm = build_swarm_with(&key, &tls, |_| MyBehaviour {
        p2p: behaviour::Behaviour::new(&key, &tls, &Config::default()),
        mine: libp2p_stream::Behaviour::new(),
    })?;
    Ok(swarm)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=example CA", Period::days(1))?;
    let (mut a, mut b) = (node(&ca)?, node(&ca)?);
    a.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = a.select_next_some().await {
            break address;
        }
    };
    b.dial(addr)?;
    let a_id = bcos_p2p::NodeId::from_peer_id(a.local_peer_id())?;

    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = a.select_next_some() => match event {
                SwarmEvent::Behaviour(MyBehaviourEvent::P2p(behaviour::Event::Unicast(
                    unicast::Event::Request { from, payload, channel, .. },
                ))) => {
                    println!("A: request from {}: {}", from.short(), String::from_utf8_lossy(&payload));
                    a.behaviour_mut().p2p.unicast.respond(channel, Bytes::from_static(b"hello back"))?;
                    a.behaviour_mut().p2p.flood.broadcast(Bytes::from_static(b"news for everyone"))?;
                }
                SwarmEvent::ConnectionEstablished { .. } => println!("A: B connected"),
                _ => {}
            },
            event = b.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { .. } => {
                    println!("B: connected to A, asking");
                    b.behaviour_mut().p2p.unicast.send_request(&a_id, DEFAULT_MODULE, Bytes::from_static(b"hello"));
                }
                SwarmEvent::Behaviour(MyBehaviourEvent::P2p(behaviour::Event::Unicast(
                    unicast::Event::Response { result, .. },
                ))) => println!("B: reply: {:?}", result.map(|r| String::from_utf8_lossy(&r).into_owned())),
                SwarmEvent::Behaviour(MyBehaviourEvent::P2p(behaviour::Event::Flood(
                    flood::Event::Message { payload, origin, .. },
                ))) => {
                    println!("B: broadcast from {}: {}", origin.short(), String::from_utf8_lossy(&payload));
                    return Ok(());
                }
                _ => {}
            },
            _ = &mut deadline => return Err("the example did not finish in 10 s".into()),
        }
    }
}
