//! Network-wide status, for [`crate::node::Node`]: every node learns the status seq of every
//! reachable node, not only of its direct peers, and fetches a changed status over a routed
//! connection.
//!
//! The seqs travel beside the link-state records: each node multicasts its
//! `(incarnation, seq)` on the reserved topic [`STATUS_TOPIC`], which every node subscribes
//! to, when its status changes; and again, at most every [`REANNOUNCE`], when a node has
//! become reachable since its last announcement (a node joining, a partition healing) or one
//! has restarted, so that they learn it. A network whose membership holds still repeats its
//! seqs only every [`REANNOUNCE_IDLE`]: a periodic announcement would cost every link of a
//! full mesh a frame per node per period, the one idle cost that grows with the network.
//! The message is a status protocol frame (`/bcos/status` SPEC): an `Announce`, or, when the
//! whole status encodes in at most [`INLINE_MAX`] bytes (a block height and hash, the usual
//! case), the `Status` itself, so nobody needs to fetch it. A flood message is signed by its
//! origin and delivered exactly once, so a relay can neither forge nor replay one. A node
//! holding an older status of a node it has no connection to opens a routed connection
//! (`/bcos/route`) to it; the status protocol on that connection brings the whole status, and
//! unicast closes the connection once it idles. Fetches are bounded: one per node per
//! [`FETCH_EVERY`], and at most [`MAX_FETCHING`] routed dials at once.

use std::{
    collections::{HashMap, HashSet},
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

/// The least time between two announcements of an unchanged seq, made because nodes joined.
pub const REANNOUNCE: Duration = Duration::from_secs(30);

/// How often a node announces its unchanged seq when no node joined (a backstop for an
/// announcement lost on the way, e.g. with a link failing under it).
pub const REANNOUNCE_IDLE: Duration = Duration::from_secs(300);

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
    /// When this node announces its own seq.
    schedule: Schedule,
}

/// When this node announces its own seq network-wide (see the module's documentation).
#[derive(Debug, Default)]
struct Schedule {
    /// When this node last announced, and what.
    last: Option<(Instant, (u64, u64))>,
    /// The nodes reachable at the last announcement, less those that became unreachable or
    /// restarted since: the nodes that have it.
    told: HashSet<NodeId>,
}

impl Schedule {
    /// Whether to announce `pair` at `now` with `reachable` reachable; `force`: the status
    /// was just set.
    fn due(&self, now: Instant, pair: (u64, u64), reachable: &[NodeId], force: bool) -> bool {
        let Some((at, last)) = self.last else {
            return true;
        };
        if force || last != pair {
            return true;
        }
        let since = now.saturating_duration_since(at);
        since >= REANNOUNCE_IDLE
            || (since >= REANNOUNCE && reachable.iter().any(|n| !self.told.contains(n)))
    }

    /// `pair` was announced at `now`, to the nodes `reachable` then.
    fn announced(&mut self, now: Instant, pair: (u64, u64), reachable: &[NodeId]) {
        self.last = Some((now, pair));
        self.told = reachable.iter().cloned().collect();
    }
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
            schedule: Schedule {
                last: Some((Instant::now(), (local.incarnation(), local.seq()))),
                told: HashSet::new(),
            },
            ..NetworkStatus::default()
        }
    }

    /// The periodic upkeep: announces this node's seq when [`Schedule::due`] says so, and
    /// forgets the nodes no longer reachable ([`Self::prune`]).
    pub fn tick(&mut self, swarm: &mut Swarm<Behaviour>) {
        let reachable = swarm.behaviour_mut().flood.reachable();
        self.announce(swarm, &reachable, false);
        self.prune(&reachable);
    }

    /// Announces this node's status seq, just set.
    pub fn status_set(&mut self, swarm: &mut Swarm<Behaviour>) {
        let reachable = swarm.behaviour_mut().flood.reachable();
        self.announce(swarm, &reachable, true);
    }

    /// Announces this node's status seq when [`Schedule::due`] says so (`force`: the status
    /// was just set), with `reachable` reachable.
    fn announce(&mut self, swarm: &mut Swarm<Behaviour>, reachable: &[NodeId], force: bool) {
        let b = swarm.behaviour_mut();
        let local = b.status.local();
        let pair = (local.incarnation(), local.seq());
        let now = Instant::now();
        if !self.schedule.due(now, pair, reachable, force) {
            return;
        }
        let announcement = encode(local);
        match b.flood.multicast(STATUS_TOPIC, announcement) {
            Ok(_) => self.schedule.announced(now, pair, reachable),
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
        if self.take(&origin, payload) {
            self.fetch(swarm, &origin);
        }
    }

    /// Records an announcement from `origin`; true if its status is to be fetched.
    fn take(&mut self, origin: &NodeId, payload: Bytes) -> bool {
        let (pair, whole) = match Message::decode(payload) {
            Ok(Message::Announce { incarnation, seq }) => ((incarnation, seq), None),
            Ok(Message::Status(s)) if s.check(INLINE_MAX).is_ok() => {
                ((s.incarnation(), s.seq()), Some(s))
            }
            Ok(_) | Err(_) => {
                tracing::debug!(%origin, "malformed status announcement");
                return false;
            }
        };
        let old = self.announced.get(origin).copied();
        if old.is_some_and(|old| old >= pair) {
            return false;
        }
        if old.is_some_and(|(incarnation, _)| incarnation != pair.0) {
            // It restarted, forgetting the seqs it had: it is told ours again.
            self.schedule.told.remove(origin);
        }
        self.announced.insert(origin.clone(), pair);
        if let Some(status) = whole {
            // Signed by its origin (a flood message), so as good as one fetched from it; kept
            // unless a newer one came over a connection meanwhile.
            let newer_held = self
                .known
                .get(origin)
                .is_some_and(|s| (s.incarnation(), s.seq()) >= pair);
            if !newer_held {
                self.known.insert(origin.clone(), Arc::new(status));
            }
            return false;
        }
        let held = self.known.get(origin).map(|s| (s.incarnation(), s.seq()));
        held.is_none_or(|h| h < pair)
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
    fn prune(&mut self, reachable: &[NodeId]) {
        let keep: std::collections::HashSet<&NodeId> = reachable.iter().collect();
        self.announced.retain(|n, _| keep.contains(n));
        self.known.retain(|n, _| keep.contains(n));
        self.fetched.retain(|n, _| keep.contains(n));
        // One that comes back is told our seq again.
        self.schedule.told.retain(|n| keep.contains(n));
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

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|_| {
                crate::NodeKey::generate(crate::KeyType::Secp256k1)
                    .unwrap()
                    .node_id()
                    .clone()
            })
            .collect()
    }

    /// An unchanged seq is announced again only when a node joined (at most every
    /// `REANNOUNCE`) or every `REANNOUNCE_IDLE`; a change goes at once.
    #[test]
    fn an_unchanged_seq_is_announced_again_when_nodes_join_not_on_a_timer() {
        let ids = nodes(3);
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert!(s.due(t0, (1, 1), &[], false), "never announced");
        s.announced(t0, (1, 1), &ids[..2]);
        let later = |secs| t0 + Duration::from_secs(secs);
        // Nobody joined: quiet past REANNOUNCE, until the idle backstop.
        assert!(!s.due(later(31), (1, 1), &ids[..2], false));
        assert!(!s.due(later(299), (1, 1), &ids[..1], false), "a node left");
        assert!(s.due(later(300), (1, 1), &ids[..2], false));
        // A node joined: announced once REANNOUNCE has passed since the last announcement.
        assert!(!s.due(later(29), (1, 1), &ids, false));
        assert!(s.due(later(30), (1, 1), &ids, false));
        // A change, or a status just set, goes at once.
        assert!(s.due(later(1), (1, 2), &ids[..2], false));
        assert!(s.due(later(1), (1, 1), &ids[..2], true));
        s.announced(later(30), (1, 1), &ids);
        assert!(!s.due(later(70), (1, 1), &ids, false), "all told");
    }

    /// A node that became unreachable, or restarted, is told again as one that joined.
    #[test]
    fn nodes_that_come_back_or_restart_are_told_again() {
        let ids = nodes(2);
        let t0 = Instant::now();
        let at = t0 + REANNOUNCE;
        let mut n = NetworkStatus::default();
        n.schedule.announced(t0, (1, 1), &ids);
        assert!(!n.schedule.due(at, (1, 1), &ids, false));
        n.prune(&ids[..1]);
        assert!(n.schedule.due(at, (1, 1), &ids, false), "came back");
        n.schedule.announced(t0, (1, 1), &ids);
        let status = |incarnation, seq| Message::Status(Status::new(incarnation, seq)).encode();
        // A later seq of the same run changes nothing; another incarnation is a restart.
        assert!(!n.take(&ids[1], status(5, 2)), "inline: nothing to fetch");
        assert!(!n.take(&ids[1], status(5, 3)));
        assert!(!n.schedule.due(at, (1, 1), &ids, false));
        assert!(!n.take(&ids[1], status(6, 1)));
        assert!(n.schedule.due(at, (1, 1), &ids, false), "restarted");
    }
}
