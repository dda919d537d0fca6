//! Open mode and the transport-interop binary.
//!
//! - `bcos-p2p-interop` as listener and dialer, coordinated by a real `redis-server` (started
//!   here on a free loopback port, killed on drop), for stock libp2p TLS and for CA-TLS; the
//!   dialer's stdout must be exactly the test-plans JSON line.
//! - Open-mode nodes connect and exchange requests with NodeIds (in-process and `run --open`).
//! - A CA node and an open node refuse each other, each side naming the mode mismatch, whichever
//!   side dials (in-process and through the CLI).

mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeKey,
    ca_tls::{
        Refusal,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, PeerAddr, Security},
    connection,
    node::{Node, NodeEvent},
};
use bytes::Bytes;
use common::{Events, TIMEOUT, next, start_node};
use futures::StreamExt as _;
use serde_json::Value;

const INTEROP: &str = env!("CARGO_BIN_EXE_bcos-p2p-interop");
const BCOS: &str = env!("CARGO_BIN_EXE_bcos-p2p");

/// A child process killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private `redis-server` on a free loopback port, in a temporary folder, without persistence.
struct Redis {
    _server: Killed,
    _dir: tempfile::TempDir,
    addr: String,
}

impl Redis {
    /// The server, or `None` (after saying why the test is skipped) without `redis-server`.
    fn start() -> Option<Redis> {
        let dir = tempfile::tempdir().unwrap();
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut server = match spawned {
                Ok(child) => Killed(child),
                Err(e) => {
                    common::skip::skip(
                        &format!("redis-server cannot be started ({e})"),
                        "apt-get install -y redis-server",
                    );
                    return None;
                }
            };
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(server.0.try_wait(), Ok(None)) {
                if TcpStream::connect(&addr).is_ok() {
                    return Some(Redis {
                        _server: server,
                        _dir: dir,
                        addr,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // The port was taken meanwhile, or the server is stuck: try another port.
        }
        panic!("redis-server did not come up on a free port in 5 attempts");
    }
}

/// `bcos-p2p-interop` with the test-plans environment plus `extra`.
fn interop(redis: &Redis, dialer: bool, extra: &[(&str, &Path)], security: &str) -> Command {
    let mut cmd = Command::new(INTEROP);
    cmd.env("transport", "tcp")
        .env("security", security)
        .env("muxer", "yamux")
        .env("is_dialer", dialer.to_string())
        .env("ip", "127.0.0.1")
        .env("redis_addr", &redis.addr)
        .env("test_timeout_seconds", "30")
        .env("RUST_LOG", "info");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a dialer to its end (bounded); returns exit success, stdout and stderr.
fn run_dialer(mut cmd: Command) -> (bool, String, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bcos-p2p-interop runs");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("dialer output"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("the dialer did not finish within 60 s");
        }
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A listener (stderr to a file), started `delay` after a dialer against it: the dialer's
/// outcome.
fn listener_and_dialer(
    redis: &Redis,
    dir: &Path,
    listener: (&str, &[(&str, &Path)]),
    dialer: (&str, &[(&str, &Path)]),
    delay: Duration,
) -> (bool, String, String) {
    let log = std::fs::File::create(dir.join("listener.log")).unwrap();
    let mut cmd = interop(redis, false, listener.1, listener.0);
    cmd.stdout(Stdio::null()).stderr(log);
    let listener = std::thread::spawn(move || {
        std::thread::sleep(delay);
        Killed(cmd.spawn().expect("bcos-p2p-interop runs"))
    });
    let outcome = run_dialer(interop(redis, true, dialer.1, dialer.0));
    drop(listener.join());
    outcome
}

/// The dialer printed exactly one line, the contract's object with its two figures.
fn check_result_line(ok: bool, stdout: &str, stderr: &str) -> (f64, f64) {
    assert!(ok, "the dialer failed; stderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "want one stdout line, got {stdout:?}");
    let v: Value = serde_json::from_str(lines[0]).expect("JSON");
    let obj = v.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["handshakePlusOneRTTMillis", "pingRTTMilllis"]);
    let total = obj["handshakePlusOneRTTMillis"].as_f64().expect("a number");
    let rtt = obj["pingRTTMilllis"].as_f64().expect("a number");
    assert!(rtt > 0.0 && total >= rtt, "{total} ms total, {rtt} ms ping");
    eprintln!("handshakePlusOneRTTMillis {total:.3}, pingRTTMilllis {rtt:.3}");
    (total, rtt)
}

/// Our protocols reached the dialer through identify (it logs the listener's list).
fn check_identify(stderr: &str) {
    let line = stderr
        .lines()
        .find(|l| l.contains("identify") && l.contains("protocols="))
        .unwrap_or_else(|| panic!("no identify line in the dialer's stderr:\n{stderr}"));
    for p in [
        "/ipfs/ping/1.0.0",
        "/ipfs/id/1.0.0",
        "/bcos/unicast/1.0.0",
        "/bcos/flood/2.1.0",
        "/bcos/status/1.0.0",
    ] {
        assert!(line.contains(p), "{p} missing from {line}");
    }
}

#[test]
fn interop_binary_with_stock_libp2p_tls() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The dialer waits in BLPOP for a listener that comes up later, as in the harness.
    let (ok, out, err) = listener_and_dialer(
        &redis,
        dir.path(),
        ("tls", &[]),
        ("tls", &[]),
        Duration::from_millis(1500),
    );
    check_result_line(ok, &out, &err);
    check_identify(&err);
}

/// `bcos-p2p gen-certs` output in `dir/chain`.
fn gen_certs(dir: &Path, nodes: u32) -> std::path::PathBuf {
    let chain = dir.join("chain");
    let status = Command::new(BCOS)
        .args(["gen-certs", "--nodes", &nodes.to_string(), "--out"])
        .arg(&chain)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    chain
}

#[test]
fn interop_binary_with_ca_tls() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let chain = gen_certs(dir.path(), 2);
    let (k0, c0) = (chain.join("node0/node.key"), chain.join("node0/node.crt"));
    let (k1, c1) = (chain.join("node1/node.key"), chain.join("node1/node.crt"));
    let ca = chain.join("ca.crt");
    let listener: &[(&str, &Path)] = &[("bcos_key", &k0), ("bcos_cert", &c0), ("bcos_ca", &ca)];
    let dialer: &[(&str, &Path)] = &[("bcos_key", &k1), ("bcos_cert", &c1), ("bcos_ca", &ca)];
    let (ok, out, err) = listener_and_dialer(
        &redis,
        dir.path(),
        ("bcos-tls", listener),
        ("bcos-tls", dialer),
        Duration::ZERO,
    );
    check_result_line(ok, &out, &err);
    check_identify(&err);

    // A stock-TLS dialer against the CA listener: nothing on stdout, the reason on stderr.
    let (ok, out, err) = listener_and_dialer(
        &redis,
        dir.path(),
        ("bcos-tls", listener),
        ("tls", &[]),
        Duration::ZERO,
    );
    assert!(!ok, "a stock TLS dialer connected to a CA listener");
    assert!(out.is_empty(), "stdout: {out:?}");
    assert!(
        err.contains("peer requires CA-authenticated /bcos-tls/1.0.0"),
        "stderr:\n{err}"
    );
}

#[test]
fn interop_binary_fails_clearly_on_bad_settings() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let mut cmd = interop(&redis, true, &[], "noise");
    cmd.env("test_timeout_seconds", "5");
    let (ok, out, err) = run_dialer(cmd);
    assert!(!ok && out.is_empty());
    assert!(err.contains("security `noise` is not supported"), "{err}");
    // No listener ever publishes: the dialer waits (past any client-side response timeout)
    // and gives up at its own timeout, with the reason.
    let mut cmd = interop(&redis, true, &[], "tls");
    cmd.env("test_timeout_seconds", "2");
    let started = Instant::now();
    let (ok, out, err) = run_dialer(cmd);
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("the test did not finish within test_timeout_seconds = 2")
            || err.contains("no listener address in Redis within 2 s"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
}

/// An open-mode config on a loopback port, dialling `peers`.
fn open_config(peers: &[&Node]) -> Config {
    let mut config = Config::default();
    config.network.security = Security::Libp2pTls;
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.network.peers = peers
        .iter()
        .map(|p| PeerAddr(p.listen_addrs()[0].clone()))
        .collect();
    config
}

/// An open-mode node with a fresh `key_type` key on a loopback port, dialling `peers`.
async fn open_node(key_type: KeyType, peers: &[&Node]) -> (Node, Events) {
    let key = NodeKey::generate(key_type).unwrap();
    let mut n = Node::start_open(key, open_config(peers)).await.unwrap();
    let events = Box::pin(n.events().unwrap());
    (n, events)
}

#[tokio::test]
async fn open_nodes_connect_with_node_ids_and_exchange_requests() {
    // P-256 and RSA PeerIds are hashes: their NodeIds come from the libp2p TLS certificate.
    for key_type in [KeyType::Secp256k1, KeyType::P256, KeyType::Rsa] {
        let (a, mut a_events) = open_node(key_type, &[]).await;
        let (b, mut b_events) = open_node(KeyType::Secp256k1, &[&a]).await;
        let seen_by_b = next(&mut b_events, |e| match e {
            NodeEvent::Connected { node, .. } => Some(node.clone()),
            _ => None,
        })
        .await;
        assert_eq!(&seen_by_b, a.node_id(), "{key_type:?}");
        let seen_by_a = next(&mut a_events, |e| match e {
            NodeEvent::Connected { node, .. } => Some(node.clone()),
            _ => None,
        })
        .await;
        assert_eq!(&seen_by_a, b.node_id(), "{key_type:?}");
        // `a` answers by echo (its events are drained by `next` in the background).
        let echo = tokio::spawn(async move {
            next(&mut a_events, |_| None::<()>).await;
        });
        let reply = b
            .request(a.node_id(), 1, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(&reply[..], b"hello", "{key_type:?}");
        echo.abort();
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }
}

/// A CA-mode node (its own CA) on a loopback port, dialling `peers`.
async fn ca_node(peers: &[&Node]) -> (Node, Events) {
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap();
    start_node(&ca, peers, |_| {}).await
}

/// The next handshake refusal; a connection coming up instead fails the test.
async fn refusal(events: &mut Events) -> Refusal {
    next(events, |e| match e {
        NodeEvent::Connected { node, .. } => panic!("CA and open nodes connected: {node}"),
        NodeEvent::Refused {
            reason: connection::Refusal::Tls(r),
            ..
        } => Some(r.clone()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn ca_and_open_nodes_refuse_each_other_both_ways() {
    // The CA node dials.
    let (open, mut open_events) = open_node(KeyType::Secp256k1, &[]).await;
    let (ca, mut ca_events) = ca_node(&[&open]).await;
    assert_eq!(refusal(&mut ca_events).await, Refusal::StockLibp2pTls);
    assert_eq!(refusal(&mut open_events).await, Refusal::CaTlsRequired);
    open.shutdown().await.unwrap();
    ca.shutdown().await.unwrap();
    // The open node dials.
    let (ca, mut ca_events) = ca_node(&[]).await;
    let (open, mut open_events) = open_node(KeyType::P256, &[&ca]).await;
    let seen = refusal(&mut open_events).await;
    assert_eq!(seen, Refusal::CaTlsRequired);
    assert_eq!(seen.code(), "ca_tls_required");
    assert!(seen.to_string().contains("open mode"), "{seen}");
    assert_eq!(refusal(&mut ca_events).await, Refusal::StockLibp2pTls);
    open.shutdown().await.unwrap();
    ca.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_refuses_a_config_of_the_other_mode() {
    let mut config = Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let key = NodeKey::generate(KeyType::Secp256k1).unwrap();
    // The file says CA-TLS; starting it open must not silently run open.
    let err = Node::start_open(key, config).await.unwrap_err();
    assert!(err.to_string().contains("security = \"ca-tls\""), "{err}");
}

/// A `bcos-p2p run --json` process; its stdout events arrive on a channel.
struct Run {
    _child: Killed,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    name: &'static str,
}

impl Run {
    fn start(name: &'static str, args: &[&str], dir: &Path) -> Run {
        let mut child = Command::new(BCOS)
            .args(["run", "--json"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .expect("bcos-p2p runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Run {
            _child: Killed(child),
            events,
            seen: Vec::new(),
            name,
        }
    }

    /// The first event (seen before or arriving within [`TIMEOUT`]) that `pred` accepts.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "{}: no {what} within {TIMEOUT:?}: {:?}",
                    self.name, self.seen
                ),
            }
        }
    }

    fn send(&mut self, line: &str) {
        use std::io::Write as _;
        let stdin = self._child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

fn ready(run: &mut Run) -> (String, String) {
    let v = run.wait_for("ready", |v| v["event"] == "ready");
    let id = v["node_id"].as_str().unwrap().to_string();
    let addr = v["listen"][0].as_str().unwrap().to_string();
    (id, addr)
}

fn refused_with(code: &'static str, addr_part: Option<String>) -> impl Fn(&Value) -> bool {
    move |v: &Value| {
        v["event"] == "refused"
            && v["code"] == code
            && addr_part
                .as_deref()
                .is_none_or(|a| v["addr"].as_str().is_some_and(|s| s.contains(a)))
    }
}

/// The `/tcp/<port>` part of a multiaddr (a dialled address may end in `/p2p/...`).
fn tcp_part(addr: &str) -> String {
    let i = addr.find("/tcp/").expect("a TCP address");
    addr[i..].split('/').take(3).collect::<Vec<_>>().join("/")
}

#[test]
fn run_open_nodes_talk_and_refuse_ca_nodes_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let chain = gen_certs(dir.path(), 3);
    let key = |i: u32| chain.join(format!("node{i}/node.key"));
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let local = ["--listen", "127.0.0.1:0"];

    let (k0, k1, k2) = (path(&key(0)), path(&key(1)), path(&key(2)));
    let mut a = Run::start(
        "open-a",
        &[&["--open", "--key", &k0][..], &local].concat(),
        dir.path(),
    );
    let (a_id, a_addr) = ready(&mut a);
    // A CA node dials A.
    let (cert, ca) = (
        path(&chain.join("node1/node.crt")),
        path(&chain.join("ca.crt")),
    );
    let ca_args = [
        "--key", &k1, "--cert", &cert, "--ca", &ca, "--peer", &a_addr,
    ];
    let mut c = Run::start("ca", &[&ca_args[..], &local].concat(), dir.path());
    let (_, c_addr) = ready(&mut c);
    // B, open, dials A and the CA node.
    let b_args = ["--open", "--key", &k2, "--peer", &a_addr, "--peer", &c_addr];
    let mut b = Run::start("open-b", &[&b_args[..], &local].concat(), dir.path());
    let (b_id, _) = ready(&mut b);

    // The open nodes talk, naming each other by NodeId.
    let connected = b.wait_for("connected to A", |v| v["event"] == "connected");
    assert_eq!(connected["node_id"], a_id.as_str());
    a.wait_for("connected to B", |v| {
        v["event"] == "connected" && v["node_id"] == b_id.as_str()
    });
    b.send(&format!("request {a_id} over open TLS"));
    let response = b.wait_for("response", |v| v["event"] == "response");
    assert_eq!(response["ok"], true, "{response}");
    assert_eq!(response["data"], "echo:over open TLS");

    // CA dials open: both refuse, each naming the other's mode.
    c.wait_for(
        "CA refusing A",
        refused_with("stock_libp2p_tls", Some(tcp_part(&a_addr))),
    );
    a.wait_for(
        "A refusing the CA node",
        refused_with("ca_tls_required", None),
    );
    // Open dials CA.
    b.wait_for(
        "B refusing the CA node",
        refused_with("ca_tls_required", Some(tcp_part(&c_addr))),
    );
    let incoming = c.wait_for("CA refusing B", |v| {
        refused_with("stock_libp2p_tls", None)(v)
            && v["addr"]
                .as_str()
                .is_some_and(|s| !s.contains(&tcp_part(&a_addr)))
    });
    assert!(
        incoming["reason"].as_str().unwrap().contains("open-mode"),
        "{incoming}"
    );
    for run in [&a, &b, &c] {
        assert!(
            !run.seen
                .iter()
                .any(|v| v["event"] == "connected" && v["node_id"].is_null()),
            "{}: {:?}",
            run.name,
            run.seen
        );
    }
}

#[tokio::test]
async fn an_open_node_refuses_stock_peers_without_a_node_id() {
    let (open, mut events) = open_node(KeyType::Secp256k1, &[]).await;
    // A stock libp2p peer with an Ed25519 identity (js-libp2p's and rust-libp2p's default).
    let mut stock =
        libp2p::SwarmBuilder::with_existing_identity(libp2p::identity::Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::tls::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
            .unwrap()
            .build();
    stock.dial(open.listen_addrs()[0].clone()).unwrap();
    let driven = tokio::spawn(async move {
        loop {
            stock.select_next_some().await;
        }
    });
    let seen = refusal(&mut events).await;
    assert!(
        matches!(&seen, Refusal::UnsupportedKey(why) if why.contains("without a NodeId")),
        "{seen:?}"
    );
    driven.abort();
    open.shutdown().await.unwrap();
}

#[tokio::test]
async fn open_mode_enforces_the_deny_list_by_node_id() {
    let b_key = NodeKey::generate(KeyType::P256).unwrap();
    let b_id = b_key.node_id().clone();
    let mut config = open_config(&[]);
    config.access.deny = vec![b_id.clone()];
    let mut a = Node::start_open(NodeKey::generate(KeyType::Secp256k1).unwrap(), config)
        .await
        .unwrap();
    let mut a_events: Events = Box::pin(a.events().unwrap());
    let b = Node::start_open(b_key, open_config(&[&a])).await.unwrap();
    let (reason, node) = next(&mut a_events, |e| match e {
        NodeEvent::Connected { node, .. } => panic!("a denied node connected: {node}"),
        NodeEvent::Refused {
            reason: connection::Refusal::Tls(r),
            node,
            ..
        } => Some((r.clone(), node.clone())),
        _ => None,
    })
    .await;
    assert_eq!(reason, Refusal::Denied);
    assert_eq!(node, Some(b_id));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
