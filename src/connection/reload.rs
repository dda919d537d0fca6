//! Reloading settings without a restart (SIGHUP in the CLI, [`crate::node::Node::reload`]):
//! the configured peers, the deny/allow lists and the CRLs, checked first and then applied all
//! at once. Sessions the new settings refuse close at once; new peers are dialled; removed
//! peers are no longer redialled, and their open connections stay as those of ordinary
//! (unconfigured) peers.

use std::{collections::HashSet, time::Instant};

use libp2p::{Multiaddr, PeerId};

use super::{Behaviour, redial::State, split_peer};
use crate::{NodeId, ca_tls::Crl};

/// The settings a reload replaces.
#[derive(Debug, Clone, Default)]
pub struct Reload {
    /// The configured peers (multiaddrs, optionally ending in `/p2p/<PeerId>`).
    pub peers: Vec<Multiaddr>,
    /// The deny list.
    pub deny: Vec<NodeId>,
    /// The allow list (empty: every node the CA certifies).
    pub allow: Vec<NodeId>,
    /// The CRLs (CA mode only: a reload with CRLs fails in open mode).
    pub crls: Vec<Crl>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Peer addresses now configured that were not.
    pub added: Vec<Multiaddr>,
    /// Peer addresses no longer configured.
    pub removed: Vec<Multiaddr>,
    /// Peers whose sessions were closed: now denied, not allowed, or revoked.
    pub closed: Vec<NodeId>,
    /// The CRLs now in force.
    pub crls: usize,
}

impl Behaviour {
    /// Replaces the configured peers, the access lists and the CRLs with `settings`. Nothing
    /// changes unless every part is valid (the CRLs verify, see
    /// [`crate::ca_tls::Revocation::check`]); the error says what is wrong.
    pub fn reload(&mut self, settings: Reload) -> Result<Reloaded, String> {
        let Reload {
            peers,
            deny,
            allow,
            crls,
        } = settings;
        match &self.revocation {
            Some(r) => r.check(&crls).map_err(|e| e.to_string())?,
            None if !crls.is_empty() => {
                return Err("CRLs apply to CA-TLS only; this node runs in open mode".into());
            }
            None => {}
        }
        let mut done = Reloaded {
            crls: crls.len(),
            ..Reloaded::default()
        };
        if let Some(r) = &self.revocation {
            r.replace(crls).map_err(|e| e.to_string())?;
        }
        // Peers: drop the addresses no longer listed, add the new ones; those kept keep their
        // state (no redial of a connected peer, no reset of a backoff).
        let wanted: Vec<(Multiaddr, Option<PeerId>)> =
            peers.iter().cloned().map(split_peer).collect();
        let kept: HashSet<&Multiaddr> = wanted.iter().map(|(a, _)| a).collect();
        let gone: Vec<Multiaddr> = self
            .targets
            .iter()
            .filter(|t| !kept.contains(&t.addr))
            .map(|t| t.addr.clone())
            .collect();
        for addr in gone {
            self.remove_peer(&addr);
            done.removed.push(addr);
        }
        for (addr, full) in wanted.iter().zip(peers) {
            let known = self
                .targets
                .iter()
                .any(|t| t.addr == addr.0 && (addr.1.is_none() || t.peer == addr.1));
            if !known {
                self.add_peer(full.clone());
                done.added.push(full);
            }
        }
        // Lists: replace, close what they now refuse, dial again what they no longer refuse.
        self.access.replace(deny, allow);
        let before: HashSet<NodeId> = self.peers.values().map(|p| p.node.clone()).collect();
        self.enforce_access();
        done.closed = before
            .into_iter()
            .filter(|n| self.access.check(n).is_err())
            .collect();
        let now = Instant::now();
        for t in &mut self.targets {
            let refused = t
                .node
                .as_ref()
                .is_some_and(|n| self.access.check(n).is_err());
            if t.state == State::Blocked && !refused {
                t.failures = 0;
                t.state = State::Waiting(now);
            }
        }
        done.closed.extend(self.enforce_revocation());
        self.wake();
        Ok(done)
    }
}
