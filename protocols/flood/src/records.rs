//! Keeping every node's link-state database in step: announcing our record when our neighbours
//! or topics change, storing and forwarding the records of others, comparing database digests
//! with neighbours and resending the whole database when they differ.
//!
//! This is the half of the flood behaviour that decides what the graph looks like; the message
//! half (publishing, routing down the trees, delivery) only reads it.

use std::time::{Duration, Instant};

use futures_timer::Delay;
use libp2p_identity::PeerId;
use libp2p_swarm::{ConnectionId, ToSwarm};

use crate::{
    Behaviour, Event, Topic,
    topology::{Offer, short_id},
    wire::{self, Frame},
};

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
            self.announce_timer = Some(Delay::new(self.config.announce_delay));
        }
    }

    /// Publishes our record to every neighbour.
    pub(crate) fn announce(&mut self) {
        self.dirty = false;
        let neighbours = self.neighbours.keys().copied().collect();
        let record = self
            .topology
            .publish(neighbours, self.subscriptions.clone());
        let frame = Frame::Record(record).encode();
        let peers: Vec<PeerId> = self.neighbours.values().copied().collect();
        for peer in peers {
            if self.send(peer, frame.clone()) {
                self.stats.records_sent += 1;
            }
        }
    }

    /// Sends our whole database to `peer` (a new neighbour, or one whose digest differs).
    fn resync(&mut self, peer: PeerId) {
        self.resynced.insert(peer, Instant::now());
        for record in self.topology.records() {
            self.send_record(peer, record);
        }
    }

    pub(crate) fn on_record(&mut self, peer: PeerId, conn: ConnectionId, record: wire::Record) {
        let origin = short_id(&record.origin);
        // Records name their node without its key type (SPEC.md §2): the untyped rule reads it.
        let known = self
            .topology
            .node(origin)
            .filter(|n| n.as_bytes() == &record.origin[..]);
        let node = match known.cloned().map_or_else(
            || self.origins.get_untyped(&record.origin).map(|(n, _)| n),
            Ok,
        ) {
            Ok(n) => n,
            Err(e) => return self.close_inbound(peer, conn, format!("bad record origin: {e}")),
        };
        let neighbours = record.neighbours.clone();
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
                // Forward to the neighbours neither the origin nor the sender reached.
                let from = self.peers.get(&peer).and_then(|p| p.short);
                let covered_by_sender = from.map_or(&[][..], |s| self.topology.neighbours_of(s));
                let targets: Vec<PeerId> = self
                    .neighbours
                    .iter()
                    .filter(|(short, _)| {
                        Some(**short) != from
                            && **short != origin
                            && !neighbours.contains(short)
                            && !covered_by_sender.contains(short)
                    })
                    .map(|(_, p)| *p)
                    .collect();
                if !targets.is_empty()
                    && let Some(record) = self.topology.record(origin)
                {
                    let frame = Frame::Record(record).encode();
                    for peer in targets {
                        if self.send(peer, frame.clone()) {
                            self.stats.records_sent += 1;
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn on_digest(&mut self, peer: PeerId, digest: u64) {
        if digest == self.topology.digest() {
            return;
        }
        let recent = self
            .resynced
            .get(&peer)
            .is_some_and(|t| t.elapsed() < self.config.digest_interval);
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
            // A lost link is announced at once: until it is, trees route through it.
            self.dirty = true;
            self.announce_timer = Some(Delay::new(Duration::ZERO));
        }
    }
}
