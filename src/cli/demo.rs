//! `bcos-p2p demo`: a local network in one process that shows what the layer does, with timings.
//!
//! Certificates are made in a temporary folder (removed at the end), nodes listen on
//! 127.0.0.1 with ports the OS picks, and every step prints what happened and how long it took.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bcos_p2p::{
    KeyType, NodeId,
    behaviour::build_swarm,
    ca_tls,
    certgen::{GenOptions, gen_certs},
    events::Event,
};
use futures::StreamExt as _;
use libp2p::{Multiaddr, swarm::SwarmEvent};
use tokio::sync::mpsc;

/// How long any one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// What a node task reports.
#[derive(Debug)]
enum Report {
    Connected { node: usize, peer: Option<NodeId> },
    Refused { node: usize, event: Event },
}

struct DemoNode {
    name: String,
    node_id: NodeId,
    addr: Multiaddr,
    dial: mpsc::Sender<Multiaddr>,
    task: tokio::task::JoinHandle<()>,
}

/// Loads a node from its directory, starts it on 127.0.0.1, and spawns its event loop.
async fn start_node(
    index: usize,
    name: String,
    dir: &std::path::Path,
    reports: mpsc::Sender<Report>,
    deny: Option<NodeId>,
) -> anyhow::Result<DemoNode> {
    let (key, tls) = ca_tls::Config::load(
        dir.join("node.key"),
        dir.join("node.crt"),
        dir.join("ca.crt"),
    )
    .with_context(|| format!("loading {}", dir.display()))?;
    if let Some(d) = deny {
        tls.access_list().deny(d);
    }
    let mut swarm = build_swarm(&key, &tls, &Default::default())?;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .context("node did not start listening")?;
    let (dial, mut dial_rx) = mpsc::channel::<Multiaddr>(16);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(addr) = dial_rx.recv() => {
                    if let Err(e) = swarm.dial(addr) {
                        tracing::warn!("dial failed: {e}");
                    }
                }
                event = swarm.select_next_some() => {
                    let report = match event {
                        SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } if num_established.get() == 1 => {
                            Some(Report::Connected { node: index, peer: tls.node_ids().resolve(&peer_id) })
                        }
                        SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                            Event::refused(send_back_addr.to_string(), &error).map(|event| Report::Refused { node: index, event })
                        }
                        SwarmEvent::OutgoingConnectionError { error, .. } => {
                            Event::refused_dial(&error).map(|event| Report::Refused { node: index, event })
                        }
                        _ => None,
                    };
                    if let Some(r) = report
                        && reports.send(r).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Ok(DemoNode {
        name,
        node_id: key.node_id().clone(),
        addr,
        dial,
        task,
    })
}

pub async fn demo(n: usize) -> anyhow::Result<()> {
    super::init_logging("warn");
    if !(2..=64).contains(&n) {
        bail!("--nodes must be 2 to 64");
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("cannot make a temporary folder")?;
    println!(
        "bcos-p2p demo: {n} nodes on 127.0.0.1, certificates in {}\n",
        tmp.path().display()
    );

    // 1. Certificates: a chain CA and N nodes, plus an intruder from another CA and a latecomer.
    let t = Instant::now();
    let main = tmp.path().join("chain");
    let nodes = gen_certs(&GenOptions {
        out: main.clone(),
        nodes: n + 1,
        key_type: KeyType::Secp256k1,
        days: 1,
        base_port: 30300,
    })?;
    let other = tmp.path().join("other-chain");
    let intruder = gen_certs(&GenOptions {
        out: other,
        nodes: 1,
        key_type: KeyType::Secp256k1,
        days: 1,
        base_port: 30300,
    })?;
    println!(
        "1. Certificates (secp256k1 chain CA, {} ms)",
        t.elapsed().as_millis()
    );
    for (i, node) in nodes.iter().take(n).enumerate() {
        println!("   node{i}  NodeId {}", node.node_id);
    }
    println!();

    // 2. Start the nodes and connect them: node i dials nodes 0..i, so each pair has one dialler.
    let (report_tx, mut reports) = mpsc::channel(1024);
    let mut running = Vec::with_capacity(n);
    for (i, node) in nodes.iter().take(n).enumerate() {
        let deny = (i == 0).then(|| nodes[n].node_id.clone());
        running.push(start_node(i, format!("node{i}"), &node.dir, report_tx.clone(), deny).await?);
    }
    let t = Instant::now();
    for i in 1..n {
        for j in 0..i {
            running[i].dial.send(running[j].addr.clone()).await?;
        }
    }
    println!(
        "2. Mutually authenticated TLS 1.3 connections (certificates verified against ca.crt)"
    );
    let expected = n * (n - 1);
    let mut seen = 0;
    let mut peers_of = vec![Vec::new(); n];
    while seen < expected {
        match tokio::time::timeout(STEP_TIMEOUT, reports.recv()).await {
            Ok(Some(Report::Connected { node, peer })) => {
                seen += 1;
                let peer_name = peer
                    .as_ref()
                    .and_then(|p| running.iter().find(|r| &r.node_id == p))
                    .map_or("?", |r| r.name.as_str());
                println!(
                    "   {:>6} ms  {} authenticated {} (NodeId {}…)",
                    t.elapsed().as_millis(),
                    running[node].name,
                    peer_name,
                    peer.as_ref().map_or_else(|| "?".into(), |p| p.short())
                );
                peers_of[node].push(peer_name.to_string());
            }
            Ok(Some(Report::Refused { event, .. })) => {
                bail!("unexpected refusal: {}", event.to_human())
            }
            Ok(None) | Err(_) => bail!("only {seen} of {expected} connection ends came up in time"),
        }
    }
    let mesh_ms = t.elapsed().as_millis();
    println!(
        "   full mesh: {} connections in {mesh_ms} ms\n",
        expected / 2
    );

    // 3. Refusals: an intruder with another CA's certificate, and a node on node0's deny list.
    println!("3. Refused at the handshake, before any protocol runs");
    let t = Instant::now();
    let stranger = start_node(
        n,
        "intruder".into(),
        &intruder[0].dir,
        report_tx.clone(),
        None,
    )
    .await?;
    stranger.dial.send(running[0].addr.clone()).await?;
    let denied = start_node(
        n + 1,
        "denied".into(),
        &nodes[n].dir,
        report_tx.clone(),
        None,
    )
    .await?;
    denied.dial.send(running[0].addr.clone()).await?;
    let mut refusals = 0;
    while refusals < 4 {
        match tokio::time::timeout(STEP_TIMEOUT, reports.recv()).await {
            Ok(Some(Report::Refused { node, event })) => {
                refusals += 1;
                let who = match node {
                    x if x == n => "intruder",
                    x if x == n + 1 => "denied node",
                    x => running[x].name.as_str(),
                };
                if let Event::Refused {
                    reason,
                    node_id,
                    code,
                    ..
                } = event
                {
                    let peer = node_id
                        .map_or_else(|| "a peer".to_string(), |id| format!("{}…", id.short()));
                    let what = if code == "rejected_by_peer" {
                        format!("was refused by {peer}: {reason}")
                    } else {
                        format!("refused {peer}: {reason}")
                    };
                    println!("   {:>6} ms  {who:<11} {what}", t.elapsed().as_millis());
                }
            }
            Ok(Some(Report::Connected { node, .. })) => {
                bail!("node {node} connected but should have been refused")
            }
            Ok(None) | Err(_) => bail!("only {refusals} of 4 refusal reports came in time"),
        }
    }
    println!();

    // 4. Summary.
    println!("4. Summary");
    println!(
        "   {:<8} {:<18} {:<7} connected to",
        "node", "NodeId", "peers"
    );
    for (i, r) in running.iter().enumerate() {
        let mut p = peers_of[i].clone();
        p.sort();
        println!(
            "   {:<8} {:<18} {:<7} {}",
            r.name,
            format!("{}…", r.node_id.short()),
            p.len(),
            p.join(" ")
        );
    }
    println!(
        "\n   {n} nodes, {} authenticated connections in {mesh_ms} ms, 2 intruders refused; total {} ms",
        expected / 2,
        started.elapsed().as_millis()
    );
    for node in running.into_iter().chain([stranger, denied]) {
        node.task.abort();
    }
    drop(tmp);
    Ok(())
}
