//! Lazy repair, in the manner of Plumtree (SPEC.md §5): a node that forwards a message down the
//! origin's tree announces its id (IHAVE) to the neighbours whose announcer it is
//! ([`crate::topology::Topology::route`]); a node that hears of an id it has not accepted waits
//! a little (so the copy down the tree can win), then pulls it (IWANT) from an announcer, and
//! from the next one if that one does not deliver in time. A relay that drops what it should
//! forward, or a link that fails with messages in flight, then delays the nodes behind it
//! instead of cutting them off.
//!
//! A pulled copy is the DATA frame as its origin signed it, and goes through `on_data` like
//! any other copy (replay window, signature, forwarding, delivery): an announcer can neither
//! inject nor alter content, and delivery stays exactly-once. Everything is bounded: the frames
//! kept for pulls (count, bytes, age), the ids waiting for announcement per peer, the ids
//! pending a pull in all and per announcing peer, and the ids each peer may pull per second.

use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    time::Instant,
};

use futures_timer::Delay;
use libp2p_identity::PeerId;

use crate::{
    Behaviour,
    wire::{Data, Frame, Ids, MAX_IDS},
};

/// A message id on the wire of repair: the origin's short id and the seqno.
type Id = (u64, u64);

/// Most announcers remembered per missing id (the first one is asked first).
const MAX_ANNOUNCERS: usize = 4;

/// An id announced to us that we have not accepted.
#[derive(Debug)]
struct Missing {
    /// Who announced it, in order; `asked` of them have been asked.
    announcers: Vec<PeerId>,
    asked: usize,
    /// When to ask the next announcer (or give up).
    due: Instant,
    /// The peer whose pending count this id is charged to (its first announcer).
    charged: PeerId,
}

/// How many ids a peer may still pull from us: a bucket refilled at `rate` per second.
#[derive(Debug)]
struct Budget {
    tokens: f64,
    at: Instant,
}

/// What repair keeps.
#[derive(Debug, Default)]
pub(crate) struct Repair {
    /// Frames we announced, as accepted (signed by their origin), to answer pulls.
    cache: HashMap<Id, Data>,
    /// Cached ids in the order they were stored, with when and their size.
    order: VecDeque<(Id, Instant, usize)>,
    cache_bytes: usize,
    /// Ids to announce at the next tick, per peer.
    outbox: HashMap<PeerId, Vec<Id>>,
    /// Ids announced to us that we lack.
    missing: HashMap<Id, Missing>,
    /// How many missing ids are charged to each peer.
    charged: HashMap<PeerId, usize>,
    budgets: HashMap<PeerId, Budget>,
    /// Runs while anything above waits (every `Config::ihave_interval`).
    pub(crate) timer: Option<Delay>,
}

impl Repair {
    fn charge_off(&mut self, peer: PeerId) {
        if let Some(n) = self.charged.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.charged.remove(&peer);
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.order.is_empty() && self.outbox.is_empty() && self.missing.is_empty()
    }

    /// A peer is gone: nothing more to announce to it, no budget kept for it (the ids it
    /// announced stay; asking it fails and the next announcer is asked).
    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        self.outbox.remove(peer);
        self.budgets.remove(peer);
    }
}

/// Bytes a cached frame counts for: its fields as encoded.
fn size_of(data: &Data) -> usize {
    32 + data.origin.len()
        + data.topic.as_ref().map_or(0, String::len)
        + data.signature.len()
        + data.payload.len()
}

impl Behaviour {
    fn arm_repair_timer(&mut self) {
        if self.repair.timer.is_none() {
            self.repair.timer = Some(Delay::new(self.config.ihave_interval));
        }
    }

    /// Announces `data` (accepted here, as it came) to `lazy` at the next tick, and keeps it
    /// to serve their pulls.
    pub(crate) fn announce_lazily(&mut self, data: &Data, lazy: &[PeerId]) {
        if lazy.is_empty() || self.config.repair_cache_frames == 0 {
            return;
        }
        let id = (crate::topology::short_id(&data.origin), data.seqno);
        let now = Instant::now();
        let r = &mut self.repair;
        if let Entry::Vacant(slot) = r.cache.entry(id) {
            let size = size_of(data);
            if size > self.config.repair_cache_bytes {
                return; // could never be served: do not announce it
            }
            slot.insert(data.clone());
            r.order.push_back((id, now, size));
            r.cache_bytes += size;
            while r.order.len() > self.config.repair_cache_frames
                || r.cache_bytes > self.config.repair_cache_bytes
            {
                let Some((old, _, size)) = r.order.pop_front() else {
                    break;
                };
                r.cache.remove(&old);
                r.cache_bytes -= size;
            }
        }
        for peer in lazy {
            let ids = r.outbox.entry(*peer).or_default();
            if ids.len() < MAX_IDS {
                ids.push(id);
            } else {
                tracing::debug!(%peer, "flood announcements full for this tick: id not announced");
            }
        }
        self.arm_repair_timer();
    }

    /// An IHAVE from `peer`: the ids we have not accepted are pulled after
    /// `Config::repair_delay` unless a copy comes first.
    pub(crate) fn on_ihave(&mut self, peer: PeerId, ids: Ids) {
        let now = Instant::now();
        let me = self.topology.me();
        let due = now + self.config.repair_delay;
        let mut added = false;
        for id @ (origin, seqno) in ids.iter() {
            if origin == me || self.windows.check(origin, seqno) != crate::window::Check::New {
                continue;
            }
            let r = &mut self.repair;
            if let Some(m) = r.missing.get_mut(&id) {
                if m.announcers.len() < MAX_ANNOUNCERS && !m.announcers.contains(&peer) {
                    m.announcers.push(peer);
                }
                continue;
            }
            let charged = r.charged.get(&peer).copied().unwrap_or(0);
            if r.missing.len() >= self.config.max_repair_pending
                || charged >= self.config.repair_ids_per_peer
            {
                continue;
            }
            r.missing.insert(
                id,
                Missing {
                    announcers: vec![peer],
                    asked: 0,
                    due,
                    charged: peer,
                },
            );
            *r.charged.entry(peer).or_default() += 1;
            added = true;
        }
        if added {
            self.arm_repair_timer();
        }
    }

    /// An IWANT from `peer`: the cached frames it asks for, within its budget of
    /// `Config::repair_ids_per_peer` ids per second.
    pub(crate) fn on_iwant(&mut self, peer: PeerId, ids: Ids) {
        let now = Instant::now();
        let rate = self.config.repair_ids_per_peer as f64;
        let r = &mut self.repair;
        let budget = r.budgets.entry(peer).or_insert(Budget {
            tokens: rate,
            at: now,
        });
        budget.tokens =
            (budget.tokens + now.duration_since(budget.at).as_secs_f64() * rate).min(rate);
        budget.at = now;
        let mut frames = Vec::new();
        for id in ids.iter() {
            if budget.tokens < 1.0 {
                tracing::debug!(%peer, "flood pulls over budget: ignored");
                break;
            }
            if let Some(data) = r.cache.get(&id) {
                budget.tokens -= 1.0;
                frames.push(
                    Frame::Data(Data {
                        hops: data.hops.saturating_add(1).min(data.ttl),
                        ..data.clone()
                    })
                    .encode(),
                );
            }
        }
        for frame in frames {
            if self.send(peer, frame) {
                self.stats.repair_served += 1;
                self.stats.frames_sent += 1;
            } else {
                self.stats.dropped += 1;
            }
        }
    }

    /// A data frame from `peer` was accepted: it is no longer missing.
    pub(crate) fn repair_accepted(&mut self, id: Id, peer: PeerId) {
        if let Some(m) = self.repair.missing.remove(&id) {
            self.repair.charge_off(m.charged);
            if m.asked > 0 && m.announcers.get(m.asked - 1) == Some(&peer) {
                self.stats.repaired += 1;
            }
        }
    }

    /// Every `Config::ihave_interval` while there is work: sends the announcements, asks for
    /// the missing ids that are due (from the next announcer, or gives them up), forgets
    /// cached frames past their age.
    pub(crate) fn repair_tick(&mut self) {
        let now = Instant::now();
        let outbox = std::mem::take(&mut self.repair.outbox);
        for (peer, ids) in outbox {
            let count = ids.len() as u64;
            for ids in Ids::new(ids) {
                if self.send(peer, Frame::Ihave(ids).encode()) {
                    self.stats.ihave_sent += 1;
                }
            }
            self.stats.ihave_ids += count;
        }

        let max_age = self.config.repair_cache_ttl;
        let r = &mut self.repair;
        while let Some(&(id, at, size)) = r.order.front() {
            if now.duration_since(at) < max_age {
                break;
            }
            r.order.pop_front();
            r.cache.remove(&id);
            r.cache_bytes -= size;
        }

        let due: Vec<Id> = r
            .missing
            .iter()
            .filter(|(_, m)| m.due <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut wants: HashMap<PeerId, Vec<Id>> = HashMap::new();
        for id in due {
            if self.windows.check(id.0, id.1) != crate::window::Check::New {
                if let Some(m) = self.repair.missing.remove(&id) {
                    self.repair.charge_off(m.charged);
                }
                continue;
            }
            let Some(m) = self.repair.missing.get_mut(&id) else {
                continue;
            };
            // The next announcer still connected, with room in this tick's pull.
            let mut asked = None;
            while let Some(&peer) = m.announcers.get(m.asked) {
                if !self.peers.contains_key(&peer) {
                    m.asked += 1;
                    continue;
                }
                let list = wants.entry(peer).or_default();
                if list.len() >= MAX_IDS {
                    break; // asked at the next tick
                }
                list.push(id);
                m.asked += 1;
                asked = Some(peer);
                break;
            }
            if asked.is_some() {
                m.due = now + self.config.repair_timeout;
            } else if m.asked >= m.announcers.len() {
                // Nobody left to ask: given up (another announcement starts over).
                let charged = m.charged;
                self.repair.missing.remove(&id);
                self.repair.charge_off(charged);
            }
        }
        for (peer, ids) in wants {
            for ids in Ids::new(ids) {
                if self.send(peer, Frame::Iwant(ids).encode()) {
                    self.stats.iwant_sent += 1;
                }
            }
        }
        let idle = self.repair.is_idle();
        self.repair.timer = (!idle).then(|| Delay::new(self.config.ihave_interval));
    }
}
