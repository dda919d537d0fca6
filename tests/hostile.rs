//! Hostile input against a real node: a `bcos-p2p run --json` process on loopback, attacked by
//! this test process while two honest in-process nodes keep sending it requests.
//!
//! Each test is one attack from FISCO BCOS's history (malformed length fields, short payloads,
//! handshake churn, half-open connections) and checks the same three things: the node neither
//! panics nor exits, every honest request during and after the attack is answered, and the
//! node's resident memory (VmRSS, read from /proc for the node process alone) grows by less
//! than 64 MiB. Attackers and honest peers use different loopback source addresses (all of
//! 127.0.0.0/8 is loopback), as the node limits new connections per address. The figures seen
//! are printed (`cargo test --test hostile -- --nocapture`). The tests run one at a time: each
//! measures one node's memory and would otherwise share the CPU with the others' attacks.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    str::FromStr as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    ca_tls::{
        CertificateDer,
        pki::{CertificateAuthority, Period, chain_pem},
    },
    config::{Config, PeerAddr},
    node::Node,
};
use bytes::Bytes;
use common::{
    process::RunProcess,
    raw::{self, Tls, closed_within, connect_from, noise, yamux_header},
    varint, write_garbage,
};
use futures::{AsyncWriteExt as _, StreamExt as _, future::join_all};
use libp2p::{Multiaddr, multiaddr::Protocol};
use tokio::{io::AsyncWriteExt as _, task::JoinHandle};

/// The memory growth allowed per attack (FISCO BCOS once held 64 MiB per session).
const MAX_GROWTH_KIB: u64 = 64 * 1024;
/// The node's handshake timeout in these tests.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1000);
/// What libp2p adds to the handshake timeout for the whole connection setup (see
/// `behaviour::build_swarm_with`): a connection that never starts TLS lasts this much longer.
const CONNECT_MARGIN: Duration = Duration::from_secs(5);
/// Scheduling slack on a shared 2-core machine.
const SLACK: Duration = Duration::from_secs(4);
/// Upper bound on any single wait.
const WAIT: Duration = Duration::from_secs(30);
/// How long honest traffic runs before the attack (the memory baseline is taken then) and
/// after it.
const BEFORE: Duration = Duration::from_millis(1000);
const AFTER: Duration = Duration::from_millis(1500);
/// Pause between one honest node's requests.
const HONEST_PAUSE: Duration = Duration::from_millis(10);

/// One attack at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A loopback address of the 127.0.0.0/8 block.
fn lo(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A node key and its certificate chain from `ca`.
fn identity(ca: &CertificateAuthority) -> (NodeKey, Vec<CertificateDer<'static>>) {
    let key = NodeKey::generate(KeyType::Secp256k1).unwrap();
    let cert = ca
        .issue_node(&key, "CN=node,O=test", Period::days(1))
        .unwrap();
    let chain = ca.node_chain(cert).unwrap();
    (key, chain)
}

/// TLS client configs of `n` distinct valid identities of `ca`.
fn valid_clients(ca: &CertificateAuthority, n: usize) -> Vec<Arc<rustls::ClientConfig>> {
    (0..n)
        .map(|_| {
            let (key, chain) = identity(ca);
            raw::client_config(Some((&key, chain)))
        })
        .collect()
}

/// The target node (a child process) and two honest nodes it keeps connected.
struct Scene {
    _dir: tempfile::TempDir,
    ca: CertificateAuthority,
    target: RunProcess,
    target_id: NodeId,
    /// The target's TCP address.
    addr: SocketAddr,
    honest: Vec<Node>,
}

/// When each honest request ended, and how (an error says what went wrong).
type RequestLog = Vec<(Instant, Result<(), String>)>;

/// Honest traffic and the memory watch of one attack.
struct Watch {
    stop: Arc<AtomicBool>,
    traffic: Vec<JoinHandle<RequestLog>>,
    sampler: JoinHandle<u64>,
    base_kib: u64,
    start: Instant,
}

impl Scene {
    /// Starts the target with the test defaults changed by `tune`, and the honest nodes
    /// (127.0.0.2 and 127.0.0.3) it dials; returns once both are connected.
    async fn start(tune: impl FnOnce(&mut Config)) -> Scene {
        // 500 half-open connections, and as many accepted by the node (which inherits this).
        rlimit::increase_nofile_limit(8192).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca =
            CertificateAuthority::new_root(KeyType::Secp256k1, "CN=chain,O=test", Period::days(1))
                .unwrap();
        let mut honest = Vec::new();
        for last in [2, 3] {
            let (key, tls) = common::node(&ca, KeyType::Secp256k1, Period::days(1));
            let mut config = Config::default();
            config.network.listen = vec![PeerAddr::from_str(&format!("{}:0", lo(last))).unwrap()];
            let mut node = Node::start(key, tls, config).await.unwrap();
            let mut events = node.events().unwrap();
            tokio::spawn(async move { while events.next().await.is_some() {} });
            honest.push(node);
        }

        let (key, chain) = identity(&ca);
        let files = [
            ("node.key", key.to_pkcs8_pem().to_string()),
            ("node.crt", chain_pem(&chain)),
            ("ca.crt", ca.cert_pem().unwrap()),
        ];
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut config = Config::default();
        config.network.listen = vec![PeerAddr::from_str("127.0.0.1:0").unwrap()];
        config.network.peers = honest
            .iter()
            .map(|n| PeerAddr(n.listen_addrs()[0].clone()))
            .collect();
        config.certificate.key = dir.path().join("node.key");
        config.certificate.cert = dir.path().join("node.crt");
        config.certificate.ca = dir.path().join("ca.crt");
        config.connection.handshake_timeout_ms = HANDSHAKE_TIMEOUT.as_millis() as u64;
        tune(&mut config);
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config.to_toml()).unwrap();

        let target = RunProcess::start(&path, &dir.path().join("stderr.log"), WAIT).await;
        let target_id = NodeId::from_str(&target.node_id).unwrap();
        assert_eq!(&target_id, key.node_id());
        let addr = socket_addr(&target.listen);
        for n in &honest {
            let id = n.node_id().to_string();
            target
                .wait_for("honest peer connected", WAIT, |v| {
                    v["event"] == "connected" && v["node_id"] == id.as_str()
                })
                .await;
        }
        // The target reports a connection once its side is up, which can be before the honest
        // node's side knows it: wait for both, or the first honest request is "not connected".
        let deadline = Instant::now() + WAIT;
        for n in &honest {
            while !n.peers().await.unwrap().iter().any(|p| p.node == target_id) {
                assert!(
                    Instant::now() < deadline,
                    "an honest node never saw the target"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Scene {
            _dir: dir,
            ca,
            target,
            target_id,
            addr,
            honest,
        }
    }

    /// The target's multiaddr, with its PeerId.
    fn target_multiaddr(&self) -> Multiaddr {
        self.target.listen.clone()
    }

    /// Starts honest traffic (each honest node requests the target in a loop and checks the
    /// echo), lets it run [`BEFORE`], takes the memory baseline and starts sampling it.
    async fn watch(&self) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = self
            .honest
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (node, target, stop) = (node.clone(), self.target_id.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut log = Vec::new();
                    // Bounded by the stop flag, and by count in case it is never set.
                    for n in 0..100_000u32 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let data = format!("honest{i}-{n}");
                        let reply = tokio::time::timeout(
                            Duration::from_secs(15),
                            node.request(&target, 1, Bytes::from(data.clone())),
                        )
                        .await;
                        let outcome = match reply {
                            Ok(Ok(r)) if r[..] == *format!("echo:{data}").as_bytes() => Ok(()),
                            Ok(Ok(r)) => Err(format!("wrong reply {r:?} to {data}")),
                            Ok(Err(e)) => Err(format!("{data}: {e}")),
                            Err(_) => Err(format!("{data}: no reply in 15 s")),
                        };
                        log.push((Instant::now(), outcome));
                        tokio::time::sleep(HONEST_PAUSE).await;
                    }
                    log
                })
            })
            .collect();
        tokio::time::sleep(BEFORE).await;
        let base_kib = self.target.rss_kib().expect("the node runs");
        let pid = self.target.pid();
        let sampling = stop.clone();
        let sampler = tokio::spawn(async move {
            let mut max = 0;
            while !sampling.load(Ordering::Relaxed) {
                max = max.max(common::process::rss_kib(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            max
        });
        Watch {
            stop,
            traffic,
            sampler,
            base_kib,
            start: Instant::now(),
        }
    }

    /// Ends an attack: honest traffic runs [`AFTER`] more, then every check of the module
    /// docs; prints the figures with `details`, and stops the target cleanly.
    async fn finish(mut self, watch: Watch, name: &str, details: String) {
        let end = Instant::now();
        tokio::time::sleep(AFTER).await;
        watch.stop.store(true, Ordering::Relaxed);
        let peak_kib = watch.sampler.await.unwrap().max(watch.base_kib);
        let end_kib = self.target.rss_kib().unwrap_or(0);
        assert!(self.target.alive(), "{name}: the node exited");
        let mut answered = Vec::new();
        for (i, t) in watch.traffic.into_iter().enumerate() {
            let log = t.await.unwrap();
            let failed: Vec<&String> = log.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
            assert!(
                failed.is_empty(),
                "{name}: honest node {i}: {} of {} requests failed: {:?}",
                failed.len(),
                log.len(),
                &failed[..failed.len().min(5)]
            );
            let during = log
                .iter()
                .filter(|(t, _)| *t >= watch.start && *t <= end)
                .count();
            let after = log.iter().filter(|(t, _)| *t > end).count();
            assert!(
                during > 0 && after > 0,
                "{name}: honest node {i} got {during} replies during and {after} after the attack"
            );
            answered.push(format!("{during}/{after}"));
        }
        let growth = peak_kib.saturating_sub(watch.base_kib);
        println!(
            "[hostile] {name}: attack {:.1} s; target RSS {} KiB before, {} KiB peak (+{} KiB), \
             {} KiB after; honest requests answered during/after: {} (none failed); {details}",
            (end - watch.start).as_secs_f64(),
            watch.base_kib,
            peak_kib,
            growth,
            end_kib,
            answered.join(", "),
        );
        assert!(
            growth < MAX_GROWTH_KIB,
            "{name}: RSS grew by {growth} KiB (from {} KiB)",
            watch.base_kib
        );
        for n in &self.honest {
            n.shutdown().await.unwrap();
        }
        self.honest.clear();
        let (status, stderr) = self.target.quit(WAIT).await;
        assert!(status.success(), "{name}: exit status {status}");
        assert!(
            !stderr.contains("panicked"),
            "{name}: the node panicked:\n{stderr}"
        );
    }
}

/// The TCP address of a `/ip4/.../tcp/...` multiaddr.
fn socket_addr(a: &Multiaddr) -> SocketAddr {
    let mut it = a.iter();
    match (it.next(), it.next()) {
        (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) => (ip, port).into(),
        _ => panic!("not an IPv4 TCP address: {a}"),
    }
}

/// The median and maximum of some durations, in ms.
fn spread(mut d: Vec<Duration>) -> String {
    d.sort();
    match (d.first(), d.get(d.len() / 2), d.last()) {
        (Some(min), Some(mid), Some(max)) => format!(
            "min {} ms, median {} ms, max {} ms",
            min.as_millis(),
            mid.as_millis(),
            max.as_millis()
        ),
        _ => "none".into(),
    }
}

/// 240 connections from 24 addresses write 64 KiB of noise each: raw, after selecting CA-TLS
/// (garbage TLS records), or after the multistream-select header. The node closes every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_to_the_tcp_port() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(|_| {}).await;
    let watch = scene.watch().await;
    let mut closed = Vec::new();
    for round in 0..4u64 {
        let attempts = (0..60u64).map(|k| {
            let addr = scene.addr;
            async move {
                let n = round * 60 + k;
                let mut tcp = connect_from(lo(10 + (n % 24) as u8), addr).await.unwrap();
                let mut bytes = match n % 3 {
                    0 => Vec::new(),
                    1 => common::select_ca_tls(),
                    _ => raw::select("/multistream/1.0.0")[..20].to_vec(),
                };
                bytes.extend(noise(n, 64 * 1024));
                // The node may close before it has read everything: a failed write is fine.
                let _ = tcp.write_all(&bytes).await;
                let mut tcp = tokio_util::compat::TokioAsyncReadCompatExt::compat(tcp);
                closed_within(&mut tcp, WAIT).await
            }
        });
        closed.extend(join_all(attempts).await);
    }
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} noise connections were left open");
    let times = closed.into_iter().flatten().collect();
    let details = format!("240 noise connections, all closed: {}", spread(times));
    scene.finish(watch, "random bytes", details).await;
}

/// TLS clients with a certificate of another CA, and with none, are refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_with_an_untrusted_or_no_certificate() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(|_| {}).await;
    let other =
        CertificateAuthority::new_root(KeyType::Secp256k1, "CN=other,O=evil", Period::days(1))
            .unwrap();
    let (key, chain) = identity(&other);
    let untrusted = raw::client_config(Some((&key, chain)));
    let anonymous = raw::client_config(None);
    let watch = scene.watch().await;
    let mut closed = Vec::new();
    for _ in 0..6 {
        let attempts = (0..10u8).map(|k| {
            let config = if k % 2 == 0 {
                untrusted.clone()
            } else {
                anonymous.clone()
            };
            let addr = scene.addr;
            async move {
                let tcp = connect_from(lo(30 + k), addr).await.unwrap();
                let start = Instant::now();
                match tokio::time::timeout(WAIT, raw::tls(tcp, config)).await {
                    Ok(Ok(_)) => panic!("accepted without a trusted certificate"),
                    Ok(Err(_)) => Some(start.elapsed()),
                    Err(_) => None,
                }
            }
        });
        closed.extend(join_all(attempts).await);
    }
    assert!(closed.iter().all(Option::is_some), "a session stayed open");
    let refused = |code: &'static str| {
        move |v: &serde_json::Value| v["event"] == "refused" && v["code"] == code
    };
    let all_refused = || scene.target.count(|v| v["event"] == "refused");
    let deadline = Instant::now() + WAIT;
    while all_refused() < 60 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(all_refused(), 60, "every attempt is refused and reported");
    let unknown = scene.target.count(refused("unknown_issuer"));
    assert_eq!(unknown, 30);
    let codes: Vec<String> = ["unknown_issuer", "handshake", "bad_certificate"]
        .into_iter()
        .map(|code| format!("{code} {}", scene.target.count(refused(code))))
        .collect();
    let details =
        format!("60 TLS clients (30 other CA, 30 without certificate) refused; codes {codes:?}");
    scene.finish(watch, "untrusted TLS", details).await;
}

/// What a valid peer sends after the muxer is up, and whether the node must close at once.
fn yamux_garbage(n: u64) -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut huge_data = yamux_header(0, 1, 1, u32::MAX).to_vec();
    huge_data.extend(noise(n, 64 * 1024));
    let mut bad_version = yamux_header(1, 1, 1, 0).to_vec();
    bad_version[0] = 7;
    let mut streams = Vec::new();
    for id in 0..2000u32 {
        streams.extend(yamux_header(1, 1, 2 * id + 1, 0));
    }
    let mut pings = Vec::new();
    for id in 0..20_000u32 {
        pings.extend(yamux_header(2, 1, 0, id));
    }
    let mut credit = Vec::new();
    credit.extend(yamux_header(1, 1, 1, u32::MAX));
    credit.extend(yamux_header(1, 0, 1, u32::MAX));
    vec![
        ("noise", noise(n, 4096), true),
        ("bad version", bad_version, true),
        (
            "unknown frame type",
            yamux_header(9, 0, 1, 0).to_vec(),
            true,
        ),
        ("data beyond the window", huge_data, true),
        ("2000 streams opened", streams, false),
        ("20000 pings unread", pings, false),
        ("window credit overflow", credit, false),
    ]
}

/// A peer with a valid certificate completes CA-TLS and yamux, then sends garbage frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_peer_sending_garbage_yamux_frames() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(|_| {}).await;
    let clients = valid_clients(&scene.ca, 4);
    let watch = scene.watch().await;
    let mut report = Vec::new();
    for round in 0..3u64 {
        for (i, (what, bytes, must_close)) in yamux_garbage(round).into_iter().enumerate() {
            let config = clients[i % clients.len()].clone();
            let mut tls: Tls = raw::handshake(lo(40 + round as u8), scene.addr, config)
                .await
                .unwrap_or_else(|e| panic!("{what}: the valid handshake failed: {e}"));
            let _ = tls.write_all(&bytes).await;
            let _ = tls.flush().await;
            let wait = if must_close {
                WAIT
            } else {
                Duration::from_millis(300)
            };
            let closed = closed_within(&mut tls, wait).await;
            if must_close {
                assert!(closed.is_some(), "{what}: the node kept the connection");
            }
            if round == 0 {
                let seen = closed.map_or("open".to_string(), |d| format!("closed in {d:?}"));
                report.push(format!("{what}: {seen}"));
            }
        }
    }
    let details = format!("21 connections; {}", report.join("; "));
    scene.finish(watch, "garbage yamux", details).await;
}

/// Garbage on valid streams of each protocol: a length prefix of 2^40, status frames whose
/// CBOR record is truncated or malformed, and a unicast request reusing a pending id. The node closes each stream without answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_streams_with_a_huge_length_prefix_or_bad_cbor() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(|_| {}).await;
    let target_peer = scene.target_id.to_peer_id();
    let status_frame = |record: &[u8]| {
        let mut body = vec![0x03];
        body.extend(7u64.to_be_bytes());
        body.extend(2u64.to_be_bytes());
        body.extend_from_slice(record);
        let mut frame = varint(body.len() as u64);
        frame.extend(body);
        frame
    };
    let mut huge = varint(1 << 40);
    huge.extend(noise(1, 256));
    let mut nested = vec![0x81u8; 50_000];
    nested.push(0x00);
    let mut huge_bytes = vec![0xa1, 0x67];
    huge_bytes.extend(b"payload");
    huge_bytes.extend([0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    // Unicast 1.1 frames: a message's first frame (kind, id, module, flags, total, part) and
    // a continuation (kind 4, id, part).
    let start = |kind: u8, id: u64, flags: u8, total: u32, part: &[u8]| {
        let mut body = vec![kind];
        body.extend(id.to_be_bytes());
        body.extend(1u16.to_be_bytes());
        body.push(flags);
        body.extend(total.to_be_bytes());
        body.extend_from_slice(part);
        let mut frame = varint(body.len() as u64);
        frame.extend(body);
        frame
    };
    // 64 MiB of zeros in a few KiB: inflates past the 32 MiB message limit.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 1).unwrap();
    // 1.2 MB that inflates off the connection's task: its header is sound, its checksum not.
    let corrupt = {
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        let mut data = c.compress(&b"block ".repeat(200_000)).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        data
    };
    let mut continuation = varint(10);
    continuation.extend([4, 0, 0, 0, 0, 0, 0, 0, 9, 0xaa]);
    let cases: Vec<(&str, libp2p::StreamProtocol, Vec<u8>)> = vec![
        (
            "unicast 1.1 decompression bomb",
            bcos_p2p::unicast::PROTOCOL_NAME,
            start(1, 1, 1, bomb.len() as u32, &bomb),
        ),
        (
            "unicast 1.1 large payload that does not inflate",
            bcos_p2p::unicast::PROTOCOL_NAME,
            start(1, 1, 1, corrupt.len() as u32, &corrupt),
        ),
        (
            "unicast 1.1 continuation of no message",
            bcos_p2p::unicast::PROTOCOL_NAME,
            continuation,
        ),
        (
            "unicast 1.1 five messages in parts",
            bcos_p2p::unicast::PROTOCOL_NAME,
            (0..5u64)
                .flat_map(|id| start(0, id, 0, 1000, b"x"))
                .collect(),
        ),
        (
            "unicast 1.1 message over the limit",
            bcos_p2p::unicast::PROTOCOL_NAME,
            start(1, 1, 0, 64 << 20, b"x"),
        ),
        (
            "unicast 2^40",
            bcos_p2p::unicast::PROTOCOL_1_0,
            huge.clone(),
        ),
        (
            "unicast request id reused while pending",
            bcos_p2p::unicast::PROTOCOL_1_0,
            [request_frame(7, b""), request_frame(7, b"")].concat(),
        ),
        ("flood 2^40", bcos_p2p::flood::PROTOCOL_NAME, huge.clone()),
        ("status 2^40", bcos_p2p::status::PROTOCOL_NAME, huge),
        (
            "status truncated CBOR",
            bcos_p2p::status::PROTOCOL_NAME,
            status_frame(&[0xa4, 0x67, b'p', b'a', b'y']),
        ),
        (
            "status stray break",
            bcos_p2p::status::PROTOCOL_NAME,
            status_frame(&[0xff]),
        ),
        (
            "status 50000-deep nesting",
            bcos_p2p::status::PROTOCOL_NAME,
            status_frame(&nested),
        ),
        (
            "status byte string of 2^64-1",
            bcos_p2p::status::PROTOCOL_NAME,
            status_frame(&huge_bytes),
        ),
        (
            "status map of 2^64-1 entries",
            bcos_p2p::status::PROTOCOL_NAME,
            status_frame(&[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "status short body",
            bcos_p2p::status::PROTOCOL_NAME,
            vec![0x03, 0x03, 0x00, 0x01],
        ),
    ];
    let watch = scene.watch().await;
    let mut report = Vec::new();
    for round in 0..2 {
        for (what, protocol, bytes) in &cases {
            let start = Instant::now();
            let (io, swarm) = write_garbage(
                &scene.ca,
                scene.target_multiaddr(),
                target_peer,
                protocol.clone(),
                bytes.clone(),
            );
            let outcome = tokio::time::timeout(WAIT, io).await;
            swarm.abort();
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{what}: {e}"),
                Err(_) => panic!("{what}: the node kept the stream open"),
            }
            if round == 0 {
                report.push(format!(
                    "{what}: closed in {} ms",
                    start.elapsed().as_millis()
                ));
            }
        }
    }
    let details = format!("20 attacker connections; {}", report.join("; "));
    scene.finish(watch, "bad frames", details).await;
}

/// 500 connections (from 50 addresses) that never finish the handshake: half send nothing,
/// half select CA-TLS and stop. The node closes each within its handshake timeout (plus
/// libp2p's margin for a connection that never reached TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_by_the_handshake_timeout() {
    let _serial = SERIAL.lock().await;
    // Room for all 500 at once: the timeout, not the pending limit, must close them.
    let scene = Scene::start(|c| c.connection.max_pending_incoming = 1024).await;
    let watch = scene.watch().await;
    let mut sockets = Vec::new();
    for n in 0..500u32 {
        let mut tcp = connect_from(lo(100 + (n % 50) as u8), scene.addr)
            .await
            .unwrap();
        if n % 2 == 1 {
            tcp.write_all(&common::select_ca_tls()).await.unwrap();
        }
        sockets.push((n % 2 == 1, Instant::now(), tcp));
    }
    let opened = watch.start.elapsed();
    let tls_limit = HANDSHAKE_TIMEOUT + SLACK;
    let silent_limit = HANDSHAKE_TIMEOUT + CONNECT_MARGIN + SLACK;
    let waits = sockets.into_iter().map(|(tls, at, tcp)| async move {
        let mut tcp = tokio_util::compat::TokioAsyncReadCompatExt::compat(tcp);
        let closed = closed_within(&mut tcp, WAIT).await;
        (tls, closed.map(|_| at.elapsed()))
    });
    let results = join_all(waits).await;
    let (mut tls_times, mut silent_times) = (Vec::new(), Vec::new());
    for (tls, closed) in results {
        let Some(after) = closed else {
            panic!("a slowloris connection stayed open for {WAIT:?}")
        };
        let limit = if tls { tls_limit } else { silent_limit };
        assert!(after <= limit, "closed after {after:?}, limit {limit:?}");
        if tls {
            &mut tls_times
        } else {
            &mut silent_times
        }
        .push(after);
    }
    let details = format!(
        "500 opened in {} ms, all closed by the node; after selecting CA-TLS: {}; silent: {}",
        opened.as_millis(),
        spread(tls_times),
        spread(silent_times)
    );
    scene.finish(watch, "slowloris", details).await;
}

/// Starts a new node (listening on `listen`, not configured at the target) that dials the
/// target and requests an echo of `data` until it is answered (bounded: 100 tries, 10 s or so);
/// sets `answered` then. Returns how long it asked, and the node.
async fn ask_as_new_node(
    scene: &Scene,
    (key, tls): (NodeKey, bcos_p2p::ca_tls::Config),
    listen: &str,
    data: &'static [u8],
    answered: &AtomicBool,
) -> (Duration, Node) {
    let mut config = Config::default();
    config.network.listen = vec![PeerAddr::from_str(listen).unwrap()];
    config.network.peers = vec![PeerAddr(scene.target_multiaddr())];
    let node = Node::start(key, tls, config).await.unwrap();
    let asked = Instant::now();
    let echo = [b"echo:", data].concat();
    for _ in 0..100 {
        let reply = node
            .request(&scene.target_id, 1, Bytes::from_static(data))
            .await;
        if reply.is_ok_and(|r| r[..] == echo[..]) {
            answered.store(true, Ordering::Relaxed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (asked.elapsed(), node)
}

/// Asserts that every connection in `held` (opened at `opened_at`, silent connections that the
/// node keeps for `handshake`) is still open, and that the check came within `handshake`;
/// returns how long after `opened_at` it came.
async fn assert_still_held(
    held: &mut [tokio_util::compat::Compat<tokio::net::TcpStream>],
    opened_at: Instant,
    handshake: Duration,
) -> Duration {
    let since = opened_at.elapsed();
    assert!(
        since < handshake,
        "the check came {since:?} after the attack opened"
    );
    let mut still_open = 0;
    for s in held.iter_mut() {
        if closed_within(s, Duration::from_millis(1)).await.is_none() {
            still_open += 1;
        }
    }
    assert_eq!(still_open, held.len(), "held connections closed early");
    since
}

/// Runs full valid handshakes (CA-TLS with a valid certificate, then yamux) then disconnects,
/// one every 5 ms (200/s), from `sources` round robin, with `clients` round robin, for
/// `duration`, or once `until` is set after at least `min`; returns (attempted, completed,
/// elapsed).
async fn churn(
    addr: SocketAddr,
    sources: &[Ipv4Addr],
    clients: &[Arc<rustls::ClientConfig>],
    duration: Duration,
    until: Option<(Duration, &AtomicBool)>,
) -> (usize, usize, Duration) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut tasks = Vec::new();
    for n in 0..(duration.as_millis() as usize / 5) {
        if until.is_some_and(|(min, u)| start.elapsed() >= min && u.load(Ordering::Relaxed)) {
            break;
        }
        tick.tick().await;
        let from = sources[n % sources.len()];
        let config = clients[n % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let done = tokio::time::timeout(WAIT, raw::handshake(from, addr, config)).await;
            matches!(done, Ok(Ok(_)))
        }));
    }
    let attempted = tasks.len();
    let completed = join_all(tasks)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    (attempted, completed, start.elapsed())
}

/// 200 full valid handshakes per second (then disconnect) from 40 addresses, for 4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_churn_at_200_per_second() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(|_| {}).await;
    let clients = valid_clients(&scene.ca, 20);
    let sources: Vec<Ipv4Addr> = (150..190).map(lo).collect();
    let watch = scene.watch().await;
    let (attempted, completed, took) =
        churn(scene.addr, &sources, &clients, Duration::from_secs(4), None).await;
    // The attack must really have happened; the rate reached depends on the machine.
    assert!(
        completed * 2 >= attempted,
        "only {completed} of {attempted} handshakes completed"
    );
    let connected = scene.target.count(|v| v["event"] == "connected");
    let details = format!(
        "{completed} of {attempted} handshakes completed in {:.2} s ({:.0}/s); the node \
         reported {connected} connections",
        took.as_secs_f64(),
        completed as f64 / took.as_secs_f64()
    );
    scene.finish(watch, "handshake churn", details).await;
}

/// Handshake churn from one address (for 3 s, and on until the new node below is answered)
/// is cut to the per-address rate (`rate_limit` refusals), while a new honest node from
/// another address connects and is answered during it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_from_one_address_is_rate_limited_and_starves_nobody() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(|_| {}).await;
    let limits = Config::default().connection;
    let clients = valid_clients(&scene.ca, 20);
    let (key, tls) = common::node(&scene.ca, KeyType::Secp256k1, Period::days(1));
    let watch = scene.watch().await;
    let answered = AtomicBool::new(false);
    let late = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let new = (key, tls);
        let (took, node) = ask_as_new_node(&scene, new, "127.0.0.4:0", b"late", &answered).await;
        node.shutdown().await.unwrap();
        took
    };
    let one = [lo(66)];
    let attack = churn(
        scene.addr,
        &one,
        &clients,
        Duration::from_secs(20),
        Some((Duration::from_secs(3), &answered)),
    );
    let (late_took, (attempted, completed, took)) = tokio::join!(late, attack);
    assert!(
        answered.load(Ordering::Relaxed),
        "the new honest node got no answer during the churn"
    );
    let burst = f64::from(limits.new_inbound_per_ip_burst);
    let rate = f64::from(limits.new_inbound_per_ip_per_s);
    let allowed = burst + rate * took.as_secs_f64() + 1.0;
    assert!(
        completed as f64 <= allowed,
        "{completed} handshakes from one address in {took:?}, more than the {allowed} allowed"
    );
    let reported = scene
        .target
        .wait_for("rate_limit refusal", WAIT, |v| {
            v["event"] == "refused" && v["code"] == "rate_limit"
        })
        .await;
    let refusals = scene.target.count(|v| v["code"] == "rate_limit");
    let details = format!(
        "{completed} of {attempted} handshakes from 127.0.0.66 admitted in {:.2} s (limit \
         {burst} + {rate}/s); {refusals} rate_limit refusal events, e.g. {}; a new honest \
         node from 127.0.0.4 was answered {} ms after it started",
        took.as_secs_f64(),
        reported["reason"],
        late_took.as_millis()
    );
    scene.finish(watch, "one-address churn", details).await;
}

/// Slowloris from two addresses against a pending budget they could fill without the cap per
/// address: `max_pending_incoming` = 2 × `max_pending_incoming_per_ip` + 8 (40 by default).
/// Each address opens the rate limit's whole burst at once (20: half silent, half stopped
/// mid-handshake, after selecting CA-TLS and half a TLS record), then one more connection every
/// 100 ms. Exactly `max_pending_incoming_per_ip` of each address's burst are held, the rest are
/// refused at once (`pending_limit`), and while the held ones are still open a new node that
/// is no configured peer connects and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_from_two_addresses_leaves_pending_slots_for_strangers() {
    let _serial = SERIAL.lock().await;
    let defaults = Config::default().connection;
    let per_ip = defaults.max_pending_incoming_per_ip as usize;
    let burst = defaults.new_inbound_per_ip_burst as usize;
    let max_pending = 2 * per_ip + 8;
    assert!(
        2 * burst >= max_pending,
        "the burst alone would fill the slots"
    );
    // Half-finished handshakes last 4 s, silent connections 9 s: longer than the test needs.
    let handshake = Duration::from_secs(4);
    let scene = Scene::start(|c| {
        c.connection.max_pending_incoming = max_pending as u32;
        c.connection.handshake_timeout_ms = handshake.as_millis() as u64;
    })
    .await;
    let (key, tls) = common::node(&scene.ca, KeyType::Secp256k1, Period::days(1));
    let watch = scene.watch().await;
    let attackers = [lo(70), lo(71)];
    // A TLS handshake record header announcing 512 bytes, and the first 3 of them.
    let half_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01];
    let open = |from: Ipv4Addr, n: usize| {
        let addr = scene.addr;
        async move {
            let mut tcp = connect_from(from, addr).await.unwrap();
            if n % 2 == 1 {
                let mut bytes = common::select_ca_tls();
                bytes.extend(half_hello);
                tcp.write_all(&bytes).await.unwrap();
            }
            tokio_util::compat::TokioAsyncReadCompatExt::compat(tcp)
        }
    };
    let opened_at = Instant::now();
    let bursts = attackers.map(|from| join_all((0..burst).map(|n| open(from, n))));
    let [first, second] = bursts;
    let (first, second) = tokio::join!(first, second);
    // The refused ones are closed at once; the held ones stay open.
    let mut held = Vec::new();
    for (from, sockets) in attackers.iter().zip([first, second]) {
        let checks = sockets.into_iter().map(|mut s| async move {
            let closed = closed_within(&mut s, Duration::from_millis(500)).await;
            (closed, s)
        });
        let (kept, refused): (Vec<_>, Vec<_>) = join_all(checks)
            .await
            .into_iter()
            .partition(|(closed, _)| closed.is_none());
        assert_eq!(
            kept.len(),
            per_ip,
            "{from}: {} of {burst} connections held, {} refused",
            kept.len(),
            refused.len()
        );
        held.extend(kept.into_iter().map(|(_, s)| s));
    }
    // Both addresses keep pressing, about at the per-address rate, until the stranger is
    // answered (bounded: 100 rounds of 100 ms); the pending cap refuses each of these.
    let answered = AtomicBool::new(false);
    let press = async {
        let mut pressed = Vec::new();
        for n in 0..100 {
            if answered.load(Ordering::Relaxed) {
                break;
            }
            pressed.extend(join_all(attackers.map(|from| open(from, n))).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pressed
    };
    let new = (key, tls);
    let stranger = ask_as_new_node(&scene, new, "127.0.0.4:0", b"stranger", &answered);
    let ((took, node), pressed) = tokio::join!(stranger, press);
    assert!(
        answered.load(Ordering::Relaxed),
        "the stranger got no answer during the slowloris"
    );
    // The attackers still held their slots when the stranger was answered.
    let since = assert_still_held(&mut held, opened_at, handshake).await;
    let pressed = join_all(pressed.into_iter().map(|mut s| async move {
        closed_within(&mut s, Duration::from_secs(1))
            .await
            .is_some()
    }))
    .await;
    let admitted = pressed.iter().filter(|closed| !**closed).count();
    assert_eq!(
        admitted, 0,
        "{admitted} connections beyond the cap were held"
    );
    let pressed = pressed.len();
    node.shutdown().await.unwrap();
    let reported = scene
        .target
        .wait_for("pending_limit refusal", WAIT, |v| {
            v["event"] == "refused" && v["code"] == "pending_limit"
        })
        .await;
    let refusals = scene.target.count(|v| v["code"] == "pending_limit");
    drop(held);
    let details = format!(
        "max_pending_incoming {max_pending}; each of 2 addresses opened {burst} at once, \
         {per_ip} held, the rest and {pressed} more opened while the stranger connected refused; a new node was answered {} ms \
         after it started, {} ms into the attack, all {} held connections still open; \
         {refusals} pending_limit refusal events, e.g. {}",
        took.as_millis(),
        since.as_millis(),
        2 * per_ip,
        reported["reason"]
    );
    scene.finish(watch, "two-address slowloris", details).await;
}

/// A unicast request frame for module 1.
fn request_frame(id: u64, payload: &[u8]) -> Vec<u8> {
    common::frames::unicast_request(id, 1, payload)
}

/// Reads unicast frames from `stream` until `want` responses came (or it closed, or [`WAIT`]
/// passed); returns their ids.
async fn read_responses(stream: &mut (impl futures::AsyncRead + Unpin), want: usize) -> Vec<u64> {
    use futures::AsyncReadExt as _;
    let mut ids = Vec::new();
    let read = async {
        while ids.len() < want {
            let mut len = 0u64;
            for shift in (0..63).step_by(7) {
                let mut b = [0u8];
                if stream.read_exact(&mut b).await.is_err() {
                    return;
                }
                len |= u64::from(b[0] & 0x7f) << shift;
                if b[0] & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0u8; len as usize];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            assert_eq!(body[0], 2, "an answer other than a response");
            ids.push(u64::from_be_bytes(body[1..9].try_into().unwrap()));
        }
    };
    let _ = tokio::time::timeout(WAIT, read).await;
    ids
}

/// A member sends 64 requests of 2 MiB and never reads the answers (the target echoes each):
/// the answers it owes that member stay within its per-connection byte bound (8 MiB here),
/// because the target stops reading that member's requests; every other peer is answered
/// throughout. Once the member reads, every request is answered: backpressure, not loss.
/// (2 MiB payloads are above the malloc mmap threshold the binary sets, so RSS follows what is
/// held rather than what the allocator keeps.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_its_answers_is_held_back() {
    const REQUESTS: u64 = 64;
    let _serial = SERIAL.lock().await;
    let bound = 8usize << 20;
    let scene = Scene::start(|c| c.unicast.max_pending_bytes = bound).await;
    let (key, tls) = common::node(&scene.ca, KeyType::Secp256k1, Period::days(1));
    let watch = scene.watch().await;
    let (stream, swarm) = common::raw_stream_as(
        &key,
        &tls,
        scene.target_multiaddr(),
        scene.target_id.to_peer_id(),
        bcos_p2p::unicast::PROTOCOL_1_0,
    )
    .await;
    let stream = stream.expect("a unicast stream to the target");
    let (mut reader, mut writer) = futures::AsyncReadExt::split(stream);
    let payload = vec![b'a'; 2 << 20];
    let writing = tokio::spawn(async move {
        for id in 1..=REQUESTS {
            writer
                .write_all(&request_frame(id, &payload))
                .await
                .unwrap();
        }
        writer.flush().await.unwrap();
        writer
    });
    // Long enough for the target to read everything if nothing held it back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let member = key.node_id().to_string();
    let handled = scene
        .target
        .count(|v| v["event"] == "request" && v["from"] == member.as_str());
    assert!(
        !writing.is_finished(),
        "the target read all {REQUESTS} MiB of requests from a member that reads nothing"
    );
    assert!(
        handled < REQUESTS as usize / 2,
        "the target handled {handled} requests of a member that reads nothing"
    );
    let held_kib = scene.target.rss_kib().unwrap_or(0);
    let ids = read_responses(&mut reader, REQUESTS as usize).await;
    assert_eq!(
        ids,
        (1..=REQUESTS).collect::<Vec<_>>(),
        "the member, reading at last, got these answers"
    );
    let writer = tokio::time::timeout(WAIT, writing)
        .await
        .expect("the member's writes end once it reads")
        .unwrap();
    drop((reader, writer));
    swarm.abort();
    let details = format!(
        "{handled} of {REQUESTS} 2 MiB requests handled while unread (RSS then {held_kib} KiB)"
    );
    scene.finish(watch, "never-reading member", details).await;
}

/// 300 silent connections from 20 addresses (15 each: within the per-address limits) take
/// every pending slot strangers have (`max_pending_incoming`, 256); a configured peer still
/// connects at once, from its own slots, while they are all held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_strangers_holding_every_pending_slot_do_not_lock_out_a_configured_peer() {
    let _serial = SERIAL.lock().await;
    let defaults = Config::default().connection;
    let max_pending = defaults.max_pending_incoming as usize;
    // Silent connections last 4 s + libp2p's margin: longer than the test needs.
    let handshake = Duration::from_secs(4);
    // The configured peer, not running yet: the target's own dial of it fails now and is not
    // repeated during the test (so it is the peer's dial that must get in).
    let port = {
        let l = std::net::TcpListener::bind((lo(1), 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    // 127.0.0.1: where a node in this process dials from (it binds no source address), so
    // the peer's connection comes from its configured address, as from a single-homed host.
    let peer_addr = format!("{}:{port}", lo(1));
    let scene = Scene::start(|c| {
        c.connection.handshake_timeout_ms = handshake.as_millis() as u64;
        c.connection.redial_min_ms = 120_000;
        c.connection.redial_max_ms = 120_000;
        c.network
            .peers
            .push(PeerAddr::from_str(&peer_addr).unwrap());
    })
    .await;
    let watch = scene.watch().await;
    let opened_at = Instant::now();
    let attackers: Vec<Ipv4Addr> = (0..20).map(|i| lo(100 + i)).collect();
    let open = |from: Ipv4Addr| {
        let addr = scene.addr;
        async move {
            connect_from(from, addr)
                .await
                .map(tokio_util::compat::TokioAsyncReadCompatExt::compat)
        }
    };
    let sockets = join_all(
        attackers
            .iter()
            .flat_map(|from| std::iter::repeat_n(*from, 15))
            .map(open),
    )
    .await;
    let checks = sockets.into_iter().flatten().map(|mut s| async move {
        let closed = closed_within(&mut s, Duration::from_millis(500)).await;
        (closed, s)
    });
    let (held, refused): (Vec<_>, Vec<_>) = join_all(checks)
        .await
        .into_iter()
        .partition(|(closed, _)| closed.is_none());
    let mut held: Vec<_> = held.into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        held.len(),
        max_pending,
        "{} of 300 silent connections held, {} refused",
        held.len(),
        refused.len()
    );
    // The configured peer starts and dials the target.
    let (key, tls) = common::node(&scene.ca, KeyType::Secp256k1, Period::days(1));
    let peer_id = key.node_id().to_string();
    let mut config = Config::default();
    config.network.listen = vec![PeerAddr::from_str(&peer_addr).unwrap()];
    config.network.peers = vec![PeerAddr(scene.target_multiaddr())];
    let started = Instant::now();
    let peer = Node::start(key, tls, config).await.unwrap();
    scene
        .target
        .wait_for("the configured peer connected", WAIT, |v| {
            v["event"] == "connected" && v["node_id"] == peer_id.as_str()
        })
        .await;
    let took = started.elapsed();
    assert_still_held(&mut held, opened_at, handshake).await;
    let limit_refusals = scene.target.count(|v| v["code"] == "limit");
    peer.shutdown().await.unwrap();
    drop(held);
    let details = format!(
        "20 addresses x 15 silent connections: {max_pending} held, {} refused \
         ({limit_refusals} limit refusal events); the configured peer connected {} ms after \
         it started, while all were held",
        refused.len(),
        took.as_millis()
    );
    scene
        .finish(watch, "silent strangers vs a configured peer", details)
        .await;
}
