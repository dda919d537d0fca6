//! Traffic control between real nodes on loopback: no head-of-line blocking between modules,
//! priority classes, bandwidth limits (with exempt modules), incoming request rate limits, and
//! compression negotiated per connection (a peer that speaks only unicast 1.0 still talks).

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType,
    ca_tls::pki::{CertificateAuthority, Period},
    config::Config,
    node::{Node, NodeError, NodeEvent},
};
use bytes::Bytes;
use common::{Events, TIMEOUT, noise, start_node};
use futures::StreamExt as _;

fn ca() -> CertificateAuthority {
    CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap()
}

/// What the receiving node saw: one-way messages per module with when they arrived, in order.
#[derive(Default)]
struct Seen {
    arrivals: Mutex<Vec<(u16, usize, Instant)>>,
    bytes: AtomicUsize,
}

/// Runs `events`: echoes requests, records one-way messages in `seen`.
fn receive(mut events: Events, seen: Arc<Seen>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                NodeEvent::Request {
                    payload, responder, ..
                } => {
                    let _ = responder.respond(payload).await;
                }
                NodeEvent::Oneway {
                    module, payload, ..
                } => {
                    seen.bytes.fetch_add(payload.len(), Ordering::Relaxed);
                    seen.arrivals
                        .lock()
                        .unwrap()
                        .push((module, payload.len(), Instant::now()));
                }
                _ => {}
            }
        }
    })
}

/// A stream of `protocol` to `b` from a member of `ca` that is not a node of ours (a swarm
/// of its own, to abort when done).
async fn raw_stream(
    ca: &CertificateAuthority,
    b: &Node,
    protocol: libp2p::StreamProtocol,
) -> (libp2p::Stream, tokio::task::JoinHandle<()>) {
    let (key, tls) = common::node(ca, KeyType::Secp256k1, Period::days(1));
    let addr = b.listen_addrs()[0].clone();
    let (stream, swarm) =
        common::raw_stream_as(&key, &tls, addr, b.node_id().to_peer_id(), protocol.clone()).await;
    (
        stream.unwrap_or_else(|| panic!("a {protocol} stream opens")),
        swarm,
    )
}

/// Two connected nodes: `a` sends, `b` (serving `modules`) receives into the returned record.
async fn pair(
    modules: &[u16],
    tweak_a: impl FnOnce(&mut Config),
    tweak_b: impl FnOnce(&mut Config),
) -> (Node, Node, Arc<Seen>, tokio::task::JoinHandle<()>) {
    let ca = ca();
    let modules = modules.to_vec();
    let (b, b_events) = start_node(&ca, &[], |c| {
        c.unicast.modules = modules;
        tweak_b(c);
    })
    .await;
    let (a, _a_events) = start_node(&ca, &[&b], tweak_a).await;
    let seen = Arc::new(Seen::default());
    let task = receive(b_events, seen.clone());
    let to_b = b.node_id().clone();
    tokio::time::timeout(TIMEOUT, async {
        // Connected once a request goes through.
        loop {
            if a.request(&to_b, 1, Bytes::from_static(b"hi")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connected");
    (a, b, seen, task)
}

/// A 1 KiB request on module 1 issued behind 60 MiB of module 2 one-way messages (two of
/// 30 MiB) is answered before the first of them has arrived: it waited behind at most a part
/// of module 2, not behind everything queued before it (in FIFO order it would come after both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_request_overtakes_another_modules_bulk() {
    let (a, b, seen, task) = pair(&[1, 2], |_| {}, |_| {}).await;
    let to_b = b.node_id().clone();
    // Made before anything is sent: making them takes longer than sending them.
    let bulk = [noise(30 << 20, 1), noise(30 << 20, 2)];
    let small = noise(1024, 99);
    for payload in bulk {
        a.oneway(&to_b, 2, payload).await.unwrap();
    }
    let answer = a.request(&to_b, 1, small).await.unwrap();
    let arrived_before = seen.arrivals.lock().unwrap().len();
    assert_eq!(answer, noise(1024, 99));
    assert_eq!(
        arrived_before, 0,
        "the request was answered only after {arrived_before} of the bulk messages arrived"
    );
    // And the bulk all arrives, in order, whole.
    tokio::time::timeout(TIMEOUT, async {
        while seen.arrivals.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all bulk messages arrive");
    assert_eq!(seen.bytes.load(Ordering::Relaxed), 2 * (30 << 20));
    task.abort();
}

/// Queues one-way messages: (module, payload) in order.
async fn queue_all(a: &Node, to: &bcos_p2p::NodeId, messages: Vec<(u16, Bytes)>) {
    for (module, payload) in messages {
        a.oneway(to, module, payload).await.unwrap();
    }
}

/// High (1000), normal (5) and low (2000) messages queued together: the high ones arrive
/// first, normal ones before most low ones, and the low class is not starved: some of its
/// messages arrive while normal ones are still being sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_classes_go_in_order_and_the_lowest_is_not_starved() {
    let (a, b, seen, task) = pair(&[1, 5, 1000, 2000], |_| {}, |_| {}).await;
    let to_b = b.node_id().clone();
    // Queued lowest first, so that the order of queueing does not explain the order of arrival;
    // slices of one random buffer, made before anything is sent.
    let data = noise(4 << 20, 7);
    let mut messages: Vec<(u16, Bytes)> = (0..24).map(|_| (2000, data.slice(..1 << 20))).collect();
    messages.extend((0..6).map(|_| (5, data.clone())));
    messages.extend((0..8).map(|_| (1000, data.slice(..256 << 10))));
    queue_all(&a, &to_b, messages).await;
    tokio::time::timeout(TIMEOUT, async {
        while seen.arrivals.lock().unwrap().len() < 38 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("everything arrives");
    let order: Vec<u16> = seen.arrivals.lock().unwrap().iter().map(|a| a.0).collect();
    let last = |m: u16| order.iter().rposition(|x| *x == m).unwrap();
    let mean = |m: u16| {
        let at: Vec<usize> = (0..order.len()).filter(|i| order[*i] == m).collect();
        at.iter().sum::<usize>() as f64 / at.len() as f64
    };
    assert!(
        last(1000) < last(5) && mean(1000) < mean(5) && mean(5) < mean(2000),
        "arrival order {order:?}"
    );
    // The low class got its share while the normal class still had messages to send.
    let low_before_normal_done = order[..last(5)].iter().filter(|m| **m == 2000).count();
    assert!(low_before_normal_done >= 2, "low starved: {order:?}");
    task.abort();
}

/// A total limit of 2 MB/s holds within 10 % over 5 s for a module that always has data
/// queued, while an exempt module (1000, PBFT, exempt by default) is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_bandwidth_limit_holds_and_exempt_modules_pass() {
    const RATE: u64 = 2_000_000;
    let (a, b, seen, task) = pair(
        &[1, 5, 1000],
        |c| c.traffic.total_bytes_per_s = RATE,
        |_| {},
    )
    .await;
    let to_b = b.node_id().clone();
    let a = Arc::new(a);
    // Keep about 4 MB queued on module 5 (one-way messages are dropped past the queue bound).
    let sender = {
        let (a, to_b) = (a.clone(), to_b.clone());
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            for i in 0..10_000u64 {
                while sent.saturating_sub(seen.bytes.load(Ordering::Relaxed)) > 4_000_000 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                a.oneway(&to_b, 5, noise(64 << 10, i)).await.unwrap();
                sent += 64 << 10;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (t0, b0) = (Instant::now(), seen.bytes.load(Ordering::Relaxed));
    // Exempt requests go through while module 5 is held back.
    let mut exempt = Vec::new();
    for i in 0..10 {
        let start = Instant::now();
        let answer = a.request(&to_b, 1000, noise(2000, i)).await.unwrap();
        assert_eq!(answer.len(), 2000);
        exempt.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed())).await;
    let (t1, b1) = (Instant::now(), seen.bytes.load(Ordering::Relaxed));
    sender.abort();
    let rate = (b1 - b0) as f64 / (t1 - t0).as_secs_f64();
    let ratio = rate / RATE as f64;
    eprintln!(
        "traffic: total limit {RATE} B/s, measured {rate:.0} B/s ({ratio:.3}); exempt answers {exempt:?}"
    );
    assert!((0.9..=1.1).contains(&ratio), "measured/limit {ratio:.3}");
    // An exempt request never waits for the limited module's debt (a part of 64 KiB is 33 ms
    // of it; queued behind 4 MB it would wait two seconds).
    let worst = exempt.iter().max().unwrap();
    assert!(
        *worst < Duration::from_millis(1000),
        "exempt waits {exempt:?}"
    );
    task.abort();
}

/// A per-module limit holds for that module while another module is not limited by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_limit_holds_for_that_module_only() {
    const RATE: u64 = 1_000_000;
    let (a, b, seen, task) = pair(
        &[1, 6, 7],
        |c| {
            c.traffic.module_bytes_per_s.insert("6".into(), RATE);
        },
        |_| {},
    )
    .await;
    let to_b = b.node_id().clone();
    let start = Instant::now();
    for i in 0..60 {
        a.oneway(&to_b, 6, noise(64 << 10, i)).await.unwrap();
        a.oneway(&to_b, 7, noise(64 << 10, 1000 + i)).await.unwrap();
    }
    // Module 7 (no limit) is all there long before module 6 (3.9 MB at 1 MB/s).
    let seven_done = tokio::time::timeout(TIMEOUT, async {
        loop {
            let n = seen
                .arrivals
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.0 == 7)
                .count();
            if n == 60 {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let six_done = tokio::time::timeout(TIMEOUT, async {
        loop {
            let arrivals = seen.arrivals.lock().unwrap().clone();
            if arrivals.iter().filter(|a| a.0 == 6).count() == 60 {
                return arrivals;
            }
            drop(arrivals);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let six: Vec<Instant> = six_done.iter().filter(|a| a.0 == 6).map(|a| a.2).collect();
    // Rate over the messages after the first second's burst.
    let from = six[20];
    let to = six[59];
    let rate = (39 * (64 << 10)) as f64 / (to - from).as_secs_f64();
    let ratio = rate / RATE as f64;
    eprintln!(
        "traffic: module limit {RATE} B/s, measured {rate:.0} ({ratio:.3}); unlimited module done in {seven_done:?}"
    );
    assert!((0.9..=1.1).contains(&ratio), "measured/limit {ratio:.3}");
    assert!(seven_done < Duration::from_secs(2), "{seven_done:?}");
    task.abort();
}

/// Requests over a module's rate limit get the error `rate limited`; another module's
/// requests from the same peer are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_a_rate_limit_get_an_explicit_error() {
    let (a, b, _seen, task) = pair(
        &[1, 8],
        |_| {},
        |c| {
            c.traffic.incoming_requests_per_s.insert("8".into(), 5);
        },
    )
    .await;
    let to_b = b.node_id().clone();
    let a = Arc::new(a);
    let mut calls = Vec::new();
    for i in 0..60u64 {
        let (a, to_b) = (a.clone(), to_b.clone());
        let module = if i % 2 == 0 { 8 } else { 1 };
        calls.push(tokio::spawn(async move {
            (module, a.request(&to_b, module, noise(100, i)).await)
        }));
    }
    let (mut ok8, mut limited, mut ok1) = (0, 0, 0);
    for call in calls {
        match call.await.unwrap() {
            (8, Ok(_)) => ok8 += 1,
            (8, Err(NodeError::Unicast(e))) if e.to_string().contains("rate limited") => {
                limited += 1
            }
            (1, Ok(_)) => ok1 += 1,
            (m, other) => panic!("module {m}: {other:?}"),
        }
    }
    assert_eq!(ok1, 30, "module 1 unaffected");
    assert!((5..=10).contains(&ok8), "module 8 answered {ok8}");
    assert_eq!(ok8 + limited, 30);
    let stats = b.stats().await.unwrap();
    eprintln!("traffic: rate limit 5/s: {ok8} answered, {limited} rate limited; {stats:?}");
    task.abort();
}

/// Between two 1.1 nodes a compressible payload goes compressed (a tenth of its size on the
/// wire) and arrives whole; an incompressible one goes as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressible_payloads_go_compressed_and_arrive_whole() {
    let (a, b, seen, task) = pair(&[1, 3], |_| {}, |_| {}).await;
    let to_b = b.node_id().clone();
    let before = a.stats().await.unwrap().unicast_traffic.bytes_out;
    let text: Bytes = br#"{"from":"0x1f","to":"0x2e","value":12,"nonce":7,"data":"0x"}"#
        .repeat(20_000)
        .into();
    a.oneway(&to_b, 3, text.clone()).await.unwrap();
    let echoed = a.request(&to_b, 1, text.clone()).await.unwrap();
    assert_eq!(
        echoed, text,
        "a compressed request and its compressed answer round trip"
    );
    let after = a.stats().await.unwrap().unicast_traffic.bytes_out;
    let wire = after - before;
    assert!(
        (wire as usize) < 2 * text.len() / 10,
        "{wire} bytes on the wire for 2 × {}",
        text.len()
    );
    tokio::time::timeout(TIMEOUT, async {
        while seen.bytes.load(Ordering::Relaxed) < text.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let random = noise(200_000, 5);
    let before = a.stats().await.unwrap().unicast_traffic.bytes_out;
    a.oneway(&to_b, 3, random.clone()).await.unwrap();
    tokio::time::timeout(TIMEOUT, async {
        while seen.bytes.load(Ordering::Relaxed) < text.len() + random.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let wire = a.stats().await.unwrap().unicast_traffic.bytes_out - before;
    assert_eq!(wire as usize, random.len());
    task.abort();
}

/// A peer sends a compressed 16 MB block and then a small message of the same module, and
/// closes its stream at once: both arrive, in order, though the block was still being
/// decompressed (off the connection's task) when the stream ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_completed_before_the_peer_closes_its_stream_arrive() {
    use futures::AsyncWriteExt as _;
    let ca = ca();
    let (b, b_events) = start_node(&ca, &[], |c| c.unicast.modules = vec![1, 3]).await;
    let seen = Arc::new(Seen::default());
    let task = receive(b_events, seen.clone());
    let (mut stream, swarm) = raw_stream(&ca, &b, bcos_p2p::unicast::PROTOCOL_NAME).await;
    // A 1.1 one-way message whole in its first frame: kind 1, id, module 3, flags, total.
    let oneway = |id: u64, flags: u8, data: &[u8]| {
        let mut body = vec![1u8];
        body.extend(id.to_be_bytes());
        body.extend(3u16.to_be_bytes());
        body.push(flags);
        body.extend((data.len() as u32).to_be_bytes());
        body.extend_from_slice(data);
        let mut frame = common::varint(body.len() as u64);
        frame.extend(body);
        frame
    };
    let block = br#"{"tx":"0xabc","from":"0x1","to":"0x2"},"#.repeat(400_000);
    let compressed = zstd::bulk::compress(&block, 1).unwrap();
    let frames = [
        oneway(1 << 63, 1, &compressed),
        oneway((1 << 63) + 1, 0, b"after"),
    ]
    .concat();
    stream.write_all(&frames).await.unwrap();
    stream.close().await.unwrap();
    let arrived = tokio::time::timeout(TIMEOUT, async {
        loop {
            let arrivals: Vec<(u16, usize)> = (seen.arrivals.lock().unwrap().iter())
                .map(|(m, len, _)| (*m, *len))
                .collect();
            if arrivals.len() >= 2 {
                return arrivals;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        arrived.expect("both messages arrive"),
        [(3, block.len()), (3, 5)],
        "in order"
    );
    swarm.abort();
    task.abort();
}

/// A peer that speaks only unicast 1.0 (here: a raw stream) still gets its requests answered,
/// uncompressed, by a node that prefers 1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_speaks_only_1_0_still_talks() {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = ca();
    let (b, b_events) = start_node(&ca, &[], |_| {}).await;
    let task = receive(b_events, Arc::default());
    let (mut stream, swarm) = raw_stream(&ca, &b, bcos_p2p::unicast::PROTOCOL_1_0).await;
    let text = b"compress me please ".repeat(1000);
    stream
        .write_all(&common::frames::unicast_request(7, 1, &text))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    // A 1.0 Response: varint length, kind 2, id 7, module 0, the payload as it was.
    let expected_len = 11 + text.len();
    let mut answer = vec![0u8; common::varint(expected_len as u64).len() + expected_len];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let prefix = common::varint(expected_len as u64);
    assert_eq!(&answer[..prefix.len()], &prefix[..]);
    let body = &answer[prefix.len()..];
    assert_eq!(body[0], 2);
    assert_eq!(&body[1..9], &7u64.to_be_bytes());
    assert_eq!(&body[11..], &text[..]);
    swarm.abort();
    task.abort();
}

/// A connection this node dialled by a DNS name takes its socket's path pace (the swarm names
/// it by the name, the socket knows the address; the transport binds the pace to the peer), as
/// one dialled by address does and as the listener's side does, so that pacing and the
/// muxer's windows fitted to the round trip reach it.
#[tokio::test]
async fn connections_dialled_by_dns_name_take_their_path_pace() {
    use bcos_p2p::behaviour::{Behaviour, build_swarm};
    let ca = ca();
    for host in ["/ip4/127.0.0.1", "/dns4/localhost"] {
        let (ka, ta) = common::node(&ca, KeyType::Secp256k1, Period::days(1));
        let (kb, tb) = common::node(&ca, KeyType::Secp256k1, Period::days(1));
        let mut a = build_swarm(&ka, &ta, &Config::default()).unwrap();
        let mut b = build_swarm(&kb, &tb, &Config::default()).unwrap();
        let waiting = |s: &libp2p::Swarm<Behaviour>| {
            s.behaviour()
                .unicast
                .path_paces()
                .expect("build_swarm paces")
                .waiting()
        };
        let (sa, sb) = common::dial_at(&mut a, &mut b, host).await;
        assert_eq!(sa.peer(), *b.local_peer_id(), "{host}");
        assert_eq!(sb.peer(), *a.local_peer_id(), "{host}");
        assert_eq!(waiting(&a), 0, "{host}: the dialler's pace was not taken");
        assert_eq!(waiting(&b), 0, "{host}: the listener's pace was not taken");
    }
}
