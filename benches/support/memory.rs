//! Memory per connection: N full nodes in one process (CA-TLS with secp256k1 keys, as
//! `examples/cluster.rs` runs them), measured once started and unconnected, and again once a full
//! mesh between them is up and has idled a few seconds. The difference over the connection ends
//! (two per connection) is what one idle connection end holds:
//! `rss_kb_per_connection_end` from the process's resident set (VmRSS), and, when the bench
//! binary counts its allocations with [`CountingAlloc`], `heap_kb_per_connection_end` from the
//! bytes live on the heap (allocator overhead, fragmentation and pages the allocator keeps are in
//! the first figure, not the second).
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: support::memory::CountingAlloc = support::memory::CountingAlloc;
//! let figures = runtime.block_on(support::memory::measure(64));
//! ```
//!
//! The nodes all share 127.0.0.1, so their per-address admission limits are lifted (see
//! [`super::start`]): otherwise they throttle the mesh like a flood from one host, and the
//! refused attempts and redials leave garbage in the heap that is not the connections' doing.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::HashSet,
    sync::atomic::{AtomicBool, AtomicI64, Ordering},
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId,
    ca_tls::pki::{CertificateAuthority, Period},
    node::Node,
};
use tokio::sync::mpsc;

/// How long the nodes idle before each reading: started (listeners up, first timers run), and
/// with the mesh up (identify and status exchanged, a ping round on every connection).
pub const IDLE: Duration = Duration::from_secs(6);

/// Nodes that start dialling together while the mesh comes up.
const STAGE: usize = 8;

/// How long [`measure`] waits for the next connection while the mesh comes up before it gives up.
const MESH_TIMEOUT: Duration = Duration::from_secs(60);

static LIVE: AtomicI64 = AtomicI64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting the bytes live on the heap. Install it in a bench binary with
/// `#[global_allocator]`; [`heap_bytes`] reads the count.
pub struct CountingAlloc;

// SAFETY: every call goes to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

fn count(delta: i64) {
    LIVE.fetch_add(delta, Ordering::Relaxed);
    if !COUNTING.load(Ordering::Relaxed) {
        COUNTING.store(true, Ordering::Relaxed);
    }
}

/// Bytes live on the heap now, if the binary's global allocator is [`CountingAlloc`].
pub fn heap_bytes() -> Option<i64> {
    COUNTING
        .load(Ordering::Relaxed)
        .then(|| LIVE.load(Ordering::Relaxed))
}

/// The process's resident set (VmRSS) in KiB, or NaN where /proc is not there.
pub fn rss_kb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Nodes in the mesh.
    pub nodes: usize,
    /// Connection ends: two per connection, `nodes * (nodes - 1)`.
    pub connection_ends: usize,
    /// Time from the first dial until every connection end was up.
    pub mesh_s: f64,
    /// RSS with the nodes started and not connected (KiB).
    pub rss_unconnected_kb: f64,
    /// RSS with the mesh up and idle (KiB).
    pub rss_mesh_kb: f64,
    /// (mesh − unconnected) RSS per connection end (KiB).
    pub rss_kb_per_connection_end: f64,
    /// Heap bytes live with the nodes started and not connected ([`CountingAlloc`] only).
    pub heap_unconnected_bytes: Option<i64>,
    /// Heap bytes live with the mesh up and idle ([`CountingAlloc`] only).
    pub heap_mesh_bytes: Option<i64>,
    /// (mesh − unconnected) live heap per connection end (KiB; [`CountingAlloc`] only).
    pub heap_kb_per_connection_end: Option<f64>,
}

/// Raises the open-files limit for `n` nodes in one process (two sockets per connection, plus
/// listeners and what else the process has open).
pub fn raise_fd_limit(n: usize) {
    let want = (n * n * 2 + 1024) as u64;
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < want
    {
        let _ = rlimit::Resource::NOFILE.set(want.min(hard), hard);
    }
}

/// A point of [`measure_with`] at which the process can be made to exit, with everything the
/// nodes hold still live: a heap profiler (heaptrack, valgrind) then reports it as leaked, by
/// call stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The nodes started and idle, not connected.
    Unconnected,
    /// The mesh up and idle.
    Mesh,
}

/// Starts `n` nodes (`n` ≥ 2) unconnected and lets them idle, reads RSS and the heap, connects
/// them into a full mesh (node i dials nodes 0..i) and lets it idle, reads again, and stops the
/// nodes. Needs a tokio runtime with timers; panics if the mesh does not come up.
pub async fn measure(n: usize) -> Figures {
    measure_with(n, None).await
}

/// [`measure`], exiting the process (status 0, after printing what it read) at `exit_at`.
pub async fn measure_with(n: usize, exit_at: Option<Phase>) -> Figures {
    assert!(n >= 2, "a mesh needs two nodes");
    raise_fd_limit(n);
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=memory", Period::days(1))
        .expect("ca");
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, NodeId)>();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let listen = "/ip4/127.0.0.1/tcp/0".parse().expect("addr");
        let m = super::member(&ca, i);
        nodes.push(super::start(&ca, &m, i, listen, Vec::new(), tx.clone()).await);
    }
    drop(tx);
    tokio::time::sleep(IDLE).await;
    let (rss_unconnected_kb, heap_unconnected_bytes) = (rss_kb(), heap_bytes());
    if exit_at == Some(Phase::Unconnected) {
        println!(
            "{n} nodes unconnected: RSS {rss_unconnected_kb} KiB, heap {heap_unconnected_bytes:?} B"
        );
        std::process::exit(0);
    }

    // In waves of STAGE nodes, as a cluster comes up: node i dials nodes 0..i, and the next
    // wave starts dialling once every connection of the nodes so far is up (fewer handshakes at
    // once than all of them, so each run forms the mesh much the same way; node by node, each
    // new node's links would cost a round of flood record updates across the whole mesh).
    let started = Instant::now();
    let mut seen = HashSet::new();
    for wave in (0..n).collect::<Vec<_>>().chunks(STAGE) {
        for &i in wave {
            for earlier in &nodes[..i] {
                nodes[i]
                    .add_peer(earlier.listen_addrs()[0].clone())
                    .await
                    .expect("node runs");
            }
        }
        let up_to = wave[wave.len() - 1] + 1;
        let ends = up_to * (up_to - 1);
        while seen.len() < ends {
            let got = tokio::time::timeout(MESH_TIMEOUT, rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no new connection in {MESH_TIMEOUT:?}: {} of {ends} connection ends of nodes 0..{up_to}",
                        seen.len()
                    )
                })
                .expect("nodes run");
            seen.insert(got);
        }
    }
    let ends = n * (n - 1);
    let mesh_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(IDLE).await;
    let (rss_mesh_kb, heap_mesh_bytes) = (rss_kb(), heap_bytes());
    if exit_at == Some(Phase::Mesh) {
        println!("{n} nodes in a mesh: RSS {rss_mesh_kb} KiB, heap {heap_mesh_bytes:?} B");
        std::process::exit(0);
    }

    futures::future::join_all(nodes.iter().map(Node::shutdown)).await;
    let per_end = |before: f64, after: f64| (after - before) / ends as f64;
    Figures {
        nodes: n,
        connection_ends: ends,
        mesh_s,
        rss_unconnected_kb,
        rss_mesh_kb,
        rss_kb_per_connection_end: per_end(rss_unconnected_kb, rss_mesh_kb),
        heap_unconnected_bytes,
        heap_mesh_bytes,
        heap_kb_per_connection_end: heap_unconnected_bytes
            .zip(heap_mesh_bytes)
            .map(|(a, b)| per_end(a as f64, b as f64) / 1024.0),
    }
}
