//! Run-time deny and allow (FISCO BCOS's hot reload of the access lists): the lists are the
//! CA-TLS handshake's, so they refuse new sessions by themselves; the manager closes the
//! sessions they now refuse and stops or resumes dialling the nodes concerned.

use std::time::Instant;

use libp2p::{
    PeerId,
    swarm::{CloseConnection, ToSwarm},
};

use super::{Behaviour, Event, peers::Closing, redial::State};
use crate::NodeId;
#[cfg(doc)]
use crate::ca_tls::AccessList;

impl Behaviour {
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
            if self.close_peer(peer) {
                self.emit(Event::Dropped { node });
            }
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

    /// Closes every connection of `peer` as dropped; returns whether it had any.
    pub(super) fn close_peer(&mut self, peer: PeerId) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
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
        true
    }
}
