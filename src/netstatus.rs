//! Network-wide status, for [`crate::node::Node`]: every node learns the status seq of every
//! reachable node, not only of its direct peers, and fetches a changed status over a routed
//! connection.
//!
//! The seqs travel beside the link-state records: each node multicasts its
//! `(incarnation, seq)` on the reserved topic [`STATUS_TOPIC`], which every node subscribes
//! to, when its status changes and every [`REANNOUNCE`] (so nodes that join later learn it).
//! The message is a status protocol frame (`/bcos/status` SPEC): an `Announce`, or, when the
//! whole status encodes in at most [`INLINE_MAX`] bytes (a block height and hash, the usual
//! case), the `Status` itself, so nobody needs to fetch it. A flood message is signed by its
//! origin and delivered exactly once, so a relay can neither forge nor replay one. A node
//! holding an older status of a node it has no connection to opens a routed connection
//! (`/bcos/route`) to it; the status protocol on that connection brings the whole status, and
//! unicast closes the connection once it idles. Fetches are bounded: one per node per
//! [`FETCH_EVERY`], and at most [`MAX_FETCHING`] routed dials at once.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use libp2p::{
    Swarm,
    swarm::dial_opts::{DialOpts, PeerCondition},
};

use crate::{
    NodeId,
    behaviour::Behaviour,
    route,
    status::{Status, codec::Message},
};

/// The reserved topic status seqs travel on. Applications cannot subscribe to it or send on it
/// (names starting with `/bcos/` are reserved).
pub const STATUS_TOPIC: &str = "/bcos/status-seq";

/// The prefix of reserved topic names.
pub const RESERVED_PREFIX: &str = "/bcos/";

/// How often a node announces its seq network-wide even when it does not change.
pub const REANNOUNCE: Duration = Duration::from_secs(30);

/// The least time between two fetches of one node's status.
pub const FETCH_EVERY: Duration = Duration::from_secs(5);

/// Most routed dials for statuses at once.
pub const MAX_FETCHING: usize = 16;

/// The largest encoded status sent whole in an announcement (larger ones are fetched).
pub const INLINE_MAX: usize = 1024;

/// Whether applications may use `topic` (it is not reserved).
pub fn is_reserved(topic: &str) -> bool {
    topic.starts_with(RESERVED_PREFIX)
}

/// The announcement of `status`: the whole status when it is small, else its pair.
fn encode(status: &Status) -> Bytes {
    let whole = Message::Status(status.clone()).encode();
    if whole.len() <= INLINE_MAX {
        return whole;
    }
    Message::Announce {
        incarnation: status.incarnation(),
        seq: status.seq(),
    }
    .encode()
}

/// What one node knows of every reachable node's status.
#[derive(Debug, Default)]
pub(crate) struct NetworkStatus {
    /// The latest `(incarnation, seq)` each node announced network-wide.
    announced: HashMap<NodeId, (u64, u64)>,
    /// The latest status held of each node, from any connection (kept after it closes).
    known: HashMap<NodeId, Arc<Status>>,
    /// When each node's status was last fetched.
    fetched: HashMap<NodeId, Instant>,
    /// When this node last announced, and what.
    last_announce: Option<(Instant, (u64, u64))>,
}

/// A node's status as this node knows it network-wide.
#[derive(Debug, Clone)]
pub struct RemoteStatus {
    /// The seq the node last announced network-wide, with its incarnation.
    pub announced: Option<(u64, u64)>,
    /// The latest whole status held (it may be older than `announced` while a fetch runs).
    pub status: Option<Arc<Status>>,
}

impl NetworkStatus {
    /// The table of a node starting with `swarm`: its first announcement is due at its first
    /// status change, or [`REANNOUNCE`] from now (nodes that never set a status need not be
    /// fetched).
    pub fn new(swarm: &Swarm<Behaviour>) -> Self {
        let local = swarm.behaviour().status.local();
        NetworkStatus {
            last_announce: Some((Instant::now(), (local.incarnation(), local.seq()))),
            ..NetworkStatus::default()
        }
    }

    /// Announces this node's status seq if it changed or [`REANNOUNCE`] passed.
    pub fn announce(&mut self, swarm: &mut Swarm<Behaviour>, force: bool) {
        let b = swarm.behaviour_mut();
        let local = b.status.local();
        let pair = (local.incarnation(), local.seq());
        let due = match self.last_announce {
            None => true,
            Some((at, last)) => force || last != pair || at.elapsed() >= REANNOUNCE,
        };
        if !due {
            return;
        }
        let announcement = encode(local);
        match b.flood.multicast(STATUS_TOPIC, announcement) {
            Ok(_) => self.last_announce = Some((Instant::now(), pair)),
            Err(e) => tracing::debug!(error = %e, "status seq not announced"),
        }
    }

    /// A message on [`STATUS_TOPIC`] from `origin`: records the seq, and fetches the status
    /// when the one held is older and there is no connection to the node.
    pub fn on_announcement(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        origin: NodeId,
        payload: Bytes,
    ) {
        let (pair, whole) = match Message::decode(payload) {
            Ok(Message::Announce { incarnation, seq }) => ((incarnation, seq), None),
            Ok(Message::Status(s)) if s.check(INLINE_MAX).is_ok() => {
                ((s.incarnation(), s.seq()), Some(s))
            }
            Ok(_) | Err(_) => {
                tracing::debug!(%origin, "malformed status announcement");
                return;
            }
        };
        if self.announced.get(&origin).is_some_and(|old| *old >= pair) {
            return;
        }
        self.announced.insert(origin.clone(), pair);
        if let Some(status) = whole {
            // Signed by its origin (a flood message), so as good as one fetched from it; kept
            // unless a newer one came over a connection meanwhile.
            let newer_held = self
                .known
                .get(&origin)
                .is_some_and(|s| (s.incarnation(), s.seq()) >= pair);
            if !newer_held {
                self.known.insert(origin, Arc::new(status));
            }
            return;
        }
        let held = self.known.get(&origin).map(|s| (s.incarnation(), s.seq()));
        if held.is_some_and(|h| h >= pair) {
            return;
        }
        self.fetch(swarm, &origin);
    }

    /// Opens a routed connection to `node` (its status comes with it), within the bounds.
    fn fetch(&mut self, swarm: &mut Swarm<Behaviour>, node: &NodeId) {
        let b = swarm.behaviour();
        if b.connection.is_routed(node).is_some() {
            return; // connected: the status protocol brings changes by itself
        }
        let now = Instant::now();
        if self
            .fetched
            .get(node)
            .is_some_and(|at| now.duration_since(*at) < FETCH_EVERY)
        {
            return;
        }
        let fetching = self
            .fetched
            .values()
            .filter(|at| now.duration_since(**at) < FETCH_EVERY)
            .count();
        if fetching >= MAX_FETCHING {
            return;
        }
        self.fetched.insert(node.clone(), now);
        let opts = DialOpts::peer_id(node.to_peer_id())
            .addresses(vec![route::circuit_address()])
            .condition(PeerCondition::Disconnected)
            .build();
        if let Err(e) = swarm.dial(opts) {
            tracing::debug!(%node, error = %e, "no routed connection for a status fetch");
        }
    }

    /// A status arrived from `node` over any connection.
    pub fn on_status(&mut self, node: NodeId, status: Arc<Status>) {
        self.known.insert(node, status);
    }

    /// Forgets the nodes that are no longer reachable (and bounds every table by that).
    pub fn prune(&mut self, reachable: &[NodeId]) {
        let keep: std::collections::HashSet<&NodeId> = reachable.iter().collect();
        self.announced.retain(|n, _| keep.contains(n));
        self.known.retain(|n, _| keep.contains(n));
        self.fetched.retain(|n, _| keep.contains(n));
    }

    /// What is known of `node`.
    pub fn of(&self, node: &NodeId) -> RemoteStatus {
        RemoteStatus {
            announced: self.announced.get(node).copied(),
            status: self.known.get(node).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small status goes whole, a large one as its pair only.
    #[test]
    fn small_statuses_are_announced_whole_large_ones_by_seq() {
        let small = Status::new(7, 9).with_payload(Bytes::from_static(b"height=7"));
        assert_eq!(
            Message::decode(encode(&small)).unwrap(),
            Message::Status(small.clone())
        );
        let large = Status::new(7, 10).with_payload(Bytes::from(vec![1u8; 2 * INLINE_MAX]));
        assert_eq!(
            Message::decode(encode(&large)).unwrap(),
            Message::Announce {
                incarnation: 7,
                seq: 10
            }
        );
        assert!(is_reserved(STATUS_TOPIC));
        assert!(!is_reserved("blocks"));
    }
}
