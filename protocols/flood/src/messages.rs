//! The message half of the flood behaviour: publishing (signing, choosing the next hops down
//! the origin's tree) and accepting data frames (replay window, signature, forwarding,
//! delivery). It only reads the graph that `records.rs` keeps.

use bcos_p2p_core::{NodeId, Offence};
use bytes::Bytes;
use libp2p_identity::PeerId;
use libp2p_swarm::{ConnectionId, ToSwarm};

use crate::{
    Behaviour, Event, FloodError, MessageId, Peer, Topic,
    members::{Parked, Verdict},
    topology::short_id,
    window::Check,
    wire::{DATA_OVERHEAD, Data, Frame, MAX_NEIGHBOURS},
};

impl Behaviour {
    pub(crate) fn publish(
        &mut self,
        topic: Option<String>,
        payload: Bytes,
    ) -> Result<MessageId, FloodError> {
        self.publish_as(topic, payload, self.config.ttl.max(1))
    }

    pub(crate) fn publish_as(
        &mut self,
        topic: Option<String>,
        payload: Bytes,
        ttl: u8,
    ) -> Result<MessageId, FloodError> {
        let max = self.config.max_frame.saturating_sub(DATA_OVERHEAD);
        if payload.len() > max {
            return Err(FloodError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        self.seqno = self.seqno.saturating_add(1);
        let seqno = self.seqno;
        let me = self.topology.me();
        // While our own record lags our links, our view is not one others can route by.
        let view = if self.dirty {
            0
        } else {
            self.topology.digest()
        };
        let (targets, lazy) = self.targets(me, topic.as_deref(), None, view);
        let mut data = Data {
            key_type: self.me.key_type().code(),
            origin: self.me_bytes.clone(),
            seqno,
            ttl,
            hops: 1,
            view,
            topic,
            signature: Bytes::new(),
            payload,
        };
        data.signature = self
            .key
            .sign(&data.signed_message())
            .map_err(|e| FloodError::Sign(e.to_string()))?
            .into();
        // Our own copies coming back are duplicates without a signature check.
        self.windows.accept(me, seqno);
        if data.topic.is_none() {
            self.send_links(&targets);
        }
        let sent = self.send_data(&data, &targets);
        self.announce_lazily(&data, &lazy);
        if !targets.is_empty() && sent == 0 {
            return Err(FloodError::QueueFull(targets.len()));
        }
        self.stats.published += 1;
        tracing::trace!(seqno, peers = sent, topic = ?data.topic, "flood message sent");
        Ok(MessageId {
            origin: self.me.clone(),
            seqno,
        })
    }

    /// The neighbours a message from `origin` goes to from here, and those to announce it to
    /// (lazy repair, `repair.rs`).
    ///
    /// When our view of the network is the one the origin had (`view`, its digest), every node
    /// computes the same tree: the message goes to our children in the origin's tree that lead
    /// to someone who wants it, plus neighbours outside the tree (whom nobody else would
    /// reach), and is announced to the neighbours whose announcer we are.
    ///
    /// While views differ (changes spreading, or our own record lagging our links) trees may
    /// differ from node to node. The message then still goes down the origin's tree as we see
    /// it (our own message to every neighbour), and is announced to every other neighbour,
    /// which pulls it unless a copy comes first; with no tree for the origin yet (its record
    /// not here), it is announced to every neighbour. That costs a
    /// data frame per node and an id per link, instead of a copy on every link, and every
    /// neighbour of a node that has the message hears of it, so it reaches every node
    /// flooding would (SPEC.md §4). Only with announcing off (`repair_cache_frames` 0) do we
    /// flood: every neighbour but the sender.
    pub(crate) fn targets(
        &mut self,
        origin: u64,
        topic: Option<&str>,
        from_peer: Option<PeerId>,
        view: u64,
    ) -> (Vec<PeerId>, Vec<PeerId>) {
        let from = from_peer
            .and_then(|p| self.peers.get(&p))
            .and_then(|p| p.short);
        // A node whose links changed since its last record is out of step too: its record
        // (what the trees are made of) no longer says where it can send.
        let agreed = view != 0 && !self.dirty && view == self.topology.digest();
        let announcing = self.config.repair_cache_frames > 0;
        // A broadcast that came straight from its origin: the origin sends its own broadcast to
        // every neighbour, in step or not (SPEC.md §4), and says whom (its LINKS), so out of
        // step too those got it as they would in step. Without its LINKS, the neighbours our
        // records link with the origin are taken as those, and are announced to by their
        // announcers, all `repair_announcers` of them (in step one does): views differ, so
        // nodes may not agree on who those are, and more of them make it likelier that one
        // who has the message does.
        let from_origin = !agreed && topic.is_none() && from == Some(origin);
        let me = self.topology.me();
        let own = origin == me;
        let origin_links = from_peer
            .filter(|_| from_origin)
            .and_then(|p| self.peers.get(&p))
            .and_then(|p| p.links.as_deref());
        // The neighbours that may be sent or told the message: all but the sender and the
        // origin (and those without a NodeId or a usable connection).
        let candidate = |p: &Peer| {
            p.short
                .filter(|&s| Some(s) != from && s != origin && p.usable(None).is_some())
        };
        // Out of step, our own message goes to every neighbour, and a broadcast straight from
        // its origin goes to no neighbour its LINKS list: our own, or one whose LINKS list
        // every neighbour, needs no tree of the origin. A tree is a search of the graph, and
        // while records keep coming (as when a mesh forms) each message searched anew.
        let listed_all = origin_links.is_some_and(|l| {
            self.peers
                .values()
                .filter_map(candidate)
                .all(|s| l.binary_search(&s).is_ok())
        });
        let tree_needed = (agreed || !own) && !listed_all;
        let route = if (agreed || announcing) && tree_needed {
            // Out of step, every other neighbour is announced to (but those above): no
            // announcers to work out otherwise.
            let a = self.config.repair_announcers;
            let (announcers, of_children) = if agreed {
                (a, a.min(1))
            } else if from_origin {
                (a, a)
            } else {
                (0, 0)
            };
            self.topology
                .route_with(origin, topic, announcers, of_children)
        } else {
            None
        };
        let (mut targets, mut lazy) = (Vec::new(), Vec::new());
        for (peer, p) in &self.peers {
            let Some(short) = &candidate(p) else { continue };
            let go = match &route {
                // Our own message while out of step: every link of ours, including those no
                // record lists yet, is one hop for it.
                _ if !agreed && own => true,
                Some(r) => {
                    r.children.binary_search(short).is_ok()
                        // Outside the tree nobody else reaches it, if everyone sees that tree;
                        // out of step, announcing it costs less than a copy from every node
                        // that sees it outside.
                        || (agreed && !r.in_tree(*short))
                        // Our own message, to a neighbour whose record does not list us yet:
                        // one hop, where the tree would take it round through another node.
                        || (own && !self.topology.linked_with_me(*short))
                }
                // No tree for the origin yet (its record unknown here): announced to every
                // neighbour, each pulls one copy; flooded if announcing is off.
                None => !announcing,
            };
            let announcer = || {
                route
                    .as_ref()
                    .is_some_and(|r| r.lazy.binary_search(short).is_ok())
            };
            let reached_by_tree = || {
                from_origin
                    && route
                        .as_ref()
                        .is_some_and(|r| r.parent_in_tree(*short) == Some(origin))
            };
            let (go, announce) = match origin_links {
                // The origin's LINKS say whom it sent its broadcast to, whatever the records
                // say. Those need no copy from us. Of the nodes listed (all got it from the
                // origin), the one after a node in ascending short-id order, round the list,
                // announces it there, in case that node's copy was lost on the way: one
                // announcer per node, as in step (SPEC.md §5), the same for every origin.
                Some(l) => match l.binary_search(short) {
                    Ok(i) => (false, l[(i + 1) % l.len()] == me),
                    Err(_) => (go, true),
                },
                None => (go, (!agreed && !reached_by_tree()) || announcer()),
            };
            if go {
                targets.push(*peer);
            } else if announce {
                lazy.push(*peer);
            }
        }
        (targets, lazy)
    }

    /// Tells each of `targets`, the neighbours we send a broadcast of ours to, whom we send it
    /// to (LINKS, SPEC.md §3 and §4), unless we told it so last: a neighbour our records do not
    /// link with us yet got it from us, and the others need not announce it there.
    fn send_links(&mut self, targets: &[PeerId]) {
        let mut links: Vec<u64> = targets
            .iter()
            .filter_map(|t| self.peers.get(t).and_then(|p| p.short))
            .collect();
        links.sort_unstable();
        links.dedup();
        if links.len() > MAX_NEIGHBOURS {
            // More than a frame holds: an empty list, so that no neighbour goes by an older
            // one, and each announces to every neighbour, as without LINKS.
            links.clear();
        }
        let fingerprint = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&links, &mut h);
            std::hash::Hasher::finish(&h)
        };
        let mut frame = None;
        for peer in targets {
            if self.peers.get(peer).and_then(|p| p.links_sent) == Some(fingerprint) {
                continue;
            }
            let frame = frame
                .get_or_insert_with(|| Frame::Links(links.clone()).encode())
                .clone();
            if self.send(*peer, frame)
                && let Some(p) = self.peers.get_mut(peer)
            {
                p.links_sent = Some(fingerprint);
            }
        }
    }

    /// A neighbour's LINKS: whom it sends its own broadcasts to now. Kept only to tell which
    /// of our neighbours got its broadcasts from it (`targets`): a peer that misstates them
    /// only keeps its own broadcasts from being announced.
    pub(crate) fn on_links(&mut self, peer: PeerId, links: Vec<u64>) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.links = Some(links);
        }
    }

    /// Queues `data` for each of `targets`; returns how many took it.
    pub(crate) fn send_data(&mut self, data: &Data, targets: &[PeerId]) -> usize {
        if targets.is_empty() {
            return 0;
        }
        let frame = Frame::Data(data.clone()).encode();
        let mut sent = 0;
        for peer in targets {
            if self.send(*peer, frame.clone()) {
                sent += 1;
            } else {
                self.stats.dropped += 1;
                tracing::warn!(%peer, seqno = data.seqno, "flood queue full: message dropped for this peer");
            }
        }
        self.stats.frames_sent += sent as u64;
        sent
    }

    /// A data frame from `peer`: dropped if its id was accepted before or is below the
    /// origin's window; else its signature is checked (once per id: only a verified frame
    /// marks its id), then it is forwarded and delivered (SPEC.md §4).
    pub(crate) fn on_data(&mut self, peer: PeerId, conn: ConnectionId, data: Data) {
        let origin_short = short_id(&data.origin);
        match self.windows.check(origin_short, data.seqno) {
            Check::New => {}
            Check::Duplicate => {
                self.stats.duplicates += 1;
                return;
            }
            Check::TooOld => {
                self.stats.too_old += 1;
                // Honest relays may send a copy this late now and then: a light offence.
                self.offences.report(peer, Offence::TooOld);
                return;
            }
        }
        let signed = (
            data.key_type,
            &data.origin,
            &data.signed_message()[..],
            &data.signature[..],
        );
        let Some(origin) = self.check_signed(peer, conn, "data frame", signed) else {
            return;
        };
        if let Verdict::Take(Parked::Data(data)) =
            self.membership_of(peer, origin_short, &origin, Parked::Data(data))
        {
            self.take_data(peer, origin, data);
        }
    }

    /// A data frame whose signature verified and whose origin is a member: accepted once,
    /// then forwarded and delivered.
    pub(crate) fn take_data(&mut self, peer: PeerId, origin: NodeId, data: Data) {
        let origin_short = short_id(&data.origin);
        if self.windows.check(origin_short, data.seqno) != Check::New {
            // A copy parked beside the first (SPEC.md §8).
            self.stats.duplicates += 1;
            return;
        }
        self.windows.accept(origin_short, data.seqno);
        self.repair_accepted((origin_short, data.seqno), peer);
        if !(self.origin_filter)(&origin) {
            // Marked, so its copies cost nothing more; neither delivered nor relayed.
            self.stats.refused_origins += 1;
            return;
        }
        if origin_short == self.topology.me() {
            // Ours, from an earlier run whose clock was ahead: number ours after it.
            self.stats.duplicates += 1;
            self.seqno = self.seqno.max(data.seqno);
            return;
        }
        // The ttl is the origin's (signed), capped by ours: nobody makes a frame go further
        // than this node would send its own.
        if data.hops < data.ttl.min(self.config.ttl) {
            let (targets, lazy) =
                self.targets(origin_short, data.topic.as_deref(), Some(peer), data.view);
            let next = Data {
                hops: data.hops + 1,
                ..data.clone()
            };
            self.send_data(&next, &targets);
            self.announce_lazily(&data, &lazy);
        }
        let wanted = match &data.topic {
            None => true,
            Some(t) => self.subscriptions.contains(t),
        };
        if wanted {
            self.stats.delivered += 1;
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::Message {
                    id: MessageId {
                        origin: origin.clone(),
                        seqno: data.seqno,
                    },
                    origin,
                    topic: data.topic.map(Topic),
                    payload: data.payload,
                    hops: data.hops,
                }));
        }
    }
}
