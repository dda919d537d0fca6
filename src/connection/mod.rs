//! The connection manager: keeps configured peers connected, one connection per peer.
//!
//! libp2p leaves connection policy to the application; a consortium chain needs the one FISCO
//! BCOS has. This [`Behaviour`]:
//!
//! - dials configured peers at start and redials after a failed dial or a disconnect, with
//!   exponential backoff and jitter ([`Config::redial_min`] doubling up to
//!   [`Config::redial_max`]; a connection that stayed up [`Config::stable_after`] resets it);
//! - keeps exactly one connection per peer pair: when both ends dial at once, both keep the
//!   connection dialled by the smaller [`NodeId`] and drop the other (see [`Behaviour`]);
//! - refuses connections to itself, and never dials such an address again;
//! - detects dead connections by wrapping [`libp2p::ping`] (its handler is this behaviour's
//!   handler): a connection whose pings fail [`Config::ping_max_failures`] times in a row closes;
//! - bounds pending and established connections by wrapping [`libp2p::connection_limits`],
//!   new incoming connections per second per IP address ([`Config::new_inbound_per_ip`]) and
//!   incoming connections still handshaking per IP address
//!   ([`Config::max_pending_incoming_per_ip`]);
//! - applies run-time [`Behaviour::deny`] / [`Behaviour::allow`] to the shared CA-TLS
//!   [`AccessList`] and drops refused sessions at once (FISCO's hot reload).
//!
//! Every decision is reported as an [`Event`]. The manager needs a tokio runtime (its redial
//! timer is a tokio timer), as the swarms of [`crate::behaviour::build_swarm`] have.

mod ip_pending;
mod ip_rate;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    hash::BuildHasher as _,
    net::IpAddr,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::FutureExt as _;
use libp2p::{
    Multiaddr, PeerId,
    connection_limits::{self, ConnectionLimits, Exceeded},
    core::{ConnectedPoint, Endpoint, transport::PortUse},
    multiaddr::Protocol,
    ping,
    swarm::{
        CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, DialError, DialFailure,
        FromSwarm, ListenFailure, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
        ToSwarm,
        behaviour::ConnectionEstablished,
        dial_opts::{DialOpts, PeerCondition},
    },
};

use crate::{
    NodeId, NodeIdBook, PrimaryConnections,
    ca_tls::{self, AccessList, UpgradeError},
    config, events,
};

use ip_pending::PendingPerIp;
pub use ip_rate::RateLimit;
use ip_rate::{IpRate, Verdict};

/// How much of a redial delay jitter may take off: each delay is drawn from
/// `[base * (1 - JITTER), base]`, so delays never pass [`Config::redial_max`] and still grow.
pub const JITTER: f64 = 0.2;

/// The shortest redial delay and ping period honoured, whatever the configuration says (a zero
/// delay would redial in a busy loop).
const MIN_DELAY: Duration = Duration::from_millis(10);
/// The longest delay or period honoured (timers past it could overflow).
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// How long the smaller side of a duplicate waits for the larger side to close it.
pub const DUPLICATE_GRACE: Duration = Duration::from_secs(5);
/// How long the larger side keeps a replaced duplicate open: protocols already send on the
/// kept connection ([`Behaviour::primaries`]), and what was in flight on the duplicate (a
/// request sent just before the keeper came up, its answer) gets time to finish.
pub const REPLACE_GRACE: Duration = Duration::from_millis(1000);
/// The most connections kept to one peer while duplicates close.
const MAX_PER_PEER: usize = 3;
/// How long a connection must stay up to reset the redial backoff, by default.
const STABLE_AFTER: Duration = Duration::ZERO;

/// How the manager dials, redials, checks liveness and bounds connections.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// First redial delay after a failed dial or a disconnect; doubles per failure. Default 1 s.
    /// (FISCO BCOS waits a fixed 10 s: set both bounds to 10 s.)
    pub redial_min: Duration,
    /// Longest redial delay. Default 30 s.
    pub redial_max: Duration,
    /// A connection that stayed up this long resets the backoff: the next redial waits
    /// `redial_min` again; a shorter one counts as a failed attempt. Default 0: any connection
    /// that came up (the peer authenticated and accepted us) resets it, so a restarted node is
    /// redialled within `redial_min`. Raise it to slow down redials of a peer whose
    /// connections keep dropping at once.
    pub stable_after: Duration,
    /// Ping period per connection. Default 5 s.
    pub ping_interval: Duration,
    /// How long a ping may take. Default 5 s.
    pub ping_timeout: Duration,
    /// Consecutive failed pings after which a connection is closed as dead. Default 3. libp2p's
    /// ping forgives the first failure silently, so values below 2 act as 2. A connection is
    /// also closed as dead when no ping has been answered for [`Config::dead_after`] (over a
    /// cut link libp2p opens each new ping stream with a fixed 10 s negotiation timeout, so
    /// counting failures alone takes 30 s and more).
    pub ping_max_failures: u32,
    /// Most incoming connections still handshaking (`None`: no limit). Default 256.
    pub max_pending_incoming: Option<u32>,
    /// Most incoming connections still handshaking from one IP address (IPv6: per /64;
    /// `None`: no limit). Default 16. A silent connection lasts until libp2p's connection
    /// timeout (handshake timeout + 5 s), so without it two addresses could hold every slot of
    /// `max_pending_incoming` within the rate limit. Addresses of configured peers are exempt,
    /// as from [`Self::new_inbound_per_ip`].
    pub max_pending_incoming_per_ip: Option<u32>,
    /// Most outgoing dials in progress (`None`: no limit). Default 256.
    pub max_pending_outgoing: Option<u32>,
    /// Most established connections (`None`: no limit). Default 1024.
    pub max_established: Option<u32>,
    /// New incoming connections per IP address (IPv6: per /64) before their handshake
    /// (`None`: no limit). Default 20 at once, then 10 per second. Addresses of configured
    /// peers are exempt: a node this one is told to keep connected is never locked out by
    /// someone else on its host; peers configured by name are dialled by this node anyway.
    pub new_inbound_per_ip: Option<RateLimit>,
}

impl Default for Config {
    fn default() -> Self {
        Config::from(&config::Connection::default())
    }
}

impl From<&config::Connection> for Config {
    fn from(c: &config::Connection) -> Self {
        Config {
            redial_min: Duration::from_millis(c.redial_min_ms),
            redial_max: Duration::from_millis(c.redial_max_ms),
            stable_after: STABLE_AFTER,
            ping_interval: Duration::from_millis(c.ping_interval_ms),
            ping_timeout: Duration::from_millis(c.ping_timeout_ms),
            ping_max_failures: c.ping_max_failures,
            max_pending_incoming: Some(c.max_pending_incoming),
            max_pending_incoming_per_ip: Some(c.max_pending_incoming_per_ip),
            max_pending_outgoing: Some(c.max_pending_outgoing),
            max_established: Some(c.max_established),
            new_inbound_per_ip: Some(RateLimit {
                per_second: c.new_inbound_per_ip_per_s,
                burst: c.new_inbound_per_ip_burst,
            }),
        }
    }
}

impl Config {
    /// The redial delay after `failures` consecutive failures, before jitter:
    /// `redial_min * 2^failures`, at most `redial_max`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let min = self.redial_min.clamp(MIN_DELAY, MAX_DELAY);
        let max = self.redial_max.clamp(min, MAX_DELAY);
        min.saturating_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
            .min(max)
    }

    /// How long a connection may go without an answered ping before it is closed as dead:
    /// `ping_max_failures` periods plus one timeout (20 s by default).
    pub fn dead_after(&self) -> Duration {
        let interval = self.ping_interval.clamp(MIN_DELAY, MAX_DELAY);
        let timeout = self.ping_timeout.clamp(MIN_DELAY, MAX_DELAY);
        interval.saturating_mul(self.ping_max_failures.max(2)) + timeout
    }

    fn ping(&self) -> ping::Config {
        ping::Config::new()
            .with_interval(self.ping_interval.clamp(MIN_DELAY, MAX_DELAY))
            .with_timeout(self.ping_timeout.clamp(MIN_DELAY, MAX_DELAY))
    }

    fn limits(&self) -> ConnectionLimits {
        ConnectionLimits::default()
            .with_max_pending_incoming(self.max_pending_incoming)
            .with_max_pending_outgoing(self.max_pending_outgoing)
            .with_max_established(self.max_established)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The CA-TLS handshake refused it (either side: see [`ca_tls::Refusal`]), or the access
    /// lists refuse the node it authenticated as.
    Tls(ca_tls::Refusal),
    /// A connection limit of [`Config`] was reached.
    Limit(Exceeded),
    /// The address opened new connections faster than [`Config::new_inbound_per_ip`] allows.
    RateLimited {
        /// The address (IPv6: its /64).
        ip: IpAddr,
        /// Refusals of the address not reported since the last report (at most one a second
        /// is reported).
        unreported: u32,
    },
    /// The address already had [`Config::max_pending_incoming_per_ip`] connections
    /// handshaking.
    PendingLimited {
        /// The address (IPv6: its /64).
        ip: IpAddr,
        /// Refusals of the address not reported since the last report (at most one a second
        /// is reported).
        unreported: u32,
    },
    /// The peer's NodeId is unknown: it did not authenticate with CA-TLS.
    UnknownNode,
}

impl Refusal {
    /// A short, stable code for machine consumers (`run --json`'s `refused` event): the CA-TLS
    /// code, `limit`, `rate_limit`, `pending_limit` or `unknown_node`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Tls(r) => r.code(),
            Refusal::Limit(_) => "limit",
            Refusal::RateLimited { .. } => "rate_limit",
            Refusal::PendingLimited { .. } => "pending_limit",
            Refusal::UnknownNode => "unknown_node",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Tls(r) => r.fmt(f),
            Refusal::Limit(e) => e.fmt(f),
            Refusal::RateLimited { ip, unreported } => write!(
                f,
                "too many new connections from {ip} ({unreported} more refused since the last \
                 report)"
            ),
            Refusal::PendingLimited { ip, unreported } => write!(
                f,
                "too many connections from {ip} still handshaking ({unreported} more refused \
                 since the last report)"
            ),
            Refusal::UnknownNode => f.write_str("the peer's NodeId is unknown (no CA-TLS)"),
        }
    }
}

/// What the manager did or saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// Dialling a configured address.
    Dialing {
        /// The address.
        addr: Multiaddr,
        /// 1 for the first attempt after a connection that stayed up (or after start, `add_peer`
        /// or `allow`), then 2, 3, ...; a connection that soon dropped counts as an attempt.
        attempt: u32,
    },
    /// A peer got its first connection.
    Connected {
        /// The peer.
        node: NodeId,
        /// The remote address of the connection.
        addr: Multiaddr,
        /// Whether this node dialled it (a duplicate dialled by the other side may replace it).
        outbound: bool,
    },
    /// A peer's last connection closed.
    Disconnected {
        /// The peer.
        node: NodeId,
        /// Why, for people.
        reason: String,
        /// When a configured address of the peer will be dialled again (`None`: not redialled).
        retry_in: Option<Duration>,
    },
    /// A dial to a configured address failed.
    DialFailed {
        /// The address.
        addr: Multiaddr,
        /// The node there, when known.
        node: Option<NodeId>,
        /// Why, for people.
        error: String,
        /// When it will be dialled again (`None`: not redialled, e.g. the node is denied).
        retry_in: Option<Duration>,
    },
    /// A connection was refused: by either side's CA-TLS handshake or access lists, or by a
    /// connection limit.
    Refused {
        /// The remote address.
        addr: Multiaddr,
        /// Why.
        reason: Refusal,
        /// The peer, when known.
        node: Option<NodeId>,
    },
    /// A second connection to a connected peer was closed, by either side, or refused before
    /// use: one connection per peer is kept, the one dialled by the smaller NodeId.
    DuplicateClosed {
        /// The peer.
        node: NodeId,
    },
    /// A configured address turned out to be this node; it is not dialled again.
    SelfRefused {
        /// The address.
        addr: Multiaddr,
    },
    /// A connection was closed as dead: [`Config::ping_max_failures`] pings in a row failed,
    /// or none was answered for [`Config::dead_after`].
    Dead {
        /// The peer.
        node: NodeId,
        /// Consecutive failed pings reported.
        failures: u32,
        /// How long since a ping was last answered (or the connection came up).
        silent: Duration,
    },
    /// A peer's connections were closed because [`Behaviour::deny`] (or a change of the access
    /// lists, see [`Behaviour::enforce_access`]) now refuses it.
    Dropped {
        /// The peer.
        node: NodeId,
    },
    /// A ping to a peer was answered.
    Ping {
        /// The peer.
        node: NodeId,
        /// The round-trip time.
        rtt: Duration,
    },
}

/// Why this behaviour denied a connection (the swarm reports it as the denial's cause).
#[derive(Debug, thiserror::Error)]
enum Denial {
    #[error("{0} is already connected")]
    Duplicate(NodeId),
    #[error("{1}: {0}")]
    Access(NodeId, ca_tls::Refusal),
    #[error("NodeId of {0} unknown")]
    UnknownNode(PeerId),
    #[error("too many new connections from {0}")]
    RateLimited(IpAddr),
    #[error("too many connections from {0} still handshaking")]
    PendingLimited(IpAddr),
}

/// Where a configured address stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// To be dialled at this time.
    Waiting(Instant),
    /// A dial is in progress.
    Dialing(ConnectionId),
    /// Its peer is connected.
    Connected,
    /// Its node is refused by the access lists; dialled again after [`Behaviour::allow`].
    Blocked,
    /// It is this node: never dialled again.
    Myself,
}

/// A configured address.
#[derive(Debug)]
struct Target {
    /// Without `/p2p/`.
    addr: Multiaddr,
    /// From `/p2p/`, or learnt from the first connection.
    peer: Option<PeerId>,
    /// Whether `peer` came from `/p2p/` (else a WrongPeerId dial error forgets it).
    peer_configured: bool,
    /// The node at `addr`, once known (from the peer, or a refused handshake).
    node: Option<NodeId>,
    /// Consecutive failed attempts since the last stable connection.
    failures: u32,
    state: State,
}

/// Why this node closes a connection.
#[derive(Debug, Clone, Copy)]
enum Closing {
    Duplicate,
    /// Consecutive failed pings, and for how long none was answered.
    Dead(u32, Duration),
    Dropped,
}

/// An established connection.
#[derive(Debug)]
struct Conn {
    node: NodeId,
    addr: Multiaddr,
    outbound: bool,
    /// Consecutive failed pings.
    failures: u32,
    /// When a ping was last answered, or the connection came up.
    answered: Instant,
    /// False once the peer turned out not to speak ping (then it cannot be found dead).
    pings: bool,
    rtt: Option<Duration>,
    closing: Option<Closing>,
    /// Set on a duplicate this node waits for the peer to close: when to close it anyway.
    superseded: Option<Instant>,
}

impl Conn {
    /// When this connection counts as dead unless a ping is answered first; none while it is
    /// closing or when the peer does not speak ping.
    fn silent_deadline(&self, dead_after: Duration) -> Option<Instant> {
        (self.closing.is_none() && self.pings).then(|| self.answered + dead_after)
    }
}

/// A connected peer.
#[derive(Debug)]
struct Peer {
    node: NodeId,
    /// Established connections (more than one only briefly, while duplicates close).
    conns: Vec<ConnectionId>,
    /// The connection kept.
    primary: ConnectionId,
    /// When the peer got its first connection.
    since: Instant,
}

/// What to do with an accepted connection once the swarm reports it established.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Admission {
    /// The peer's first connection.
    Fresh,
    /// The keeper, on the deciding (larger NodeId) side: close the peer's other connections.
    Replace,
    /// The keeper, on the smaller side: the others wait for the peer to close them.
    Takeover,
    /// A duplicate, on the smaller side: kept open until the peer closes it.
    Extra,
}

impl Admission {
    /// Whether the connection replaces a connection of the peer.
    fn replaces(self) -> bool {
        matches!(self, Admission::Replace | Admission::Takeover)
    }
}

/// A small xorshift generator for redial jitter (no cryptographic use).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Rng(std::collections::hash_map::RandomState::new().hash_one(Instant::now()) | 1)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The connection manager (see the module docs).
///
/// Duplicate rule: of two connections between nodes `S < L` (by [`NodeId`] order), the one
/// `S` dialled is kept, and `L` decides. `L` denies a new connection in `handle_established_*`
/// when it already has one, unless the new one is dialled by `S` and the existing ones are
/// not: then it closes those. `S` accepts duplicates (the one it dialled becomes the one it
/// uses) and leaves the closing to `L`, closing them itself only if `L` has not after
/// [`DUPLICATE_GRACE`]. So both ends of a simultaneous dial keep the same connection, whatever
/// order each sees the two in, and neither end ever loses its only connection to the other's
/// decision (no disconnect/reconnect churn).
pub struct Behaviour {
    config: Config,
    local: NodeId,
    local_peer: PeerId,
    access: AccessList,
    node_ids: NodeIdBook,
    /// The kept connection per peer, for the protocols (see [`Behaviour::primaries`]).
    primaries: PrimaryConnections,
    ping: ping::Behaviour,
    limits: connection_limits::Behaviour,
    ip_rate: Option<IpRate>,
    ip_pending: Option<PendingPerIp>,
    targets: Vec<Target>,
    conns: HashMap<ConnectionId, Conn>,
    peers: HashMap<PeerId, Peer>,
    admitted: HashMap<ConnectionId, Admission>,
    listen_addrs: HashSet<Multiaddr>,
    queue: VecDeque<ToSwarm<Event, Infallible>>,
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
    waker: Option<Waker>,
    rng: Rng,
}

impl Behaviour {
    /// A manager for the node `local`, checking and updating `access` (the CA-TLS config's
    /// [`ca_tls::Config::access_list`]) and naming peers with `node_ids` (its
    /// [`ca_tls::Config::node_ids`]).
    pub fn new(local: NodeId, config: Config, access: AccessList, node_ids: NodeIdBook) -> Self {
        Behaviour {
            ping: ping::Behaviour::new(config.ping()),
            limits: connection_limits::Behaviour::new(config.limits()),
            ip_rate: config.new_inbound_per_ip.map(IpRate::new),
            ip_pending: config.max_pending_incoming_per_ip.map(PendingPerIp::new),
            config,
            local_peer: local.to_peer_id(),
            local,
            access,
            node_ids,
            primaries: PrimaryConnections::default(),
            targets: Vec::new(),
            conns: HashMap::new(),
            peers: HashMap::new(),
            admitted: HashMap::new(),
            listen_addrs: HashSet::new(),
            queue: VecDeque::new(),
            timer: None,
            waker: None,
            rng: Rng::new(),
        }
    }

    /// The connection kept per peer, kept up to date by this manager. Give it to the protocols
    /// that pick one connection per peer (unicast, flood): while a duplicate connection is
    /// being closed, what they send then goes on the connection that stays.
    pub fn primaries(&self) -> PrimaryConnections {
        self.primaries.clone()
    }

    /// Dials `addr` now and keeps it connected. `addr` may end in `/p2p/<PeerId>`; without it the
    /// PeerId is learnt from the first connection. Adding a known address dials it now if it is
    /// not connected (the backoff restarts).
    pub fn add_peer(&mut self, addr: Multiaddr) {
        let (addr, peer) = split_peer(addr);
        let now = Instant::now();
        let target = match self.targets.iter().position(|t| t.addr == addr) {
            Some(i) => &mut self.targets[i],
            None => {
                self.targets.push(Target {
                    node: peer.and_then(|p| self.node_ids.resolve(&p)),
                    addr,
                    peer,
                    peer_configured: peer.is_some(),
                    failures: 0,
                    state: State::Waiting(now),
                });
                self.targets.last_mut().expect("just pushed")
            }
        };
        if peer.is_some() && target.peer != peer {
            target.peer = peer;
            target.peer_configured = true;
            target.node = peer.and_then(|p| self.node_ids.resolve(&p));
        }
        target.failures = 0;
        if !matches!(target.state, State::Dialing(_) | State::Connected) {
            target.state = State::Waiting(now);
        }
        self.wake();
    }

    /// Stops keeping `addr` connected (with or without its `/p2p/` suffix). An existing
    /// connection stays open. Returns whether the address was configured.
    pub fn remove_peer(&mut self, addr: &Multiaddr) -> bool {
        let (addr, _) = split_peer(addr.clone());
        let before = self.targets.len();
        self.targets.retain(|t| t.addr != addr);
        before != self.targets.len()
    }

    /// Refuses `node` from now on: puts it on the deny list (checked in every handshake) and
    /// closes its connections at once. Its addresses are not redialled until [`Self::allow`].
    /// Returns whether the node was newly denied.
    pub fn deny(&mut self, node: NodeId) -> bool {
        let new = self.access.deny(node);
        self.enforce_access();
        new
    }

    /// Accepts `node` again: takes it off the deny list, and puts it on the allow list when an
    /// allow list is in use. Its configured addresses are dialled at once.
    /// Returns whether the lists changed.
    pub fn allow(&mut self, node: NodeId) -> bool {
        let mut changed = self.access.undeny(&node);
        if !self.access.allowed().is_empty() {
            changed |= self.access.allow(node.clone());
        }
        let now = Instant::now();
        for t in &mut self.targets {
            if t.node.as_ref() == Some(&node)
                && matches!(t.state, State::Blocked | State::Waiting(_))
            {
                t.failures = 0;
                t.state = State::Waiting(now);
            }
        }
        self.wake();
        changed
    }

    /// Closes the connections of every peer the access lists now refuse (call it after
    /// changing the [`AccessList`] directly, e.g. on a config reload).
    pub fn enforce_access(&mut self) {
        let refused: Vec<(PeerId, NodeId)> = self
            .peers
            .iter()
            .filter(|(_, p)| self.access.check(&p.node).is_err())
            .map(|(id, p)| (*id, p.node.clone()))
            .collect();
        for (peer, node) in refused {
            let Some(p) = self.peers.get(&peer) else {
                continue;
            };
            for id in &p.conns {
                if let Some(c) = self.conns.get_mut(id) {
                    c.closing = Some(Closing::Dropped);
                }
            }
            self.queue.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::All,
            });
            self.emit(Event::Dropped { node });
        }
        for t in &mut self.targets {
            let refused = t
                .node
                .as_ref()
                .is_some_and(|n| self.access.check(n).is_err());
            if refused && matches!(t.state, State::Waiting(_)) {
                t.state = State::Blocked;
            }
        }
        self.wake();
    }

    /// Connected peers, one entry each, with the remote address of the connection kept.
    pub fn connected(&self) -> Vec<(NodeId, Multiaddr)> {
        self.peers
            .values()
            .filter_map(|p| {
                self.conns
                    .get(&p.primary)
                    .map(|c| (p.node.clone(), c.addr.clone()))
            })
            .collect()
    }

    /// The last round-trip time measured to `node`, if it is connected and answered a ping.
    pub fn rtt(&self, node: &NodeId) -> Option<Duration> {
        self.peers
            .values()
            .find(|p| &p.node == node)
            .and_then(|p| self.conns.get(&p.primary))
            .and_then(|c| c.rtt)
    }

    fn emit(&mut self, event: Event) {
        tracing::debug!(?event, "connection manager");
        self.queue.push_back(ToSwarm::GenerateEvent(event));
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// A redial delay after `failures` failures, with jitter.
    fn delay(&mut self, failures: u32) -> Duration {
        self.config
            .backoff(failures)
            .mul_f64(1.0 - JITTER * self.rng.next_f64())
    }

    /// Schedules the next dial of target `i` after a failure or a disconnect, counting it as a
    /// failure if `failed`; returns the delay, or `None` when the target is not redialled (its
    /// node is refused).
    fn reschedule(&mut self, i: usize, failed: bool) -> Option<Duration> {
        let (node, failures) = (&self.targets[i].node, self.targets[i].failures);
        if node.as_ref().is_some_and(|n| self.access.check(n).is_err()) {
            self.targets[i].state = State::Blocked;
            return None;
        }
        let delay = self.delay(failures);
        let t = &mut self.targets[i];
        if failed {
            t.failures = t.failures.saturating_add(1);
        }
        t.state = State::Waiting(Instant::now() + delay);
        Some(delay)
    }

    /// Dials every target that is due; marks the ones that need no dial.
    fn dial_due(&mut self, now: Instant) {
        for i in 0..self.targets.len() {
            let t = &mut self.targets[i];
            // A peer that left without this target noticing (its dial was a duplicate of a
            // connection that closed meanwhile): dial it again.
            if t.state == State::Connected && !t.peer.is_some_and(|p| self.peers.contains_key(&p)) {
                t.state = State::Waiting(now);
            }
            let State::Waiting(at) = t.state else {
                continue;
            };
            if at > now {
                continue;
            }
            let t = &self.targets[i];
            if t.peer == Some(self.local_peer) || self.listen_addrs.contains(&t.addr) {
                let addr = t.addr.clone();
                self.targets[i].state = State::Myself;
                self.emit(Event::SelfRefused { addr });
                continue;
            }
            if t.node
                .as_ref()
                .is_some_and(|n| self.access.check(n).is_err())
            {
                self.targets[i].state = State::Blocked;
                continue;
            }
            if t.peer.is_some_and(|p| self.peers.contains_key(&p)) {
                self.targets[i].state = State::Connected;
                continue;
            }
            let opts = match t.peer {
                Some(p) => DialOpts::peer_id(p)
                    .addresses(vec![t.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .allocate_new_port()
                    .build(),
                None => DialOpts::unknown_peer_id()
                    .address(t.addr.clone())
                    .allocate_new_port()
                    .build(),
            };
            let event = Event::Dialing {
                addr: t.addr.clone(),
                attempt: t.failures.saturating_add(1),
            };
            self.targets[i].state = State::Dialing(opts.connection_id());
            self.emit(event);
            // A new ephemeral port per dial: with port reuse, two nodes dialling each other at
            // once would collide on one TCP 4-tuple instead of making two connections.
            self.queue.push_back(ToSwarm::Dial { opts });
        }
    }

    /// Arms the timer for the earliest redial, duplicate grace or ping deadline; returns true if
    /// one is due.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let redials = self.targets.iter().filter_map(|t| match t.state {
            State::Waiting(at) => Some(at),
            _ => None,
        });
        let overdue = self
            .conns
            .values()
            .filter(|c| c.closing.is_none())
            .filter_map(|c| c.superseded);
        // The same connections `close_silent` looks at, or a deadline it cannot act on would
        // make this timer fire forever.
        let dead_after = self.config.dead_after();
        let silent = self
            .peer_conns()
            .filter_map(|(_, _, c)| c.silent_deadline(dead_after));
        let next = redials.chain(overdue).chain(silent).min();
        let Some(at) = next else {
            self.timer = None;
            return false;
        };
        if at <= Instant::now() {
            return true;
        }
        if self.timer.as_ref().is_none_or(|(t, _)| *t != at) {
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(at));
            self.timer = Some((at, Box::pin(sleep)));
        }
        match &mut self.timer {
            Some((_, sleep)) => sleep.poll_unpin(cx).is_ready(),
            None => false,
        }
    }

    /// Decides whether a new connection to `peer` may stay (see [`Behaviour`]).
    fn admit(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        outbound: bool,
    ) -> Result<Admission, ConnectionDenied> {
        let Some(node) = self.node_ids.resolve(&peer) else {
            self.emit(Event::Refused {
                addr: addr.clone(),
                reason: Refusal::UnknownNode,
                node: None,
            });
            return Err(ConnectionDenied::new(Denial::UnknownNode(peer)));
        };
        // The lists may have changed while the handshake ran.
        if let Err(refusal) = self.access.check(&node) {
            self.emit(Event::Refused {
                addr: addr.clone(),
                reason: Refusal::Tls(refusal.clone()),
                node: Some(node.clone()),
            });
            return Err(ConnectionDenied::new(Denial::Access(node, refusal)));
        }
        let admission = match self.peers.get(&peer) {
            None => Some(Admission::Fresh),
            Some(p) => {
                let live: Vec<&Conn> = p
                    .conns
                    .iter()
                    .filter_map(|c| self.conns.get(c))
                    .filter(|c| c.closing.is_none())
                    .collect();
                // The keeper is the connection the smaller NodeId dialled.
                let keeper = |outbound: bool| outbound == (self.local < node);
                if live.is_empty() {
                    Some(Admission::Replace)
                } else if self.local > node {
                    (keeper(outbound) && live.iter().all(|c| !keeper(c.outbound)))
                        .then_some(Admission::Replace)
                } else if live.len() >= MAX_PER_PEER {
                    None
                } else {
                    let primary = self.conns.get(&p.primary).filter(|c| c.closing.is_none());
                    Some(
                        if keeper(outbound) && primary.is_none_or(|c| !keeper(c.outbound)) {
                            Admission::Takeover
                        } else {
                            Admission::Extra
                        },
                    )
                }
            }
        };
        let Some(admission) = admission else {
            self.emit(Event::DuplicateClosed { node: node.clone() });
            return Err(ConnectionDenied::new(Denial::Duplicate(node)));
        };
        self.admitted.insert(id, admission);
        Ok(admission)
    }

    /// [`Self::admit`], then the verdict of the connection limits (`limit`), which a connection
    /// replacing a duplicate ignores: the count is back once the duplicate closes.
    fn admit_within<H>(
        &mut self,
        limit: Result<H, ConnectionDenied>,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        outbound: bool,
    ) -> Result<(), ConnectionDenied> {
        let admission = self.admit(id, peer, addr, outbound)?;
        match limit {
            Err(d) if !admission.replaces() => {
                self.admitted.remove(&id);
                Err(self.limit_refused(d, Some(addr), Some(peer)))
            }
            _ => Ok(()),
        }
    }

    /// Closes a duplicate connection of `peer`.
    fn close_duplicate(&mut self, peer: PeerId, id: ConnectionId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closing.is_some() {
            return;
        }
        c.closing = Some(Closing::Duplicate);
        let node = c.node.clone();
        self.queue.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: CloseConnection::One(id),
        });
        self.emit(Event::DuplicateClosed { node });
    }

    /// Closes duplicates the peer has left open past their grace.
    /// Every connection of every connected peer.
    fn peer_conns(&self) -> impl Iterator<Item = (PeerId, ConnectionId, &Conn)> + '_ {
        self.peers.iter().flat_map(move |(peer, p)| {
            p.conns
                .iter()
                .filter_map(move |id| self.conns.get(id).map(|c| (*peer, *id, c)))
        })
    }

    fn close_overdue(&mut self, now: Instant) {
        let overdue: Vec<(PeerId, ConnectionId)> = self
            .peer_conns()
            .filter(|(_, _, c)| c.superseded.is_some_and(|at| at <= now))
            .map(|(peer, id, _)| (peer, id))
            .collect();
        for (peer, id) in overdue {
            self.close_duplicate(peer, id);
        }
    }

    /// The IP address of `remote`, unless it is one of a configured peer's (exempt from the
    /// per-address limits) or has none.
    fn limited_ip(&self, remote: &Multiaddr) -> Option<IpAddr> {
        let ip = first_ip(remote)?;
        let group = ip_rate::group(ip);
        let configured = self
            .targets
            .iter()
            .any(|t| first_ip(&t.addr).is_some_and(|a| ip_rate::group(a) == group));
        (!configured).then_some(ip)
    }

    /// Applies the per-address limits to the pending incoming connection `id` from `remote`:
    /// [`Config::new_inbound_per_ip`], then [`Config::max_pending_incoming_per_ip`] (which
    /// counts the connection until [`Self::release_pending`]).
    fn per_ip_check(
        &mut self,
        id: ConnectionId,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = self.limited_ip(remote) else {
            return Ok(());
        };
        let now = Instant::now();
        let group = ip_rate::group(ip);
        if let Some(Verdict::Refuse { report }) = self.ip_rate.as_mut().map(|r| r.admit(ip, now)) {
            let reason = |ip, unreported| Refusal::RateLimited { ip, unreported };
            return Err(self.refuse_ip(remote, group, report, reason, Denial::RateLimited));
        }
        let pending = self.ip_pending.as_mut().map(|p| p.admit(id, ip, now));
        if let Some(Verdict::Refuse { report }) = pending {
            let reason = |ip, unreported| Refusal::PendingLimited { ip, unreported };
            return Err(self.refuse_ip(remote, group, report, reason, Denial::PendingLimited));
        }
        Ok(())
    }

    /// Refuses a pending connection from `remote` (address `group`) by a per-address limit;
    /// emits the refusal when `report` says so (see [`ip_rate::Verdict`]).
    fn refuse_ip(
        &mut self,
        remote: &Multiaddr,
        group: IpAddr,
        report: Option<u32>,
        reason: fn(IpAddr, u32) -> Refusal,
        denial: fn(IpAddr) -> Denial,
    ) -> ConnectionDenied {
        if let Some(unreported) = report {
            let reason = reason(group, unreported);
            tracing::warn!(%remote, "refusing: {reason}");
            self.emit(Event::Refused {
                addr: remote.clone(),
                reason,
                node: None,
            });
        }
        ConnectionDenied::new(denial(group))
    }

    /// Connection `id` is no longer pending (established, failed or denied): its address may
    /// start another.
    fn release_pending(&mut self, id: ConnectionId) {
        if let Some(pending) = &mut self.ip_pending {
            pending.release(id);
        }
    }

    /// Emits a refusal for a connection limit.
    fn limit_refused(
        &mut self,
        denied: ConnectionDenied,
        addr: Option<&Multiaddr>,
        peer: Option<PeerId>,
    ) -> ConnectionDenied {
        if let Some(e) = denied.downcast_ref::<Exceeded>() {
            let event = Event::Refused {
                addr: addr.cloned().unwrap_or_else(Multiaddr::empty),
                reason: Refusal::Limit(*e),
                node: peer.and_then(|p| self.node_ids.resolve(&p)),
            };
            self.emit(event);
        }
        denied
    }

    fn on_established(&mut self, e: ConnectionEstablished<'_>) {
        let Some(admission) = self.admitted.remove(&e.connection_id) else {
            return;
        };
        let Some(node) = self.node_ids.resolve(&e.peer_id) else {
            return;
        };
        let outbound = e.endpoint.is_dialer();
        let addr = remote_addr(e.endpoint);
        self.conns.insert(
            e.connection_id,
            Conn {
                node: node.clone(),
                addr: addr.clone(),
                outbound,
                failures: 0,
                answered: Instant::now(),
                pings: true,
                rtt: None,
                closing: None,
                superseded: (admission == Admission::Extra)
                    .then(|| Instant::now() + DUPLICATE_GRACE),
            },
        );
        let mut closed = Vec::new();
        match self.peers.get_mut(&e.peer_id) {
            None => {
                self.peers.insert(
                    e.peer_id,
                    Peer {
                        node: node.clone(),
                        conns: vec![e.connection_id],
                        primary: e.connection_id,
                        since: Instant::now(),
                    },
                );
                self.primaries.set(e.peer_id, e.connection_id);
                self.emit(Event::Connected {
                    node: node.clone(),
                    addr,
                    outbound,
                });
            }
            Some(p) => {
                let others = p.conns.clone();
                p.conns.push(e.connection_id);
                match admission {
                    Admission::Fresh => closed = others,
                    Admission::Replace => {
                        let deadline = Instant::now() + REPLACE_GRACE;
                        for id in &others {
                            if let Some(c) = self.conns.get_mut(id)
                                && c.closing.is_none()
                            {
                                c.superseded.get_or_insert(deadline);
                            }
                        }
                    }
                    Admission::Takeover => {
                        let deadline = Instant::now() + DUPLICATE_GRACE;
                        for id in &others {
                            if let Some(c) = self.conns.get_mut(id) {
                                c.superseded.get_or_insert(deadline);
                            }
                        }
                    }
                    Admission::Extra => {}
                }
                if admission != Admission::Extra {
                    p.primary = e.connection_id;
                    self.primaries.set(e.peer_id, e.connection_id);
                }
            }
        }
        for id in closed {
            self.close_duplicate(e.peer_id, id);
        }
        for t in &mut self.targets {
            if t.state == State::Dialing(e.connection_id) {
                t.peer = Some(e.peer_id);
                t.node = Some(node.clone());
                t.state = State::Connected;
            } else if t.peer == Some(e.peer_id) {
                t.node = Some(node.clone());
                if matches!(t.state, State::Waiting(_) | State::Blocked) {
                    t.state = State::Connected;
                }
            }
        }
    }

    fn on_closed(&mut self, e: ConnectionClosed<'_>) {
        let Some(conn) = self.conns.remove(&e.connection_id) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&e.peer_id) else {
            return;
        };
        p.conns.retain(|c| *c != e.connection_id);
        if !p.conns.is_empty() {
            if p.primary == e.connection_id {
                // Another connection takes over: one this node does not close, the keeper first.
                let keeper = |c: &Conn| c.outbound == (self.local < c.node);
                let conns = &self.conns;
                let rank = |id: &ConnectionId| {
                    conns.get(id).map_or(0, |c| {
                        1 + u8::from(c.closing.is_none()) * 2 + u8::from(keeper(c))
                    })
                };
                p.primary = p
                    .conns
                    .iter()
                    .copied()
                    .max_by_key(rank)
                    .unwrap_or(p.conns[0]);
                self.primaries.set(e.peer_id, p.primary);
                if let Some(c) = self.conns.get_mut(&p.primary) {
                    c.superseded = None;
                }
            }
            if conn.superseded.is_some() && conn.closing.is_none() {
                // The peer closed a duplicate, as the larger side does.
                self.emit(Event::DuplicateClosed { node: conn.node });
            }
            return;
        }
        let since = p.since;
        self.peers.remove(&e.peer_id);
        self.primaries.remove(&e.peer_id);
        let reason = match (conn.closing, e.cause) {
            (Some(Closing::Dead(n, silent)), _) => format!(
                "dead: no ping answered for {:.1} s ({n} failed)",
                silent.as_secs_f64()
            ),
            (Some(Closing::Dropped), _) => "denied".to_string(),
            (Some(Closing::Duplicate), _) => "duplicate closed".to_string(),
            (None, Some(cause)) => cause.to_string(),
            (None, None) => "closed".to_string(),
        };
        let stable = since.elapsed() >= self.config.stable_after;
        let mut retry_in: Option<Duration> = None;
        for i in 0..self.targets.len() {
            let t = &mut self.targets[i];
            if t.peer != Some(e.peer_id) || t.state != State::Connected {
                continue;
            }
            // A connection that stayed up resets the backoff; one that did not counts as a
            // failed attempt, so a peer that keeps dropping connections is redialled ever slower.
            if stable {
                t.failures = 0;
            }
            if let Some(d) = self.reschedule(i, !stable) {
                retry_in = Some(retry_in.map_or(d, |r| r.min(d)));
            }
        }
        self.emit(Event::Disconnected {
            node: conn.node,
            reason,
            retry_in,
        });
    }

    fn on_dial_failure(&mut self, e: DialFailure<'_>) {
        self.admitted.remove(&e.connection_id);
        let refusal = events::dial_refusal(e.error);
        if let Some((addr, u)) = refusal {
            let addr = addr.cloned().unwrap_or_else(Multiaddr::empty);
            self.refused_tls(addr, u);
        }
        let Some(i) = self
            .targets
            .iter()
            .position(|t| t.state == State::Dialing(e.connection_id))
        else {
            if let DialError::LocalPeerId { address } = e.error {
                self.emit(Event::SelfRefused {
                    addr: address.clone(),
                });
            }
            return;
        };
        if let Some(peer) = e.peer_id
            && peer != self.local_peer
            && !self.targets[i].peer_configured
        {
            self.targets[i].peer = Some(peer);
        }
        if let Some(node) = e.peer_id.and_then(|p| self.node_ids.resolve(&p)) {
            self.targets[i].node = Some(node);
        }
        if let Some(node) = refusal.and_then(|(_, u)| u.node_id()) {
            self.targets[i].node = Some(node.clone());
        }
        match e.error {
            DialError::LocalPeerId { .. } => {
                let addr = self.targets[i].addr.clone();
                self.targets[i].state = State::Myself;
                self.emit(Event::SelfRefused { addr });
                return;
            }
            DialError::Denied { cause }
                if matches!(cause.downcast_ref::<Denial>(), Some(Denial::Duplicate(_))) =>
            {
                // A duplicate of a connection that stays.
                self.targets[i].state = State::Connected;
                return;
            }
            DialError::DialPeerConditionFalse(_) => {
                // Another dial to the peer is in progress: look again shortly.
                let at = Instant::now() + self.config.backoff(0);
                self.targets[i].state = State::Waiting(at);
                return;
            }
            DialError::WrongPeerId { .. } if !self.targets[i].peer_configured => {
                // Another node answers there now (re-keyed): learn it at the next dial.
                self.targets[i].peer = None;
                self.targets[i].node = None;
            }
            _ => {}
        }
        let retry_in = self.reschedule(i, true);
        let t = &self.targets[i];
        let event = Event::DialFailed {
            addr: t.addr.clone(),
            node: t.node.clone(),
            error: e.error.to_string(),
            retry_in,
        };
        self.emit(event);
    }

    fn on_listen_failure(&mut self, e: ListenFailure<'_>) {
        self.admitted.remove(&e.connection_id);
        self.release_pending(e.connection_id);
        if let Some(u) = UpgradeError::find(e.error) {
            self.refused_tls(e.send_back_addr.clone(), u);
        }
    }

    fn refused_tls(&mut self, addr: Multiaddr, u: &UpgradeError) {
        self.emit(Event::Refused {
            addr,
            reason: Refusal::Tls(u.refusal().clone()),
            node: u.node_id().cloned(),
        });
    }

    /// Closes connection `id` to `peer` as dead.
    fn close_dead(&mut self, peer: PeerId, id: ConnectionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let (failures, silent) = (conn.failures, conn.answered.elapsed());
        conn.closing = Some(Closing::Dead(failures, silent));
        let node = conn.node.clone();
        self.queue.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: CloseConnection::One(id),
        });
        self.emit(Event::Dead {
            node,
            failures,
            silent,
        });
    }

    /// Closes the connections no ping has been answered on for [`Config::dead_after`].
    fn close_silent(&mut self, now: Instant) {
        let dead_after = self.config.dead_after();
        let silent: Vec<(PeerId, ConnectionId)> = self
            .peer_conns()
            .filter(|(_, _, c)| c.silent_deadline(dead_after).is_some_and(|at| at <= now))
            .map(|(peer, id, _)| (peer, id))
            .collect();
        for (peer, id) in silent {
            self.close_dead(peer, id);
        }
    }

    /// Counts a ping result of a connection; closes the connection when it is dead.
    fn on_ping(&mut self, e: ping::Event) {
        let Some(conn) = self.conns.get_mut(&e.connection) else {
            return;
        };
        match e.result {
            Ok(rtt) => {
                conn.failures = 0;
                conn.answered = Instant::now();
                conn.rtt = Some(rtt);
                let node = conn.node.clone();
                self.emit(Event::Ping { node, rtt });
            }
            Err(ping::Failure::Unsupported) => {
                tracing::debug!(peer = %conn.node, "peer does not answer pings");
                conn.pings = false;
            }
            Err(error) => {
                // libp2p's ping handler reports failures from the second one in a row on.
                conn.failures = conn.failures.max(1).saturating_add(1);
                let failures = conn.failures;
                tracing::debug!(peer = %conn.node, failures, "ping failed: {error}");
                if failures >= self.config.ping_max_failures && conn.closing.is_none() {
                    self.close_dead(e.peer, e.connection);
                }
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<ping::Behaviour>;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.per_ip_check(id, remote_addr)?;
        self.limits
            .handle_pending_inbound_connection(id, local_addr, remote_addr)
            .map_err(|d| {
                // The swarm's ListenFailure would release it too.
                self.release_pending(id);
                self.limit_refused(d, Some(remote_addr), None)
            })
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let limit =
            self.limits
                .handle_established_inbound_connection(id, peer, local_addr, remote_addr);
        self.admit_within(limit, id, peer, remote_addr, false)?;
        self.ping
            .handle_established_inbound_connection(id, peer, local_addr, remote_addr)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.limits
            .handle_pending_outbound_connection(id, peer, addresses, role)
            .map_err(|d| self.limit_refused(d, addresses.first(), peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let limit = self
            .limits
            .handle_established_outbound_connection(id, peer, addr, role, port_use);
        self.admit_within(limit, id, peer, addr, true)?;
        self.ping
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.limits.on_swarm_event(event);
        self.ping.on_swarm_event(event);
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.release_pending(e.connection_id);
                self.on_established(e);
            }
            FromSwarm::ConnectionClosed(e) => self.on_closed(e),
            FromSwarm::DialFailure(e) => self.on_dial_failure(e),
            FromSwarm::ListenFailure(e) => self.on_listen_failure(e),
            FromSwarm::AddressChange(e) => {
                if let Some(c) = self.conns.get_mut(&e.connection_id) {
                    c.addr = remote_addr(e.new);
                }
            }
            FromSwarm::NewListenAddr(e) => {
                self.listen_addrs.insert(e.addr.clone());
            }
            FromSwarm::ExpiredListenAddr(e) => {
                self.listen_addrs.remove(e.addr);
            }
            _ => {}
        }
        // Events outside `poll` (a dial refused in `Swarm::dial`) need a poll to be delivered.
        if !self.queue.is_empty() {
            self.wake();
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        result: THandlerOutEvent<Self>,
    ) {
        // ping::Behaviour would only wrap the result in a ping::Event for its poll; intercepting
        // it here counts it while the connection is surely still known.
        self.on_ping(ping::Event {
            peer,
            connection,
            result,
        });
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.waker = Some(cx.waker().clone());
        loop {
            if let Some(action) = self.queue.pop_front() {
                return Poll::Ready(action);
            }
            if let Poll::Ready(action) = self.limits.poll(cx) {
                return Poll::Ready(action.map_out(|e| match e {}).map_in(|e| match e {}));
            }
            let now = Instant::now();
            self.close_overdue(now);
            self.close_silent(now);
            self.dial_due(now);
            if self.queue.is_empty() && !self.poll_timer(cx) {
                return Poll::Pending;
            }
        }
    }
}

/// An address without its `/p2p/` suffix, and the PeerId of the suffix.
fn split_peer(mut addr: Multiaddr) -> (Multiaddr, Option<PeerId>) {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            addr.pop();
            (addr, Some(peer))
        }
        _ => (addr, None),
    }
}

/// The IP address `addr` starts with, if any.
fn first_ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => Some(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// The remote address of a connection, without `/p2p/`.
fn remote_addr(endpoint: &ConnectedPoint) -> Multiaddr {
    split_peer(endpoint.get_remote_address().clone()).0
}

#[cfg(test)]
mod tests {
    use libp2p::swarm::ListenError;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_overflows() {
        let c = Config {
            redial_min: Duration::from_millis(100),
            redial_max: Duration::from_millis(1000),
            ..Config::default()
        };
        let got: Vec<u64> = (0..6).map(|n| c.backoff(n).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_millis(1000));
        let silly = Config {
            redial_min: Duration::ZERO,
            redial_max: Duration::from_millis(u64::MAX),
            ..Config::default()
        };
        assert_eq!(silly.backoff(0), MIN_DELAY);
        assert_eq!(silly.backoff(1000), MAX_DELAY);
        let inverted = Config {
            redial_min: Duration::from_secs(5),
            redial_max: Duration::from_secs(1),
            ..Config::default()
        };
        assert_eq!(inverted.backoff(3), Duration::from_secs(5));
    }

    #[test]
    fn defaults_follow_the_config_file() {
        let c = Config::default();
        assert_eq!(c.redial_min, Duration::from_secs(1));
        assert_eq!(c.redial_max, Duration::from_secs(30));
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.ping_max_failures, 3);
        assert_eq!(c.max_established, Some(1024));
        assert_eq!(c.max_pending_incoming_per_ip, Some(16));
        assert_eq!(
            c.new_inbound_per_ip,
            Some(RateLimit {
                per_second: 10,
                burst: 20
            })
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut rng = Rng::new();
        for _ in 0..10_000 {
            let r = rng.next_f64();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }

    /// A manager of a new node with `limit` as its per-address rate limit (and no cap on
    /// pending connections per address).
    fn manager(limit: Option<RateLimit>) -> Behaviour {
        let key = crate::NodeKey::generate(crate::KeyType::Secp256k1).unwrap();
        let config = Config {
            new_inbound_per_ip: limit,
            max_pending_incoming_per_ip: None,
            ..Config::default()
        };
        let (access, book) = (AccessList::default(), NodeIdBook::default());
        Behaviour::new(key.node_id().clone(), config, access, book)
    }

    #[test]
    fn new_inbound_connections_are_limited_per_address_except_configured_peers() {
        let mut b = manager(Some(RateLimit {
            per_second: 1,
            burst: 2,
        }));
        b.add_peer("/ip4/10.0.0.9/tcp/30300".parse().unwrap());
        b.queue.clear();
        let local: Multiaddr = "/ip4/10.0.0.5/tcp/30300".parse().unwrap();
        let mut ids = 0..;
        let mut pending = |b: &mut Behaviour, remote: &str| {
            let id = ConnectionId::new_unchecked(ids.next().unwrap());
            let remote: Multiaddr = remote.parse().unwrap();
            b.handle_pending_inbound_connection(id, &local, &remote)
        };
        assert!(pending(&mut b, "/ip4/10.0.0.1/tcp/5000").is_ok());
        assert!(pending(&mut b, "/ip4/10.0.0.1/tcp/5001").is_ok());
        let denied = pending(&mut b, "/ip4/10.0.0.1/tcp/5002").unwrap_err();
        let cause = denied.downcast_ref::<Denial>().map(|d| d.to_string());
        assert_eq!(
            cause.as_deref(),
            Some("too many new connections from 10.0.0.1")
        );
        // Reported once with the reason; the next refusals within a second are only counted.
        assert!(pending(&mut b, "/ip4/10.0.0.1/tcp/5003").is_err());
        let refused: Vec<_> = b
            .queue
            .drain(..)
            .filter_map(|a| match a {
                ToSwarm::GenerateEvent(Event::Refused { addr, reason, node }) => {
                    Some((addr, reason, node))
                }
                _ => None,
            })
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        let (addr, reason, node) = &refused[0];
        assert_eq!(addr.to_string(), "/ip4/10.0.0.1/tcp/5002");
        assert!(node.is_none());
        assert_eq!(reason.code(), "rate_limit");
        assert!(
            matches!(reason, Refusal::RateLimited { ip, unreported: 0 } if ip.to_string() == "10.0.0.1")
        );
        // Other addresses have their own budget; a configured peer's address has none.
        assert!(pending(&mut b, "/ip4/10.0.0.2/tcp/5000").is_ok());
        for port in 0..20 {
            assert!(pending(&mut b, &format!("/ip4/10.0.0.9/tcp/{port}")).is_ok());
        }
        let mut b = manager(None);
        for port in 0..20 {
            assert!(pending(&mut b, &format!("/ip4/10.0.0.1/tcp/{port}")).is_ok());
        }
    }

    #[test]
    fn pending_incoming_connections_are_capped_per_address_until_they_end() {
        let key = crate::NodeKey::generate(crate::KeyType::Secp256k1).unwrap();
        let config = Config {
            new_inbound_per_ip: None,
            max_pending_incoming_per_ip: Some(2),
            ..Config::default()
        };
        let (access, book) = (AccessList::default(), NodeIdBook::default());
        let mut b = Behaviour::new(key.node_id().clone(), config, access, book);
        b.add_peer("/ip4/10.0.0.9/tcp/30300".parse().unwrap());
        b.queue.clear();
        let local: Multiaddr = "/ip4/10.0.0.5/tcp/30300".parse().unwrap();
        let remote: Multiaddr = "/ip4/10.0.0.1/tcp/5000".parse().unwrap();
        let id = ConnectionId::new_unchecked;
        let failed = |b: &mut Behaviour, n: usize, error: &ListenError| {
            b.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
                local_addr: &local,
                send_back_addr: &remote,
                error,
                connection_id: id(n),
                peer_id: None,
            }));
        };
        let pending = |b: &mut Behaviour, n: usize| {
            b.handle_pending_inbound_connection(id(n), &local, &remote)
        };
        let endpoint = ConnectedPoint::Listener {
            local_addr: local.clone(),
            send_back_addr: remote.clone(),
        };
        let aborted = ListenError::Aborted;
        let start = Instant::now();
        // Every way a pending connection ends, many times over: the count never leaks.
        for round in 0..100 {
            let n = round * 10;
            assert!(pending(&mut b, n).is_ok());
            assert!(pending(&mut b, n + 1).is_ok());
            let denied = pending(&mut b, n + 2).unwrap_err();
            let cause = denied.downcast_ref::<Denial>().map(|d| d.to_string());
            assert_eq!(
                cause.as_deref(),
                Some("too many connections from 10.0.0.1 still handshaking")
            );
            // The swarm reports the denial as a ListenFailure: that id was never counted.
            failed(&mut b, n + 2, &ListenError::Denied { cause: denied });
            assert!(pending(&mut b, n + 3).is_err());
            // A handshake that fails or times out (a transport error), or is aborted.
            failed(&mut b, n, &aborted);
            assert!(pending(&mut b, n + 4).is_ok());
            // One that completes.
            b.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: PeerId::random(),
                connection_id: id(n + 1),
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
            // A later failure of an established id, or a repeated one, changes nothing.
            failed(&mut b, n + 1, &aborted);
            assert!(pending(&mut b, n + 5).is_ok());
            assert!(pending(&mut b, n + 6).is_err());
            failed(&mut b, n + 4, &aborted);
            failed(&mut b, n + 5, &aborted);
            failed(&mut b, n + 5, &aborted);
            let pending = b.ip_pending.as_ref().unwrap();
            assert_eq!(pending.tracked(), (0, 0), "round {round}");
        }
        // One refusal reported (with its code), the rest within the second only counted.
        let refused: Vec<Refusal> = b
            .queue
            .drain(..)
            .filter_map(|a| match a {
                ToSwarm::GenerateEvent(Event::Refused { reason, .. }) => Some(reason),
                _ => None,
            })
            .collect();
        let most = 1 + start.elapsed().as_secs() as usize;
        assert!(!refused.is_empty() && refused.len() <= most, "{refused:?}");
        assert_eq!(refused[0].code(), "pending_limit");
        assert!(matches!(
            refused[0],
            Refusal::PendingLimited { unreported: 0, .. }
        ));
        // Another address has its own slots; a configured peer's address is not counted.
        let stranger: Multiaddr = "/ip6/2001:db8::1/tcp/1".parse().unwrap();
        for n in 0..2 {
            let id = id(10_000 + n);
            assert!(
                b.handle_pending_inbound_connection(id, &local, &stranger)
                    .is_ok()
            );
        }
        let same_64: Multiaddr = "/ip6/2001:db8::2/tcp/1".parse().unwrap();
        let id3 = id(10_002);
        assert!(
            b.handle_pending_inbound_connection(id3, &local, &same_64)
                .is_err()
        );
        for n in 0..20 {
            let peer: Multiaddr = format!("/ip4/10.0.0.9/tcp/{n}").parse().unwrap();
            let id = id(20_000 + n);
            assert!(
                b.handle_pending_inbound_connection(id, &local, &peer)
                    .is_ok()
            );
        }
        assert_eq!(b.ip_pending.as_ref().unwrap().tracked(), (1, 2));
    }

    #[test]
    fn p2p_suffix_is_split_off() {
        let peer = PeerId::random();
        let a: Multiaddr = format!("/ip4/1.2.3.4/tcp/5/p2p/{peer}").parse().unwrap();
        assert_eq!(
            split_peer(a),
            ("/ip4/1.2.3.4/tcp/5".parse().unwrap(), Some(peer))
        );
        let b: Multiaddr = "/dns/x/tcp/5".parse().unwrap();
        assert_eq!(split_peer(b.clone()), (b, None));
    }
}
