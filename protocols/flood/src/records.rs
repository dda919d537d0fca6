//! Keeping every node's link-state database in step: announcing our record when our neighbours
//! or topics change, storing and forwarding the records of others, and exchanging record
//! headers with new neighbours and with neighbours whose database digest differs, each side
//! then asking for the records it lacks.
//!
//! This is the half of the flood behaviour that decides what the graph looks like; the message
//! half (publishing, routing down the trees, delivery) only reads it.

use std::time::{Duration, Instant};

use bcos_p2p_core::NodeId;
use futures_timer::Delay;
use libp2p_identity::PeerId;
use libp2p_swarm::{ConnectionId, ToSwarm};

use crate::{
    Behaviour, Event, Topic,
    members::{Parked, Verdict},
    topology::{Offer, short_id},
    unix_nanos,
    wire::{self, Frame},
};

/// How far ahead of our clock a record's incarnation (its node's start time) may be: further,
/// and the record is refused (SPEC.md §3), so that no record can claim a future that every
/// later record of its node would have to outgrow.
pub(crate) const MAX_INCARNATION_AHEAD: Duration = Duration::from_secs(600);

/// How long the headers of stored records are collected before they are passed on, in one
/// SUMMARY per neighbour (SPEC.md §3): a node storing many records (a mesh forming) sends each
/// neighbour a few frames a second, whose headers its own records mostly make redundant.
const HEADER_FLUSH: Duration = Duration::from_millis(250);
/// Besides a node's parent in a record's tree, how many of its announcers there pass it the
/// record's header ([`crate::topology::Topology::passes_header`]).
const HEADER_BACKUPS: usize = 1;

/// How long a record asked of one neighbour is not asked of another (SPEC.md §3).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

impl Behaviour {
    fn send_record(&mut self, peer: PeerId, record: wire::Record) {
        if self.send(peer, Frame::Record(record).encode()) {
            self.stats.records_sent += 1;
        } else {
            tracing::debug!(%peer, "flood queue full: record not sent");
        }
    }

    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
        if self.announce_timer.is_none() {
            self.schedule_announce(self.config.announce_delay);
        }
    }

    /// Publishes our record after `delay`, or later if the last one was published less than
    /// the hold interval before that.
    fn schedule_announce(&mut self, delay: Duration) {
        let paced = self.last_announce.map_or(Duration::ZERO, |at| {
            (at + self.hold).saturating_duration_since(Instant::now())
        });
        self.announce_timer = Some(Delay::new(delay.max(paced)));
    }

    /// Publishes our record to every neighbour.
    pub(crate) fn announce(&mut self) {
        self.dirty = false;
        let now = Instant::now();
        // Busy (this record comes less than twice the maximum after the last one): the next
        // one waits twice as long, up to the maximum; after a quiet spell that long, the
        // minimum again. So at most 5 + T / max records in any T seconds (SPEC.md §3).
        let (min, max) = (
            self.config.min_announce_interval,
            self.config
                .max_announce_interval
                .max(self.config.min_announce_interval),
        );
        self.hold = match self.last_announce {
            Some(at) if now.duration_since(at) < max.saturating_mul(2) => {
                self.hold.saturating_mul(2).min(max)
            }
            _ => min,
        };
        self.last_announce = Some(now);
        let neighbours = self.neighbours.keys().copied().collect();
        let record = match self
            .topology
            .publish(neighbours, self.subscriptions.clone(), &self.key)
        {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign our flood record: not announced");
                return;
            }
        };
        let frame = Frame::Record(record).encode();
        let peers: Vec<PeerId> = self.neighbours.values().copied().collect();
        for peer in peers {
            if self.send(peer, frame.clone()) {
                self.stats.records_sent += 1;
            }
        }
    }

    /// Sends `peer` the headers of every record we hold (a new neighbour, or one whose digest
    /// differs): it asks for the ones it lacks (SPEC.md §3).
    fn resync(&mut self, peer: PeerId) {
        self.resynced.insert(peer, Instant::now());
        let headers = self.topology.headers();
        self.send_headers(peer, &headers);
    }

    /// Sends `headers` to `peer` in SUMMARY frames of at most [`wire::MAX_HEADERS`].
    fn send_headers(&mut self, peer: PeerId, headers: &[wire::Header]) {
        for chunk in headers.chunks(wire::MAX_HEADERS) {
            if self.send(peer, Frame::Summary(chunk.to_vec()).encode()) {
                self.stats.summaries_sent += 1;
            }
        }
    }

    /// A neighbour's headers: asks it for the records it holds newer than ours (unless asked
    /// of someone recently, or the record's node is a neighbour too: that one sends its own).
    pub(crate) fn on_summary(&mut self, peer: PeerId, headers: Vec<wire::Header>) {
        let now = Instant::now();
        if self.requested.len() >= 2 * self.config.max_nodes {
            self.requested
                .retain(|_, (_, at)| now.duration_since(*at) < REQUEST_TIMEOUT);
        }
        let from = self.peers.get(&peer).and_then(|p| p.short);
        let mut wanted = Vec::new();
        for h in headers {
            let pair = (h.incarnation, h.version);
            if self.topology.held(h.node).is_some_and(|held| pair <= held) {
                continue;
            }
            // A neighbour's records come from the neighbour itself: it sends us each one it
            // publishes (and its own headers when our digests keep differing).
            if Some(h.node) != from && self.neighbours.contains_key(&h.node) {
                continue;
            }
            let asked = self
                .requested
                .get(&h.node)
                .is_some_and(|(p, at)| *p >= pair && now.duration_since(*at) < REQUEST_TIMEOUT);
            if asked || self.requested.len() >= 2 * self.config.max_nodes {
                continue;
            }
            self.requested.insert(h.node, (pair, now));
            wanted.push(h.node);
        }
        if !wanted.is_empty() {
            self.send(peer, Frame::RecordRequest(wanted).encode());
        }
    }

    /// A neighbour asks for records: those we hold, as signed.
    pub(crate) fn on_record_request(&mut self, peer: PeerId, nodes: Vec<u64>) {
        for node in nodes {
            if let Some(record) = self.topology.record(node) {
                self.send_record(peer, record);
            }
        }
    }

    /// A record from `peer`: ignored unless newer than what we hold; then its signature must
    /// verify (else the peer's stream is closed) and its incarnation must not be ahead of our
    /// clock by more than [`MAX_INCARNATION_AHEAD`] before it is stored and passed on.
    pub(crate) fn on_record(&mut self, peer: PeerId, conn: ConnectionId, record: wire::Record) {
        self.stats.records_received += 1;
        let origin = short_id(&record.origin);
        let pair = (record.incarnation, record.version);
        if self.topology.held(origin).is_some_and(|held| pair <= held) {
            return; // what we hold, or older: nothing to check
        }
        if origin != self.topology.me() && !self.pacing.allows(origin) {
            // Faster than any honest node publishes: not worth a signature check.
            self.stats.records_over_pace += 1;
            tracing::debug!(%peer, origin, "flood record over its node's pace dropped");
            return;
        }
        let signed = (
            record.key_type,
            &record.origin,
            &record.signed_message()[..],
            &record.signature[..],
        );
        let Some(node) = self.check_signed(peer, conn, "record", signed) else {
            return;
        };
        if let Verdict::Take(Parked::Record(record)) =
            self.membership_of(peer, origin, &node, Parked::Record(record))
        {
            self.take_record(peer, node, record);
        }
    }

    /// A record whose signature verified and whose node is a member: stored and passed on
    /// unless too far in the future or no newer than what we hold.
    pub(crate) fn take_record(&mut self, peer: PeerId, node: NodeId, record: wire::Record) {
        let origin = short_id(&record.origin);
        let pair = (record.incarnation, record.version);
        let bound = unix_nanos().saturating_add(MAX_INCARNATION_AHEAD.as_nanos() as u64);
        if record.incarnation > bound {
            self.stats.records_refused += 1;
            tracing::debug!(%node, incarnation = record.incarnation, "flood record from too far in the future refused");
            return;
        }
        match self.topology.offer(node.clone(), record) {
            Offer::Stale => {}
            Offer::OwnNewer {
                incarnation,
                version,
            } => {
                tracing::info!(
                    incarnation,
                    version,
                    "the network holds a newer record of ours: outgrowing it"
                );
                self.topology.outgrow(incarnation, version);
                self.mark_dirty();
            }
            Offer::Full => {
                tracing::warn!(%node, max = self.config.max_nodes, "flood node table full: record dropped")
            }
            Offer::Stored { added, removed } => {
                self.stats.records_stored += 1;
                self.pacing.charge(origin);
                if self.requested.get(&origin).is_some_and(|(p, _)| *p <= pair) {
                    self.requested.remove(&origin);
                }
                for (topics, subscribed) in [(added, true), (removed, false)] {
                    for topic in topics {
                        let (node, topic) = (node.clone(), Topic(topic));
                        self.events.push_back(ToSwarm::GenerateEvent(if subscribed {
                            Event::Subscribed { node, topic }
                        } else {
                            Event::Unsubscribed { node, topic }
                        }));
                    }
                }
                // Pass on its header to the neighbours neither the origin nor the sender
                // reached, nor linked to the origin by their own records (the origin sends
                // them its records itself); each asks one neighbour for the record (SPEC.md §3).
                let from = self.peers.get(&peer).and_then(|p| p.short);
                // Neighbour lists as stored: sorted.
                let covered_by_sender = from.map_or(&[][..], |s| self.topology.neighbours_of(s));
                let targets: Vec<PeerId> = self
                    .neighbours
                    .iter()
                    .filter(|(short, _)| {
                        Some(**short) != from
                            && **short != origin
                            && covered_by_sender.binary_search(short).is_err()
                            && !self.topology.listed_either(origin, **short)
                    })
                    .map(|(_, p)| *p)
                    .collect();
                for peer in targets {
                    self.header_outbox.entry(peer).or_default().insert(origin);
                }
                if !self.header_outbox.is_empty() && self.header_timer.is_none() {
                    self.header_timer = Some(Delay::new(HEADER_FLUSH));
                }
            }
        }
    }

    /// Sends each neighbour the headers of the records stored since the last flush, those
    /// it may lack and that it hears of from us (down the record's tree, or as its
    /// announcer there: [`crate::topology::Topology::passes_header`]), in SUMMARY frames.
    pub(crate) fn flush_headers(&mut self) {
        for (peer, pending) in std::mem::take(&mut self.header_outbox) {
            let to = self.peers.get(&peer).and_then(|p| p.short);
            let mut headers: Vec<wire::Header> = pending
                .into_iter()
                .filter_map(|node| {
                    // The rule checked again with the records held now.
                    if to.is_some_and(|to| !self.topology.passes_header(node, to, HEADER_BACKUPS)) {
                        return None;
                    }
                    // Only what we still hold: a newer version replaced by an even newer one
                    // is passed on as that.
                    let (incarnation, version) = self.topology.held(node)?;
                    Some(wire::Header {
                        node,
                        incarnation,
                        version,
                    })
                })
                .collect();
            headers.sort_unstable_by_key(|h| h.node);
            self.send_headers(peer, &headers);
        }
    }

    /// A neighbour's digest. A difference is resynced (our headers sent) only once it has
    /// lasted a digest interval (two digests in a row), so that databases still converging
    /// through passed-on headers cost fewer summaries, and at most once per two digest
    /// intervals per peer (SPEC.md §3).
    pub(crate) fn on_digest(&mut self, peer: PeerId, digest: u64) {
        if digest == self.topology.digest() {
            self.differing.remove(&peer);
            return;
        }
        let interval = self.config.digest_interval;
        let since = *self.differing.entry(peer).or_insert_with(Instant::now);
        if since.elapsed() < interval.mul_f32(0.9) {
            return;
        }
        let recent = self
            .resynced
            .get(&peer)
            .is_some_and(|t| t.elapsed() < interval.saturating_mul(2));
        if !recent {
            tracing::debug!(%peer, "flood databases differ: resyncing");
            self.resync(peer);
        }
    }

    /// A connection's outbound stream opened or closed: update the neighbour set.
    pub(crate) fn refresh_neighbour(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let is_open = p.open().is_some();
        let Some(short) = p.short else {
            tracing::debug!(%peer, "flood peer without a NodeId: not used");
            return;
        };
        let was_open = self.neighbours.contains_key(&short);
        if is_open && !was_open {
            self.neighbours.insert(short, peer);
            self.mark_dirty();
            self.resync(peer);
        } else if !is_open && was_open {
            self.neighbours.remove(&short);
            self.resynced.remove(&peer);
            self.differing.remove(&peer);
            // A lost link is announced as soon as pacing allows: until it is, trees route
            // through it (meanwhile this node floods: it is dirty).
            self.dirty = true;
            self.schedule_announce(Duration::ZERO);
        }
    }
}
