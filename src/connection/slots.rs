//! Connection slots strangers cannot take: configured peers (the nodes this one is told to keep
//! connected) have pending and established slots of their own.
//!
//! libp2p's `connection_limits` counts every connection alike, so 16 addresses holding 16
//! silent connections each filled `max_pending_incoming` (256) and locked out every inbound
//! peer, configured ones included, until the handshake timeout; and strangers could fill
//! `max_established`. Here:
//!
//! - **Pending incoming**: connections from an address of a configured peer (same IP group as
//!   [`super::ip_rate::group`]: IPv4, or the IPv6 /64; peers configured by DNS name have no
//!   address to match before the handshake) count in a pool of their own of
//!   [`RESERVED_PENDING_PER_PEER`] per configured peer (at least [`MIN_RESERVED_PENDING`]),
//!   and past it against `max_pending_incoming` like everyone else's (the reservation adds
//!   slots for configured peers; it never leaves them fewer than strangers have, as when many
//!   nodes on one host reach a node that lists only some of them); all others count against
//!   `max_pending_incoming`.
//! - **Established**: strangers hold at most `max_established` minus one slot per configured
//!   peer not connected yet; a configured peer (its NodeId or PeerId known to the target, or
//!   its address) is admitted while the total is under `max_established`.
//!
//! A connection counts from the check (pending) or from `ConnectionEstablished` (established),
//! and is released by the swarm's event that ends it, as libp2p's own limits do: pending
//! incoming by `ListenFailure` or `ConnectionEstablished`, established by `ConnectionClosed`
//! (a verdict holds nothing: a connection a later behaviour denies is never counted). Tables
//! hold one entry per counted connection, so they are bounded by the connections the swarm
//! holds.

use std::{
    collections::{HashMap, HashSet},
    fmt,
};

use libp2p::swarm::ConnectionId;

/// Pending incoming slots reserved per configured peer.
pub const RESERVED_PENDING_PER_PEER: u32 = 4;
/// The fewest pending incoming slots reserved for configured peers' addresses.
pub const MIN_RESERVED_PENDING: u32 = 16;

/// A connection limit was reached (`Refusal::Limit`, code `limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The limit.
    pub limit: u32,
    /// Which one.
    pub kind: LimitKind,
}

/// Which connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `max_pending_incoming`: strangers' connections still handshaking.
    PendingIncoming,
    /// Configured peers' own pool of connections still handshaking.
    ReservedPendingIncoming,
    /// `max_pending_outgoing`.
    PendingOutgoing,
    /// `max_established`, less the slots kept for configured peers.
    Established,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            LimitKind::PendingIncoming => "pending incoming connections from strangers",
            LimitKind::ReservedPendingIncoming => {
                "pending incoming connections from configured peers' addresses"
            }
            LimitKind::PendingOutgoing => "pending outgoing connections",
            LimitKind::Established => "established connections",
        };
        write!(
            f,
            "connection limit exceeded: at most {} {what} are allowed",
            self.limit
        )
    }
}

impl std::error::Error for LimitExceeded {}

/// The counts (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Slots {
    max_pending: Option<u32>,
    max_established: Option<u32>,
    /// Pending incoming connections, and whether each holds a reserved slot (one from a
    /// configured peer's address while that pool had room).
    pending: HashMap<ConnectionId, bool>,
    /// How many of `pending` hold reserved slots.
    pending_configured: u32,
    /// Established connections (the limit counts them all; only the verdict depends on
    /// whether the new one is a configured peer's).
    established: HashSet<ConnectionId>,
}

impl Slots {
    pub(super) fn new(max_pending: Option<u32>, max_established: Option<u32>) -> Self {
        Slots {
            max_pending,
            max_established,
            ..Slots::default()
        }
    }

    /// Counts the pending incoming connection `id` unless no pool it may use has room: one
    /// from a configured peer's address takes a reserved slot, or else a slot of
    /// `max_pending_incoming`; any other only the latter. `configured_peers`: how many peers
    /// are configured.
    pub(super) fn admit_pending(
        &mut self,
        id: ConnectionId,
        configured: bool,
        configured_peers: usize,
    ) -> Result<(), LimitExceeded> {
        if self.pending.contains_key(&id) {
            return Ok(());
        }
        let mut refused = None;
        if configured {
            let reserved = u32::try_from(configured_peers)
                .unwrap_or(u32::MAX)
                .saturating_mul(RESERVED_PENDING_PER_PEER)
                .max(MIN_RESERVED_PENDING);
            if self.pending_configured < reserved {
                self.pending.insert(id, true);
                self.pending_configured += 1;
                return Ok(());
            }
            refused = Some(LimitExceeded {
                limit: reserved,
                kind: LimitKind::ReservedPendingIncoming,
            });
        }
        if let Some(limit) = self.max_pending.filter(|l| self.pending_strangers() >= *l) {
            return Err(refused.unwrap_or(LimitExceeded {
                limit,
                kind: LimitKind::PendingIncoming,
            }));
        }
        self.pending.insert(id, false);
        Ok(())
    }

    /// Pending incoming connections in the `max_pending_incoming` pool: strangers', and
    /// configured peers' addresses' past their reserved slots.
    fn pending_strangers(&self) -> u32 {
        let all = u32::try_from(self.pending.len()).unwrap_or(u32::MAX);
        all.saturating_sub(self.pending_configured)
    }

    /// Connection `id` is no longer pending.
    pub(super) fn release_pending(&mut self, id: ConnectionId) {
        if self.pending.remove(&id) == Some(true) {
            self.pending_configured = self.pending_configured.saturating_sub(1);
        }
    }

    /// Whether connection `id` (a configured peer's or not) may be established;
    /// `unconnected_configured`: configured peers with no connection now, whose slots
    /// strangers may not take.
    pub(super) fn admit_established(
        &self,
        configured: bool,
        unconnected_configured: usize,
    ) -> Result<(), LimitExceeded> {
        if let Some(max) = self.max_established {
            let total = u32::try_from(self.established.len()).unwrap_or(u32::MAX);
            let limit = if configured {
                max
            } else {
                let kept = u32::try_from(unconnected_configured).unwrap_or(u32::MAX);
                max.saturating_sub(kept)
            };
            if total >= limit {
                return Err(LimitExceeded {
                    limit,
                    kind: LimitKind::Established,
                });
            }
        }
        Ok(())
    }

    /// Connection `id` is established.
    pub(super) fn established(&mut self, id: ConnectionId) {
        self.established.insert(id);
    }

    /// Connection `id` closed.
    pub(super) fn closed(&mut self, id: ConnectionId) {
        self.established.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_never_take_the_reserved_slots() {
        let mut s = Slots::new(Some(4), Some(6));
        let id = ConnectionId::new_unchecked;
        for n in 0..4 {
            assert!(s.admit_pending(id(n), false, 2).is_ok());
        }
        let full = s.admit_pending(id(4), false, 2).unwrap_err();
        assert_eq!(full.kind, LimitKind::PendingIncoming);
        // Configured peers' addresses have their own pool: max(2 x 4, 16).
        for n in 10..26 {
            assert!(s.admit_pending(id(n), true, 2).is_ok(), "{n}");
        }
        let reserved = s.admit_pending(id(26), true, 2).unwrap_err();
        assert_eq!(
            (reserved.limit, reserved.kind),
            (16, LimitKind::ReservedPendingIncoming)
        );
        // Releasing one of each frees exactly its own pool.
        s.release_pending(id(0));
        s.release_pending(id(10));
        assert!(s.admit_pending(id(4), false, 2).is_ok());
        assert!(s.admit_pending(id(5), false, 2).is_err());
        assert!(s.admit_pending(id(26), true, 2).is_ok());
        // Releasing unknown ids changes nothing.
        s.release_pending(id(999));
        assert!(s.admit_pending(id(27), true, 2).is_err());

        // Established: 6 slots, 2 kept for the configured peers not connected.
        for n in 100..104 {
            assert!(s.admit_established(false, 2).is_ok());
            s.established(id(n));
        }
        let e = s.admit_established(false, 2).unwrap_err();
        assert_eq!((e.limit, e.kind), (4, LimitKind::Established));
        for n in 105..107 {
            assert!(s.admit_established(true, 2).is_ok());
            s.established(id(n));
        }
        assert!(s.admit_established(true, 0).is_err());
        s.closed(id(105));
        assert!(s.admit_established(true, 1).is_ok());
        // A verdict never followed by the connection holds no slot.
        assert!(s.admit_established(true, 1).is_ok());
    }

    #[test]
    fn configured_addresses_past_their_reserve_take_the_common_slots() {
        // Many nodes on one host: a node that lists one of them sees every other's
        // connection come from a configured peer's address.
        let mut s = Slots::new(Some(20), None);
        let id = ConnectionId::new_unchecked;
        for n in 0..16 {
            assert!(s.admit_pending(id(n), true, 1).is_ok(), "{n}");
        }
        // The reserve (16) is full: the next ones take the 20 common slots, no fewer than
        // strangers get.
        for n in 16..36 {
            assert!(s.admit_pending(id(n), true, 1).is_ok(), "{n}");
        }
        let full = s.admit_pending(id(36), true, 1).unwrap_err();
        assert_eq!(
            (full.limit, full.kind),
            (16, LimitKind::ReservedPendingIncoming)
        );
        let stranger = s.admit_pending(id(37), false, 1).unwrap_err();
        assert_eq!(
            (stranger.limit, stranger.kind),
            (20, LimitKind::PendingIncoming)
        );
        // A common slot freed goes to whoever comes next; a reserved one only to a configured
        // peer's address.
        s.release_pending(id(20));
        assert!(s.admit_pending(id(37), false, 1).is_ok());
        s.release_pending(id(3));
        assert!(s.admit_pending(id(38), false, 1).is_err());
        assert!(s.admit_pending(id(39), true, 1).is_ok());
        assert_eq!(s.pending.len(), 36);
        assert_eq!(s.pending_configured, 16);
        // Without a common limit, the overflow is unbounded as strangers' is.
        let mut open = Slots::new(None, None);
        for n in 0..100 {
            assert!(open.admit_pending(id(n), true, 1).is_ok());
        }
    }
}
