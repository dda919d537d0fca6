//! Helpers shared by the integration tests: making node material and watching one dial from
//! both ends.

#![allow(dead_code)]

pub mod accept_any;
pub mod frames;
pub mod process;
pub mod raw;
pub mod run_json;
pub mod skip;

use std::{path::Path, process::Command, time::Duration};

use bcos_p2p::{
    KeyType, NodeKey,
    ca_tls::{
        self, UpgradeError,
        pki::{CertificateAuthority, Period},
    },
    connection::dial_refusal,
};
use futures::StreamExt as _;
use libp2p::{
    PeerId, Swarm,
    swarm::{NetworkBehaviour, SwarmEvent},
};

/// Upper bound on any single network wait in tests.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// What one end of a dial saw.
#[derive(Debug)]
pub enum Side {
    /// The connection came up with this peer.
    Connected(PeerId),
    /// The CA-TLS upgrade refused it.
    Refused(UpgradeError),
    /// It failed some other way.
    Failed(String),
}

impl Side {
    /// The refusal, or a panic naming what happened instead.
    pub fn refusal(&self) -> &ca_tls::Refusal {
        match self {
            Side::Refused(e) => e.refusal(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The peer, or a panic naming what happened instead.
    pub fn peer(&self) -> PeerId {
        match self {
            Side::Connected(p) => *p,
            other => panic!("expected a connection, got {other:?}"),
        }
    }
}

/// `b` listens on loopback, `a` dials it; returns what each end saw. Bounded by [`TIMEOUT`].
pub async fn dial<A: NetworkBehaviour, B: NetworkBehaviour>(
    a: &mut Swarm<A>,
    b: &mut Swarm<B>,
) -> (Side, Side) {
    dial_at(a, b, "/ip4/127.0.0.1").await
}

/// [`dial`] by `host` (`/ip4/127.0.0.1`, `/dns4/localhost`, …) and the port `b` listens on.
pub async fn dial_at<A: NetworkBehaviour, B: NetworkBehaviour>(
    a: &mut Swarm<A>,
    b: &mut Swarm<B>,
    host: &str,
) -> (Side, Side) {
    let port = listen_port(b).await;
    let addr: libp2p::Multiaddr = format!("{host}/tcp/{port}").parse().unwrap();
    a.dial(addr).unwrap();
    let (mut sa, mut sb) = (None, None);
    tokio::time::timeout(TIMEOUT, async {
        while sa.is_none() || sb.is_none() {
            tokio::select! {
                e = a.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => sa = Some(Side::Connected(peer_id)),
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        sa = Some(match dial_refusal(&error) {
                            Some((_, u)) => Side::Refused(u.clone()),
                            None => Side::Failed(error.to_string()),
                        })
                    }
                    _ => {}
                },
                e = b.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => sb = Some(Side::Connected(peer_id)),
                    SwarmEvent::IncomingConnectionError { error, .. } => {
                        sb = Some(match UpgradeError::find(&error) {
                            Some(u) => Side::Refused(u.clone()),
                            None => Side::Failed(error.to_string()),
                        })
                    }
                    _ => {}
                },
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no outcome in time: dialler {sa:?}, listener {sb:?}"));
    (sa.unwrap(), sb.unwrap())
}

/// A node key and a certificate for it from `ca`, valid for `period`.
pub fn node(
    ca: &CertificateAuthority,
    key_type: KeyType,
    period: Period,
) -> (NodeKey, ca_tls::Config) {
    let key = NodeKey::generate(key_type).unwrap();
    let cert = ca.issue_node(&key, "CN=node,O=test", period).unwrap();
    let chain = ca.node_chain(cert).unwrap();
    let anchors = vec![root_of(ca)];
    let tls = ca_tls::Config::new(&key, chain, anchors).unwrap();
    (key, tls)
}

/// The self-signed certificate at the top of `ca`'s chain.
pub fn root_of(ca: &CertificateAuthority) -> ca_tls::CertificateDer<'static> {
    ca.root_der().unwrap()
}

/// Loads a node directory (`node.key`, `node.crt`, `ca.crt`).
pub fn load(dir: &Path) -> (NodeKey, ca_tls::Config) {
    ca_tls::Config::load(
        dir.join("node.key"),
        dir.join("node.crt"),
        dir.join("ca.crt"),
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// The `openssl` configuration FISCO BCOS's chain builders use for requests and the
/// extensions of node (`v3_req`) and agency (`v4_req`) certificates.
pub const FISCO_CERT_CNF: &str = r#"
[ca]
default_ca=default_ca
[default_ca]
default_days = 3650
default_md = sha256
[req]
distinguished_name = req_distinguished_name
req_extensions = v3_req
[req_distinguished_name]
countryName = CN
countryName_default = CN
commonName = Organizational commonName (eg, fisco-bcos)
commonName_default = fisco-bcos
[ v3_req ]
basicConstraints = CA:FALSE
keyUsage = nonRepudiation, digitalSignature, keyEncipherment
[ v4_req ]
basicConstraints = CA:TRUE
"#;

/// Runs a shell command (for the `openssl` CLI), panicking with its stderr if it fails.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "command failed: {script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// FISCO BCOS's NodeId of an EC key file in `dir`: the point `openssl ec -text` prints,
/// without its `04` prefix.
pub fn openssl_ec_node_id(dir: &Path, key: &str) -> String {
    let out = sh(
        dir,
        &format!(
            "openssl ec -text -noout -in {key} 2>/dev/null | sed -n '/^pub:/,/^ASN1/p' | grep -v 'pub:\\|ASN1' | tr -d ' :\\n'"
        ),
    );
    out[2..].to_string()
}

/// Panics with install advice when the `openssl` CLI is missing (CI installs it).
pub fn require_openssl() {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the openssl CLI is required for this test (apt-get install openssl)"
    );
}

/// Starts `swarm` listening on loopback and returns its TCP port.
pub async fn listen_port<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> u16 {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await
                && let Some(libp2p::multiaddr::Protocol::Tcp(port)) = address.iter().nth(1)
            {
                return port;
            }
        }
    })
    .await
    .expect("listener did not start")
}

/// The next inbound connection refusal of `swarm`, which must be a CA-TLS one.
pub async fn next_incoming_refusal<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> UpgradeError {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let SwarmEvent::IncomingConnectionError { error, .. } =
                swarm.select_next_some().await
            {
                return UpgradeError::find(&error)
                    .cloned()
                    .expect("a CA-TLS refusal");
            }
        }
    })
    .await
    .expect("no refusal in time")
}

/// What a raw client sends to select `/bcos-tls/1.0.0` with multistream-select.
pub fn select_ca_tls() -> Vec<u8> {
    raw::select(bcos_p2p::ca_tls::PROTOCOL_NAME)
}

/// An attacker with a valid certificate from `ca`: dials `addr`, opens a raw `protocol` stream
/// to `target` and writes `garbage`. The returned task ends when the node closes the stream (EOF
/// or an error), and panics if the node answers. Abort `.1` (the attacker's swarm) afterwards.
pub fn write_garbage(
    ca: &CertificateAuthority,
    addr: libp2p::Multiaddr,
    target: PeerId,
    protocol: libp2p::StreamProtocol,
    garbage: Vec<u8>,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let (key, tls) = node(ca, KeyType::Secp256k1, Period::days(1));
    write_garbage_as(&key, &tls, addr, target, protocol, garbage)
}

/// Like [`write_garbage`], from the member with `key` and `tls` (to sign what it writes).
pub fn write_garbage_as(
    key: &NodeKey,
    tls: &ca_tls::Config,
    addr: libp2p::Multiaddr,
    target: PeerId,
    protocol: libp2p::StreamProtocol,
    garbage: Vec<u8>,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    write_rounds_as(
        key,
        tls,
        addr,
        target,
        protocol,
        vec![garbage],
        Duration::ZERO,
    )
}

/// Like [`write_garbage_as`], writing `rounds` one after the other, `every` apart: on one
/// stream, or on a new one when the node closed the last (the round that failed is lost).
pub fn write_rounds_as(
    key: &NodeKey,
    tls: &ca_tls::Config,
    addr: libp2p::Multiaddr,
    target: PeerId,
    protocol: libp2p::StreamProtocol,
    rounds: Vec<Vec<u8>>,
    every: Duration,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let mut member = member_swarm(key, tls);
    member.dial(addr).unwrap();
    spawn_member(member, target, protocol, rounds, every)
}

/// A member (`key`, `tls`) that dials `addr` and opens a raw `protocol` stream to `target` (for
/// at most [`TIMEOUT`]); returns the stream (None if it never opened) and the swarm's task
/// (abort it afterwards).
pub async fn raw_stream_as(
    key: &NodeKey,
    tls: &ca_tls::Config,
    addr: libp2p::Multiaddr,
    target: PeerId,
    protocol: libp2p::StreamProtocol,
) -> (Option<libp2p::Stream>, tokio::task::JoinHandle<()>) {
    let mut member = member_swarm(key, tls);
    member.dial(addr).unwrap();
    let mut control = member.behaviour().new_control();
    let swarm = tokio::spawn(async move {
        loop {
            member.select_next_some().await;
        }
    });
    (open_stream(&mut control, target, &protocol).await, swarm)
}

/// A member (`key`, `tls`) listening on loopback that writes `rounds` (`every` apart) on a
/// `protocol` stream to `target` once `target` has connected to it; returns its address, the
/// writing task and the swarm's task (abort both afterwards).
pub async fn listening_member(
    key: &NodeKey,
    tls: &ca_tls::Config,
    target: PeerId,
    protocol: libp2p::StreamProtocol,
    rounds: Vec<Vec<u8>>,
    every: Duration,
) -> (
    libp2p::Multiaddr,
    tokio::task::JoinHandle<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut member = member_swarm(key, tls);
    let port = listen_port(&mut member).await;
    let addr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let (io, swarm) = spawn_member(member, target, protocol, rounds, every);
    (addr, io, swarm)
}

/// A member's swarm that speaks no bcos protocol, only raw streams.
fn member_swarm(key: &NodeKey, tls: &ca_tls::Config) -> Swarm<libp2p_stream::Behaviour> {
    bcos_p2p::behaviour::build_swarm_with(key, tls, |_| libp2p_stream::Behaviour::new()).unwrap()
}

/// Runs `member` and, once it is connected to `target`, writes `rounds` on a `protocol`
/// stream, then reads until the node closes it (panicking if the node answers).
fn spawn_member(
    mut member: Swarm<libp2p_stream::Behaviour>,
    target: PeerId,
    protocol: libp2p::StreamProtocol,
    rounds: Vec<Vec<u8>>,
    every: Duration,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut control = member.behaviour().new_control();
    let swarm = tokio::spawn(async move {
        loop {
            member.select_next_some().await;
        }
    });
    let io = tokio::spawn(async move {
        // A persistent member: a round the node's closing of the stream made fail is lost,
        // and the next round goes on a new stream.
        let mut stream = None;
        for (i, round) in rounds.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            if stream.is_none() {
                stream = open_stream(&mut control, target, &protocol).await;
            }
            let Some(s) = &mut stream else { return };
            if s.write_all(round).await.is_err() || s.flush().await.is_err() {
                stream = None;
            }
        }
        let Some(mut stream) = stream else { return };
        let mut buf = [0u8; 16];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("got {n} bytes back for garbage"),
        }
    });
    (io, swarm)
}

/// A new `protocol` stream to `target`, retried every 20 ms until the member is connected to
/// it (for at most [`TIMEOUT`]).
async fn open_stream(
    control: &mut libp2p_stream::Control,
    target: PeerId,
    protocol: &libp2p::StreamProtocol,
) -> Option<libp2p::Stream> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(s) = control.open_stream(target, protocol.clone()).await {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The unsigned-varint encoding of `n` (for forged length prefixes).
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// A node's event stream, as the tests hold it.
pub type Events = std::pin::Pin<Box<dyn futures::Stream<Item = bcos_p2p::node::NodeEvent> + Send>>;

/// A started node on a free loopback port, dialling `peers`, with `tweak` applied to its config,
/// and its events.
pub async fn start_node(
    ca: &CertificateAuthority,
    peers: &[&bcos_p2p::node::Node],
    tweak: impl FnOnce(&mut bcos_p2p::config::Config),
) -> (bcos_p2p::node::Node, Events) {
    let (key, tls) = node(ca, KeyType::Secp256k1, Period::days(1));
    let mut config = bcos_p2p::config::Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.network.peers = peers
        .iter()
        .map(|p| bcos_p2p::config::PeerAddr(p.listen_addrs()[0].clone()))
        .collect();
    tweak(&mut config);
    let mut n = bcos_p2p::node::Node::start(key, tls, config).await.unwrap();
    let events = Box::pin(n.events().unwrap());
    (n, events)
}

/// Keeps answering requests on `events` by echo, in the background.
pub fn echo(mut events: Events) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let bcos_p2p::node::NodeEvent::Request {
                payload, responder, ..
            } = event
            {
                let _ = responder.respond(payload).await;
            }
        }
    })
}

/// Waits for the first event `pick` accepts, answering requests by echo meanwhile.
pub async fn next<T>(
    events: &mut Events,
    mut pick: impl FnMut(&bcos_p2p::node::NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.next().await.expect("node runs");
            if let Some(t) = pick(&event) {
                return t;
            }
            if let bcos_p2p::node::NodeEvent::Request {
                payload, responder, ..
            } = event
            {
                responder.respond(payload).await.unwrap();
            }
        }
    })
    .await
    .expect("event in time")
}

/// `n` incompressible bytes, the same for the same `seed`, so that compression leaves them as
/// they are.
pub fn noise(n: usize, seed: u64) -> bytes::Bytes {
    use rand::{Rng as _, SeedableRng as _};
    let mut bytes = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes.into()
}
