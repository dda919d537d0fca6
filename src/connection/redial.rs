//! The configured addresses ("targets") and keeping them connected: the first dial, the redial
//! after a failed dial or a disconnect with exponential backoff and jitter, never dialling this
//! node itself, and what a failed dial teaches about the node at an address.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher as _,
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId,
    swarm::{
        ConnectionId, DialError, DialFailure, ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
    },
};

use super::{Behaviour, Event, admission::Denial, dial_refusal, split_peer};
use crate::NodeId;

#[cfg(doc)]
use super::Config;

/// How much of a redial delay jitter may take off: each delay is drawn from
/// `[base * (1 - JITTER), base]`, so delays never pass
/// [`Config::redial_max`] and still grow.
pub const JITTER: f64 = 0.2;

/// Where a configured address stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum State {
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
pub(super) struct Target {
    /// Without `/p2p/`.
    pub(super) addr: Multiaddr,
    /// From `/p2p/`, or learnt from the first connection.
    pub(super) peer: Option<PeerId>,
    /// Whether `peer` came from `/p2p/` (else a WrongPeerId dial error forgets it).
    pub(super) peer_configured: bool,
    /// The node at `addr`, once known (from the peer, or a refused handshake).
    pub(super) node: Option<NodeId>,
    /// Consecutive failed attempts since the last stable connection.
    pub(super) failures: u32,
    pub(super) state: State,
}

/// A small xorshift generator for redial jitter (no cryptographic use).
#[derive(Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new() -> Self {
        Rng(RandomState::new().hash_one(Instant::now()) | 1)
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Behaviour {
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

    /// A redial delay after `failures` failures, with jitter.
    fn delay(&mut self, failures: u32) -> Duration {
        self.config
            .backoff(failures)
            .mul_f64(1.0 - JITTER * self.rng.next_f64())
    }

    /// Schedules the next dial of target `i` after a failure or a disconnect, counting it as a
    /// failure if `failed`; returns the delay, or `None` when the target is not redialled (its
    /// node is refused).
    pub(super) fn reschedule(&mut self, i: usize, failed: bool) -> Option<Duration> {
        let (node, failures) = (&self.targets[i].node, self.targets[i].failures);
        if node.as_ref().is_some_and(|n| self.access.check(n).is_err()) {
            self.targets[i].state = State::Blocked;
            return None;
        }
        let now = Instant::now();
        // A banned node is dialled again when its ban ends, not before.
        let banned = node.as_ref().and_then(|n| self.scores.banned_until(n, now));
        let delay = match banned {
            Some(until) => until - now,
            None => self.delay(failures),
        };
        let t = &mut self.targets[i];
        if failed {
            t.failures = t.failures.saturating_add(1);
        }
        t.state = State::Waiting(now + delay);
        Some(delay)
    }

    /// Dials every target that is due; marks the ones that need no dial.
    pub(super) fn dial_due(&mut self, now: Instant) {
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
            // A routed connection (through relays) does not count: the direct one is dialled.
            if t.peer.is_some_and(|p| self.has_direct(&p)) {
                self.targets[i].state = State::Connected;
                continue;
            }
            if let Some(until) = t
                .node
                .as_ref()
                .and_then(|n| self.scores.banned_until(n, now))
            {
                self.targets[i].state = State::Waiting(until);
                continue;
            }
            let opts = match t.peer {
                Some(p) => DialOpts::peer_id(p)
                    .addresses(vec![t.addr.clone()])
                    .condition(PeerCondition::NotDialing)
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

    /// The earliest time a target waits for.
    pub(super) fn next_dial(&self) -> Option<Instant> {
        self.targets
            .iter()
            .filter_map(|t| match t.state {
                State::Waiting(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// A dial failed: reports a CA-TLS refusal in it, learns what it tells of the node at the
    /// target, and redials the target unless it is this node, a duplicate or refused.
    pub(super) fn on_dial_failure(&mut self, e: DialFailure<'_>) {
        self.admitted.remove(&e.connection_id);
        let refusal = dial_refusal(e.error);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        let mut rng = Rng::new();
        for _ in 0..10_000 {
            let r = rng.next_f64();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }
}
