//! Scale benchmark: whole nodes (`Node::start`: TCP loopback + CA-TLS + yamux + every
//! protocol), many in one process, as `examples/cluster.rs` runs them.
//!
//! 1. A full mesh of 128 (`--quick`: 64): node `i` starts with the nodes before it as its
//!    peers. `mesh128_connect_s` is the time from the first start to the last connection up;
//!    at that moment every node broadcasts once, and `mesh128_fresh_broadcast_p99_ms` is the
//!    99th percentile over all deliveries of the time from that moment (views of the graph are
//!    still converging then). `mesh128_rss_mb` is the process's resident memory after the
//!    broadcasts.
//! 2. The same mesh, once every node reaches every other and 20 s more (`--quick`: 10 s),
//!    idle for 30 s (`--quick`: 5 s):
//!    `control_bytes_per_link_per_s_idle` is what flood and status frames cost per link per
//!    second, both ways together, on the wire: frame bodies as counted by the protocols plus,
//!    per frame, its length prefix, a yamux header (12 bytes) and a TLS record's overhead (22
//!    bytes, an upper bound since records often carry several frames); the connection
//!    manager's pings are printed beside it, not counted.
//! 3. A random 8-regular graph of 256 nodes (`--quick`: 128): once every node reaches every
//!    other and 20 s more (`--quick`: 10 s; the paced records out), 32 nodes broadcast once
//!    each, one every 50 ms; `regular256_broadcast_p99_ms` is the 99th percentile of the
//!    deliveries' latencies, each from its own broadcast.
//! 4. Run first, on a fresh heap: `rss_kb_per_connection_end`, resident memory per idle
//!    connection end of a full mesh (`support::memory`: 64 nodes, `--quick` 32), against the
//!    same nodes unconnected.
//!
//! `cargo bench --bench scale [-- --quick]`; the last line is JSON (see docs/ARCHITECTURE.md).

#[path = "../tests/byzantine/mod.rs"]
mod byzantine;
#[path = "support/mod.rs"]
mod support;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId,
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

/// Per-frame wire overhead beyond the body: a varint length prefix (1–2 bytes for control
/// frames), a yamux frame header, a TLS 1.3 record's header, content type and tag.
const FRAME_OVERHEAD: u64 = 2 + 12 + 22;

/// Nodes started in one process and the events they report.
struct Cluster {
    nodes: Vec<Node>,
    events: mpsc::UnboundedReceiver<(usize, NodeEvent)>,
    started: Instant,
}

impl Cluster {
    /// Starts `n` nodes; node `i` dials the earlier nodes `peers(i)` names.
    async fn start(n: usize, peers: impl Fn(usize) -> Vec<usize>) -> Cluster {
        let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=scale CA", Period::days(1))
            .expect("CA");
        let (tx, events) = mpsc::unbounded_channel();
        let started = Instant::now();
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for i in 0..n {
            let m = support::member(&ca, i);
            let tls = ca_tls::Config::new(&m.key, m.cert, vec![ca.root_der().expect("root")])
                .expect("tls");
            let mut config = Config::default();
            config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
            config.network.peers = peers(i)
                .into_iter()
                .map(|p| PeerAddr(nodes[p].listen_addrs()[0].clone()))
                .collect();
            // All nodes share 127.0.0.1.
            config.connection.share_one_host();
            let mut node = Node::start(m.key, tls, config).await.expect("node starts");
            let mut stream = node.events().expect("first call");
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(event) = stream.next().await {
                    if tx.send((i, event)).is_err() {
                        break;
                    }
                }
            });
            nodes.push(node);
        }
        Cluster {
            nodes,
            events,
            started,
        }
    }

    /// Waits until `ends` connection ends are up (bounded by `limit`); the time since start.
    async fn connected(&mut self, ends: usize, limit: Duration) -> Duration {
        let deadline = tokio::time::Instant::now() + limit;
        let mut up = 0;
        while up < ends {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((_, NodeEvent::Connected { .. }))) => up += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("{up} of {ends} connection ends up in {limit:?}"),
            }
        }
        self.started.elapsed()
    }

    /// Each of `origins` broadcasts once: all at once (`spacing` zero) or one every `spacing`.
    /// The latencies in ms of the deliveries, each from its own broadcast's sending, and how
    /// many were expected (all that came within `limit`).
    async fn broadcast_latencies(
        &mut self,
        origins: &[usize],
        spacing: Duration,
        limit: Duration,
    ) -> (Vec<f64>, usize) {
        let n = self.nodes.len();
        let expected = origins.len() * (n - 1);
        let mut sent_at = HashMap::new();
        let mut got: Vec<HashSet<NodeId>> = vec![HashSet::new(); n];
        let mut latencies = Vec::with_capacity(expected);
        if spacing.is_zero() {
            let now = Instant::now();
            let sends = origins.iter().map(|&o| {
                sent_at.insert(self.nodes[o].node_id().clone(), now);
                self.nodes[o].broadcast(Bytes::from(format!("broadcast from node{o}")))
            });
            for result in futures::future::join_all(sends).await {
                result.expect("broadcast");
            }
        }
        let mut pending = origins.iter().copied();
        let mut tick = tokio::time::interval(spacing.max(Duration::from_millis(1)));
        let deadline = tokio::time::Instant::now() + limit;
        while latencies.len() < expected {
            tokio::select! {
                _ = tick.tick(), if !spacing.is_zero() && sent_at.len() < origins.len() => {
                    if let Some(o) = pending.next() {
                        let node = &self.nodes[o];
                        sent_at.insert(node.node_id().clone(), Instant::now());
                        node.broadcast(Bytes::from(format!("broadcast from node{o}")))
                            .await
                            .expect("broadcast");
                    }
                }
                event = tokio::time::timeout_at(deadline, self.events.recv()) => match event {
                    Ok(Some((i, NodeEvent::Flood(flood::Event::Message { origin, .. })))) => {
                        let at = sent_at[&origin];
                        assert!(got[i].insert(origin), "node{i} got a broadcast twice");
                        latencies.push(at.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        println!("  only {} of {expected} deliveries in {limit:?}", latencies.len());
                        break;
                    }
                },
            }
        }
        latencies.sort_by(f64::total_cmp);
        (latencies, expected)
    }

    /// Waits until every node reaches every other (bounded by `limit`).
    async fn views_complete(&mut self, limit: Duration) {
        let n = self.nodes.len();
        let deadline = Instant::now() + limit;
        loop {
            let mut complete = 0;
            for node in &self.nodes {
                if node.reachable().await.expect("reachable").len() == n - 1 {
                    complete += 1;
                }
            }
            if complete == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{complete} of {n} nodes reach all others after {limit:?}"
            );
            self.drain();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Drops the events that came meanwhile.
    fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    async fn stats(&self) -> Vec<NodeStats> {
        let mut all = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            all.push(node.stats().await.expect("stats"));
        }
        all
    }

    async fn shutdown(self) {
        for result in futures::future::join_all(self.nodes.iter().map(|n| n.shutdown())).await {
            result.expect("shutdown");
        }
    }
}

/// Flood and status frames and body bytes sent, summed over the nodes.
fn control_sent(stats: &[NodeStats]) -> (u64, u64) {
    stats.iter().fold((0, 0), |(f, b), s| {
        (
            f + s.flood_traffic.frames_out + s.status_traffic.frames_out,
            b + s.flood_traffic.bytes_out + s.status_traffic.bytes_out,
        )
    })
}

/// The 99th percentile of `expected` latencies of which `got` came (sorted); `None` when more
/// than 1 % never came (the percentile is past the wait).
fn p99(got: &[f64], expected: usize) -> Option<f64> {
    let rank = ((expected.max(1) - 1) as f64 * 0.99).round() as usize;
    got.get(rank).copied()
}

/// A figure for the JSON line: the number, or `null`.
fn json(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.0}"))
}

fn main() {
    bcos_p2p::malloc::tune();
    let quick = support::quick();
    let (mesh_n, regular_n, idle, settle) = if quick {
        (64, 128, Duration::from_secs(5), Duration::from_secs(10))
    } else {
        (128, 256, Duration::from_secs(30), Duration::from_secs(20))
    };
    support::memory::raise_fd_limit(mesh_n.max(regular_n));
    let runtime = support::runtime();
    runtime.block_on(async {
        // 4. first: memory per connection end, before the other parts leave freed memory in
        // the heap for the mesh to reuse.
        let memory = support::memory::measure(if quick { 32 } else { 64 }).await;
        println!(
            "memory: {:.1} KB RSS per idle connection end",
            memory.rss_kb_per_connection_end
        );

        // 1. Full mesh, broadcasts the moment it is up.
        let mut mesh = Cluster::start(mesh_n, |i| (0..i).collect()).await;
        let ends = mesh_n * (mesh_n - 1);
        let mesh_connect = mesh.connected(ends, Duration::from_secs(300)).await;
        let everyone: Vec<usize> = (0..mesh_n).collect();
        let (fresh, fresh_expected) = mesh
            .broadcast_latencies(&everyone, Duration::ZERO, Duration::from_secs(60))
            .await;
        let mesh_rss_mb = support::memory::rss_kb() / 1024.0;
        println!(
            "full mesh of {mesh_n}: connected in {:.1} s; fresh broadcasts p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; RSS {mesh_rss_mb:.0} MB",
            mesh_connect.as_secs_f64(),
            fresh.get(fresh.len() / 2).copied().unwrap_or(f64::NAN),
            p99(&fresh, fresh_expected).unwrap_or(f64::INFINITY),
            fresh.last().copied().unwrap_or(0.0),
        );

        // 2. Idle, once the views agree and the paced records are out.
        mesh.views_complete(Duration::from_secs(120)).await;
        tokio::time::sleep(settle).await;
        mesh.drain();
        let before = control_sent(&mesh.stats().await);
        let at = Instant::now();
        tokio::time::sleep(idle).await;
        let after = control_sent(&mesh.stats().await);
        let secs = at.elapsed().as_secs_f64();
        mesh.drain();
        let links = (mesh_n * (mesh_n - 1) / 2) as f64;
        let (frames, bytes) = (after.0 - before.0, after.1 - before.1);
        let idle_bytes = (bytes + frames * FRAME_OVERHEAD) as f64 / links / secs;
        let ping = 2.0 * (32 + FRAME_OVERHEAD) as f64 / 5.0;
        println!(
            "idle for {secs:.0} s: {frames} flood/status frames, {bytes} body bytes: {idle_bytes:.1} B per link per s on the wire (pings add about {ping:.0})"
        );
        let stopping = Instant::now();
        mesh.shutdown().await;
        println!(
            "{mesh_n} nodes shut down in {:.2} s",
            stopping.elapsed().as_secs_f64()
        );

        // 3. Random 8-regular graph.
        let edges = byzantine::regular_by_swaps(regular_n, 8, 0x5ca1e);
        let mut dials = vec![Vec::new(); regular_n];
        for &(a, b) in &edges {
            dials[a].push(b);
        }
        let mut regular = Cluster::start(regular_n, |i| dials[i].clone()).await;
        let connect = regular
            .connected(2 * edges.len(), Duration::from_secs(300))
            .await;
        regular.views_complete(Duration::from_secs(120)).await;
        // Settled: the records paced out (at most 8 s apart while a node keeps changing).
        tokio::time::sleep(settle).await;
        regular.drain();
        // 32 broadcasts from different nodes, one every 50 ms: latency under a steady load.
        // All 256 at once would measure the CPU of this machine instead: each delivery costs
        // a signature check (131 µs for secp256k1 here, benches/flood.rs), 65 280 of them.
        let origins: Vec<usize> = (0..regular_n).step_by(regular_n / 32).collect();
        let before = regular.stats().await;
        let (latencies, regular_expected) = regular
            .broadcast_latencies(&origins, Duration::from_millis(50), Duration::from_secs(60))
            .await;
        let after = regular.stats().await;
        let delta = |f: fn(&NodeStats) -> u64| {
            after.iter().map(f).sum::<u64>() - before.iter().map(f).sum::<u64>()
        };
        println!(
            "  {} deliveries: {} data frames sent, {} IHAVE, {} IWANT, {} records stored meanwhile",
            latencies.len(),
            delta(|s| s.flood.frames_sent),
            delta(|s| s.flood.ihave_sent),
            delta(|s| s.flood.iwant_sent),
            delta(|s| s.flood.records_stored),
        );
        println!(
            "random 8-regular graph of {regular_n}: connected in {:.1} s; broadcasts p50 {:.0} ms, p99 {:.0} ms",
            connect.as_secs_f64(),
            latencies.get(latencies.len() / 2).copied().unwrap_or(f64::NAN),
            p99(&latencies, regular_expected).unwrap_or(f64::INFINITY)
        );
        regular.shutdown().await;

        println!(
            "{{\"mesh128_connect_s\": {:.2}, \"mesh128_rss_mb\": {mesh_rss_mb:.0}, \"mesh128_fresh_broadcast_p99_ms\": {}, \"mesh128_fresh_delivered\": {:.4}, \"regular256_broadcast_p99_ms\": {}, \"regular256_delivered\": {:.4}, \"control_bytes_per_link_per_s_idle\": {idle_bytes:.1}, \"rss_kb_per_connection_end\": {:.1}, \"nodes_mesh\": {mesh_n}, \"nodes_regular\": {regular_n}}}",
            mesh_connect.as_secs_f64(),
            json(p99(&fresh, fresh_expected)),
            fresh.len() as f64 / fresh_expected as f64,
            json(p99(&latencies, regular_expected)),
            latencies.len() as f64 / regular_expected as f64,
            memory.rss_kb_per_connection_end,
        );
    });
}
