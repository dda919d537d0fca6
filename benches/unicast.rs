//! Unicast throughput and latency: ours vs stock libp2p-request-response, and bulk transfer vs
//! raw rustls on a loopback socket. `cargo bench --bench unicast [-- --quick]`.
//!
//! 1. ours:  1 KiB requests, 1 KiB responses, 64 in flight (TCP + CA-TLS + yamux (`mux`) +
//!    unicast);
//! 2. stock: the same load on libp2p-tls + yamux + libp2p-request-response (CBOR codec, payloads
//!    as CBOR byte strings);
//! 3. bulk:  1 MiB requests, 1-byte responses, 8 in flight, over ours; and the same bytes over
//!    one rustls TLS 1.3 stream on a loopback TCP socket (same crypto provider, same suite);
//! 4. routed: 1 KiB requests, 64 in flight, over 3 hops (two relays, `unicast/routed.rs`), and
//!    the same load to a direct neighbour in the same four-node harness;
//! 5. 国密: loads 1 and 3 with SM2 nodes (TLS_SM4_GCM_SM3), each bulk run beside a standard one
//!    (`sm_bulk_ratio`, run by run), and the connection set-up time (TCP, negotiation, CA-TLS
//!    with its verdict, yamux) of 20 fresh pairs, SM2 and secp256k1 (`sm_handshake_ms`,
//!    `handshake_ms`).
//!
//! Payloads are random bytes, so that unicast's compression (which takes payloads of 1 KiB and
//! more when they shrink) leaves them as they are and every byte is moved and encrypted.
//!
//! Each end (node, or raw TLS side) runs on a thread of its own with a single-threaded tokio
//! runtime, as two nodes on two machines would. Raw TLS is also run with both ends on one
//! 2-worker pool (the layout this bench used before), and the faster of the two is the
//! reference; ours in that layout is reported too. The bulk ratio is the median of ratios of
//! runs made back to back (the machine's speed drifts from second to second). Every system
//! first runs once uncounted (a process's first transfers grow and fault in its malloc arenas),
//! and the process sets malloc as the `bcos-p2p` binary does (`bcos_p2p::malloc::tune`).
//!
//! Throughput on this shared VM swings by tens of percent from run to run, so the bench also
//! reports the CPU time both ends' threads spent per GiB moved (thread-per-end runs), which
//! varies less and says what a change costs.
//!
//! Prints a table, then one JSON line with the figures (the contract in docs/ARCHITECTURE.md):
//! the issue's names, plus `bulk_shared_pool_mb_per_s`, `raw_tls_thread_per_end_mb_per_s`,
//! `raw_tls_shared_pool_mb_per_s`, `bulk_cpu_ms_per_gib`, `raw_tls_cpu_ms_per_gib`,
//! `frame_binary_ns`, `frame_cbor_ns`; `routed3_msgs_per_s`, `routed3_p50_us` (the issue's),
//! `routed3_p99_us`, `routed3_direct_msgs_per_s`, `routed3_direct_p50_us` and
//! `ratio_routed3` (routed over direct, pair by pair); `sm_bulk_mb_per_s`, `sm_msgs_per_s`,
//! `sm_handshake_ms` (the issue's), `sm_bulk_ratio`, `handshake_ms`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeKey,
    behaviour::build_swarm_with,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    unicast::{self, Event},
};
use bytes::Bytes;
use futures::StreamExt as _;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, request_response,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::oneshot,
};

#[path = "../tests/common/accept_any.rs"]
mod accept_any;
#[path = "unicast/routed.rs"]
mod routed;

const MODULE: u16 = 1;
/// Runs per figure; the median is reported.
const REPS: usize = 5;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

struct Load {
    requests: usize,
    in_flight: usize,
    request_size: usize,
    response_size: usize,
}

struct Outcome {
    secs: f64,
    /// CPU time of both ends' threads over the whole run (set-up included), where each end had
    /// a thread of its own and the kernel reports thread CPU time.
    cpu_ns: Option<u64>,
    rtts_us: Vec<u64>,
    bytes: usize,
}

impl Outcome {
    fn msgs_per_s(&self) -> f64 {
        self.rtts_us.len() as f64 / self.secs
    }
    fn pct(&self, p: f64) -> u64 {
        let mut v = self.rtts_us.clone();
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    /// CPU milliseconds per GiB moved (NaN if not measured).
    fn cpu_ms_per_gib(&self) -> f64 {
        self.cpu_ns.map_or(f64::NAN, |ns| {
            ns as f64 / 1e6 / (self.bytes as f64 / (1u64 << 30) as f64)
        })
    }
}

fn main() {
    // Malloc as the `bcos-p2p` binary sets it (bcos_p2p::malloc); the raw TLS reference runs in
    // this process too.
    let malloc = bcos_p2p::malloc::tune();
    let quick = std::env::args().any(|a| a == "--quick");
    let msgs = if quick { 10_000 } else { 100_000 };
    let bulk_mib = if quick { 128 } else { 512 };
    let small = Load {
        requests: msgs,
        in_flight: 64,
        request_size: KIB,
        response_size: KIB,
    };
    let bulk = Load {
        requests: bulk_mib,
        in_flight: 8,
        request_size: MIB,
        response_size: 1,
    };
    // Each figure is the median of REPS runs: this 2-core VM is noisy from run to run. The
    // machine's speed also drifts over seconds, so the bulk ratio is the median of ratios of
    // runs made back to back, not a ratio of medians made apart.
    let mut ours = Vec::new();
    let mut stock = Vec::new();
    let mut ours_bulk = Vec::new();
    let mut ours_bulk_shared = Vec::new();
    let mut raw_split = Vec::new();
    let mut raw_shared = Vec::new();
    let mut raw_best = Vec::new();
    let mut ratios_bulk = Vec::new();
    let mut ours_bulk_cpu = Vec::new();
    let mut raw_split_cpu = Vec::new();
    // Warm-up, not counted, for every system: a process's first transfers pay for growing its
    // malloc arenas and faulting their memory in, which later runs reuse.
    let warm = |requests, request_size| Load {
        requests,
        in_flight: 8,
        request_size,
        response_size: KIB,
    };
    run_ours(&warm(1000, KIB), Layout::ThreadPerEnd);
    run_stock(&warm(1000, KIB), Layout::ThreadPerEnd);
    run_ours(&warm(64, MIB), Layout::ThreadPerEnd);
    run_raw_tls(64 * MIB, Layout::ThreadPerEnd);
    for _ in 0..REPS {
        ours.push(run_ours(&small, Layout::ThreadPerEnd));
        stock.push(run_stock(&small, Layout::ThreadPerEnd));
        let bulk_run = run_ours(&bulk, Layout::ThreadPerEnd);
        ours_bulk_cpu.push(bulk_run.cpu_ms_per_gib());
        let bulk_run = bulk_run.mb_per_s();
        let split = run_raw_tls(bulk_mib * MIB, Layout::ThreadPerEnd);
        raw_split_cpu.push(split.cpu_ms_per_gib());
        let split = split.mb_per_s();
        let shared = run_raw_tls(bulk_mib * MIB, Layout::SharedPool).mb_per_s();
        ours_bulk_shared.push(run_ours(&bulk, Layout::SharedPool).mb_per_s());
        // The physical reference is raw TLS at its best: the faster of its two layouts.
        let best = split.max(shared);
        ours_bulk.push(bulk_run);
        raw_split.push(split);
        raw_shared.push(shared);
        raw_best.push(best);
        ratios_bulk.push(bulk_run / best);
    }
    let ours = median(ours, Outcome::msgs_per_s);
    let stock = median(stock, Outcome::msgs_per_s);
    // Routed: 1 KiB over 3 hops (two relays) beside the same load to a direct neighbour, four
    // full nodes on one 2-worker runtime; the ratio is the median of back-to-back pairs.
    let pairs = routed::run(if quick { 5_000 } else { 20_000 }, REPS);
    let ratios_routed: Vec<f64> = pairs
        .iter()
        .map(|p| p.routed.msgs_per_s() / p.direct.msgs_per_s())
        .collect();
    let (routed_direct, routed3): (Vec<Outcome>, Vec<Outcome>) =
        pairs.into_iter().map(|p| (p.direct, p.routed)).unzip();
    let routed_direct = median(routed_direct, Outcome::msgs_per_s);
    let routed3 = median(routed3, Outcome::msgs_per_s);
    let ratio_routed = median_of(&ratios_routed);
    let (binary_ns, cbor_ns) = header_formats(if quick { 200_000 } else { 1_000_000 });
    // 国密 mode: the same loads with SM2 nodes (TLS_SM4_GCM_SM3), each bulk run beside a
    // standard one so that the ratio is of runs made back to back.
    let mut sm_bulk = Vec::new();
    let mut sm_ratios = Vec::new();
    let mut sm_small = Vec::new();
    run_ours_with(&warm(64, MIB), Layout::ThreadPerEnd, KeyType::Sm2);
    for _ in 0..REPS {
        let sm = run_ours_with(&bulk, Layout::ThreadPerEnd, KeyType::Sm2).mb_per_s();
        let standard = run_ours(&bulk, Layout::ThreadPerEnd).mb_per_s();
        sm_bulk.push(sm);
        sm_ratios.push(sm / standard);
        sm_small.push(run_ours_with(&small, Layout::ThreadPerEnd, KeyType::Sm2));
    }
    let sm_small = median(sm_small, Outcome::msgs_per_s);
    let sm_ratio = median_of(&sm_ratios);
    let handshakes = 20;
    let sm_handshake_ms = handshake_ms(KeyType::Sm2, handshakes);
    let handshake_ms_standard = handshake_ms(KeyType::Secp256k1, handshakes);

    println!(
        "unicast benchmark ({} mode, TCP loopback, median of {REPS} runs, glibc malloc thresholds: {malloc:?})",
        if quick { "quick" } else { "full" }
    );
    println!(
        "{:<52} {:>12} {:>10} {:>10}",
        "system / load (thread per node unless said)", "rate", "p50 RTT", "p99 RTT"
    );
    let row = |name: &str, o: &Outcome| {
        println!(
            "{:<52} {:>8.0} m/s {:>7} us {:>7} us",
            name,
            o.msgs_per_s(),
            o.pct(0.5),
            o.pct(0.99)
        )
    };
    row(
        &format!("ours   1 KiB req/resp, 64 in flight, {msgs}"),
        &ours,
    );
    row(
        &format!("stock  1 KiB req/resp, 64 in flight, {msgs}"),
        &stock,
    );
    row(
        "nodes  1 KiB to a direct neighbour (4 nodes, 1 pool)",
        &routed_direct,
    );
    row("nodes  1 KiB routed over 3 hops (2 relays)", &routed3);
    println!(
        "ratio routed3 / direct (same harness, pair by pair) {ratio_routed:.2} (runs: {})",
        ratios_routed
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // A figure's median, its unit, and every run.
    let runs_row = |name: String, unit: &str, runs: &[f64]| {
        println!(
            "{:<52} {:>8.0} {unit:<6} (runs: {})",
            name,
            median_of(runs),
            runs.iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let mb_row = |name: String, runs: &[f64]| runs_row(name, "MB/s", runs);
    mb_row(
        format!("ours   1 MiB requests, 8 in flight, {bulk_mib}"),
        &ours_bulk,
    );
    mb_row(
        "ours   the same, both nodes on one 2-worker pool".into(),
        &ours_bulk_shared,
    );
    mb_row(
        format!("raw rustls TLS 1.3, {bulk_mib} MiB, thread per end"),
        &raw_split,
    );
    mb_row(
        format!("raw rustls TLS 1.3, {bulk_mib} MiB, one 2-worker pool"),
        &raw_shared,
    );
    runs_row(
        "CPU per GiB, both ends' threads: ours bulk".into(),
        "ms",
        &ours_bulk_cpu,
    );
    runs_row(
        "CPU per GiB, both ends' threads: raw TLS".into(),
        "ms",
        &raw_split_cpu,
    );
    println!(
        "frame encode+decode, 1 KiB payload: binary header {binary_ns:.0} ns, CBOR (cbor4ii) {cbor_ns:.0} ns"
    );
    row(
        &format!("ours SM 1 KiB req/resp, 64 in flight, {msgs}"),
        &sm_small,
    );
    mb_row(
        format!("ours SM 1 MiB requests, 8 in flight, {bulk_mib} (TLS_SM4_GCM_SM3)"),
        &sm_bulk,
    );
    println!(
        "ratio SM bulk / standard bulk (run by run) {sm_ratio:.2} (runs: {}); handshake median of {handshakes}: SM {sm_handshake_ms:.2} ms, secp256k1 {handshake_ms_standard:.2} ms",
        sm_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let ratio_msgs = ours.msgs_per_s() / stock.msgs_per_s();
    let ratio_bulk = median_of(&ratios_bulk);
    println!(
        "ratio msgs (ours/stock) {ratio_msgs:.2}; ratio bulk (ours / faster raw TLS, run by run) {ratio_bulk:.2} (runs: {})",
        ratios_bulk
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let json = serde_json::json!({
        "ours_msgs_per_s": ours.msgs_per_s().round(),
        "stock_msgs_per_s": stock.msgs_per_s().round(),
        "ratio_msgs": (ratio_msgs * 100.0).round() / 100.0,
        "ours_p50_us": ours.pct(0.5),
        "stock_p50_us": stock.pct(0.5),
        "ours_p99_us": ours.pct(0.99),
        "bulk_mb_per_s": median_of(&ours_bulk).round(),
        "raw_tls_mb_per_s": median_of(&raw_best).round(),
        "ratio_bulk": (ratio_bulk * 100.0).round() / 100.0,
        "bulk_shared_pool_mb_per_s": median_of(&ours_bulk_shared).round(),
        "raw_tls_thread_per_end_mb_per_s": median_of(&raw_split).round(),
        "raw_tls_shared_pool_mb_per_s": median_of(&raw_shared).round(),
        "bulk_cpu_ms_per_gib": median_of(&ours_bulk_cpu).round(),
        "raw_tls_cpu_ms_per_gib": median_of(&raw_split_cpu).round(),
        "frame_binary_ns": binary_ns.round(),
        "frame_cbor_ns": cbor_ns.round(),
        "routed3_msgs_per_s": routed3.msgs_per_s().round(),
        "routed3_p50_us": routed3.pct(0.5),
        "routed3_p99_us": routed3.pct(0.99),
        "routed3_direct_msgs_per_s": routed_direct.msgs_per_s().round(),
        "routed3_direct_p50_us": routed_direct.pct(0.5),
        "ratio_routed3": (ratio_routed * 100.0).round() / 100.0,
        "sm_bulk_mb_per_s": median_of(&sm_bulk).round(),
        "sm_msgs_per_s": sm_small.msgs_per_s().round(),
        "sm_handshake_ms": (sm_handshake_ms * 100.0).round() / 100.0,
        "sm_bulk_ratio": (sm_ratio * 100.0).round() / 100.0,
        "handshake_ms": (handshake_ms_standard * 100.0).round() / 100.0,
    });
    println!("{json}");
}

/// The median of `runs`.
/// `n` random bytes: payloads that compression leaves as they are, so that every system moves
/// (and encrypts) every byte.
pub(crate) fn noise(n: usize) -> Vec<u8> {
    use rand::Rng as _;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn median_of(runs: &[f64]) -> f64 {
    let mut v = runs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The outcome with the median `rate`.
fn median(mut runs: Vec<Outcome>, rate: fn(&Outcome) -> f64) -> Outcome {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Listens on loopback and returns the address.
async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Dials until connected.
async fn connect<B: NetworkBehaviour>(swarm: &mut Swarm<B>, addr: Multiaddr) -> PeerId {
    swarm.dial(addr).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await {
            return peer_id;
        }
    }
}

/// The median time, in ms, from dialling to both ends having the connection (TCP, protocol
/// negotiation, the CA-TLS handshake with its verdict, yamux), over `n` fresh pairs of nodes of
/// `key_type` on one thread.
fn handshake_ms(key_type: KeyType, n: usize) -> f64 {
    let ca = CertificateAuthority::new_root(key_type, "CN=bench-ca", Period::days(1)).unwrap();
    let rt = single_thread();
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let (ka, ta) = ca_node(&ca, key_type);
            let (kb, tb) = ca_node(&ca, key_type);
            rt.block_on(async {
                let dummy = |_: &NodeKey| libp2p::swarm::dummy::Behaviour;
                let mut a = build_swarm_with(&ka, &ta, dummy).unwrap();
                let mut b = build_swarm_with(&kb, &tb, dummy).unwrap();
                let addr = listen(&mut b).await;
                let start = Instant::now();
                a.dial(addr).unwrap();
                let (mut up_a, mut up_b) = (false, false);
                while !(up_a && up_b) {
                    tokio::select! {
                        e = a.select_next_some() => up_a |= matches!(e, SwarmEvent::ConnectionEstablished { .. }),
                        e = b.select_next_some() => up_b |= matches!(e, SwarmEvent::ConnectionEstablished { .. }),
                    }
                }
                start.elapsed().as_secs_f64() * 1000.0
            })
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn ca_node(ca: &CertificateAuthority, key_type: KeyType) -> (NodeKey, ca_tls::Config) {
    let key = NodeKey::generate(key_type).unwrap();
    let cert = ca.issue_node(&key, "CN=bench", Period::days(1)).unwrap();
    let tls = ca_tls::Config::new(
        &key,
        ca.node_chain(cert).unwrap(),
        vec![ca.root_der().unwrap()],
    )
    .unwrap();
    (key, tls)
}

/// Keeps `load.in_flight` requests going until `load.requests` are answered; `send` issues one
/// request and returns its key, `next` yields (key) of each completed request.
struct Driver<K> {
    sent: usize,
    done: usize,
    started: HashMap<K, Instant>,
    rtts_us: Vec<u64>,
}

impl<K: std::hash::Hash + Eq> Driver<K> {
    fn new(load: &Load) -> Self {
        Driver {
            sent: 0,
            done: 0,
            started: HashMap::with_capacity(load.in_flight * 2),
            rtts_us: Vec::with_capacity(load.requests),
        }
    }
    fn can_send(&self, load: &Load) -> bool {
        self.sent < load.requests && self.sent - self.done < load.in_flight
    }
    fn sent(&mut self, key: K) {
        self.sent += 1;
        self.started.insert(key, Instant::now());
    }
    /// The figures of a finished run that started at `start`.
    fn outcome(self, start: Instant, load: &Load) -> Outcome {
        Outcome {
            secs: start.elapsed().as_secs_f64(),
            cpu_ns: None,
            bytes: load.requests * load.request_size,
            rtts_us: self.rtts_us,
        }
    }

    /// Records a completion; returns true when all are done.
    fn completed(&mut self, key: K, load: &Load) -> bool {
        let t = self.started.remove(&key).expect("known request");
        self.rtts_us.push(t.elapsed().as_micros() as u64);
        self.done += 1;
        self.done == load.requests
    }
}

/// CPU time of the calling thread so far (Linux's schedstat), if the kernel reports it.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn single_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one measurement: `serve` is the server end (it sends its address, then serves until
/// the stop channel fires or it is done), `client` the measuring end, placed as `layout` says.
fn run_pair<A, F, C, CF>(
    layout: Layout,
    serve: impl FnOnce(oneshot::Sender<A>, oneshot::Receiver<()>) -> F + Send + 'static,
    client: C,
) -> Outcome
where
    A: Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
    C: FnOnce(A) -> CF,
    CF: std::future::Future<Output = Outcome>,
{
    match layout {
        Layout::ThreadPerEnd => {
            let (addr_tx, addr_rx) = oneshot::channel();
            let (stop_tx, stop_rx) = oneshot::channel();
            let server = std::thread::spawn(move || {
                let cpu = thread_cpu_ns();
                single_thread().block_on(serve(addr_tx, stop_rx));
                Some(thread_cpu_ns()? - cpu?)
            });
            let cpu = thread_cpu_ns();
            let mut outcome = single_thread()
                .block_on(async { client(addr_rx.await.expect("the server end started")).await });
            let client_cpu = thread_cpu_ns()
                .zip(cpu)
                .map(|(after, before)| after - before);
            let _ = stop_tx.send(());
            let server_cpu = server.join().unwrap();
            outcome.cpu_ns = client_cpu.zip(server_cpu).map(|(c, s)| c + s);
            outcome
        }
        Layout::SharedPool => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (addr_tx, addr_rx) = oneshot::channel();
            let (stop_tx, stop_rx) = oneshot::channel();
            let server = rt.spawn(serve(addr_tx, stop_rx));
            let outcome = rt.block_on(async { client(addr_rx.await.unwrap()).await });
            let _ = stop_tx.send(());
            rt.block_on(server).unwrap();
            outcome
        }
    }
}

fn run_ours(load: &Load, layout: Layout) -> Outcome {
    run_ours_with(load, layout, KeyType::Secp256k1)
}

/// [`run_ours`] with nodes and a CA of `key_type`: SM2 runs the 国密 profile (TLS_SM4_GCM_SM3).
fn run_ours_with(load: &Load, layout: Layout, key_type: KeyType) -> Outcome {
    let ca = CertificateAuthority::new_root(key_type, "CN=bench-ca", Period::days(1)).unwrap();
    let make = |(key, tls): (NodeKey, ca_tls::Config)| {
        let book = tls.node_ids().clone();
        let mut config = unicast::Config::with_modules([MODULE]);
        config.max_frame_size = 2 * MIB;
        build_swarm_with(&key, &tls, |_| unicast::Behaviour::new(config, book)).unwrap()
    };
    let server_node = ca_node(&ca, key_type);
    let client_node = ca_node(&ca, key_type);
    let response = Bytes::from(noise(load.response_size));
    let serve = move |addr_tx: oneshot::Sender<Multiaddr>, mut stop: oneshot::Receiver<()>| async move {
        let mut server = make(server_node);
        let _ = addr_tx.send(listen(&mut server).await);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                event = server.select_next_some() => {
                    if let SwarmEvent::Behaviour(Event::Request { channel, .. }) = event {
                        let _ = server.behaviour_mut().respond(channel, response.clone());
                    }
                }
            }
        }
    };
    run_pair(layout, serve, |addr| async move {
        let book = client_node.1.node_ids().clone();
        let mut client = make(client_node);
        let peer = connect(&mut client, addr).await;
        // From the handshake: SM2 PeerIds are hashes of the key.
        let node = book.resolve(&peer).expect("the handshake named the peer");
        let request = Bytes::from(noise(load.request_size));
        let mut d = Driver::new(load);
        let start = Instant::now();
        while d.can_send(load) {
            let id = client
                .behaviour_mut()
                .send_request(&node, MODULE, request.clone());
            d.sent(id);
        }
        loop {
            if let SwarmEvent::Behaviour(Event::Response { id, result }) =
                client.select_next_some().await
            {
                result.expect("request failed");
                if d.completed(id, load) {
                    break;
                }
                while d.can_send(load) {
                    let id = client
                        .behaviour_mut()
                        .send_request(&node, MODULE, request.clone());
                    d.sent(id);
                }
            }
        }
        d.outcome(start, load)
    })
}

type Stock = request_response::cbor::Behaviour<serde_bytes::ByteBuf, serde_bytes::ByteBuf>;

fn stock_swarm() -> Swarm<Stock> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::tls::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            Stock::new(
                [(
                    libp2p::StreamProtocol::new("/bench/1"),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default().with_max_concurrent_streams(1024),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn run_stock(load: &Load, layout: Layout) -> Outcome {
    let response = serde_bytes::ByteBuf::from(noise(load.response_size));
    let serve = move |addr_tx: oneshot::Sender<Multiaddr>, mut stop: oneshot::Receiver<()>| async move {
        let mut server = stock_swarm();
        let _ = addr_tx.send(listen(&mut server).await);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                event = server.select_next_some() => {
                    if let SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    }) = event
                    {
                        let _ = server
                            .behaviour_mut()
                            .send_response(channel, response.clone());
                    }
                }
            }
        }
    };
    run_pair(layout, serve, |addr| async move {
        let mut client = stock_swarm();
        let peer = connect(&mut client, addr).await;
        let request = serde_bytes::ByteBuf::from(noise(load.request_size));
        let mut d = Driver::new(load);
        let start = Instant::now();
        while d.can_send(load) {
            let id = client.behaviour_mut().send_request(&peer, request.clone());
            d.sent(id);
        }
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, .. },
                    ..
                }) => {
                    if d.completed(request_id, load) {
                        break;
                    }
                    while d.can_send(load) {
                        let id = client.behaviour_mut().send_request(&peer, request.clone());
                        d.sent(id);
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    panic!("stock request failed: {error}")
                }
                _ => {}
            }
        }
        d.outcome(start, load)
    })
}

/// `total` bytes over one rustls TLS 1.3 connection on loopback, in 1 MiB writes; the clock
/// runs from the first write to the receiver's acknowledgement of the last byte.
fn run_raw_tls(total: usize, layout: Layout) -> Outcome {
    let ca = CertificateAuthority::new_root(KeyType::P256, "CN=raw", Period::days(1)).unwrap();
    let key = NodeKey::generate(KeyType::P256).unwrap();
    let cert = ca
        .issue_node(&key, "CN=raw-server", Period::days(1))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.pkcs8_der().to_vec().into()),
        )
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(accept_any::AcceptAnyServer))
        .with_no_client_auth();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let serve = move |addr_tx: oneshot::Sender<std::net::SocketAddr>| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _ = addr_tx.send(listener.local_addr().unwrap());
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = vec![0u8; 256 * KIB];
        let mut got = 0;
        while got < total {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "early EOF");
            got += n;
        }
        tls.write_all(&[1]).await.unwrap();
        tls.flush().await.unwrap();
    };
    let send = |addr: std::net::SocketAddr| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = match connector.connect(name, tcp).await {
            Ok(t) => t,
            Err(e) => panic!("raw TLS handshake failed: {e}"),
        };
        let chunk = noise(MIB);
        let start = Instant::now();
        let mut sent = 0;
        while sent < total {
            tls.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        tls.flush().await.unwrap();
        let mut ack = [0u8; 1];
        tls.read_exact(&mut ack).await.unwrap();
        Outcome {
            secs: start.elapsed().as_secs_f64(),
            cpu_ns: None,
            bytes: total,
            rtts_us: vec![0],
        }
    };
    run_pair(layout, move |addr_tx, _stop| serve(addr_tx), send)
}

/// Where the two ends of a measurement run.
#[derive(Clone, Copy)]
enum Layout {
    /// Each end on a thread of its own with a single-threaded runtime: a node per thread, as
    /// on two machines, and as the raw reference's two ends always had (on one shared pool the
    /// two nodes' four tasks compete for the workers).
    ThreadPerEnd,
    /// One 2-worker tokio pool: the server end spawned on it, the client on the thread that
    /// blocks on it (how this bench ran before; both nodes' tasks share the workers).
    SharedPool,
}

/// The same frame as a CBOR map, the alternative the wire format was measured against.
#[derive(serde::Serialize, serde::Deserialize)]
struct CborFrame {
    kind: u8,
    id: u64,
    module: u16,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

/// Mean ns to encode and decode one request frame with a 1 KiB payload: our binary header
/// (the codec on the wire) vs the same fields as CBOR with cbor4ii.
fn header_formats(rounds: usize) -> (f64, f64) {
    use asynchronous_codec::{Decoder as _, Encoder as _};
    use bcos_p2p::unicast::codec::{Codec, Frame, Wire};
    let payload = Bytes::from(vec![5u8; KIB]);
    let mut codec = Codec::new(MIB);
    let mut buf = bytes::BytesMut::with_capacity(2 * KIB);
    let start = Instant::now();
    for i in 0..rounds {
        let frame = Frame::Request {
            id: i as u64,
            module: MODULE,
            payload: payload.clone(),
        };
        codec.encode(Wire::whole(frame), &mut buf).unwrap();
        let back = codec.decode(&mut buf).unwrap().unwrap();
        std::hint::black_box(back);
    }
    let binary = start.elapsed().as_nanos() as f64 / rounds as f64;
    let start = Instant::now();
    for i in 0..rounds {
        let frame = CborFrame {
            kind: 0,
            id: i as u64,
            module: MODULE,
            payload: payload.to_vec(),
        };
        let bytes = cbor4ii::serde::to_vec(Vec::with_capacity(2 * KIB), &frame).unwrap();
        let back: CborFrame = cbor4ii::serde::from_slice(&bytes).unwrap();
        std::hint::black_box(back);
    }
    let cbor = start.elapsed().as_nanos() as f64 / rounds as f64;
    (binary, cbor)
}
