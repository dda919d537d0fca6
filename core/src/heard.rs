//! When each connection last brought a frame: what the protocols tell the connection manager
//! about a connection's liveness besides ping.
//!
//! The manager closes a connection as dead when the peer has been silent too long. Ping alone
//! says little on a busy node: a ping answer waits behind everything else the peer's task does,
//! and a peer sending records and messages all the while is plainly alive. [`Heard`] is the
//! seam (like [`crate::Offences`]): a cloneable registry of one [`HeardAt`] cell per
//! connection. Each protocol's handler marks its connection's cell when frames arrive (one
//! relaxed atomic store per batch read, in the connection's own task); the manager keeps each
//! connection's cell, reads it when a deadline comes up and forgets it when the connection
//! closes or is refused.
//!
//! The same cell counts the frame-body bytes each connection moved each way, over all its
//! protocols (one relaxed atomic add per frame): what an operator's per-peer view shows.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use libp2p_swarm::ConnectionId;

/// The instant cells count from (the first use in this process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// When a frame last arrived on one connection, and the frame bytes it moved each way.
#[derive(Debug, Default)]
pub struct HeardAt {
    /// Microseconds after [`epoch`], plus one (0: never).
    micros: AtomicU64,
    /// Frame-body bytes read from the peer, over every protocol on the connection.
    bytes_in: AtomicU64,
    /// Frame-body bytes handed to the peer's streams, over every protocol on the connection.
    bytes_out: AtomicU64,
}

impl HeardAt {
    /// A frame arrived now.
    pub fn mark(&self) {
        let micros = u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX);
        self.micros
            .store(micros.saturating_add(1), Ordering::Relaxed);
    }

    /// Counts `len` frame-body bytes read from the peer.
    pub fn received(&self, len: usize) {
        self.bytes_in
            .fetch_add(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts `len` frame-body bytes handed to the peer's streams.
    pub fn sent(&self, len: usize) {
        self.bytes_out
            .fetch_add(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Frame-body bytes read from the peer so far, and handed to it.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// When a frame last arrived, if any did.
    pub fn last(&self) -> Option<Instant> {
        match self.micros.load(Ordering::Relaxed) {
            0 => None,
            m => epoch().checked_add(Duration::from_micros(m - 1)),
        }
    }
}

/// The cells of every open connection: protocols and the connection manager take theirs with
/// [`Heard::cell`] (and read it with [`HeardAt::last`]); the manager drops a closed
/// connection's with [`Heard::forget`].
#[derive(Debug, Clone, Default)]
pub struct Heard(Arc<Mutex<HashMap<ConnectionId, Arc<HeardAt>>>>);

impl Heard {
    /// The cell of `connection` (one per connection, shared by every protocol on it).
    pub fn cell(&self, connection: ConnectionId) -> Arc<HeardAt> {
        // The map holds plain data, so a panic elsewhere leaves it usable.
        let mut cells = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry(connection).or_default().clone()
    }

    /// Drops the cell of a closed connection.
    pub fn forget(&self, connection: ConnectionId) {
        let mut cells = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cells.remove(&connection);
    }

    /// How many connections have a cell.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_is_shared_per_connection_and_forgotten_on_close() {
        let heard = Heard::default();
        let (a, b) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        let cell = heard.cell(a);
        assert_eq!(cell.last(), None, "nothing heard yet");
        let before = Instant::now();
        cell.mark();
        let at = heard.cell(a).last().expect("marked");
        // Microsecond resolution: within one of the instant around the mark.
        assert!(at + Duration::from_micros(1) >= before && at <= Instant::now());
        assert!(
            Arc::ptr_eq(&cell, &heard.cell(a)),
            "one cell per connection"
        );
        assert_eq!(cell.bytes(), (0, 0));
        cell.received(5);
        cell.sent(7);
        heard.cell(a).sent(1);
        assert_eq!(heard.cell(a).bytes(), (5, 8), "one count per connection");
        heard.cell(b);
        assert_eq!(heard.cell(b).bytes(), (0, 0));
        assert_eq!(heard.len(), 2);
        heard.forget(a);
        heard.forget(b);
        assert_eq!(heard.len(), 0);
        assert_eq!(heard.cell(a).last(), None);
    }
}
