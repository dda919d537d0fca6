//! Where the protocols report what a peer did wrong, for the connection manager to judge.
//!
//! A protocol behaviour sees a bad signature or a malformed frame, but deciding what to do
//! about the peer (keep it, drop it, ban it for a while) is the connection manager's business,
//! and it must weigh every protocol's reports together. [`Offences`] is the seam between them:
//! a cloneable handle (like [`crate::NodeIdBook`]) that protocols push `(PeerId, Offence)` into
//! and that the manager drains in its `poll`, woken by the report. Reports are folded into one
//! count per peer and kind while they wait, so the queue is bounded by the number of peers, not
//! by what they send.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::Context,
};

use futures::task::AtomicWaker;
use libp2p_identity::PeerId;

/// Most peers whose reports wait to be read; reports about further peers are dropped (and
/// counted in [`Offences::lost`]) until the reader catches up.
const MAX_WAITING_PEERS: usize = 4096;

/// What a peer did wrong, as a protocol judged it. The connection manager gives each kind its
/// own weight: honest peers never send a bad signature or a malformed frame, but may now and
/// then relay a copy too late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Offence {
    /// A frame whose signature does not verify (an honest relay checks before it forwards).
    BadSignature,
    /// A frame that does not decode, or that breaks the protocol (closes the stream).
    Malformed,
    /// A copy of a message below its origin's replay window: a replay, or a very late copy.
    TooOld,
    /// More frames or bytes per second than the protocol's per-peer budget.
    OverBudget,
    /// An answer to a request that was never sent on that connection.
    Unsolicited,
}

/// How many kinds of [`Offence`] there are.
pub const OFFENCE_KINDS: usize = 5;

impl Offence {
    /// Every kind, in the order of [`Offence::index`].
    pub const ALL: [Offence; OFFENCE_KINDS] = [
        Offence::BadSignature,
        Offence::Malformed,
        Offence::TooOld,
        Offence::OverBudget,
        Offence::Unsolicited,
    ];

    /// A short, stable word for events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Offence::BadSignature => "bad_signature",
            Offence::Malformed => "malformed",
            Offence::TooOld => "too_old",
            Offence::OverBudget => "over_budget",
            Offence::Unsolicited => "unsolicited",
        }
    }

    /// Its place in [`Offence::ALL`] (and in the count arrays [`Offences::take`] returns).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Offence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts per kind, indexed by [`Offence::index`].
pub type OffenceCounts = [u32; OFFENCE_KINDS];

#[derive(Default)]
struct Inner {
    waiting: Mutex<HashMap<PeerId, OffenceCounts>>,
    waker: AtomicWaker,
    totals: [AtomicU64; OFFENCE_KINDS],
    lost: AtomicU64,
}

/// The shared report of offences: protocols [`report`](Offences::report), the connection
/// manager [`take`](Offences::take)s. Clones share the reports. A handle nobody reads stays
/// bounded (see [`Offences::lost`]).
#[derive(Clone, Default)]
pub struct Offences {
    inner: Arc<Inner>,
}

impl fmt::Debug for Offences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offences")
            .field("totals", &self.totals())
            .field("lost", &self.lost())
            .finish()
    }
}

impl Offences {
    /// Reports that `peer` committed `offence`, and wakes the reader.
    pub fn report(&self, peer: PeerId, offence: Offence) {
        self.inner.totals[offence.index()].fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.len() >= MAX_WAITING_PEERS && !waiting.contains_key(&peer) {
                self.inner.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let count = &mut waiting.entry(peer).or_default()[offence.index()];
            *count = count.saturating_add(1);
        }
        self.inner.waker.wake();
    }

    /// Every report waiting, per peer, and registers `cx` to be woken by the next one.
    pub fn take(&self, cx: &mut Context<'_>) -> Vec<(PeerId, OffenceCounts)> {
        self.inner.waker.register(cx.waker());
        let mut waiting = self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_empty() {
            return Vec::new();
        }
        waiting.drain().collect()
    }

    /// Offences reported so far, per kind (indexed by [`Offence::index`]).
    pub fn totals(&self) -> [u64; OFFENCE_KINDS] {
        std::array::from_fn(|i| self.inner.totals[i].load(Ordering::Relaxed))
    }

    /// Reports dropped because too many peers' reports were waiting.
    pub fn lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    #[test]
    fn reports_fold_per_peer_and_kind_and_stay_bounded() {
        let offences = Offences::default();
        let reader = offences.clone();
        let (a, b) = (PeerId::random(), PeerId::random());
        for _ in 0..3 {
            offences.report(a, Offence::TooOld);
        }
        offences.report(a, Offence::BadSignature);
        offences.report(b, Offence::Malformed);
        let mut cx = Context::from_waker(Waker::noop());
        let mut got = reader.take(&mut cx);
        got.sort_by_key(|(p, _)| *p != a);
        assert_eq!(got[0], (a, [1, 0, 3, 0, 0]));
        assert_eq!(got[1], (b, [0, 1, 0, 0, 0]));
        assert!(reader.take(&mut cx).is_empty());
        assert_eq!(reader.totals(), [1, 1, 3, 0, 0]);

        for _ in 0..MAX_WAITING_PEERS + 10 {
            offences.report(PeerId::random(), Offence::OverBudget);
        }
        assert_eq!(reader.lost(), 10);
        assert_eq!(reader.take(&mut cx).len(), MAX_WAITING_PEERS);
    }

    #[test]
    fn kinds_have_stable_words_in_index_order() {
        let words: Vec<&str> = Offence::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            words,
            [
                "bad_signature",
                "malformed",
                "too_old",
                "over_budget",
                "unsolicited"
            ]
        );
        assert!(Offence::ALL.iter().enumerate().all(|(i, o)| o.index() == i));
    }
}
