//! Per-peer budgets of inbound DATA frames, and separately of control frames: a token bucket of
//! frames per second and one of bytes per second for each peer (SPEC.md §4, step 0, and §6). A
//! frame past either budget is dropped before
//! anything else is done with it (no signature check, no forwarding), counted, and reported as
//! an offence at most once a second per peer, so that a peer that keeps flooding is banned
//! while one short burst past the budget costs little. The defaults are far above what an
//! honest peer relays. A bucket outlives its peer's connection until it has filled up again,
//! so reconnecting does not refill it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bcos_p2p_core::Offence;
use libp2p_identity::PeerId;

use crate::{
    Behaviour,
    wire::{Data, Frame},
};

/// How many seconds of budget a bucket holds: what a peer may send at once after a quiet time
/// (a relay flushing its queue after a stall).
const BURST_SECONDS: u64 = 2;
/// At most one offence report per peer in this time while it stays over budget.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Most buckets kept; past it the buckets that are full again are forgotten (a full bucket is
/// what a new one is), then the one idle longest.
const MAX_BUCKETS: usize = 4096;

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the budget.
    Pass,
    /// Past it: drop the frame, and report the peer when `report`.
    Drop {
        /// The first drop since the last report a second or more ago.
        report: bool,
    },
}

#[derive(Debug)]
struct Bucket {
    frames: f64,
    bytes: f64,
    at: Instant,
    reported: Option<Instant>,
}

/// The buckets of the peers with a connection (see the module docs).
#[derive(Debug)]
pub(crate) struct Budgets {
    /// Frames per second; 0: no frame budget.
    frames_per_s: u32,
    /// Bytes per second; 0: no byte budget.
    bytes_per_s: u64,
    /// The bytes a bucket holds at most.
    max_bytes: f64,
    /// How long an untouched bucket takes to fill up from empty.
    refill: Duration,
    peers: HashMap<PeerId, Bucket>,
}

impl Budgets {
    /// Budgets of `frames_per_s` frames and `bytes_per_s` bytes per second per peer (0: none);
    /// the byte bucket holds at least two frames of `max_frame` bytes, so that a peer may always
    /// send a message of the largest size.
    pub(crate) fn new(frames_per_s: u32, bytes_per_s: u64, max_frame: usize) -> Self {
        let burst = bytes_per_s.saturating_mul(BURST_SECONDS);
        let max_bytes = burst.max(2u64.saturating_mul(max_frame as u64)) as f64;
        let bytes_refill = if bytes_per_s == 0 {
            0.0
        } else {
            max_bytes / bytes_per_s as f64
        };
        let refill = Duration::from_secs(BURST_SECONDS)
            .max(Duration::try_from_secs_f64(bytes_refill).unwrap_or(Duration::MAX));
        Budgets {
            frames_per_s,
            bytes_per_s,
            max_bytes,
            refill,
            peers: HashMap::new(),
        }
    }

    /// Charges `peer` for a frame of `len` bytes at `now`.
    pub(crate) fn charge(&mut self, peer: PeerId, len: usize, now: Instant) -> Verdict {
        if self.frames_per_s == 0 && self.bytes_per_s == 0 {
            return Verdict::Pass;
        }
        let max_frames = f64::from(self.frames_per_s) * BURST_SECONDS as f64;
        let max_bytes = self.max_bytes;
        if self.peers.len() >= MAX_BUCKETS && !self.peers.contains_key(&peer) {
            self.make_room(now);
        }
        let b = self.peers.entry(peer).or_insert(Bucket {
            frames: max_frames,
            bytes: max_bytes,
            at: now,
            reported: None,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = now;
        b.frames = (b.frames + elapsed * f64::from(self.frames_per_s)).min(max_frames);
        b.bytes = (b.bytes + elapsed * self.bytes_per_s as f64).min(max_bytes);
        let len = len as f64;
        let frames_ok = self.frames_per_s == 0 || b.frames >= 1.0;
        let bytes_ok = self.bytes_per_s == 0 || b.bytes >= len;
        if frames_ok && bytes_ok {
            b.frames -= 1.0;
            b.bytes -= len;
            return Verdict::Pass;
        }
        let report = b
            .reported
            .is_none_or(|r| now.saturating_duration_since(r) >= REPORT_EVERY);
        if report {
            b.reported = Some(now);
        }
        Verdict::Drop { report }
    }

    /// Forgets a peer whose last connection closed, if its bucket is full again by now
    /// (else it is kept, so that reconnecting does not refill it, and forgotten later).
    pub(crate) fn forget(&mut self, peer: &PeerId, now: Instant) {
        if self
            .peers
            .get(peer)
            .is_some_and(|b| now.saturating_duration_since(b.at) >= self.refill)
        {
            self.peers.remove(peer);
        }
    }

    /// Forgets the buckets that are full again; if none is, the one idle longest.
    fn make_room(&mut self, now: Instant) {
        let refill = self.refill;
        self.peers
            .retain(|_, b| now.saturating_duration_since(b.at) < refill);
        if self.peers.len() >= MAX_BUCKETS {
            let oldest = self.peers.iter().min_by_key(|(_, b)| b.at).map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.peers.remove(&p);
            }
        }
    }
}

impl Behaviour {
    /// Charges `peer`'s budget for `data`: false when the frame is past it (then it is
    /// counted, and the peer reported now and then).
    pub(crate) fn within_budget(&mut self, peer: PeerId, data: &Data) -> bool {
        let verdict = self.budgets.charge(peer, data_len(data), Instant::now());
        self.judged(peer, verdict, false)
    }

    /// Charges `peer`'s control budget for `frame` if it is a control frame ([`control_cost`]),
    /// likewise; other frames pass.
    pub(crate) fn control_within_budget(&mut self, peer: PeerId, frame: &Frame) -> bool {
        let Some(cost) = control_cost(frame) else {
            return true;
        };
        let verdict = self.control_budgets.charge(peer, cost, Instant::now());
        self.judged(peer, verdict, true)
    }

    /// Counts a frame past a budget (the control budget if `control`) and reports its peer when
    /// the verdict says so; true for a frame within the budget.
    fn judged(&mut self, peer: PeerId, verdict: Verdict, control: bool) -> bool {
        let Verdict::Drop { report } = verdict else {
            return true;
        };
        if control {
            self.stats.control_over_budget += 1;
        } else {
            self.stats.over_budget += 1;
        }
        if report {
            tracing::info!(%peer, control, "flood: a peer is over its budget; dropping the excess");
            self.offences.report(peer, Offence::OverBudget);
        }
        false
    }
}

/// What `frame` costs the control byte budget, or None when it is not charged to it: DATA has
/// its own budget, and RECORD is paced per node (SPEC.md §3) and fetched in bursts on a new
/// link. A control frame costs its body's size, and an IHAVE or IWANT 18 bytes per id (a
/// lookup each), however few bytes its runs take.
fn control_cost(frame: &Frame) -> Option<usize> {
    Some(match frame {
        Frame::Ihave(ids) | Frame::Iwant(ids) => ids.len().saturating_mul(18),
        Frame::Summary(headers) => headers.len().saturating_mul(24).saturating_add(3),
        Frame::RecordRequest(nodes) | Frame::Links(nodes) => {
            nodes.len().saturating_mul(8).saturating_add(3)
        }
        Frame::Digest(_) => 9,
        Frame::CertRequest { origin, .. } => origin.len().saturating_add(4),
        Frame::Cert(cert) => cert
            .chain
            .iter()
            .fold(cert.origin.len().saturating_add(4), |n, c| {
                n.saturating_add(c.len()).saturating_add(3)
            }),
        Frame::Data(_) | Frame::Record(_) => return None,
    })
}

/// The encoded size of a DATA frame's body (what the byte budget counts).
pub(crate) fn data_len(d: &Data) -> usize {
    let topic = d.topic.as_ref().map_or(0, String::len);
    25usize
        .saturating_add(d.origin.len())
        .saturating_add(topic)
        .saturating_add(d.signature.len())
        .saturating_add(d.payload.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A distinct PeerId per `i` (an identity multihash of its bytes).
    fn peer_no(i: u64) -> PeerId {
        let mut bytes = vec![0x00, 8];
        bytes.extend_from_slice(&i.to_be_bytes());
        PeerId::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn frames_past_the_budget_are_dropped_and_reported_once_a_second() {
        let mut b = Budgets::new(10, 0, 1024);
        let (peer, other) = (peer_no(1), peer_no(2));
        let t0 = Instant::now();
        // A full bucket: two seconds' worth at once.
        for _ in 0..20 {
            assert_eq!(b.charge(peer, 100, t0), Verdict::Pass);
        }
        assert_eq!(b.charge(peer, 100, t0), Verdict::Drop { report: true });
        assert_eq!(b.charge(peer, 100, t0), Verdict::Drop { report: false });
        // Another peer has its own bucket.
        assert_eq!(b.charge(other, 100, t0), Verdict::Pass);
        // 10 frames per second come back.
        let t1 = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(b.charge(peer, 100, t1), Verdict::Pass);
        }
        assert_eq!(b.charge(peer, 100, t1), Verdict::Drop { report: false });
        let t2 = t0 + Duration::from_millis(1000);
        assert_eq!(b.charge(peer, 100, t2), Verdict::Pass);
        for _ in 0..4 {
            b.charge(peer, 100, t2);
        }
        assert_eq!(b.charge(peer, 100, t2), Verdict::Drop { report: true });
    }

    #[test]
    fn bytes_are_budgeted_and_a_largest_frame_always_fits() {
        let max_frame = 1 << 20;
        let mut b = Budgets::new(0, 1000, max_frame);
        let peer = peer_no(1);
        let t0 = Instant::now();
        assert_eq!(b.charge(peer, max_frame, t0), Verdict::Pass);
        assert_eq!(b.charge(peer, max_frame, t0), Verdict::Pass);
        assert_eq!(b.charge(peer, 1, t0), Verdict::Drop { report: true });
        // 1000 bytes a second refill it.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(b.charge(peer, 2000, t1), Verdict::Pass);
        assert_eq!(b.charge(peer, 1, t1), Verdict::Drop { report: true });
        b.forget(&peer, t1);
        assert_eq!(
            b.charge(peer, 1, t1),
            Verdict::Drop { report: false },
            "kept while not full"
        );
        let full = t1 + b.refill;
        b.forget(&peer, full);
        assert!(b.peers.is_empty(), "forgotten once full again");
        for i in 0..MAX_BUCKETS as u64 + 10 {
            b.charge(peer_no(i + 10), 1, full);
            assert!(b.peers.len() <= MAX_BUCKETS);
        }
        let mut none = Budgets::new(0, 0, max_frame);
        for _ in 0..1000 {
            assert_eq!(none.charge(peer, usize::MAX, t0), Verdict::Pass);
        }
    }
}
