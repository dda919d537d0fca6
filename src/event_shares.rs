//! Fair shares of a node's event queue among the peers whose events fill it.
//!
//! The queue to the application is bounded ([`crate::node`]'s 16 384 events); when it is full,
//! events are dropped (a dropped request is answered "no response"). With one queue for all,
//! a noisy peer's requests pushed everyone's out. Here each event that a node caused (its
//! requests and one-way messages, the multicasts and broadcasts it originated, its
//! subscriptions and status) takes a place in the share of its [`Holder`]: the node itself
//! when it is a connected peer, else one share pooled for every node not connected (origins
//! of flood messages further away, which in open mode can be keys made up by the thousand:
//! each with a share of its own, they could fill the queue together). With `n` holders
//! holding events in the queue, each may hold at most `capacity / (n + 1)` of them (never
//! fewer than [`MIN_SHARE`]), so the noisy one's events are dropped first and a quiet one
//! always finds room. The place is given back when the application takes the event. Drops
//! are counted per node ([`Shares::dropped`]).
//!
//! Events of the node's own (connections, refusals) take no share: the connection manager
//! bounds how many there can be.
//!
//! Memory: one entry per holder with events queued (so at most the queue's capacity), and the
//! drop counts of at most [`MAX_TRACKED`] nodes (past that, drops are counted in the total
//! only).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{NodeId, flood, node::NodeEvent, status};

/// The fewest events any peer may hold in the queue.
pub const MIN_SHARE: usize = 64;
/// Peers whose drops are counted one by one.
pub const MAX_TRACKED: usize = 4096;

/// The shares of one node's event queue; clones share the counts (the node task takes places,
/// the application's stream gives them back).
#[derive(Debug, Clone, Default)]
pub(crate) struct Shares {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    queued: HashMap<Holder, usize>,
    dropped: HashMap<NodeId, u64>,
    dropped_total: u64,
}

/// Whose share an event takes a place in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// A connected peer.
    Peer(NodeId),
    /// Every node not connected, together.
    Elsewhere,
}

impl Holder {
    /// The holder of `event`'s place, if it takes one: its source when `connected` says the
    /// source is a connected peer, else [`Holder::Elsewhere`].
    pub(crate) fn of(event: &NodeEvent, connected: impl FnOnce(&NodeId) -> bool) -> Option<Self> {
        let node = source(event)?;
        Some(match connected(node) {
            true => Holder::Peer(node.clone()),
            false => Holder::Elsewhere,
        })
    }
}

/// The node that caused `event`, if any.
pub(crate) fn source(event: &NodeEvent) -> Option<&NodeId> {
    match event {
        NodeEvent::Request { from, .. } | NodeEvent::Oneway { from, .. } => Some(from),
        NodeEvent::Flood(flood::Event::Message { origin, .. }) => Some(origin),
        NodeEvent::Flood(
            flood::Event::Subscribed { node, .. } | flood::Event::Unsubscribed { node, .. },
        ) => Some(node),
        NodeEvent::Status(status::Event::StatusUpdated { node, .. }) => Some(node),
        _ => None,
    }
}

impl Shares {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for `event` in `holder`'s share of a queue of `capacity`; false (and the
    /// drop counted against the event's source) when the holder has its whole share already.
    /// Events with no holder always get one.
    pub(crate) fn take(&self, holder: Option<&Holder>, event: &NodeEvent, capacity: usize) -> bool {
        let Some(holder) = holder else {
            return true;
        };
        let mut inner = self.lock();
        let held = inner.queued.get(holder).copied().unwrap_or(0);
        let holders = inner.queued.len() + usize::from(held == 0);
        let share = (capacity / (holders + 1)).max(MIN_SHARE);
        if held >= share {
            inner.count_drop(source(event));
            return false;
        }
        *inner.queued.entry(holder.clone()).or_default() += 1;
        true
    }

    /// Gives back a place `holder` took: the application took the event, or it never
    /// entered the queue.
    pub(crate) fn give_back(&self, holder: Option<&Holder>) {
        let Some(holder) = holder else {
            return;
        };
        let mut inner = self.lock();
        if let Some(held) = inner.queued.get_mut(holder) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                inner.queued.remove(holder);
            }
        }
    }

    /// Counts a drop of `event` for another reason (the queue itself was full).
    pub(crate) fn dropped_whole(&self, event: &NodeEvent) {
        self.lock().count_drop(source(event));
    }

    /// Events of `node` dropped so far (0 past [`MAX_TRACKED`] peers with drops).
    pub(crate) fn dropped(&self, node: &NodeId) -> u64 {
        self.lock().dropped.get(node).copied().unwrap_or(0)
    }

    /// Events dropped so far, of every source.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }
}

impl Inner {
    fn count_drop(&mut self, node: Option<&NodeId>) {
        self.dropped_total = self.dropped_total.saturating_add(1);
        let Some(node) = node else { return };
        if let Some(n) = self.dropped.get_mut(node) {
            *n = n.saturating_add(1);
        } else if self.dropped.len() < MAX_TRACKED {
            self.dropped.insert(node.clone(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{KeyType, NodeKey};

    fn oneway(from: &NodeId) -> NodeEvent {
        NodeEvent::Oneway {
            from: from.clone(),
            module: 1,
            payload: Bytes::new(),
        }
    }

    fn id() -> NodeId {
        NodeKey::generate(KeyType::Secp256k1)
            .unwrap()
            .node_id()
            .clone()
    }

    #[test]
    fn a_noisy_peer_is_held_to_its_share_and_a_quiet_one_gets_in() {
        let (noisy, quiet) = (id(), id());
        let shares = Shares::default();
        let capacity = 1024;
        let take = |node: &NodeId| {
            let event = oneway(node);
            let holder = Holder::of(&event, |_| true);
            shares.take(holder.as_ref(), &event, capacity)
        };
        let give_back = |node: &NodeId| shares.give_back(Some(&Holder::Peer(node.clone())));
        let taken = (0..capacity).filter(|_| take(&noisy)).count();
        // Alone, it may hold half: the other half stays for whoever comes next.
        assert_eq!(taken, capacity / 2);
        assert_eq!(shares.dropped(&noisy), (capacity - taken) as u64);
        // The quiet peer gets its share of a third while the noisy one holds half.
        let quiet_taken = (0..capacity).filter(|_| take(&quiet)).count();
        assert_eq!(quiet_taken, capacity / 3);
        assert_eq!(shares.dropped(&quiet), (capacity - quiet_taken) as u64);
        // Above its new share, the noisy peer gets nothing until the application reads.
        assert!(!take(&noisy));
        for _ in 0..(taken - capacity / 3 + 1) {
            give_back(&noisy);
        }
        assert!(take(&noisy));
        // Events of no peer always pass; giving back more than was taken is harmless.
        let closed = NodeEvent::Connection(crate::connection::Event::SelfRefused {
            addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
        });
        assert!(Holder::of(&closed, |_| true).is_none());
        assert!(shares.take(None, &closed, capacity));
        for _ in 0..capacity * 2 {
            give_back(&quiet);
        }
        assert!(
            !shares
                .inner
                .lock()
                .unwrap()
                .queued
                .contains_key(&Holder::Peer(quiet.clone()))
        );
        assert_eq!(
            shares.dropped_total(),
            (capacity - taken + capacity - quiet_taken + 1) as u64
        );
    }

    #[test]
    fn made_up_origins_share_one_place_however_many_they_are() {
        let shares = Shares::default();
        let capacity = 1024;
        let peer = id();
        // 1000 origins not connected, 4 events each: together they hold one share.
        let mut taken = 0;
        for _ in 0..1000 {
            let origin = id();
            for _ in 0..4 {
                let event = oneway(&origin);
                let holder = Holder::of(&event, |_| false);
                assert_eq!(holder, Some(Holder::Elsewhere));
                taken += usize::from(shares.take(holder.as_ref(), &event, capacity));
            }
        }
        assert_eq!(taken, capacity / 2);
        // A connected peer still finds room.
        let event = oneway(&peer);
        let holder = Holder::of(&event, |n| *n == peer);
        assert_eq!(holder, Some(Holder::Peer(peer.clone())));
        assert!(shares.take(holder.as_ref(), &event, capacity));
    }
}
