//! The HTTP endpoint of a node: Prometheus metrics (`GET /metrics`) and, given the node, the
//! operator's network view (`GET /peers`, `GET /network.json`, `GET /network`; the JSON is
//! [`crate::view`]'s). [`MetricsServer`] is also [`crate::metrics::MetricsServer`].
//!
//! It must stay scrapable while clients that are slow, silent or hostile hold connections
//! (slowloris: a head sent byte by byte, nothing sent, a response never read). So:
//!
//! - connections are accepted continuously (none waits in the listen backlog behind others);
//! - at most [`MAX_CONNECTIONS`] are held in all and [`MAX_PER_IP`] per client address; a
//!   connection past either bound takes the place of the oldest one (of that address, or of
//!   any) that has not yet sent a whole request head, else of the oldest one that has not read
//!   its answer for [`SLOW_READER`], and is closed at once if there is none (the others are
//!   being answered, and end within their time limit);
//! - a request head must fit in [`MAX_HEAD`] bytes and arrive within [`HEAD_TIMEOUT`] (within
//!   [`HEAD_TIMEOUT_BUSY`] while more than half the connections are held); a connection ends
//!   after [`CONNECTION_TIMEOUT`], whatever it is doing (a client that does not read its
//!   response included), and serves one request.
//!
//! Memory is bounded by the connections held times one head buffer and one metrics answer,
//! plus the few JSON answers of the view made or written at once (see `routes.rs`), each of
//! bounded size.

mod routes;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

use crate::{metrics::Registry, node::Node};

/// Connections held at most, over all clients.
pub const MAX_CONNECTIONS: usize = 128;
/// Connections held at most per client IP address.
pub const MAX_PER_IP: usize = 32;
/// Largest request head (hyper's smallest read buffer); larger heads get 431 and a close.
pub const MAX_HEAD: usize = 8192;
/// A client must send its request head within this time.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The head timeout of connections accepted while more than half of [`MAX_CONNECTIONS`] are
/// held.
pub const HEAD_TIMEOUT_BUSY: Duration = Duration::from_secs(1);
/// A whole connection, slow readers included, ends after this time.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection answered for this long already is a slow reader: a new connection may take
/// its place when the endpoint is full (an answer leaves in milliseconds to a client that
/// reads it).
pub const SLOW_READER: Duration = Duration::from_secs(1);

/// Serves a registry as OpenMetrics text on `GET /metrics` and, when built with a node
/// ([`MetricsServer::bind_with_node`]), the network view on `GET /peers`, `GET /network.json`
/// and `GET /network` (HTTP/1.1, one request per connection). Stops when dropped.
///
/// It stays scrapable while slow or hostile clients hold connections: it accepts continuously
/// and holds at most [`MAX_CONNECTIONS`] connections, [`MAX_PER_IP`] per client address; one
/// past either bound takes the place of the oldest connection that has not sent a whole request
/// head, else of the oldest that has not read its answer for [`SLOW_READER`] (or is closed at
/// once if there is none). A head must fit in [`MAX_HEAD`] bytes and arrive
/// within [`HEAD_TIMEOUT`] ([`HEAD_TIMEOUT_BUSY`] while more than half the connections are
/// held); a connection ends after [`CONNECTION_TIMEOUT`] whatever it is doing.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Listens on `addr` (port 0 picks a free port) and serves `registry` on `/metrics`.
    pub async fn bind(addr: SocketAddr, registry: Arc<Registry>) -> std::io::Result<Self> {
        Self::serve(addr, routes::Context::new(registry, None)).await
    }

    /// Like [`MetricsServer::bind`], and serves `node`'s view of the network too: its peers
    /// (`GET /peers`, JSON), the network as its flood records describe it (`GET
    /// /network.json`) and a page drawing it (`GET /network`).
    pub async fn bind_with_node(
        addr: SocketAddr,
        registry: Arc<Registry>,
        node: Node,
    ) -> std::io::Result<Self> {
        Self::serve(addr, routes::Context::new(registry, Some(node))).await
    }

    async fn serve(addr: SocketAddr, context: routes::Context) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, Arc::new(context)));
        Ok(MetricsServer { local_addr, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection held.
#[derive(Debug)]
struct Held {
    ip: IpAddr,
    /// When it sent a whole request head (it is being answered since).
    answering: Option<Instant>,
    /// Its task, to close it when a newer connection takes its place.
    task: Option<AbortHandle>,
}

/// The connections held, oldest first (by the number given at accept).
#[derive(Debug, Default)]
struct Table {
    next: u64,
    held: BTreeMap<u64, Held>,
}

impl Table {
    /// Makes room for a new connection from `ip` and gives its number, and the task to abort
    /// (once the table is unlocked) of the connection it replaces, of `ip` when `ip` is at its
    /// bound, else of any client when all are: the oldest one still without a whole head, or
    /// failing that the oldest one answered for [`SLOW_READER`] already (a client not reading
    /// its answer). Err when there is no room and nothing to evict.
    fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(u64, Option<AbortHandle>), ()> {
        let of_ip = self.held.values().filter(|h| h.ip == ip).count();
        let victim = if of_ip >= MAX_PER_IP {
            Some(self.evictable(|h| h.ip == ip, now).ok_or(())?)
        } else if self.held.len() >= MAX_CONNECTIONS {
            Some(self.evictable(|_| true, now).ok_or(())?)
        } else {
            None
        };
        let evicted = victim
            .and_then(|id| self.held.remove(&id))
            .and_then(|h| h.task);
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.held.insert(
            id,
            Held {
                ip,
                answering: None,
                task: None,
            },
        );
        Ok((id, evicted))
    }

    /// The oldest connection matching `pick` that has not sent a whole head, else the oldest
    /// one being answered for [`SLOW_READER`] or longer.
    fn evictable(&self, pick: impl Fn(&Held) -> bool, now: Instant) -> Option<u64> {
        let oldest = |evict: &dyn Fn(Option<Instant>) -> bool| {
            self.held
                .iter()
                .find(|(_, h)| evict(h.answering) && pick(h))
                .map(|(id, _)| *id)
        };
        oldest(&|a| a.is_none()).or_else(|| {
            oldest(&|a| a.is_some_and(|since| now.saturating_duration_since(since) >= SLOW_READER))
        })
    }
}

/// The shared table, and a connection's place in it (left when dropped).
#[derive(Debug, Clone, Default)]
struct Conns(Arc<Mutex<Table>>);

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Plain data: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's place in [`Conns`]; leaving it (the task ending, or being aborted) frees it.
struct Place {
    conns: Conns,
    id: u64,
}

impl Place {
    /// The request head is in: the connection is evicted only as a slow reader from now on.
    fn answering(&self) {
        if let Some(h) = self.conns.lock().held.get_mut(&self.id) {
            h.answering.get_or_insert_with(Instant::now);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.conns.lock().held.remove(&self.id);
    }
}

async fn accept_loop(listener: TcpListener, context: Arc<routes::Context>) {
    let conns = Conns::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admitted = {
            let mut table = conns.lock();
            let busy = table.held.len() >= MAX_CONNECTIONS / 2;
            table
                .admit(peer.ip(), Instant::now())
                .map(|(id, evicted)| (id, evicted, busy))
        };
        let Ok((id, evicted, busy)) = admitted else {
            tracing::debug!(%peer, "metrics endpoint full: connection closed");
            continue;
        };
        if let Some(task) = evicted {
            tracing::debug!(%peer, "metrics endpoint full: an idle or slow connection closed for it");
            task.abort();
        }
        let place = Place {
            conns: conns.clone(),
            id,
        };
        let head_timeout = if busy {
            HEAD_TIMEOUT_BUSY
        } else {
            HEAD_TIMEOUT
        };
        let task = tokio::spawn(serve(stream, peer, place, head_timeout, context.clone()));
        // The task may have ended already: then its place is gone and nothing is kept.
        if let Some(h) = conns.lock().held.get_mut(&id) {
            h.task = Some(task.abort_handle());
        }
    }
}

/// Serves one connection within [`CONNECTION_TIMEOUT`].
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    place: Place,
    head_timeout: Duration,
    context: Arc<routes::Context>,
) {
    let place = Arc::new(place);
    // An answer that asked the node keeps its place until the connection ends.
    let slot = Arc::new(routes::Slot::default());
    let service = {
        let (place, slot) = (place.clone(), slot.clone());
        hyper::service::service_fn(move |request| {
            place.answering();
            let (context, slot) = (context.clone(), slot.clone());
            async move { Ok::<_, Infallible>(context.respond(request, &slot).await) }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics request failed"),
        Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
    }
    drop((place, slot));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_without_a_head_first_of_the_same_address() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut t = Table::default();
        let now = Instant::now();
        let first = t.admit(a, now).unwrap().0;
        t.held.get_mut(&first).unwrap().answering = Some(now);
        let mut a_ids = vec![first];
        for _ in 1..MAX_PER_IP {
            a_ids.push(t.admit(a, now).unwrap().0);
        }
        assert_eq!(t.held.len(), MAX_PER_IP);
        // One more from `a`: the oldest of `a` still without a head goes, not the answering one.
        let newest = t.admit(a, now).unwrap().0;
        assert_eq!(t.held.len(), MAX_PER_IP);
        assert!(t.held.contains_key(&first), "answering connections stay");
        assert!(
            !t.held.contains_key(&a_ids[1]),
            "the oldest waiting one went"
        );
        assert!(t.held.contains_key(&newest));
        // Another address is not bounded by `a`'s connections.
        let other = t.admit(b, now).unwrap().0;
        assert_eq!(t.held[&other].ip, b);
        // All of `a`'s answering: a new one from `a` finds no room, until one of them has been
        // answered for SLOW_READER; then it goes.
        for h in t.held.values_mut().filter(|h| h.ip == a) {
            h.answering = Some(now);
        }
        assert!(t.admit(a, now).is_err());
        assert!(t.admit(a, now + SLOW_READER / 2).is_err());
        assert_eq!(t.held.values().filter(|h| h.ip == a).count(), MAX_PER_IP);
        let later = now + SLOW_READER;
        for h in t.held.values_mut().filter(|h| h.ip == a) {
            h.answering = Some(later);
        }
        t.held.get_mut(&newest).unwrap().answering = Some(now);
        let slow = t.admit(a, later).unwrap().0;
        assert!(!t.held.contains_key(&newest), "the slow reader went");
        assert!(t.held.contains_key(&first), "not the others, though older");
        assert!(t.held.contains_key(&slow));
        assert_eq!(t.held.values().filter(|h| h.ip == a).count(), MAX_PER_IP);
    }

    #[test]
    fn the_total_bound_evicts_across_addresses_and_holds_at_most_the_bound() {
        let mut t = Table::default();
        let now = Instant::now();
        let mut ips = (0u32..).map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        let first = t.admit(ips.next().unwrap(), now).unwrap().0;
        for ip in ips.by_ref().take(MAX_CONNECTIONS - 1) {
            t.admit(ip, now).unwrap();
        }
        assert_eq!(t.held.len(), MAX_CONNECTIONS);
        for ip in ips.by_ref().take(3 * MAX_CONNECTIONS) {
            t.admit(ip, now).unwrap();
            assert_eq!(t.held.len(), MAX_CONNECTIONS);
        }
        assert!(!t.held.contains_key(&first));
        for h in t.held.values_mut() {
            h.answering = Some(now);
        }
        assert!(t.admit(ips.next().unwrap(), now).is_err());
        assert_eq!(t.held.len(), MAX_CONNECTIONS);
    }
}
