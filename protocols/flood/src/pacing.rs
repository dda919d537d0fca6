//! The receiver's side of record pacing (SPEC.md §3): an honest node publishes at most
//! `5 + T / max_announce_interval` records in any `T` seconds, so a receiver stores no more of
//! any one node's records than twice that burst and one per `max_announce_interval` after it.
//! Without this a member could publish its own (validly signed) record as fast as it can
//! sign, and every node in the network would verify, store and pass on each version.
//!
//! A version is charged only once it is stored (a valid signature of its node, newer than what
//! was held), so nobody can spend another node's allowance with forged or replayed records.
//! One past the allowance is dropped before its signature is checked; the next one offered
//! after the bucket refills is taken, and digests tell the neighbours the versions differ
//! meanwhile.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// Records of one node a receiver stores at once: twice the five an honest node may publish
/// in a burst, since forwarding delays can bring versions closer together than they were sent.
pub(crate) const RECORD_BURST: f64 = 10.0;

/// Most nodes with a bucket; past it the full buckets (what a new one is) are forgotten.
const MAX_BUCKETS: usize = 8192;

/// What a bucket `(tokens, at)` holds at `now`, refilling one per `every`, at most
/// [`RECORD_BURST`].
fn refilled((tokens, at): (f64, Instant), every: Duration, now: Instant) -> f64 {
    let refill = now.saturating_duration_since(at).as_secs_f64() / every.as_secs_f64();
    (tokens + refill).min(RECORD_BURST)
}

/// One bucket of record versions per node (short id).
#[derive(Debug)]
pub(crate) struct Pacing {
    /// One version per this (the config's `max_announce_interval`).
    every: Duration,
    buckets: HashMap<u64, (f64, Instant)>,
}

impl Pacing {
    pub(crate) fn new(every: Duration) -> Self {
        Pacing {
            every: every.max(Duration::from_millis(1)),
            buckets: HashMap::new(),
        }
    }

    /// The versions of `node` a receiver would store now.
    fn tokens(&self, node: u64, now: Instant) -> f64 {
        self.buckets
            .get(&node)
            .map_or(RECORD_BURST, |&bucket| refilled(bucket, self.every, now))
    }

    /// Whether a new version of `node` may be stored now (checked before its signature).
    pub(crate) fn allows(&self, node: u64) -> bool {
        self.tokens(node, Instant::now()) >= 1.0
    }

    /// A version of `node` was stored.
    pub(crate) fn charge(&mut self, node: u64) {
        let now = Instant::now();
        let tokens = (self.tokens(node, now) - 1.0).max(0.0);
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&node) {
            let every = self.every;
            self.buckets
                .retain(|_, b| refilled(*b, every, now) < RECORD_BURST);
            if self.buckets.len() >= MAX_BUCKETS {
                // Every node is changing at full pace: forget one; it starts full again.
                let any = self.buckets.keys().next().copied();
                if let Some(any) = any {
                    self.buckets.remove(&any);
                }
            }
        }
        self.buckets.insert(node, (tokens, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let mut p = Pacing::new(Duration::from_millis(50));
        for _ in 0..RECORD_BURST as usize {
            assert!(p.allows(7));
            p.charge(7);
        }
        assert!(!p.allows(7), "the burst is spent");
        assert!(p.allows(8), "other nodes have their own");
        std::thread::sleep(Duration::from_millis(60));
        assert!(p.allows(7), "one more after an interval");
        p.charge(7);
        assert!(!p.allows(7));
    }
}
