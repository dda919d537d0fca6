//! Memory per connection: N full nodes in one process (CA-TLS, secp256k1, full mesh), memory
//! read with the nodes started and unconnected, then with the mesh up and idle; the difference
//! per connection end (two per connection) is `rss_kb_per_connection_end` (resident set) and
//! `heap_kb_per_connection_end` (bytes live on the heap, counted by this binary's allocator).
//! See `support/memory.rs`; the breakdown of what an idle connection end holds is in
//! docs/ARCHITECTURE.md ("Memory per connection").
//!
//! `cargo bench --bench conn_memory [-- --quick] [-- --nodes N]`: 64 nodes (2016 connections),
//! 32 with `--quick`; the last line is JSON (see docs/ARCHITECTURE.md). For a heap profile of
//! what the mesh holds, run the binary under heaptrack with `--exit-with-mesh-up` (or
//! `--exit-unconnected` for the reference): it exits with everything still live, which
//! `heaptrack_print --print-leaks` then lists by call stack.

#[path = "support/mod.rs"]
mod support;

use support::memory::{self, CountingAlloc, Phase};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    // Malloc as the `bcos-p2p` binary sets it (bcos_p2p::malloc).
    let malloc = bcos_p2p::malloc::tune();
    let args: Vec<String> = std::env::args().collect();
    let n = match args.iter().position(|a| a == "--nodes") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n >= 2)
            .expect("--nodes N, N at least 2"),
        None if support::quick() => 32,
        None => 64,
    };
    let exit_at = if args.iter().any(|a| a == "--exit-with-mesh-up") {
        Some(Phase::Mesh)
    } else if args.iter().any(|a| a == "--exit-unconnected") {
        Some(Phase::Unconnected)
    } else {
        None
    };
    let f = support::runtime().block_on(memory::measure_with(n, exit_at));
    let heap =
        |b: Option<i64>| b.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
    println!(
        "conn_memory: {n} nodes in one process (CA-TLS secp256k1, 2 tokio workers, glibc malloc thresholds: {malloc:?}), {} connections, {} connection ends; idle {:?} before each reading",
        f.connection_ends / 2,
        f.connection_ends,
        memory::IDLE
    );
    println!("{:<44} {:>12} {:>12}", "", "RSS (MiB)", "heap (MiB)");
    println!(
        "{:<44} {:>12.1} {:>12}",
        "nodes started, not connected",
        f.rss_unconnected_kb / 1024.0,
        heap(f.heap_unconnected_bytes)
    );
    println!(
        "{:<44} {:>12.1} {:>12}",
        "full mesh up, idle",
        f.rss_mesh_kb / 1024.0,
        heap(f.heap_mesh_bytes)
    );
    println!(
        "{:<44} {:>12.1} {:>12}",
        "per connection end (KiB)",
        f.rss_kb_per_connection_end,
        f.heap_kb_per_connection_end
            .map_or("-".to_string(), |h| format!("{h:.1}"))
    );
    println!("{:<44} {:>12.2}", "mesh up in (s)", f.mesh_s);
    let r = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{{\"nodes\":{n},\"connection_ends\":{},\"rss_kb_per_connection_end\":{},\"heap_kb_per_connection_end\":{},\"rss_mesh_mb\":{},\"mesh_s\":{}}}",
        f.connection_ends,
        r(f.rss_kb_per_connection_end),
        f.heap_kb_per_connection_end
            .map_or("null".to_string(), |h| r(h).to_string()),
        r(f.rss_mesh_kb / 1024.0),
        (f.mesh_s * 100.0).round() / 100.0
    );
}
