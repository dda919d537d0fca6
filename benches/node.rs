//! Node benchmark: (a) a 64-node full mesh in one process — time until all 2016 connections are
//! up, and the process's RSS then; (b) reconnect — one node of a mesh is dropped and started
//! again on the same address, 20 times: time until all its peers are connected to it again —
//! once with the restarted node dialling them, once with only their redials (default backoff)
//! bringing it back (`reconnect_p50_ms`/`reconnect_p99_ms` are the latter).
//!
//! `cargo bench --bench node [-- --quick]`; the last line is JSON (see docs/ARCHITECTURE.md).

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bcos_p2p::{
    KeyType, NodeId,
    ca_tls::pki::{CertificateAuthority, Period},
    node::Node,
};
use support::{Member, member, quantile, start};
use tokio::sync::mpsc;

type Connected = (usize, NodeId);

/// Starts `n` nodes, node i dialling nodes 0..i; returns them once every pair is connected,
/// with the time that took.
async fn mesh(
    ca: &CertificateAuthority,
    members: &mut [Member],
    events: &mpsc::UnboundedSender<Connected>,
    rx: &mut mpsc::UnboundedReceiver<Connected>,
) -> (Vec<Option<Node>>, Duration) {
    let n = members.len();
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let peers = members[..i]
            .iter()
            .map(|m| m.addr.clone().expect("started"))
            .collect();
        let node = start(
            ca,
            &members[i],
            i,
            "/ip4/127.0.0.1/tcp/0".parse().expect("addr"),
            peers,
            events.clone(),
        )
        .await;
        members[i].addr = Some(node.listen_addrs()[0].clone());
        nodes.push(Some(node));
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n * (n - 1) {
        let Ok(got) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await else {
            let mut missing: Vec<usize> = (0..n)
                .filter(|i| seen.iter().filter(|(j, _)| j == i).count() < n - 1)
                .collect();
            missing.truncate(8);
            panic!(
                "the mesh did not come up: {} of {} connection ends; nodes missing some: {missing:?}",
                seen.len(),
                n * (n - 1)
            );
        };
        seen.insert(got.expect("nodes run"));
    }
    (nodes, started.elapsed())
}

fn main() {
    // Malloc as the `bcos-p2p` binary sets it (bcos_p2p::malloc).
    bcos_p2p::malloc::tune();
    let quick = support::quick();
    let (mesh_n, ring_n, rounds) = if quick { (64, 8, 6) } else { (64, 8, 20) };
    support::memory::raise_fd_limit(mesh_n);
    let runtime = support::runtime();
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=bench", Period::days(1))
        .expect("ca");
    let (mesh_s, mesh_rss, reconnects) = runtime.block_on(async {
        // (a) the 64-node mesh.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut members: Vec<Member> = (0..mesh_n).map(|i| member(&ca, i)).collect();
        let (nodes, took) = mesh(&ca, &mut members, &tx, &mut rx).await;
        let rss = support::memory::rss_kb() / 1024.0;
        for node in nodes.into_iter().flatten() {
            node.shutdown().await.ok();
        }
        drop((tx, rx));

        // (b) reconnect: node 0 of an 8-node mesh is dropped and restarted on its address.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut members: Vec<Member> = (0..ring_n).map(|i| member(&ca, i)).collect();
        let (mut nodes, _) = mesh(&ca, &mut members, &tx, &mut rx).await;
        let target = members[0].key.node_id().clone();
        // First the restarted node dials its peers itself; then it comes back with no peers
        // configured, so only the others' redials (default backoff) bring it back.
        let mut times = [Vec::with_capacity(rounds), Vec::with_capacity(rounds)];
        for (kind, series) in times.iter_mut().enumerate() {
            for _ in 0..rounds {
                // Dropping the handle ends the node's task and its swarm: sockets close at once.
                drop(nodes[0].take());
                // Let the others notice, so they really reconnect.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
                let t = Instant::now();
                let peers = if kind == 0 {
                    members[1..]
                        .iter()
                        .map(|m| m.addr.clone().expect("started"))
                        .collect()
                } else {
                    Vec::new()
                };
                let addr = members[0].addr.clone().expect("started");
                nodes[0] = Some(start(&ca, &members[0], 0, addr, peers, tx.clone()).await);
                let mut back = std::collections::HashSet::new();
                while back.len() < ring_n - 1 {
                    let (i, peer) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                        .await
                        .expect("reconnected in time")
                        .expect("nodes run");
                    if i != 0 && peer == target {
                        back.insert(i);
                    }
                }
                series.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        for node in nodes.into_iter().flatten() {
            node.shutdown().await.ok();
        }
        (took.as_secs_f64(), rss, times)
    });
    let stats = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        (quantile(&sorted, 0.5), quantile(&sorted, 0.99))
    };
    let (self_p50, self_p99) = stats(&reconnects[0]);
    let (p50, p99) = stats(&reconnects[1]);
    println!(
        "node: {mesh_n}-node full mesh in one process; one node of an {ring_n}-node mesh dropped and restarted on its address, {rounds} times each way"
    );
    println!("{:<52} {:>10}", "figure", "value");
    println!(
        "{:<52} {:>10.2}",
        format!("{mesh_n}-node mesh connected (s)"),
        mesh_s
    );
    println!("{:<52} {:>10.1}", "RSS with the mesh up (MB)", mesh_rss);
    println!(
        "{:<52} {:>10.1}",
        "reconnect, restarted node dials: p50 (ms)", self_p50
    );
    println!(
        "{:<52} {:>10.1}",
        "reconnect, restarted node dials: p99 (ms)", self_p99
    );
    println!(
        "{:<52} {:>10.1}",
        "reconnect, the others redial (backoff): p50 (ms)", p50
    );
    println!(
        "{:<52} {:>10.1}",
        "reconnect, the others redial (backoff): p99 (ms)", p99
    );
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{{\"mesh64_connect_s\":{},\"mesh64_rss_mb\":{},\"reconnect_p50_ms\":{},\"reconnect_p99_ms\":{},\"reconnect_dialling_p50_ms\":{},\"reconnect_dialling_p99_ms\":{}}}",
        r(mesh_s),
        r(mesh_rss),
        r(p50),
        r(p99),
        r(self_p50),
        r(self_p99)
    );
}
