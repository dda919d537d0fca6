//! The ids of messages already handled, bounded in count and age: a copy that arrives again
//! (over another path, or echoed back) is neither delivered nor forwarded twice.

use std::{
    collections::{HashSet, VecDeque},
    time::{Duration, Instant},
};

/// (origin short id, origin seqno).
pub(crate) type Id = (u64, u64);

#[derive(Debug)]
pub(crate) struct Seen {
    ids: HashSet<Id>,
    /// Insertion order with times, for eviction by age and by count.
    order: VecDeque<(Instant, Id)>,
    capacity: usize,
    max_age: Duration,
}

impl Seen {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Seen {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            max_age,
        }
    }

    /// Records `id`; false if it was already there.
    pub fn insert(&mut self, id: Id, now: Instant) -> bool {
        self.expire(now);
        if self.ids.contains(&id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some((_, old)) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.ids.insert(id);
        self.order.push_back((now, id));
        true
    }

    /// Forgets ids older than the maximum age.
    pub fn expire(&mut self, now: Instant) {
        while let Some((t, id)) = self.order.front().copied() {
            if now.duration_since(t) < self.max_age {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_count_and_age() {
        let mut seen = Seen::new(3, Duration::from_secs(10));
        let t = Instant::now();
        assert!(seen.insert((1, 1), t));
        assert!(!seen.insert((1, 1), t));
        assert!(seen.insert((1, 2), t));
        assert!(seen.insert((2, 1), t));
        assert!(seen.insert((2, 2), t), "the oldest makes room");
        assert_eq!(seen.len(), 3);
        assert!(seen.insert((1, 1), t), "evicted by count");
        let later = t + Duration::from_secs(11);
        seen.expire(later);
        assert_eq!(seen.len(), 0, "evicted by age");
    }
}
