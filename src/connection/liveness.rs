//! Finding dead connections: libp2p's ping runs on every connection (its handler is the
//! manager's), and the protocols mark each frame a peer sends ([`Heard`]). A connection is
//! closed as dead when for [`Config::dead_after`] neither a ping was answered nor a frame came,
//! or when [`Config::ping_max_failures`] pings in a row failed with no frame coming meanwhile.
//! A busy peer answers pings late (the answer waits behind everything its task does) while its
//! frames keep coming; counting those keeps a loaded mesh from tearing down live connections,
//! which costs far more than the load itself.

use std::time::{Duration, Instant};

use libp2p::{
    PeerId, ping,
    swarm::{CloseConnection, ConnectionId, ToSwarm},
};

#[cfg(doc)]
use super::Config;
use super::{
    Behaviour, Event, Heard,
    peers::{Closing, Conn},
};

impl Conn {
    /// The last sign of life: a ping answered, a frame heard (when it is later), or the
    /// connection coming up.
    fn alive_at(&self) -> Instant {
        self.heard
            .last()
            .map_or(self.answered, |h| h.max(self.answered))
    }

    /// When this connection counts as dead unless a ping is answered or a frame comes first;
    /// none while it is closing or when the peer does not speak ping.
    fn silent_deadline(&self, dead_after: Duration) -> Option<Instant> {
        (self.closing.is_none() && self.pings).then(|| self.alive_at() + dead_after)
    }
}

impl Behaviour {
    /// The handle the protocols mark each connection's frames in; give a clone to each of them
    /// (the composed [`crate::behaviour::Behaviour`] does). Without it only pings count.
    pub fn heard(&self) -> Heard {
        self.heard.clone()
    }

    /// Closes connection `id` to `peer` as dead.
    fn close_dead(&mut self, peer: PeerId, id: ConnectionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let (failures, silent) = (conn.failures, conn.alive_at().elapsed());
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

    /// Closes the connections that have been silent for [`Config::dead_after`].
    pub(super) fn close_silent(&mut self, now: Instant) {
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
    pub(super) fn on_ping(&mut self, e: ping::Event) {
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
            Err(error)
                if conn
                    .heard
                    .last()
                    .is_some_and(|at| at.elapsed() < self.config.ping_timeout()) =>
            {
                // A frame came while the ping waited: the peer is alive, only slow to answer.
                tracing::debug!(peer = %conn.node, "ping failed, but the peer is sending: {error}");
                conn.failures = 0;
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

    /// The earliest time a connection counts as dead unless a sign of life comes first.
    pub(super) fn next_silent(&self) -> Option<Instant> {
        // The same connections `close_silent` looks at, or a deadline it cannot act on would
        // make the timer fire forever.
        let dead_after = self.config.dead_after();
        self.peer_conns()
            .filter_map(|(_, _, c)| c.silent_deadline(dead_after))
            .min()
    }
}
