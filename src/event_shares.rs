//! Fair shares of a node's event queue among the peers whose events fill it.
//!
//! The queue to the application is bounded ([`crate::node`]'s 16 384 events); when it is full,
//! events are dropped (a dropped request is answered "no response"). With one queue for all,
//! a noisy peer's requests pushed everyone's out. Here each event that a peer caused (its
//! requests and one-way messages, the multicasts and broadcasts it originated, its
//! subscriptions and status) takes a place in that peer's share: with `n` peers holding
//! events in the queue, a peer may hold at most `capacity / (n + 1)` of them (never fewer than
//! [`MIN_SHARE`]), so the noisy peer's events are dropped first and a quiet peer always finds
//! room. The place is given back when the application takes the event. Drops are counted per
//! peer ([`Shares::dropped`]).
//!
//! Events of the node's own (connections, refusals) take no share: the connection manager
//! bounds how many there can be.
//!
//! Memory: one entry per peer with events queued (so at most the queue's capacity), and the
//! drop counts of at most [`MAX_TRACKED`] peers (past that, drops are counted in the total
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
    queued: HashMap<NodeId, usize>,
    dropped: HashMap<NodeId, u64>,
    dropped_total: u64,
}

/// The peer whose share `event` counts in, if any.
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

    /// Takes a place for `event` in its source's share of a queue of `capacity`; false (and
    /// the drop counted) when the source holds its whole share already. Events with no source
    /// always get one.
    pub(crate) fn take(&self, event: &NodeEvent, capacity: usize) -> bool {
        let Some(node) = source(event) else {
            return true;
        };
        let mut inner = self.lock();
        let held = inner.queued.get(node).copied().unwrap_or(0);
        let holders = inner.queued.len() + usize::from(held == 0);
        let share = (capacity / (holders + 1)).max(MIN_SHARE);
        if held >= share {
            inner.count_drop(node);
            return false;
        }
        *inner.queued.entry(node.clone()).or_default() += 1;
        true
    }

    /// Gives back `event`'s place: the application took it, or it never entered the queue.
    pub(crate) fn give_back(&self, event: &NodeEvent) {
        let Some(node) = source(event) else {
            return;
        };
        let mut inner = self.lock();
        if let Some(held) = inner.queued.get_mut(node) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                inner.queued.remove(node);
            }
        }
    }

    /// Counts a drop of `event` for another reason (the queue itself was full).
    pub(crate) fn dropped_whole(&self, event: &NodeEvent) {
        let mut inner = self.lock();
        match source(event) {
            Some(node) => inner.count_drop(node),
            None => inner.dropped_total = inner.dropped_total.saturating_add(1),
        }
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
    fn count_drop(&mut self, node: &NodeId) {
        self.dropped_total = self.dropped_total.saturating_add(1);
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

    #[test]
    fn a_noisy_peer_is_held_to_its_share_and_a_quiet_one_gets_in() {
        let noisy = NodeKey::generate(KeyType::Secp256k1)
            .unwrap()
            .node_id()
            .clone();
        let quiet = NodeKey::generate(KeyType::Secp256k1)
            .unwrap()
            .node_id()
            .clone();
        let shares = Shares::default();
        let capacity = 1024;
        let taken = (0..capacity)
            .filter(|_| shares.take(&oneway(&noisy), capacity))
            .count();
        // Alone, it may hold half: the other half stays for whoever comes next.
        assert_eq!(taken, capacity / 2);
        assert_eq!(shares.dropped(&noisy), (capacity - taken) as u64);
        // The quiet peer gets its share of a third while the noisy one holds half.
        let quiet_taken = (0..capacity)
            .filter(|_| shares.take(&oneway(&quiet), capacity))
            .count();
        assert_eq!(quiet_taken, capacity / 3);
        assert_eq!(shares.dropped(&quiet), (capacity - quiet_taken) as u64);
        // Above its new share, the noisy peer gets nothing until the application reads.
        assert!(!shares.take(&oneway(&noisy), capacity));
        for _ in 0..(taken - capacity / 3 + 1) {
            shares.give_back(&oneway(&noisy));
        }
        assert!(shares.take(&oneway(&noisy), capacity));
        // Events of no peer always pass; giving back more than was taken is harmless.
        let closed = NodeEvent::Connection(crate::connection::Event::SelfRefused {
            addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
        });
        assert!(shares.take(&closed, capacity));
        for _ in 0..capacity * 2 {
            shares.give_back(&oneway(&quiet));
        }
        assert!(!shares.inner.lock().unwrap().queued.contains_key(&quiet));
        assert_eq!(
            shares.dropped_total(),
            (capacity - taken + capacity - quiet_taken + 1) as u64
        );
    }
}
