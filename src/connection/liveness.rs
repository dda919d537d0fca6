//! Finding dead connections: libp2p's ping runs on every connection (its handler is the
//! manager's), and a connection is closed as dead when its pings fail
//! [`Config::ping_max_failures`] times in a row or none is answered for
//! [`Config::dead_after`].

use std::time::{Duration, Instant};

use libp2p::{
    PeerId, ping,
    swarm::{CloseConnection, ConnectionId, ToSwarm},
};

#[cfg(doc)]
use super::Config;
use super::{
    Behaviour, Event,
    peers::{Closing, Conn},
};

impl Conn {
    /// When this connection counts as dead unless a ping is answered first; none while it is
    /// closing or when the peer does not speak ping.
    fn silent_deadline(&self, dead_after: Duration) -> Option<Instant> {
        (self.closing.is_none() && self.pings).then(|| self.answered + dead_after)
    }
}

impl Behaviour {
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

    /// The earliest time a connection counts as dead unless a ping is answered first.
    pub(super) fn next_silent(&self) -> Option<Instant> {
        // The same connections `close_silent` looks at, or a deadline it cannot act on would
        // make the timer fire forever.
        let dead_after = self.config.dead_after();
        self.peer_conns()
            .filter_map(|(_, _, c)| c.silent_deadline(dead_after))
            .min()
    }
}
