//! Traffic control: head-of-line blocking between modules, the accuracy of a bandwidth limit,
//! and what compression gains and costs. `cargo bench --bench traffic [-- --quick]`.
//!
//! Two nodes on loopback, each on a thread of its own with its own tokio runtime (as two nodes
//! on two machines). Figures:
//! - `hol_idle_p50_ms`, `hol_idle_p99_ms`: 1 KiB requests on module 1, one every 5 ms, on an
//!   idle connection;
//! - `hol_under_bulk_p50_ms`, `hol_under_bulk_p99_ms`: the same while module 2 streams 32 MiB
//!   requests (two in flight, answered with 2 bytes) to the same peer; `bulk_mb_per_s` is what
//!   module 2 moved meanwhile. Module 1 is configured high priority (as consensus modules are),
//!   so it rides the urgent stream pair. Random (incompressible) bulk;
//! - `hol_under_compressible_bulk_p50_ms`, `_p99_ms`, `compressible_bulk_mb_per_s`: the same
//!   with block-like bulk (JSON transactions), which goes compressed: what compressing and
//!   decompressing 32 MiB payloads adds to the probes' wait;
//! - `limit_accuracy`: bytes per second a module with always something queued achieves under a
//!   total limit of 50 MB/s, over the limit (measured at the receiver, after a second);
//! - `zstd_ratio_blocks`: payload bytes over wire bytes of unicast for block-like data (JSON
//!   transactions in 1 MiB blocks), as the sender's unicast counters see it;
//! - `compressed_msgs_per_s_ratio`: 1 KiB requests (64 in flight) of incompressible data per
//!   second with compression on over off, the median of pairs of runs made back to back
//!   (`msgs_per_s_compression_on`/`_off`: the medians of the runs).
//!
//! Prints a table, then one JSON line with the figures (docs/ARCHITECTURE.md's contract).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, PeerAddr},
    node::{Node, NodeEvent},
};
use bytes::Bytes;
use futures::StreamExt as _;

#[path = "support/mod.rs"]
mod support;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Incompressible bytes, the same for the same `seed`.
fn noise(n: usize, seed: u64) -> Bytes {
    use rand::{Rng as _, SeedableRng as _};
    let mut bytes = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes.into()
}

/// Block-like data: JSON transactions, as a block sync answer carries them.
fn block(n: usize, seed: u64) -> Bytes {
    let mut out = String::from("[");
    let mut i = seed;
    while out.len() < n {
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        out.push_str(&format!(
            r#"{{"hash":"0x{:016x}{:016x}","from":"0x{:040x}","to":"0x{:040x}","nonce":{},"value":{},"input":"0x{:x}","blockLimit":{}}},"#,
            i,
            i.rotate_left(17),
            i % 1000,
            (i >> 7) % 500,
            i % 100_000,
            i % 1_000_000,
            i,
            i % 1000 + 500
        ));
    }
    out.truncate(n);
    out.into()
}

/// A node on a thread of its own: its handle (usable from any runtime) and the thread.
struct Running {
    node: Arc<Node>,
    id: NodeId,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a node serving modules 1–9 that answers requests on module 2 with 2 bytes and echoes
/// the others, counting one-way bytes in `received`.
fn start(
    ca: &CertificateAuthority,
    i: usize,
    peer: Option<&Running>,
    tweak: impl FnOnce(&mut Config) + Send + 'static,
    received: Arc<AtomicU64>,
) -> Running {
    let m = support::member(ca, i);
    let tls = ca_tls::Config::new(&m.key, m.cert.clone(), vec![ca.root_der().expect("root")])
        .expect("tls");
    let mut config = Config::default();
    config.network.listen = vec![PeerAddr("/ip4/127.0.0.1/tcp/0".parse().unwrap())];
    config.network.peers = peer
        .map(|p| vec![PeerAddr(p.node.listen_addrs()[0].clone())])
        .unwrap_or_default();
    config.unicast.modules = (1..10).collect();
    // Room for 32 MiB payloads (the default limit, 32 MiB, counts the header too).
    config.unicast.max_message_size = 48 * MIB;
    config.unicast.max_pending_bytes = 256 * MIB;
    tweak(&mut config);
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut node = Node::start(m.key.clone(), tls, config)
                .await
                .expect("starts");
            let mut events = node.events().expect("first call");
            let node = Arc::new(node);
            tx.send(node.clone()).unwrap();
            while !stopping.load(Ordering::Relaxed) {
                let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_millis(100), events.next()).await
                else {
                    continue;
                };
                match event {
                    NodeEvent::Request {
                        module,
                        payload,
                        responder,
                        ..
                    } => {
                        let answer = if module == 2 {
                            Bytes::from_static(b"ok")
                        } else {
                            payload
                        };
                        tokio::spawn(responder.respond(answer));
                    }
                    NodeEvent::Oneway { payload, .. } => {
                        received.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
    });
    let node = rx.recv().expect("node started");
    Running {
        id: node.node_id().clone(),
        node,
        stop,
        thread: Some(thread),
    }
}

/// Two connected nodes, `a` with `tweak` applied; `b` counts one-way bytes in the returned cell.
fn pair(
    tweak: impl FnOnce(&mut Config) + Send + 'static,
    rt: &tokio::runtime::Runtime,
) -> (Running, Running, Arc<AtomicU64>) {
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let b = start(&ca, 1, None, |_| {}, received.clone());
    let a = start(&ca, 0, Some(&b), tweak, Arc::default());
    rt.block_on(async {
        for _ in 0..500 {
            if a.node
                .request(&b.id, 1, Bytes::from_static(b"hi"))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nodes did not connect");
    });
    (a, b, received)
}

/// Latencies (ms, sorted) of `n` 1 KiB requests on module 1, one every 5 ms.
async fn probe(a: &Node, to: &NodeId, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        a.request(to, 1, noise(KIB, i as u64))
            .await
            .expect("answered");
        out.push(start.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Latencies of [`probe`]s while two tasks send `a` 32 MiB requests (`bulk(task)`) on module 2,
/// and the bulk's payload rate (MB/s).
async fn under_bulk(
    a: &Running,
    b: &Running,
    probes: usize,
    bulk: impl Fn(u64) -> Bytes,
) -> (Vec<f64>, f64) {
    let done = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..2)
        .map(|w| {
            let (node, to, done, moved) =
                (a.node.clone(), b.id.clone(), done.clone(), moved.clone());
            let payload = bulk(w);
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    node.request(&to, 2, payload.clone())
                        .await
                        .expect("bulk answered");
                    moved.fetch_add(payload.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let before = moved.load(Ordering::Relaxed);
    let under = probe(&a.node, &b.id, probes).await;
    let rate =
        (moved.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64() / 1e6;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    (under, rate)
}

fn main() {
    bcos_p2p::malloc::tune();
    let quick = support::quick();
    let rt = support::runtime();
    let probes = if quick { 200 } else { 1000 };

    // 1. Head-of-line blocking: behind incompressible bulk, and behind block-like bulk (which
    // the sender compresses and the receiver decompresses).
    let (a, b, _) = pair(|_| {}, &rt);
    let idle = rt.block_on(probe(&a.node, &b.id, probes));
    let (under, bulk_mb_per_s) = rt.block_on(under_bulk(&a, &b, probes, |w| noise(32 * MIB, w)));
    let (under_z, bulk_z_mb_per_s) =
        rt.block_on(under_bulk(&a, &b, probes, |w| block(32 * MIB, w)));
    drop((a, b));

    // 2. Limit accuracy: 50 MB/s total.
    const LIMIT: u64 = 50_000_000;
    let (a, b, received) = pair(|c| c.traffic.total_bytes_per_s = LIMIT, &rt);
    let secs = if quick { 3.0 } else { 5.0 };
    let limit_accuracy = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (node, to, stop, received) =
                (a.node.clone(), b.id.clone(), stop.clone(), received.clone());
            tokio::spawn(async move {
                let payload = noise(256 * KIB, 3);
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if sent.saturating_sub(received.load(Ordering::Relaxed)) > 16 * MIB as u64 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    node.oneway(&to, 5, payload.clone()).await.expect("sent");
                    sent += payload.len() as u64;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (t0, b0) = (Instant::now(), received.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let (t1, b1) = (Instant::now(), received.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        let _ = sender.await;
        (b1 - b0) as f64 / (t1 - t0).as_secs_f64() / LIMIT as f64
    });
    drop((a, b));

    // 3. Compression: block-like data, and the cost on incompressible 1 KiB requests.
    let (a, b, _) = pair(|_| {}, &rt);
    let blocks = if quick { 16 } else { 64 };
    let zstd_ratio_blocks = rt.block_on(async {
        let before = a.node.stats().await.unwrap().unicast_traffic.bytes_out;
        let mut raw = 0u64;
        for i in 0..blocks {
            let data = block(MIB, i);
            raw += data.len() as u64;
            a.node.request(&b.id, 2, data).await.expect("answered");
        }
        let wire = a.node.stats().await.unwrap().unicast_traffic.bytes_out - before;
        raw as f64 / wire as f64
    });
    drop((a, b));
    let msgs = if quick { 20_000 } else { 100_000 };
    let rate = |compression: bool| {
        let (a, b, _) = pair(move |c| c.traffic.compression = compression, &rt);
        rt.block_on(async {
            let payload = noise(KIB, 9);
            let start = Instant::now();
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut sent = 0;
            while sent < msgs || !in_flight.is_empty() {
                while sent < msgs && in_flight.len() < 64 {
                    let (node, to, p) = (a.node.clone(), b.id.clone(), payload.clone());
                    in_flight.push(async move { node.request(&to, 1, p).await });
                    sent += 1;
                }
                in_flight.next().await.unwrap().expect("answered");
            }
            msgs as f64 / start.elapsed().as_secs_f64()
        })
    };
    // Runs in pairs, back to back, the order alternating: this VM's speed drifts by more
    // than the cost measured, so the ratio is the median of the pairs' ratios (and the rates
    // the medians of their runs).
    let pairs = if quick { 3 } else { 7 };
    let (mut ons, mut offs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let (on, off) = if i % 2 == 0 {
            let off = rate(false);
            (rate(true), off)
        } else {
            let on = rate(true);
            (on, rate(false))
        };
        ons.push(on);
        offs.push(off);
        ratios.push(on / off);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        support::quantile(&v, 0.5)
    };
    let (on, off, ratio) = (median(&ons), median(&offs), median(&ratios));

    let q = support::quantile;
    println!("traffic bench ({})", if quick { "quick" } else { "full" });
    println!(
        "  1 KiB requests idle:        p50 {:.2} ms  p99 {:.2} ms",
        q(&idle, 0.5),
        q(&idle, 0.99)
    );
    println!(
        "  under 32 MiB bulk:          p50 {:.2} ms  p99 {:.2} ms  (bulk {bulk_mb_per_s:.0} MB/s)",
        q(&under, 0.5),
        q(&under, 0.99)
    );
    println!(
        "  under compressible bulk:    p50 {:.2} ms  p99 {:.2} ms  (bulk {bulk_z_mb_per_s:.0} MB/s)",
        q(&under_z, 0.5),
        q(&under_z, 0.99)
    );
    println!("  50 MB/s limit, measured:    {limit_accuracy:.3} of it");
    println!("  block-like data:            {zstd_ratio_blocks:.2}x smaller on the wire");
    let runs: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "  1 KiB incompressible:       {on:.0} msgs/s compressing, {off:.0} not ({ratio:.3}; pairs {})",
        runs.join(" ")
    );
    println!(
        "{{\"bench\":\"traffic\",\"quick\":{quick},\"hol_idle_p50_ms\":{:.3},\"hol_idle_p99_ms\":{:.3},\"hol_under_bulk_p50_ms\":{:.3},\"hol_under_bulk_p99_ms\":{:.3},\"bulk_mb_per_s\":{bulk_mb_per_s:.1},\"hol_under_compressible_bulk_p50_ms\":{:.3},\"hol_under_compressible_bulk_p99_ms\":{:.3},\"compressible_bulk_mb_per_s\":{bulk_z_mb_per_s:.1},\"limit_accuracy\":{limit_accuracy:.4},\"zstd_ratio_blocks\":{zstd_ratio_blocks:.3},\"msgs_per_s_compression_on\":{on:.0},\"msgs_per_s_compression_off\":{off:.0},\"compressed_msgs_per_s_ratio\":{:.4}}}",
        q(&idle, 0.5),
        q(&idle, 0.99),
        q(&under, 0.5),
        q(&under, 0.99),
        q(&under_z, 0.5),
        q(&under_z, 0.99),
        ratio
    );
}
