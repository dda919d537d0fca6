//! Revoked sessions: CA-TLS refuses a revoked chain in every new handshake by itself; when the
//! CRLs change at run time, the manager closes the open sessions of the peers the new CRLs
//! revoke (each peer's chain is kept by the CA-TLS [`Revocation`] handle).

use libp2p::PeerId;

use super::{Behaviour, Event};
use crate::{NodeId, ca_tls::Revocation};

impl Behaviour {
    /// Gives the manager the CA-TLS config's CRL handle
    /// ([`crate::ca_tls::Config::revocation`]), for [`Self::enforce_revocation`] and
    /// [`Self::reload`]. Without it (open mode) there are no CRLs.
    pub fn set_revocation(&mut self, revocation: Revocation) {
        self.revocation = Some(revocation);
    }

    /// The CRL handle, when the node runs CA-TLS.
    pub fn revocation(&self) -> Option<&Revocation> {
        self.revocation.as_ref()
    }

    /// Closes the connections of every peer whose chain the CRLs in force revoke (call it
    /// after changing them directly, e.g. with [`crate::ca_tls::Config::set_crls`]), each
    /// reported as [`Event::Revoked`]. Returns those peers.
    pub fn enforce_revocation(&mut self) -> Vec<NodeId> {
        let Some(revocation) = self.revocation.clone() else {
            return Vec::new();
        };
        // Chains of peers gone are of no more use.
        revocation.retain(|peer| self.peers.contains_key(peer));
        let revoked: Vec<(PeerId, NodeId)> = self
            .peers
            .iter()
            // Peers the access lists refuse are being closed already.
            .filter(|(id, p)| self.access.check(&p.node).is_ok() && revocation.is_revoked(id))
            .map(|(id, p)| (*id, p.node.clone()))
            .collect();
        let mut closed = Vec::with_capacity(revoked.len());
        for (peer, node) in revoked {
            if self.close_peer(peer) {
                tracing::info!(node = %node.short(), "closing the sessions of a revoked peer");
                self.emit(Event::Revoked { node: node.clone() });
                closed.push(node);
            }
        }
        self.wake();
        closed
    }
}
