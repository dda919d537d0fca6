//! Status sync on a 16-node full mesh in one process (TCP loopback + CA-TLS + yamux + status,
//! nothing else on the connections). `cargo bench --bench status [-- --quick]`.
//!
//! 1. convergence: node 0 changes its status 200 times, one change every 10 ms; for each change,
//!    the time from `set_status` until the last of the 15 peers holds that seq or a newer one
//!    (a query answered after the next change already carries the newer status, so a peer may
//!    skip a seq);
//! 2. queries per change: queries node 0 received during the changes ÷ changes (one per peer
//!    and change is the design's bound: 15);
//! 3. idle cost: bytes read by every socket over a quiet window (5 s; 2 s with `--quick`) ÷
//!    seconds ÷ directed peer links (16 × 15), at the default announce period of 1 s.
//!
//! Prints a table, then one JSON line with the figures (the contract in docs/ARCHITECTURE.md).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId,
    ca_tls::pki::{CertificateAuthority, Period},
    status::{self, Config, Event, Stats},
};
use bytes::Bytes;
use futures::StreamExt as _;
use libp2p::{Swarm, swarm::SwarmEvent};
use tokio::sync::{mpsc, oneshot};

const NODES: usize = 16;
const CHANGES: u64 = 200;
const SPACING: Duration = Duration::from_millis(10);
/// Bound on the mesh coming up and on the last change reaching everyone.
const WAIT: Duration = Duration::from_secs(60);

enum Command {
    Set(Bytes),
    Stats(oneshot::Sender<Stats>),
}

/// Node `at` learned `node`'s status `seq` at `when`.
struct Update {
    at: usize,
    node: NodeId,
    seq: u64,
    when: Instant,
}

fn main() {
    // Malloc as the `bcos-p2p` binary sets it (bcos_p2p::malloc).
    bcos_p2p::malloc::tune();
    support::runtime().block_on(run(support::quick()));
}

/// Runs one swarm: applies commands, reports every status it learns.
async fn node_task(
    at: usize,
    mut swarm: Swarm<status::Behaviour>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    updates: mpsc::UnboundedSender<Update>,
    sets: mpsc::UnboundedSender<(u64, Instant)>,
) {
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Set(payload)) => {
                    let started = Instant::now();
                    let seq = swarm.behaviour_mut().set_status(payload).expect("payload within the limit");
                    let _ = sets.send((seq, started));
                }
                Some(Command::Stats(reply)) => {
                    let _ = reply.send(swarm.behaviour().stats());
                }
                None => return,
            },
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(Event::StatusUpdated { node, seq, .. }) = event {
                    let _ = updates.send(Update { at, node, seq, when: Instant::now() });
                }
            }
        }
    }
}

async fn stats_of(commands: &mpsc::UnboundedSender<Command>) -> Stats {
    let (tx, rx) = oneshot::channel();
    commands.send(Command::Stats(tx)).unwrap();
    rx.await.unwrap()
}

/// Receives updates until `done` holds, bounded by [`WAIT`]; returns them.
async fn collect(
    updates: &mut mpsc::UnboundedReceiver<Update>,
    what: &str,
    mut done: impl FnMut(&Update) -> bool,
) -> Vec<Update> {
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(u) = updates.recv().await {
            let finished = done(&u);
            got.push(u);
            if finished {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not done within {WAIT:?}"));
    got
}

async fn run(quick: bool) {
    let idle_window = Duration::from_secs(if quick { 2 } else { 5 });
    let ca =
        CertificateAuthority::new_root(KeyType::Secp256k1, "CN=bench-ca", Period::days(1)).unwrap();
    let mut swarms = Vec::new();
    let mut ids = Vec::new();
    let mut counters = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..NODES {
        let (key, tls) = common::node(&ca, KeyType::Secp256k1, Period::days(1));
        let book = tls.node_ids().clone();
        let (mut swarm, counter) = support::build_counting_swarm(&key, &tls, |_| {
            status::Behaviour::new(Config::default(), book)
        })
        .unwrap();
        addrs.push(support::listen_local(&mut swarm).await);
        ids.push(key.node_id().clone());
        counters.push(counter);
        swarms.push(swarm);
    }
    for (i, swarm) in swarms.iter_mut().enumerate() {
        for addr in &addrs[i + 1..] {
            swarm.dial(addr.clone()).unwrap();
        }
    }
    let (update_tx, mut updates) = mpsc::unbounded_channel();
    let (set_tx, mut sets) = mpsc::unbounded_channel();
    let mut commands = Vec::new();
    let mut tasks = Vec::new();
    let setup = Instant::now();
    for (at, swarm) in swarms.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        commands.push(tx);
        tasks.push(tokio::spawn(node_task(
            at,
            swarm,
            rx,
            update_tx.clone(),
            set_tx.clone(),
        )));
    }

    // The mesh is up when every node holds the 15 others' first status.
    let mut learned = HashSet::new();
    collect(&mut updates, "mesh setup", |u| {
        learned.insert((u.at, u.node.clone()));
        learned.len() == NODES * (NODES - 1)
    })
    .await;
    let setup = setup.elapsed();

    // Node 0 changes its status every 10 ms.
    let before = stats_of(&commands[0]).await;
    let mut tick = tokio::time::interval(SPACING);
    for k in 0..CHANGES {
        tick.tick().await;
        let payload = format!("height={k:08};hash={:064x}", u128::from(k) * 0x9e37_79b9);
        commands[0]
            .send(Command::Set(Bytes::from(payload)))
            .unwrap();
    }
    let last = CHANGES + 1;
    let mut at_last = HashSet::new();
    let changes = collect(&mut updates, "the last change", |u| {
        if u.node == ids[0] && u.seq == last {
            at_last.insert(u.at);
        }
        at_last.len() == NODES - 1
    })
    .await;
    let after = stats_of(&commands[0]).await;
    let mut set_at = HashMap::new();
    while let Ok((seq, when)) = sets.try_recv() {
        set_at.insert(seq, when);
    }
    let converge_ms = convergence(&changes, &ids[0], &set_at);
    let queries_per_change =
        (after.queries_received - before.queries_received) as f64 / CHANGES as f64;

    // Idle: let the last answers drain, then count what the sockets read over a quiet window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let read = || counters.iter().map(|c| c.read_bytes()).sum::<u64>();
    let start_bytes = read();
    let started = Instant::now();
    tokio::time::sleep(idle_window).await;
    let idle_bytes = read() - start_bytes;
    let links = (NODES * (NODES - 1)) as f64;
    let idle_per_peer = idle_bytes as f64 / started.elapsed().as_secs_f64() / links;
    while let Ok(u) = updates.try_recv() {
        assert!(u.node != ids[0] || u.seq == last, "a change arrived late");
    }
    for t in &tasks {
        t.abort();
    }

    let p50 = support::quantile(&converge_ms, 0.5);
    let p99 = support::quantile(&converge_ms, 0.99);
    let max = converge_ms.last().copied().unwrap_or(0.0);
    println!(
        "status benchmark ({} mode, {NODES}-node full mesh, TCP loopback + CA-TLS + yamux, 2 worker threads)",
        if quick { "quick" } else { "full" }
    );
    println!("{:<44} {:>10}", "figure", "value");
    let row = |name: &str, value: String| println!("{name:<44} {value:>10}");
    row(
        "mesh setup (all 240 statuses learned)",
        format!("{:.0} ms", setup.as_secs_f64() * 1e3),
    );
    row(
        &format!("changes by node 0 (every {} ms)", SPACING.as_millis()),
        CHANGES.to_string(),
    );
    row(
        "converge p50 (set_status -> last peer)",
        format!("{p50:.2} ms"),
    );
    row("converge p99", format!("{p99:.2} ms"));
    row("converge max", format!("{max:.2} ms"));
    row(
        "queries to node 0 per change (15 peers)",
        format!("{queries_per_change:.2}"),
    );
    row(
        &format!(
            "idle bytes/s per directed link ({} s window)",
            idle_window.as_secs()
        ),
        format!("{idle_per_peer:.1}"),
    );
    let json = serde_json::json!({
        "converge_p50_ms": round2(p50),
        "converge_p99_ms": round2(p99),
        "idle_bytes_per_s_per_peer": round2(idle_per_peer),
        "queries_per_change": round2(queries_per_change),
    });
    println!("{json}");
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// For each change (seq 2..), the ms from its `set_status` until every peer held it or newer;
/// sorted.
fn convergence(updates: &[Update], changed: &NodeId, set_at: &HashMap<u64, Instant>) -> Vec<f64> {
    // Per peer, the seqs of `changed` it learned, in order (they only grow).
    let mut per_peer: HashMap<usize, Vec<(u64, Instant)>> = HashMap::new();
    for u in updates.iter().filter(|u| &u.node == changed) {
        per_peer.entry(u.at).or_default().push((u.seq, u.when));
    }
    let mut out: Vec<f64> = set_at
        .iter()
        .map(|(&seq, &set)| {
            let reached = per_peer
                .values()
                .map(|seen| {
                    seen.iter()
                        .find(|(s, _)| *s >= seq)
                        .map(|(_, when)| *when)
                        .expect("every peer reached the last seq")
                })
                .max()
                .expect("peers");
            reached.saturating_duration_since(set).as_secs_f64() * 1e3
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}
