//! Shared by the benchmarks: swarms like `bcos_p2p::behaviour::build_swarm_with` builds (TCP,
//! CA-TLS, yamux, connections kept while idle) whose sockets count the bytes they carry, so a
//! bench can report wire cost — TLS records, yamux frames and all — not just payload sizes.
//!
//! Use from a bench with `#[path = "support/mod.rs"] mod support;`.

#![allow(dead_code)] // each bench uses a part

pub mod memory;

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, PeerAddr},
    mux,
    node::{Node, NodeEvent},
};
use futures::{AsyncRead, AsyncWrite, StreamExt as _};
use libp2p::{
    Multiaddr, Swarm, Transport as _,
    core::{muxing::StreamMuxerBox, transport::timeout::TransportTimeout, upgrade::Version},
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp,
};
use tokio::sync::mpsc;

/// Byte totals over every socket of one swarm. Clones share the totals.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl Counter {
    /// Bytes read from all sockets so far.
    pub fn read_bytes(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written to all sockets so far.
    pub fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// A socket that adds what passes through it to a [`Counter`].
#[derive(Debug)]
pub struct CountingStream<S> {
    inner: S,
    counter: Counter,
}

impl<S> CountingStream<S> {
    /// Wraps `inner`, counting into `counter`.
    pub fn new(inner: S, counter: Counter) -> Self {
        CountingStream { inner, counter }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.counter.read.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.counter.written.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// What libp2p's connection timeout adds to the CA-TLS handshake timeout (as in
/// `build_swarm_with`).
const CONNECT_MARGIN: Duration = Duration::from_secs(5);

/// A tokio swarm over TCP (nodelay), CA-TLS with `tls` and yamux, like `build_swarm_with`, whose
/// sockets count their bytes into the returned [`Counter`].
pub fn build_counting_swarm<B: NetworkBehaviour>(
    key: &NodeKey,
    tls: &ca_tls::Config,
    behaviour: impl FnOnce(&NodeKey) -> B,
) -> Result<(Swarm<B>, Counter), Box<dyn std::error::Error>> {
    let counter = Counter::default();
    let sockets = counter.clone();
    let security = tls.for_node_key(key)?;
    let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .map(move |socket, _| CountingStream::new(socket, sockets.clone()))
        .upgrade(Version::V1)
        .authenticate(security)
        .multiplex(mux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let transport =
        TransportTimeout::new(transport, tls.handshake_timeout() + CONNECT_MARGIN).boxed();
    let config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(Duration::from_secs(u64::MAX));
    let swarm = Swarm::new(transport, behaviour(key), key.peer_id(), config);
    Ok((swarm, counter))
}

/// Whether the bench was started with `--quick` (the short run the bench contract asks for).
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// The runtime the benches run in: tokio, two worker threads (this machine's cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Starts `swarm` listening on a free loopback port and returns the address.
pub async fn listen_local<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"))
        .expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// The value at quantile `q` (0..=1) of `sorted`, by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A node of a bench mesh: its key, certificate chain and, once started, its address.
pub struct Member {
    pub key: NodeKey,
    pub cert: Vec<ca_tls::CertificateDer<'static>>,
    pub addr: Option<Multiaddr>,
}

/// Member `i` of a mesh: a secp256k1 key and a certificate from `ca`.
pub fn member(ca: &CertificateAuthority, i: usize) -> Member {
    let key = NodeKey::generate(KeyType::Secp256k1).expect("key");
    let cert = ca
        .issue_node(&key, &format!("CN=node{i}"), Period::days(1))
        .expect("cert");
    Member {
        cert: ca.node_chain(cert).expect("chain"),
        key,
        addr: None,
    }
}

/// Starts member `i` on `listen`, dialling `peers`; (i, peer) goes to `events` for each of its
/// `Connected` events.
///
/// The nodes all share 127.0.0.1, which no deployment does, so the per-address admission limits
/// are lifted: with them (16 handshakes at once, 10 new connections a second per address;
/// configured peers' addresses exempt) a mesh in one process is throttled like a flood from one
/// host (64 nodes: 10.4-11.4 s instead of 4.4-6.6 s). The global limits still apply.
pub async fn start(
    ca: &CertificateAuthority,
    m: &Member,
    i: usize,
    listen: Multiaddr,
    peers: Vec<Multiaddr>,
    events: mpsc::UnboundedSender<(usize, NodeId)>,
) -> Node {
    let tls = ca_tls::Config::new(&m.key, m.cert.clone(), vec![ca.root_der().expect("root")])
        .expect("tls");
    let mut config = Config::default();
    config.network.listen = vec![PeerAddr(listen)];
    config.network.peers = peers.into_iter().map(PeerAddr).collect();
    // All nodes share 127.0.0.1.
    config.connection.share_one_host();
    let mut node = Node::start(m.key.clone(), tls, config)
        .await
        .expect("node starts");
    let mut stream = node.events().expect("first call");
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if let NodeEvent::Connected { node, .. } = event
                && events.send((i, node)).is_err()
            {
                return;
            }
        }
    });
    node
}
