//! `bcos-p2p run`: one node, driven by stdin commands, reporting events on stdout.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail};
use bcos_p2p::{
    NodeId,
    behaviour::{Behaviour, build_swarm},
    ca_tls,
    config::{Config, PeerAddr},
    events::{Event, PeerInfo},
};
use clap::Args;
use futures::StreamExt as _;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::ConnectedPoint,
    multiaddr::Protocol,
    swarm::{
        ConnectionId, DialError, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    time::Instant,
};

/// First redial delay after a failed dial; doubles up to [`REDIAL_MAX`].
const REDIAL_MIN: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(30);
/// A connection whose pings fail this many times in a row is dead: close it (and redial).
const PING_FAILURES_TO_CLOSE: u32 = 3;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config (as gen-certs writes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (multiaddr or host:port); replaces the config's.
    #[arg(long)]
    listen: Vec<PeerAddr>,
    /// A peer to connect to (multiaddr or host:port); added to the config's.
    #[arg(long)]
    peer: Vec<PeerAddr>,
    /// The chain CA certificate(s).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This node's certificate chain.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This node's private key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Refuse this NodeId.
    #[arg(long)]
    deny: Vec<NodeId>,
    /// Accept only listed NodeIds (when any is given).
    #[arg(long)]
    allow: Vec<NodeId>,
    /// Print one JSON object per line on stdout.
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<(Config, bool)> {
        let mut config = match &self.config {
            Some(path) => {
                let (config, unknown) = Config::load(path)?;
                for key in unknown {
                    tracing::warn!(file = %path.display(), %key, "unknown config key ignored");
                }
                config
            }
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.network.listen = self.listen;
        }
        config.network.peers.extend(self.peer);
        if let Some(p) = self.ca {
            config.certificate.ca = p;
        }
        if let Some(p) = self.cert {
            config.certificate.cert = p;
        }
        if let Some(p) = self.key {
            config.certificate.key = p;
        }
        config.access.deny.extend(self.deny);
        config.access.allow.extend(self.allow);
        Ok((config, self.json))
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (config, json) = args.into_config()?;
    super::init_logging(if json { "warn" } else { "warn,bcos_p2p=info" });
    let c = &config.certificate;
    let (key, tls) = ca_tls::Config::load(&c.key, &c.cert, &c.ca).with_context(|| {
        format!(
            "cannot load key {} / certificate {} / CA {}",
            c.key.display(),
            c.cert.display(),
            c.ca.display()
        )
    })?;
    for id in &config.access.deny {
        tls.access_list().deny(id.clone());
    }
    for id in &config.access.allow {
        tls.access_list().allow(id.clone());
    }
    let mut swarm = build_swarm(&key, &tls)?;
    if config.network.listen.is_empty() {
        bail!("no listen address");
    }
    for addr in &config.network.listen {
        swarm
            .listen_on(addr.0.clone())
            .with_context(|| format!("cannot listen on {addr}"))?;
    }
    let mut node = RunningNode {
        swarm,
        tls,
        json,
        peers: config
            .network
            .peers
            .iter()
            .map(|p| Target::new(p.clone()))
            .collect(),
        pending_dials: HashMap::new(),
        listeners_waiting: config.network.listen.len(),
        listeners_seen: HashSet::new(),
        listen_addrs: Vec::new(),
        ready: false,
        connected: HashMap::new(),
        ping_failures: HashMap::new(),
    };
    node.run().await
}

/// A configured peer and when to dial it next.
struct Target {
    addr: Multiaddr,
    /// The peer at `addr`: from the config's `/p2p/` suffix, or learnt from a successful dial.
    peer: Option<PeerId>,
    /// Whether `peer` came from the config (else it may be forgotten if the node is re-keyed).
    configured: bool,
    next_attempt: Instant,
    backoff: Duration,
}

impl Target {
    fn new(addr: PeerAddr) -> Self {
        let peer = addr.peer_id();
        let mut addr = addr.0;
        if peer.is_some() {
            addr.pop();
        }
        Target {
            addr,
            configured: peer.is_some(),
            peer,
            next_attempt: Instant::now(),
            backoff: REDIAL_MIN,
        }
    }

    /// Schedules the next attempt after a failure, doubling the delay up to [`REDIAL_MAX`].
    fn failed(&mut self) {
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(REDIAL_MAX);
    }
}

struct RunningNode {
    swarm: Swarm<Behaviour>,
    tls: ca_tls::Config,
    json: bool,
    peers: Vec<Target>,
    pending_dials: HashMap<ConnectionId, usize>,
    listeners_waiting: usize,
    listeners_seen: HashSet<libp2p::core::transport::ListenerId>,
    listen_addrs: Vec<Multiaddr>,
    ready: bool,
    /// Connected peers and the address of their first connection.
    connected: HashMap<PeerId, Multiaddr>,
    /// Consecutive ping failures per connection.
    ping_failures: HashMap<ConnectionId, u32>,
}

impl RunningNode {
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut terminate = terminate_signal()?;
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event)?,
                line = stdin.next_line(), if stdin_open => match line {
                    Ok(Some(line)) => {
                        if !self.on_command(line.trim()) {
                            break;
                        }
                    }
                    // EOF (or an unreadable stdin) does not stop the node: only `quit` or a signal.
                    Ok(None) | Err(_) => stdin_open = false,
                },
                _ = tick.tick() => self.on_tick(),
                _ = &mut interrupt => break,
                _ = terminate.recv() => break,
            }
        }
        self.close_all().await;
        Ok(())
    }

    /// Closes every connection cleanly (peers see a close, not a reset), waiting at most 2 s.
    async fn close_all(&mut self) {
        let peers: Vec<PeerId> = self.connected.keys().copied().collect();
        for p in peers {
            let _ = self.swarm.disconnect_peer_id(p);
        }
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                _ = self.swarm.select_next_some() => {}
                _ = &mut deadline => break,
            }
        }
    }

    fn emit(&self, event: Event) {
        use std::io::Write as _;
        let line = if self.json {
            event.to_json()
        } else {
            event.to_human()
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn node_id(&self, peer: &PeerId) -> Option<NodeId> {
        self.tls.node_ids().resolve(peer)
    }

    fn on_swarm_event(
        &mut self,
        event: SwarmEvent<bcos_p2p::behaviour::Event>,
    ) -> anyhow::Result<()> {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                // `ready` waits for the next tick, so that a listener on 0.0.0.0 has reported
                // every interface's address by then.
                self.listen_addrs.push(address);
                if self.listeners_seen.insert(listener_id) {
                    self.listeners_waiting -= 1;
                }
            }
            SwarmEvent::ListenerClosed {
                reason: Err(e),
                addresses,
                ..
            } => {
                tracing::error!(?addresses, "listener failed: {e}");
                if !self.ready {
                    bail!("listener failed: {e}");
                }
                self.emit(Event::Error {
                    message: format!("listener on {addresses:?} failed: {e}"),
                });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if let Some(i) = self.pending_dials.remove(&connection_id) {
                    let t = &mut self.peers[i];
                    t.peer = Some(peer_id);
                    t.backoff = REDIAL_MIN;
                }
                if num_established.get() == 1 {
                    let addr = remote_addr(&endpoint);
                    self.emit(Event::Connected {
                        node_id: self.node_id(&peer_id),
                        addr: addr.to_string(),
                    });
                    self.connected.insert(peer_id, addr);
                }
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                num_established,
                ..
            } if num_established > 0 => {
                self.ping_failures.remove(&connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                self.ping_failures.remove(&connection_id);
                self.connected.remove(&peer_id);
                let reason = cause.map_or_else(|| "closed".to_string(), |e| e.to_string());
                self.emit(Event::Disconnected {
                    node_id: self.node_id(&peer_id),
                    reason,
                });
                // Redial configured peers promptly after a fault.
                for t in self.peers.iter_mut().filter(|t| t.peer == Some(peer_id)) {
                    t.next_attempt = Instant::now() + REDIAL_MIN;
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                let addr = send_back_addr.to_string();
                match Event::refused(addr.clone(), &error) {
                    Some(e) => self.emit(e),
                    None => self.emit(Event::Refused {
                        addr,
                        reason: error.to_string(),
                        code: "handshake".into(),
                        node_id: None,
                    }),
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(i) = self.pending_dials.remove(&connection_id) {
                    let t = &mut self.peers[i];
                    t.failed();
                    // A different node now answers at an address configured without a PeerId
                    // (re-keyed): learn the new one at the next dial.
                    if matches!(error, DialError::WrongPeerId { .. }) && !t.configured {
                        t.peer = None;
                    }
                    tracing::debug!(addr = %t.addr, "dial failed: {error}");
                }
                if let Some(e) = Event::refused_dial(&error) {
                    self.emit(e);
                }
            }
            SwarmEvent::Behaviour(bcos_p2p::behaviour::Event::Ping(ping)) => match ping.result {
                Ok(_) => {
                    self.ping_failures.remove(&ping.connection);
                }
                Err(e) => {
                    let n = self.ping_failures.entry(ping.connection).or_default();
                    *n += 1;
                    if *n >= PING_FAILURES_TO_CLOSE {
                        tracing::info!(peer = %ping.peer, "closing a connection after {n} failed pings: {e}");
                        self.ping_failures.remove(&ping.connection);
                        self.swarm.close_connection(ping.connection);
                    }
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// Emits `ready` once every listener has reported its addresses, then redials due peers.
    fn on_tick(&mut self) {
        if !self.ready && self.listeners_waiting == 0 {
            self.ready = true;
            self.emit(Event::Ready {
                node_id: self.tls.local_node_id().clone(),
                listen: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            });
        }
        if self.ready {
            self.dial_due();
        }
    }

    /// Dials every configured peer that is not connected, not being dialled, and due.
    fn dial_due(&mut self) {
        let now = Instant::now();
        for (i, t) in self.peers.iter_mut().enumerate() {
            let connected = t.peer.is_some_and(|p| self.swarm.is_connected(&p));
            let dialling = self.pending_dials.values().any(|&j| j == i);
            if connected || dialling || t.next_attempt > now {
                continue;
            }
            let opts = match t.peer {
                Some(p) => DialOpts::peer_id(p)
                    .addresses(vec![t.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(t.addr.clone()).build(),
            };
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.pending_dials.insert(id, i);
                }
                Err(e) => {
                    tracing::debug!(addr = %t.addr, "not dialling: {e}");
                    t.failed();
                }
            }
        }
    }

    /// Handles one stdin command; returns false to stop.
    fn on_command(&mut self, line: &str) -> bool {
        let (cmd, _rest) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "" => {}
            "quit" => return false,
            "peers" => {
                let peers = self
                    .connected
                    .iter()
                    .map(|(p, addr)| PeerInfo {
                        node_id: self.node_id(p),
                        addr: addr.to_string(),
                        status_seq: None,
                    })
                    .collect();
                self.emit(Event::Peers { peers });
            }
            other => self.emit(Event::Error {
                message: format!("unknown command `{other}`"),
            }),
        }
        true
    }
}

fn remote_addr(endpoint: &ConnectedPoint) -> Multiaddr {
    let mut a = endpoint.get_remote_address().clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

#[cfg(unix)]
fn terminate_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")
}
