//! Rate limits shared by every connection they cover: outgoing bytes per second for the whole
//! node, per module, per connection, and incoming requests per second per module.
//!
//! Each limit is a token bucket that may go into debt: whatever is ready to go takes its bytes
//! at once when the bucket is not in debt, and the next send waits until the debt is paid back.
//! So a 64 KiB chunk passes a 10 KiB/s limit (then nothing for 6.4 s) and the long-run rate is
//! the limit exactly, however the sizes of what is sent compare to the burst. `governor` (the
//! usual crate) refuses a take beyond its burst outright and cannot take from several buckets as
//! one (total, module and connection together), hence this small type.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use libp2p_core::{Multiaddr, multiaddr::Protocol};
use libp2p_identity::PeerId;

/// The longest a bucket lets its owner wait in one go: waits are re-checked at least this often.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The tokens of a bucket that may go into debt, and when they were counted: what
/// [`Bucket`] and [`PathPace`] share.
#[derive(Debug, Clone, Copy, Default)]
struct Tokens {
    held: f64,
    at: Option<Instant>,
}

impl Tokens {
    /// Adds what `rate` gave since they were counted, up to `burst`.
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = self
            .at
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.held = (self.held + elapsed * rate).min(burst);
        self.at = Some(self.at.map_or(now, |at| now.max(at)));
    }

    /// Takes `n`, into debt if need be: at most ten seconds' worth (and a burst), whatever
    /// the caller does.
    fn take(&mut self, n: usize, rate: f64, burst: f64) {
        self.held = (self.held - n as f64).max(-10.0 * rate - burst);
    }
}

/// A token bucket of units (bytes, or requests) per second that may go into debt.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<Tokens>,
}

impl Bucket {
    /// A full bucket of `rate` units per second holding at most `burst` (at least 1).
    pub fn new(rate: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        Bucket {
            rate: rate.max(1) as f64,
            burst,
            state: Mutex::new(Tokens {
                held: burst,
                at: Some(Instant::now()),
            }),
        }
    }

    /// The tokens, refilled to `now`.
    fn tokens(&self, now: Instant) -> std::sync::MutexGuard<'_, Tokens> {
        let mut tokens = self.state.lock().unwrap_or_else(|e| e.into_inner());
        tokens.refill(self.rate, self.burst, now);
        tokens
    }

    /// How long until the bucket is out of debt (zero: it is now).
    pub fn wait(&self, now: Instant) -> Duration {
        wait_for(self.tokens(now).held, self.rate)
    }

    /// Takes `n` units, into debt if need be (call when [`Bucket::wait`] is zero).
    pub fn take(&self, n: usize, now: Instant) {
        self.tokens(now).take(n, self.rate, self.burst);
    }

    /// Takes one unit if the bucket holds one (no debt): for counting requests.
    pub fn try_take_one(&self, now: Instant) -> bool {
        let mut tokens = self.tokens(now);
        if tokens.held >= 1.0 {
            tokens.held -= 1.0;
            true
        } else {
            false
        }
    }
}

fn wait_for(tokens: f64, rate: f64) -> Duration {
    if tokens >= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64((-tokens / rate).max(0.0005)).min(MAX_WAIT)
    }
}

/// Outgoing byte limits in bytes per second; 0 means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rates {
    /// Everything this node sends, over all its connections (exempt modules aside).
    pub total: u64,
    /// What this node sends on one connection (exempt modules aside).
    pub per_connection: u64,
    /// What this node sends for one module, over all its connections.
    pub per_module: HashMap<u16, u64>,
    /// Modules no limit applies to (FISCO's `modules_without_bw_limit`).
    pub exempt: HashSet<u16>,
}

impl Rates {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.total > 0 || self.per_connection > 0 || self.per_module.values().any(|r| *r > 0)
    }
}

/// Time spent waiting for a limit, in microseconds, per module (and in all).
#[derive(Debug, Default)]
pub struct Throttled {
    all: AtomicU64,
    modules: Mutex<HashMap<u16, Arc<AtomicU64>>>,
}

impl Throttled {
    /// Counts `wait` against `module`.
    pub fn add(&self, module: u16, wait: Duration) {
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.all.fetch_add(us, Ordering::Relaxed);
        let cell = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            modules.entry(module).or_default().clone()
        };
        cell.fetch_add(us, Ordering::Relaxed);
    }

    /// Total time waited, over all modules.
    pub fn total(&self) -> Duration {
        Duration::from_micros(self.all.load(Ordering::Relaxed))
    }

    /// Time waited per module, sorted by module.
    pub fn per_module(&self) -> Vec<(u16, Duration)> {
        let modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = modules
            .iter()
            .map(|(m, us)| (*m, Duration::from_micros(us.load(Ordering::Relaxed))))
            .collect();
        all.sort_unstable_by_key(|(m, _)| *m);
        all
    }
}

/// The node's outgoing limits: the shared buckets, and how to make a connection's own.
#[derive(Debug)]
pub struct Limits {
    rates: Rates,
    burst: u64,
    total: Option<Bucket>,
    modules: HashMap<u16, Bucket>,
    throttled: Throttled,
}

impl Limits {
    /// The buckets for `rates`, each holding at most `burst` bytes (or 50 ms of its rate, when
    /// that is more): small enough that a measured rate over a few seconds is the limit.
    pub fn new(rates: Rates, burst: u64) -> Arc<Self> {
        let bucket = |rate: u64| Bucket::new(rate, burst.max(rate / 20));
        Arc::new(Limits {
            total: (rates.total > 0).then(|| bucket(rates.total)),
            modules: rates
                .per_module
                .iter()
                .filter(|(_, r)| **r > 0)
                .map(|(m, r)| (*m, bucket(*r)))
                .collect(),
            rates,
            burst,
            throttled: Throttled::default(),
        })
    }

    /// No limits.
    pub fn none() -> Arc<Self> {
        Limits::new(Rates::default(), 0)
    }

    /// The rates these limits hold.
    pub fn rates(&self) -> &Rates {
        &self.rates
    }

    /// A bucket for one connection, when there is a per-connection limit.
    pub fn connection_bucket(&self) -> Option<Bucket> {
        let rate = self.rates.per_connection;
        (rate > 0).then(|| Bucket::new(rate, self.burst.max(rate / 20)))
    }

    /// Whether `module` is limited at all (not exempt, and some limit applies to it).
    pub fn limits(&self, module: u16, connection: &ConnectionLimits) -> bool {
        !self.exempt(module)
            && (self.buckets(module, connection).next().is_some() || connection.path.is_some())
    }

    fn exempt(&self, module: u16) -> bool {
        self.rates.exempt.contains(&module)
    }

    /// The buckets that cover `module` unless it is exempt: the node's, the connection's and
    /// the module's own.
    fn buckets<'a>(
        &'a self,
        module: u16,
        connection: &'a ConnectionLimits,
    ) -> impl Iterator<Item = &'a Bucket> {
        [
            self.total.as_ref(),
            connection.bucket.as_deref(),
            self.modules.get(&module),
        ]
        .into_iter()
        .flatten()
    }

    /// How long `module` must wait before it may send on a connection with `connection`'s
    /// limits (zero: now). Exempt modules never wait.
    pub fn wait(&self, module: u16, connection: &ConnectionLimits, now: Instant) -> Duration {
        if self.exempt(module) {
            return Duration::ZERO;
        }
        let path = connection.path.as_ref().map(|p| p.wait(now));
        self.buckets(module, connection)
            .map(|b| b.wait(now))
            .chain(path)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Takes `bytes` of `module` from every bucket (and path pace) that covers it.
    pub fn take(&self, module: u16, connection: &ConnectionLimits, bytes: usize, now: Instant) {
        if self.exempt(module) {
            return;
        }
        for bucket in self.buckets(module, connection) {
            bucket.take(bytes, now);
        }
        if let Some(path) = &connection.path {
            path.take(bytes, now);
        }
    }

    /// Time spent waiting for these limits.
    pub fn throttled(&self) -> &Throttled {
        &self.throttled
    }
}

/// A connection's own limits, shared by its streams: the operator's per-connection bucket and
/// the rate its network path takes now.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLimits {
    /// The operator's limit per connection ([`Limits::connection_bucket`]).
    pub bucket: Option<Arc<Bucket>>,
    /// The rate the connection's network path takes now ([`PathPace`]).
    pub path: Option<Arc<PathPace>>,
}

/// The smallest burst of a [`PathPace`]: what goes at once after a pause.
const PATH_BURST: f64 = 64.0 * 1024.0;

/// The rate one connection's network path takes now, set from the connection's socket (the
/// queuing delay it measures, see bcos-p2p's `paced`) and kept by unicast, as a bucket that
/// may go into debt like [`Bucket`]. Without a rate nothing waits. Exempt modules pass it, as
/// they pass every limit.
#[derive(Debug, Default)]
pub struct PathPace {
    /// The rate (bytes/s), and the tokens.
    state: Mutex<(Option<f64>, Tokens)>,
    /// The path's round trip without a queue, in microseconds, as the socket measured it
    /// when it connected (0: unknown).
    base_rtt_us: AtomicU64,
}

impl PathPace {
    /// Records the path's round trip without a queue (the socket's smallest so far).
    pub fn set_base_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.base_rtt_us.store(us, Ordering::Relaxed);
    }

    /// The path's round trip without a queue, when the socket measured it.
    pub fn base_rtt(&self) -> Option<Duration> {
        match self.base_rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Sets the rate in bytes per second (`None`: no limit).
    pub fn set_rate(&self, rate: Option<f64>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rate = rate.filter(|r| r.is_finite() && *r >= 1.0);
        if state.0.is_none() && rate.is_some() {
            // Pacing starts without credit: a burst of at most what a refill gives.
            state.1 = Tokens::default();
        }
        state.0 = rate;
    }

    /// The rate in bytes per second (`None`: no limit).
    pub fn rate(&self) -> Option<f64> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The burst at `rate`: [`PATH_BURST`], or 5 ms of the rate when that is more.
    fn burst(rate: f64) -> f64 {
        PATH_BURST.max(rate * 0.005)
    }

    /// How long until what waits may go (zero: now, or no rate).
    pub fn wait(&self, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rate) = state.0 else {
            return Duration::ZERO;
        };
        state.1.refill(rate, Self::burst(rate), now);
        wait_for(state.1.held, rate)
    }

    /// Takes `n` bytes, into debt if need be (at most ten seconds' worth).
    pub fn take(&self, n: usize, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rate) = state.0 {
            state.1.refill(rate, Self::burst(rate), now);
            state.1.take(n, rate, Self::burst(rate));
        }
    }
}

/// The [`PathPace`]s of a swarm's TCP connections: the transport makes one per socket
/// ([`PathPaces::register`], by the peer's socket address), binds it to the peer once the
/// handshake names it ([`PathPaces::bind`]), and unicast takes it for the connection when the
/// swarm reports the connection established ([`PathPaces::take`]). Only live paces are kept (a
/// socket that never became a connection drops its own).
#[derive(Debug, Default)]
pub struct PathPaces {
    open: Mutex<Open>,
    /// Times a connection started pacing, and stopped (or closed while pacing).
    started: AtomicU64,
    stopped: AtomicU64,
}

/// The paces not taken yet: by socket address, and those bound to their peer.
#[derive(Debug, Default)]
struct Open {
    by_addr: HashMap<SocketAddr, Weak<PathPace>>,
    by_peer: HashMap<PeerId, Vec<(SocketAddr, Weak<PathPace>)>>,
}

impl Open {
    /// Forgets the paces whose sockets are gone.
    fn prune(&mut self) {
        self.by_addr.retain(|_, p| p.strong_count() > 0);
        self.by_peer.retain(|_, paces| {
            paces.retain(|(_, p)| p.strong_count() > 0);
            !paces.is_empty()
        });
    }
}

impl PathPaces {
    /// Counts a connection that starts (`true`) or stops (`false`) pacing.
    pub fn count(&self, pacing: bool) {
        let counter = if pacing { &self.started } else { &self.stopped };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times a connection started pacing (metrics).
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// How many connections pace now (metrics).
    pub fn pacing_now(&self) -> u64 {
        // `stopped` first: a start between the two loads must not make it look higher.
        let stopped = self.stopped.load(Ordering::Relaxed);
        self.started().saturating_sub(stopped)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Paces of live sockets not taken by a connection yet (sockets in their handshake, or
    /// connections unicast never learnt of).
    pub fn waiting(&self) -> usize {
        let mut open = self.open();
        open.prune();
        open.by_addr.len() + open.by_peer.values().map(Vec::len).sum::<usize>()
    }

    /// A new pace for the socket to `remote`, held here until [`PathPaces::take`]: the socket
    /// keeps the returned handle.
    pub fn register(&self, remote: SocketAddr) -> Arc<PathPace> {
        let pace = Arc::new(PathPace::default());
        let mut open = self.open();
        open.prune();
        open.by_addr.insert(remote, Arc::downgrade(&pace));
        pace
    }

    /// Binds the pace of the socket to `remote` (`/ip4|ip6/…/tcp/…`, as the transport saw it)
    /// to `peer`, whom the handshake on it authenticated; returns it. A connection dialled by
    /// a DNS name is then found by its peer, though the swarm reports it by the name.
    pub fn bind(&self, peer: PeerId, remote: &Multiaddr) -> Option<Arc<PathPace>> {
        let addr = socket_addr(remote)?;
        let mut open = self.open();
        let weak = open.by_addr.remove(&addr)?;
        let pace = weak.upgrade()?;
        open.by_peer.entry(peer).or_default().push((addr, weak));
        Some(pace)
    }

    /// The pace of the connection to `peer` at `remote`, once: the one bound at that socket
    /// address; for a `remote` that is a DNS name, the one bound to `peer` first; a pace never
    /// bound is found by its socket address. None for other addresses (routed connections).
    pub fn take(&self, peer: &PeerId, remote: &Multiaddr) -> Option<Arc<PathPace>> {
        let addr = socket_addr(remote);
        let mut open = self.open();
        // Dead paces out first; a list this empties goes at the next prune.
        open.prune();
        let bound = open.by_peer.get_mut(peer).and_then(|bound| {
            let at = match addr {
                Some(addr) => bound.iter().position(|(a, _)| *a == addr),
                None if is_dns(remote) => (!bound.is_empty()).then_some(0),
                // Not a socket's address (a routed connection's): no pace of a socket.
                None => None,
            };
            at.map(|at| bound.remove(at).1)
        });
        match bound {
            Some(weak) => weak.upgrade(),
            None => open.by_addr.remove(&addr?)?.upgrade(),
        }
    }
}

/// Whether `addr` starts with a DNS name.
fn is_dns(addr: &Multiaddr) -> bool {
    matches!(
        addr.iter().next(),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_))
    )
}

/// The IP address and TCP port a multiaddr starts with.
fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => std::net::IpAddr::V4(ip),
        Protocol::Ip6(ip) => std::net::IpAddr::V6(ip),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// Incoming requests per second per module, for the whole node; a module not listed has no
/// limit.
#[derive(Debug, Default)]
pub struct RequestLimits {
    modules: HashMap<u16, Bucket>,
    refused: Mutex<HashMap<u16, u64>>,
}

impl RequestLimits {
    /// Buckets of `rates` (module → requests per second, 0 = no limit), bursts of one second.
    pub fn new(rates: &HashMap<u16, u32>) -> Arc<Self> {
        Arc::new(RequestLimits {
            modules: rates
                .iter()
                .filter(|(_, r)| **r > 0)
                .map(|(m, r)| (*m, Bucket::new(u64::from(*r), u64::from(*r))))
                .collect(),
            refused: Mutex::default(),
        })
    }

    /// Whether a request for `module` may be handled now (counting a refusal when not); the
    /// clock is read only for a limited module.
    pub fn admit(&self, module: u16) -> bool {
        self.modules
            .get(&module)
            .is_none_or(|bucket| self.take_one(module, bucket, Instant::now()))
    }

    /// [`RequestLimits::admit`] at `now`.
    pub fn admit_at(&self, module: u16, now: Instant) -> bool {
        self.modules
            .get(&module)
            .is_none_or(|bucket| self.take_one(module, bucket, now))
    }

    /// Takes one request from `module`'s bucket, or counts a refusal.
    fn take_one(&self, module: u16, bucket: &Bucket, now: Instant) -> bool {
        if bucket.try_take_one(now) {
            return true;
        }
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *refused.entry(module).or_default() += 1;
        false
    }

    /// Requests refused so far, per limited module, sorted by module.
    pub fn refused(&self) -> Vec<(u16, u64)> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = refused.iter().map(|(m, n)| (*m, *n)).collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_pace_without_a_rate_never_waits_and_with_one_keeps_it() {
        let p = PathPace::default();
        let start = Instant::now();
        p.take(10 << 20, start);
        assert_eq!(p.wait(start), Duration::ZERO);
        p.set_rate(Some(1_000_000.0));
        // Starts without credit beyond one refill; 5 s of 64 KiB pieces sent whenever allowed
        // come to the rate.
        let (mut now, mut sent) = (start, 0usize);
        let end = start + Duration::from_secs(5);
        while now < end {
            let wait = p.wait(now);
            if wait.is_zero() {
                p.take(64 * 1024, now);
                sent += 64 * 1024;
            } else {
                now += wait;
            }
        }
        let rate = sent as f64 / 5.0;
        assert!((0.98e6..=1.03e6).contains(&rate), "{rate}");
        p.set_rate(None);
        assert_eq!(p.wait(now), Duration::ZERO);
        // Nonsense rates are no rate.
        p.set_rate(Some(f64::NAN));
        assert_eq!(p.rate(), None);
    }

    #[test]
    fn path_paces_are_found_once_by_the_peer_address_and_only_while_alive() {
        let paces = PathPaces::default();
        let peer = PeerId::random();
        let remote: SocketAddr = "10.0.0.2:30300".parse().unwrap();
        let kept = paces.register(remote);
        let dropped = paces.register("10.0.0.3:1".parse().unwrap());
        drop(dropped);
        let addr: Multiaddr = "/ip4/10.0.0.2/tcp/30300".parse().unwrap();
        let taken = paces.take(&peer, &addr).expect("registered");
        assert!(Arc::ptr_eq(&taken, &kept));
        assert!(paces.take(&peer, &addr).is_none(), "once");
        let gone: Multiaddr = "/ip4/10.0.0.3/tcp/1".parse().unwrap();
        assert!(paces.take(&peer, &gone).is_none());
        assert!(
            paces
                .take(&peer, &"/dns4/x/tcp/1".parse().unwrap())
                .is_none()
        );
        // Dead entries go when the next registers.
        let _live = paces.register("10.0.0.4:1".parse().unwrap());
        let open = paces.open.lock().unwrap();
        assert_eq!(open.by_addr.len(), 1);
        assert!(open.by_addr.contains_key(&"10.0.0.4:1".parse().unwrap()));
    }

    #[test]
    fn bound_paces_are_found_by_their_peer_even_under_a_dns_name() {
        let paces = PathPaces::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let to_a1 = paces.register("10.0.0.2:30300".parse().unwrap());
        let to_a2 = paces.register("10.0.0.2:30301".parse().unwrap());
        let to_b = paces.register("10.0.0.3:30300".parse().unwrap());
        to_a1.set_base_rtt(Duration::from_micros(1500));
        let ip = |s: &str| -> Multiaddr { s.parse().unwrap() };
        // The transport binds each socket as its handshake ends, by the address it reached.
        let bound = paces.bind(a, &ip("/ip4/10.0.0.2/tcp/30300")).unwrap();
        assert_eq!(bound.base_rtt(), Some(Duration::from_micros(1500)));
        assert!(paces.bind(a, &ip("/ip4/10.0.0.2/tcp/30301")).is_some());
        assert!(paces.bind(b, &ip("/ip4/10.0.0.3/tcp/30300")).is_some());
        assert!(
            paces.bind(b, &ip("/ip4/10.0.0.9/tcp/1")).is_none(),
            "never registered"
        );
        // The swarm reports a's second connection by its socket address, b's by a DNS name.
        let taken = paces.take(&a, &ip("/ip4/10.0.0.2/tcp/30301")).unwrap();
        assert!(Arc::ptr_eq(&taken, &to_a2));
        let taken = paces.take(&b, &ip("/dns4/b.example/tcp/30300")).unwrap();
        assert!(Arc::ptr_eq(&taken, &to_b));
        assert!(
            paces.take(&b, &ip("/dns4/b.example/tcp/30300")).is_none(),
            "once"
        );
        // Not another peer's, whatever the address.
        assert!(paces.take(&b, &ip("/ip4/10.0.0.2/tcp/30300")).is_none());
        // Nor a socket's pace for a connection through a relay.
        assert!(paces.take(&a, &ip("/p2p-circuit")).is_none());
        let taken = paces.take(&a, &ip("/dns4/a.example/tcp/30300")).unwrap();
        assert!(Arc::ptr_eq(&taken, &to_a1));
        // A bound pace whose socket closed is not handed out, and goes at the next register.
        let to_c = paces.register("10.0.0.5:1".parse().unwrap());
        let c = PeerId::random();
        paces.bind(c, &ip("/ip4/10.0.0.5/tcp/1")).unwrap();
        drop(to_c);
        let _next = paces.register("10.0.0.6:1".parse().unwrap());
        assert!(paces.open.lock().unwrap().by_peer.is_empty());
        assert!(paces.take(&c, &ip("/dns4/c.example/tcp/1")).is_none());
        assert_eq!(paces.waiting(), 1, "the last registered");
    }

    #[test]
    fn a_bucket_in_debt_waits_for_exactly_its_debt() {
        let b = Bucket::new(1000, 100);
        let start = Instant::now();
        assert_eq!(b.wait(start), Duration::ZERO);
        b.take(600, start); // 100 - 600 = -500: half a second of debt
        let wait = b.wait(start);
        assert!(
            wait > Duration::from_millis(490) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(b.wait(start + Duration::from_millis(500)), Duration::ZERO);
        // Refills stop at the burst.
        let later = start + Duration::from_secs(100);
        b.take(100, later);
        assert_eq!(b.wait(later), Duration::ZERO);
        b.take(1, later);
        assert!(b.wait(later) > Duration::ZERO);
    }

    #[test]
    fn the_long_run_rate_is_the_limit_whatever_the_chunk_size() {
        // Simulated clock: send 64 KiB chunks whenever allowed, for 5 s at 50 MB/s.
        let start = Instant::now();
        let limits = Limits::new(
            Rates {
                total: 50_000_000,
                ..Rates::default()
            },
            64 * 1024,
        );
        let (mut now, mut sent) = (start, 0usize);
        let none = ConnectionLimits::default();
        for _ in 0..1_000_000 {
            if now >= start + Duration::from_secs(5) {
                break;
            }
            let wait = limits.wait(7, &none, now);
            if wait.is_zero() {
                limits.take(7, &none, 65536, now);
                sent += 65536;
            } else {
                now += wait;
            }
        }
        let ratio = sent as f64 / 5.0 / 50_000_000.0;
        assert!((0.99..1.02).contains(&ratio), "{ratio}");
    }

    #[test]
    fn exempt_modules_pass_and_do_not_spend() {
        let now = Instant::now();
        let limits = Limits::new(
            Rates {
                total: 1000,
                exempt: [1000].into(),
                ..Rates::default()
            },
            1000,
        );
        let none = ConnectionLimits::default();
        limits.take(1000, &none, 1 << 20, now);
        assert_eq!(limits.wait(1000, &none, now), Duration::ZERO);
        assert_eq!(limits.wait(2000, &none, now), Duration::ZERO);
        limits.take(2000, &none, 5000, now);
        assert!(limits.wait(2000, &none, now) > Duration::ZERO);
        assert_eq!(limits.wait(1000, &none, now), Duration::ZERO);
        assert!(!limits.limits(1000, &none) && limits.limits(2000, &none));
    }

    #[test]
    fn request_limits_count_refusals_per_module() {
        let now = Instant::now();
        let limits = RequestLimits::new(&[(5, 3)].into());
        let admitted = (0..10).filter(|_| limits.admit_at(5, now)).count();
        assert_eq!(admitted, 3);
        assert!((0..10).all(|_| limits.admit_at(6, now)));
        assert_eq!(limits.refused(), vec![(5, 7)]);
        assert!(limits.admit_at(5, now + Duration::from_millis(400)));
    }
}
