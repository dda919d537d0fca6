//! Membership of origins (CA mode, SPEC.md §8): a data frame or record is taken only once its
//! origin's certificate chain has been checked against this node's trust anchors.
//!
//! A signature proves that a frame comes from the holder of a key; it does not prove that the
//! key belongs to a member of the chain. So each node keeps the checked chains of the origins it
//! has seen. A chain arrives in a CERT frame: every node sends its own to each peer as the
//! first frame of a connection, and a node that meets an origin it holds no chain for asks the
//! peer that passed the frame on (which took the frame, so it holds the chain), parking the
//! frame meanwhile. Parking is bounded per peer, so frames from made-up origins cost their
//! sender's share and nobody else's.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use bcos_p2p_core::NodeId;
use bytes::Bytes;
use futures_timer::Delay;
use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;

use crate::{
    Behaviour,
    topology::short_id,
    wire::{Cert, Data, Frame, Record},
};

/// The check of another node's certificate chain (leaf first, DER): its NodeId when the chain
/// leads to a trust anchor and is valid now, else why not.
pub type CheckChain = dyn Fn(&[Bytes]) -> Result<NodeId, String> + Send + Sync;

/// How a node tells members from strangers (CA mode): its own certificate chain, which it hands
/// to peers, and the check of other nodes' chains (the same one its TLS handshakes make).
/// Without one (open mode) any key that signs is an origin, and only the origin filter applies.
#[derive(Clone)]
pub struct Membership {
    chain: Vec<Bytes>,
    check: Arc<CheckChain>,
}

impl Membership {
    /// This node's `chain` (leaf first, DER) and the `check` of other nodes' chains.
    pub fn new(
        chain: Vec<Bytes>,
        check: impl Fn(&[Bytes]) -> Result<NodeId, String> + Send + Sync + 'static,
    ) -> Self {
        Membership {
            chain,
            check: Arc::new(check),
        }
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Most members whose checked chains are kept (a flood view holds at most 4096 nodes).
pub(crate) const KNOWN_CAPACITY: usize = 4096;
/// How long a checked chain is trusted before it is checked again (certificates expire).
const RECHECK_AFTER: Duration = Duration::from_secs(3600);
/// Most origins awaiting a chain that one peer's frames may open.
pub(crate) const MAX_PENDING_PER_PEER: usize = 32;
/// Most frames parked for one origin awaiting its chain.
const MAX_PARKED_PER_ORIGIN: usize = 64;
/// Most bytes of frames parked on behalf of one peer.
const MAX_PARKED_BYTES_PER_PEER: usize = 8 * 1024 * 1024;
/// Most peers remembered as able to answer for one origin.
const MAX_CANDIDATES: usize = 8;

/// A frame whose signature verified, waiting for its origin's chain.
pub(crate) enum Parked {
    Data(Data),
    Record(Record),
}

impl Parked {
    fn len(&self) -> usize {
        match self {
            Parked::Data(d) => d.payload.len() + d.signature.len() + d.origin.len() + 64,
            Parked::Record(r) => r.neighbours.len() * 8 + r.signature.len() + r.origin.len() + 64,
        }
    }
}

struct Known {
    node: NodeId,
    chain: Vec<Bytes>,
    checked: Instant,
    used: Instant,
}

struct Pending {
    node: NodeId,
    /// Who was asked, and when to give up on it.
    asked: PeerId,
    deadline: Instant,
    /// Who opened the entry (its share of [`MAX_PENDING_PER_PEER`]).
    opener: PeerId,
    /// Other peers that passed the origin's frames on: asked next.
    candidates: VecDeque<PeerId>,
    parked: Vec<(PeerId, Parked)>,
}

#[derive(Default)]
struct Load {
    origins: usize,
    bytes: usize,
}

/// The membership state of a behaviour.
pub(crate) struct Members {
    membership: Membership,
    me: u64,
    known: HashMap<u64, Known>,
    pending: HashMap<u64, Pending>,
    load: HashMap<PeerId, Load>,
    timeout: Duration,
    pub(crate) timer: Option<Delay>,
    /// Chains checked at or before this instant are checked again at their next use (the
    /// check itself changed, e.g. a CRL came: [`Behaviour::recheck_members`]).
    stale_before: Option<Instant>,
}

impl Members {
    pub(crate) fn new(membership: Membership, me: u64, timeout: Duration) -> Self {
        Members {
            membership,
            me,
            known: HashMap::new(),
            pending: HashMap::new(),
            load: HashMap::new(),
            timeout,
            timer: None,
            stale_before: None,
        }
    }

    /// Whether `short` is a member with a chain checked recently enough (re-checking an old
    /// one; a chain that no longer passes, e.g. expired, is forgotten).
    fn is_known(&mut self, short: u64) -> bool {
        if short == self.me {
            return true;
        }
        let Some(k) = self.known.get_mut(&short) else {
            return false;
        };
        let now = Instant::now();
        let stale = self.stale_before.is_some_and(|t| k.checked <= t);
        if stale || now.duration_since(k.checked) >= RECHECK_AFTER {
            match (self.membership.check)(&k.chain) {
                Ok(node) if node == k.node => k.checked = now,
                Ok(_) | Err(_) => {
                    tracing::info!(node = %k.node, "a member's certificate chain no longer passes");
                    self.known.remove(&short);
                    return false;
                }
            }
        }
        k.used = now;
        true
    }

    /// The chain of `short` this node can hand out: its own, or a checked one.
    fn chain_of(&self, short: u64) -> Vec<Bytes> {
        if short == self.me {
            return self.membership.chain.clone();
        }
        self.known
            .get(&short)
            .map(|k| k.chain.clone())
            .unwrap_or_default()
    }

    /// Checks `cert`'s chain for its origin `short`; stores it when it passes.
    fn check(&mut self, short: u64, cert: &Cert) -> Result<NodeId, String> {
        let node = (self.membership.check)(&cert.chain)?;
        if node.as_bytes() != &cert.origin[..] || node.key_type().code() != cert.key_type {
            return Err(format!("the chain is {node}'s, not the origin's"));
        }
        if self.known.len() >= KNOWN_CAPACITY
            && let Some(oldest) = self
                .known
                .iter()
                .min_by_key(|(_, k)| k.used)
                .map(|(s, _)| *s)
        {
            self.known.remove(&oldest);
        }
        let now = Instant::now();
        self.known.insert(
            short,
            Known {
                node: node.clone(),
                chain: cert.chain.clone(),
                checked: now,
                used: now,
            },
        );
        Ok(node)
    }

    fn charge(&mut self, peer: PeerId, origins: isize, bytes: isize) {
        let load = self.load.entry(peer).or_default();
        load.origins = load.origins.saturating_add_signed(origins);
        load.bytes = load.bytes.saturating_add_signed(bytes);
        if load.origins == 0 && load.bytes == 0 {
            self.load.remove(&peer);
        }
    }

    /// Releases an entry's charges; returns its parked frames.
    fn release(&mut self, short: u64) -> Option<(NodeId, Vec<(PeerId, Parked)>)> {
        let entry = self.pending.remove(&short)?;
        self.charge(entry.opener, -1, 0);
        for (peer, parked) in &entry.parked {
            self.charge(*peer, 0, -(parked.len() as isize));
        }
        Some((entry.node, entry.parked))
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

/// What to do with a frame whose signature verified.
pub(crate) enum Verdict {
    /// Its origin is a member (or membership is not checked): take it (handed back, never
    /// copied on this path).
    Take(Parked),
    /// Parked (or dropped) until the origin's chain is known.
    Wait,
}

impl Behaviour {
    /// Checks the origins of data frames and records against `membership` from now on (CA
    /// mode): a frame is taken only once its origin's certificate chain has passed the check.
    /// The composed node sets this from its CA-TLS configuration.
    pub fn set_membership(&mut self, membership: Membership) {
        let me = self.topology.me();
        self.members = Some(Members::new(membership, me, self.config.member_timeout));
    }

    /// Checks every member's chain again at its next use, dropping those that no longer pass
    /// (call it when the check changed: new CRLs). Without a membership, nothing to do.
    pub fn recheck_members(&mut self) {
        if let Some(members) = self.members.as_mut() {
            members.stale_before = Some(Instant::now());
        }
    }

    /// The first frame of every connection in CA mode: our own chain, so that a peer takes our
    /// frames without asking for it.
    pub(crate) fn own_cert(&self) -> Option<Bytes> {
        let members = self.members.as_ref()?;
        Some(
            Frame::Cert(Cert {
                key_type: self.me.key_type().code(),
                origin: self.me_bytes.clone(),
                chain: members.membership.chain.clone(),
            })
            .encode(),
        )
    }

    /// Whether a frame from `node` (short id `short`), passed on by `peer`, can be taken now;
    /// if its chain is not known yet, the frame is parked and the chain asked for.
    pub(crate) fn membership_of(
        &mut self,
        peer: PeerId,
        short: u64,
        node: &NodeId,
        frame: Parked,
    ) -> Verdict {
        let Some(members) = &mut self.members else {
            return Verdict::Take(frame);
        };
        if members.is_known(short) {
            return Verdict::Take(frame);
        }
        let len = frame.len();
        let load = members.load.get(&peer);
        let (origins, bytes) = load.map_or((0, 0), |l| (l.origins, l.bytes));
        if bytes.saturating_add(len) > MAX_PARKED_BYTES_PER_PEER {
            self.stats.non_members += 1;
            return Verdict::Wait;
        }
        if let Some(entry) = members.pending.get_mut(&short) {
            if entry.parked.len() >= MAX_PARKED_PER_ORIGIN {
                self.stats.non_members += 1;
                return Verdict::Wait;
            }
            if entry.asked != peer
                && !entry.candidates.contains(&peer)
                && entry.candidates.len() < MAX_CANDIDATES
            {
                entry.candidates.push_back(peer);
            }
            entry.parked.push((peer, frame));
            members.charge(peer, 0, len as isize);
            return Verdict::Wait;
        }
        if origins >= MAX_PENDING_PER_PEER {
            self.stats.non_members += 1;
            return Verdict::Wait;
        }
        let deadline = Instant::now() + members.timeout;
        members.pending.insert(
            short,
            Pending {
                node: node.clone(),
                asked: peer,
                deadline,
                opener: peer,
                candidates: VecDeque::new(),
                parked: vec![(peer, frame)],
            },
        );
        members.charge(peer, 1, len as isize);
        if members.timer.is_none() {
            members.timer = Some(Delay::new(members.timeout));
        }
        self.request_cert(peer, node);
        Verdict::Wait
    }

    fn request_cert(&mut self, peer: PeerId, node: &NodeId) {
        let frame = Frame::CertRequest {
            key_type: node.key_type().code(),
            origin: Bytes::copy_from_slice(node.as_bytes()),
        };
        tracing::debug!(%peer, %node, "asking for an origin's certificate chain");
        self.send(peer, frame.encode());
    }

    /// A peer asks for a chain: ours, or one we checked; an empty chain if we hold none.
    pub(crate) fn on_cert_request(&mut self, peer: PeerId, key_type: u8, origin: Bytes) {
        let Some(members) = &self.members else {
            return; // open mode: nobody asks, and we have nothing to give
        };
        let chain = members.chain_of(short_id(&origin));
        let frame = Frame::Cert(Cert {
            key_type,
            origin,
            chain,
        });
        self.send(peer, frame.encode());
    }

    /// A chain from `peer`: for an origin we asked about, or `peer`'s own as the first frame of
    /// a connection. One that does not pass closes the peer's stream.
    pub(crate) fn on_cert(&mut self, peer: PeerId, conn: ConnectionId, cert: Cert) {
        let short = short_id(&cert.origin);
        let from = self.peers.get(&peer).and_then(|p| p.short);
        let Some(members) = &mut self.members else {
            return;
        };
        let asked = members.pending.get(&short).map(|p| p.asked);
        let own = from == Some(short);
        if asked.is_none() && (!own || members.is_known(short)) {
            return; // unasked for: not worth a check
        }
        if cert.chain.is_empty() {
            if asked == Some(peer) {
                self.ask_next(short);
            }
            return;
        }
        match members.check(short, &cert) {
            Ok(node) => {
                tracing::debug!(%node, "member's certificate chain checked");
                if let Some((node, parked)) = members.release(short) {
                    self.take_parked(node, parked);
                }
            }
            Err(e) => {
                self.stats.bad_certificates += 1;
                self.close_inbound(peer, conn, format!("a certificate chain that fails: {e}"));
                if asked == Some(peer) {
                    self.ask_next(short);
                }
            }
        }
    }

    /// Asks the next peer that passed on `short`'s frames; with none left, drops them.
    fn ask_next(&mut self, short: u64) {
        let Some(members) = &mut self.members else {
            return;
        };
        let Some(entry) = members.pending.get_mut(&short) else {
            return;
        };
        while let Some(peer) = entry.candidates.pop_front() {
            if self.peers.contains_key(&peer) {
                entry.asked = peer;
                entry.deadline = Instant::now() + members.timeout;
                let node = entry.node.clone();
                self.request_cert(peer, &node);
                return;
            }
        }
        if let Some((node, parked)) = members.release(short) {
            tracing::debug!(%node, frames = parked.len(), "no member chain for an origin: its frames are dropped");
            self.stats.non_members += parked.len() as u64;
        }
    }

    /// Origins whose asked peer did not answer in time: ask the next.
    pub(crate) fn expire_pending(&mut self) {
        let Some(members) = &mut self.members else {
            return;
        };
        let now = Instant::now();
        let late: Vec<u64> = members
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for short in late {
            self.ask_next(short);
        }
        if let Some(members) = &mut self.members {
            members.timer = members
                .next_deadline()
                .map(|d| Delay::new(d.saturating_duration_since(Instant::now())));
        }
    }

    /// A peer is gone: origins it was asked about go to the next peer.
    pub(crate) fn members_forget(&mut self, peer: PeerId) {
        let Some(members) = &mut self.members else {
            return;
        };
        let asked: Vec<u64> = members
            .pending
            .iter_mut()
            .filter_map(|(short, p)| {
                p.candidates.retain(|c| *c != peer);
                (p.asked == peer).then_some(*short)
            })
            .collect();
        for short in asked {
            self.ask_next(short);
        }
    }

    fn take_parked(&mut self, node: NodeId, parked: Vec<(PeerId, Parked)>) {
        for (peer, frame) in parked {
            match frame {
                Parked::Data(data) => self.take_data(peer, node.clone(), data),
                Parked::Record(record) => self.take_record(peer, node.clone(), record),
            }
        }
    }
}
