//! Soak: four nodes in one process under 60 s of mixed requests, multicasts and broadcasts at
//! the highest rate the machine sustains (closed loops: a fixed number of requests in flight per
//! node, a fixed window of undelivered flood copies per publisher). Checks that nothing is lost
//! or duplicated, that no request fails, and that memory stays bounded once warm.
//!
//! `BCOS_SOAK_SECS` lengthens (or, for a quick look, shortens: at least 5) the run. Figures go to
//! stderr: `cargo test --test soak -- --nocapture`.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId,
    ca_tls::pki::{CertificateAuthority, Period},
    config::DEFAULT_MODULE,
    flood,
    node::{Node, NodeEvent},
};
use bytes::Bytes;
use common::{TIMEOUT, start_node};
use futures::StreamExt as _;
use tokio::sync::Mutex;

const NODES: usize = 4;
/// Requests each node keeps in flight.
const IN_FLIGHT: usize = 32;
/// Flood copies a publisher may have sent and not yet seen delivered.
const FLOOD_WINDOW: u64 = 256;
const TOPIC: &str = "soak";
/// Node 3 does not subscribe: multicasts must never reach it.
const SUBSCRIBERS: [bool; NODES] = [true, true, true, false];
/// Memory a warm network may gain over the rest of the run (allocator slack included).
const RSS_GROWTH_LIMIT_MB: f64 = 64.0;

/// Resident memory of this process, in MiB.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb / 1024.0
}

/// What every node's event loop counts.
#[derive(Default)]
struct Tally {
    /// Flood copies delivered: one bit per (origin, receiver, kind, seq); a second copy counts
    /// as a duplicate. Bits, so the tally itself stays small over a long run.
    seen: Mutex<HashMap<(usize, usize, bool), Vec<u64>>>,
    /// Copies delivered again.
    duplicates: AtomicU64,
    /// Copies delivered to their own origin.
    to_self: AtomicU64,
    /// Copies delivered of each origin's messages (for the publishers' windows).
    delivered_from: [AtomicU64; NODES],
    /// Multicasts that reached a node that did not subscribe.
    misdelivered: AtomicU64,
    /// Subscriptions to the topic each node has heard of.
    subscribed: [AtomicU64; NODES],
}

/// Flood payload: origin index, seq, kind — and padding up to 256 bytes.
fn flood_payload(origin: usize, seq: u64, broadcast: bool) -> Bytes {
    let mut p = format!("{origin}:{seq}:{}:", if broadcast { 'b' } else { 'm' }).into_bytes();
    p.resize(256, b'.');
    Bytes::from(p)
}

fn parse_flood(payload: &[u8]) -> Option<(usize, u64, bool)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(':');
    let origin = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let broadcast = parts.next()? == "b";
    Some((origin, seq, broadcast))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_sixty_seconds_of_mixed_traffic() {
    let secs: u64 = std::env::var("BCOS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        .max(5);
    let run = Duration::from_secs(secs);

    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..NODES {
        let (n, events) = start_node(&ca, &nodes.iter().collect::<Vec<_>>(), |_| {}).await;
        streams.push(events);
        nodes.push(n);
    }
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.node_id().clone()).collect();
    let index_of: Arc<HashMap<NodeId, usize>> = Arc::new(
        ids.iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect(),
    );

    // Every node's events: answer requests by echo, count flood deliveries and subscriptions.
    let tally = Arc::new(Tally::default());
    let mut readers = Vec::new();
    for (me, mut events) in streams.into_iter().enumerate() {
        let tally = tally.clone();
        let index_of = index_of.clone();
        readers.push(tokio::spawn(async move {
            let mut lost = 0u64;
            while let Some(event) = events.next().await {
                match event {
                    NodeEvent::Request {
                        payload, responder, ..
                    } => {
                        let _ = responder.respond(payload).await;
                    }
                    NodeEvent::Flood(flood::Event::Message { payload, topic, .. }) => {
                        let Some((origin, seq, broadcast)) = parse_flood(&payload) else {
                            lost += 1;
                            continue;
                        };
                        if topic.is_some() && !SUBSCRIBERS[me] {
                            tally.misdelivered.fetch_add(1, Ordering::Relaxed);
                        }
                        if origin == me {
                            tally.to_self.fetch_add(1, Ordering::Relaxed);
                        }
                        let mut seen = tally.seen.lock().await;
                        let bits = seen.entry((origin, me, broadcast)).or_default();
                        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                        if bits.len() <= word {
                            bits.resize(word + 1, 0);
                        }
                        if bits[word] & bit != 0 {
                            tally.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        bits[word] |= bit;
                        tally.delivered_from[origin].fetch_add(1, Ordering::Relaxed);
                    }
                    NodeEvent::Flood(flood::Event::Subscribed { node, topic })
                        if topic.as_str() == TOPIC && index_of.contains_key(&node) =>
                    {
                        tally.subscribed[me].fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            lost
        }));
    }

    // A full mesh, then every subscription known everywhere.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut full = true;
        for n in &nodes {
            full &= n.peers().await.unwrap().len() == NODES - 1;
        }
        if full {
            break;
        }
        assert!(Instant::now() < deadline, "mesh did not form");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, n) in nodes.iter().enumerate() {
        if SUBSCRIBERS[i] {
            n.subscribe(TOPIC).await.unwrap();
        }
    }
    let remote_subscribers =
        |me: usize| (0..NODES).filter(|&j| j != me && SUBSCRIBERS[j]).count() as u64;
    loop {
        let known = (0..NODES)
            .all(|i| tally.subscribed[i].load(Ordering::Relaxed) >= remote_subscribers(i));
        if known {
            break;
        }
        assert!(Instant::now() < deadline, "subscriptions did not spread");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let nodes = Arc::new(nodes);
    let ids = Arc::new(ids);
    let stop = Arc::new(AtomicBool::new(false));
    let requests_ok = Arc::new(AtomicU64::new(0));
    let request_errors = Arc::new(AtomicU64::new(0));
    let publish_errors = Arc::new(AtomicU64::new(0));
    // Expected copies per origin: (multicasts, broadcasts) published.
    let published: Arc<[[AtomicU64; 2]; NODES]> = Arc::new(Default::default());

    let mut workers = Vec::new();
    for me in 0..NODES {
        for w in 0..IN_FLIGHT {
            let (nodes, ids, stop) = (nodes.clone(), ids.clone(), stop.clone());
            let (ok, errors) = (requests_ok.clone(), request_errors.clone());
            workers.push(tokio::spawn(async move {
                let mut k = w;
                let payload = Bytes::from(vec![me as u8; 1024]);
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let to = (me + 1 + k % (NODES - 1)) % NODES;
                    match nodes[me]
                        .request(&ids[to], DEFAULT_MODULE, payload.clone())
                        .await
                    {
                        Ok(reply) if reply == payload => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => panic!("wrong reply from node {to}"),
                        Err(e) => {
                            eprintln!("request {me}->{to} failed: {e}");
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
        let (nodes, stop, tally) = (nodes.clone(), stop.clone(), tally.clone());
        let (published, errors) = (published.clone(), publish_errors.clone());
        workers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let copies = |published: &[[AtomicU64; 2]; NODES]| {
                published[me][0].load(Ordering::Relaxed) * remote_subscribers(me)
                    + published[me][1].load(Ordering::Relaxed) * (NODES as u64 - 1)
            };
            while !stop.load(Ordering::Relaxed) {
                let outstanding = copies(&published)
                    .saturating_sub(tally.delivered_from[me].load(Ordering::Relaxed));
                if outstanding >= FLOOD_WINDOW {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                seq += 1;
                let broadcast = seq.is_multiple_of(2);
                let payload = flood_payload(me, seq, broadcast);
                let sent = if broadcast {
                    nodes[me].broadcast(payload).await
                } else {
                    nodes[me].multicast(TOPIC, payload).await
                };
                match sent {
                    Ok(_) => published[me][usize::from(broadcast)].fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("publish from {me} failed: {e}");
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    // Memory once warm, then at the end.
    tokio::time::sleep(run / 6).await;
    let rss_warm = rss_mb();
    let started = Instant::now();
    let ok_warm = requests_ok.load(Ordering::Relaxed);
    let delivered_warm: u64 = tally
        .delivered_from
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .sum();
    let mut rss_peak = rss_warm;
    let mut rss_half = None;
    while started.elapsed() < run - run / 6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_peak = rss_peak.max(rss_mb());
        if rss_half.is_none() && started.elapsed() >= run / 2 - run / 6 {
            rss_half = Some(rss_mb());
        }
    }
    let rss_half = rss_half.unwrap_or(rss_peak);
    let elapsed = started.elapsed().as_secs_f64();
    let ok_end = requests_ok.load(Ordering::Relaxed);
    let delivered_end: u64 = tally
        .delivered_from
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .sum();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(TIMEOUT, w)
            .await
            .expect("workers stop")
            .unwrap();
    }

    // Let the last flood copies land, then count.
    let expected: u64 = (0..NODES)
        .map(|i| {
            published[i][0].load(Ordering::Relaxed) * remote_subscribers(i)
                + published[i][1].load(Ordering::Relaxed) * (NODES as u64 - 1)
        })
        .sum();
    let settle = Instant::now() + TIMEOUT;
    while tally
        .delivered_from
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .sum::<u64>()
        < expected
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_end = rss_mb();
    let delivered: u64 = tally
        .delivered_from
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .sum();
    let duplicates = tally.duplicates.load(Ordering::Relaxed);
    let to_self = tally.to_self.load(Ordering::Relaxed);

    let (requests, errors) = (ok_end, request_errors.load(Ordering::Relaxed));
    eprintln!(
        "soak {secs} s, 4 nodes: {:.0} requests/s (1 KiB, {IN_FLIGHT} in flight per node), \
         {:.0} flood deliveries/s (256 B), {requests} requests ok, {errors} request errors, \
         {} publish errors, {expected} flood copies expected, {delivered} delivered, \
         {duplicates} duplicates, {} misdelivered; RSS warm {rss_warm:.1} MiB, half-way \
         {rss_half:.1} MiB, peak {rss_peak:.1} MiB, end {rss_end:.1} MiB",
        (ok_end - ok_warm) as f64 / elapsed,
        (delivered_end - delivered_warm) as f64 / elapsed,
        publish_errors.load(Ordering::Relaxed),
        tally.misdelivered.load(Ordering::Relaxed),
    );
    assert!(requests > 0, "no request was answered");
    assert_eq!(errors, 0, "requests failed");
    assert_eq!(
        publish_errors.load(Ordering::Relaxed),
        0,
        "publishes failed"
    );
    assert_eq!(tally.misdelivered.load(Ordering::Relaxed), 0);
    assert_eq!(duplicates, 0, "flood copies delivered twice");
    assert_eq!(to_self, 0, "a node received its own message");
    assert_eq!(delivered, expected, "flood copies lost");
    assert!(
        rss_peak - rss_warm < RSS_GROWTH_LIMIT_MB,
        "memory grew {:.1} MiB after warm-up",
        rss_peak - rss_warm
    );

    for n in nodes.iter() {
        n.shutdown().await.unwrap();
    }
    for r in readers {
        let unparsable = tokio::time::timeout(TIMEOUT, r)
            .await
            .expect("readers end")
            .unwrap();
        assert_eq!(unparsable, 0, "flood payloads garbled");
    }
}
