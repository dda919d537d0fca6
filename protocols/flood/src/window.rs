//! Which message ids each origin has had accepted: per origin, the highest seqno accepted and a
//! bitmap of the `width` seqnos below it (SPEC.md §4). A copy of an accepted id is a duplicate;
//! an id below the window is too old. Unlike a cache of ids that expires, this refuses a replay
//! however late it comes, in memory bounded by the number of origins.
//!
//! Only ids whose signature was verified are accepted, so a forged frame can never make the
//! real message with its id look like a duplicate.

use std::collections::HashMap;

/// What the windows say of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Not accepted before, and within (or above) the origin's window.
    New,
    /// Accepted before.
    Duplicate,
    /// Below the origin's window, or at or below where a forgotten window ended.
    TooOld,
}

#[derive(Debug)]
struct Window {
    /// The highest seqno accepted.
    top: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`) set: seqno `top - i` was accepted.
    bits: Box<[u64]>,
    /// When it last accepted an id (a counter), for eviction.
    used: u64,
}

impl Window {
    fn new(seqno: u64, words: usize, used: u64) -> Self {
        let mut bits = vec![0u64; words].into_boxed_slice();
        bits[0] = 1;
        Window {
            top: seqno,
            bits,
            used,
        }
    }

    fn width(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn check(&self, seqno: u64) -> Check {
        if seqno > self.top {
            return Check::New;
        }
        let back = self.top - seqno;
        if back >= self.width() {
            return Check::TooOld;
        }
        if self.bits[(back / 64) as usize] & (1 << (back % 64)) != 0 {
            Check::Duplicate
        } else {
            Check::New
        }
    }

    /// Marks `seqno` (which [`Window::check`] found `New`).
    fn accept(&mut self, seqno: u64) {
        if seqno > self.top {
            shift_up(&mut self.bits, seqno - self.top);
            self.top = seqno;
        }
        let back = self.top - seqno;
        self.bits[(back / 64) as usize] |= 1 << (back % 64);
    }
}

/// Moves every bit `by` places up (bit `i` to `i + by`); bits past the end fall off.
fn shift_up(bits: &mut [u64], by: u64) {
    let words = bits.len();
    if by >= words as u64 * 64 {
        bits.fill(0);
        return;
    }
    let (word_shift, bit_shift) = ((by / 64) as usize, (by % 64) as u32);
    for i in (0..words).rev() {
        let low = i.checked_sub(word_shift);
        let mut v = low.map_or(0, |j| bits[j] << bit_shift);
        if bit_shift > 0
            && let Some(j) = low.and_then(|j| j.checked_sub(1))
        {
            v |= bits[j] >> (64 - bit_shift);
        }
        bits[i] = v;
    }
}

/// The windows of every origin, bounded: past `capacity` origins the least recently used
/// window is forgotten, keeping only its top (in `retired`, itself bounded), so that what it
/// had accepted is still refused.
#[derive(Debug)]
pub(crate) struct Windows {
    windows: HashMap<u64, Window>,
    retired: HashMap<u64, u64>,
    capacity: usize,
    retired_capacity: usize,
    words: usize,
    clock: u64,
}

impl Windows {
    /// Windows of `width` seqnos (rounded up to a multiple of 64) for up to `capacity` origins.
    pub fn new(width: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Windows {
            windows: HashMap::new(),
            retired: HashMap::new(),
            capacity,
            retired_capacity: capacity.saturating_mul(8),
            words: width.div_ceil(64).max(1),
            clock: 0,
        }
    }

    /// What `seqno` of `origin` (a short id) would be.
    pub fn check(&self, origin: u64, seqno: u64) -> Check {
        match self.windows.get(&origin) {
            Some(w) => w.check(seqno),
            None => match self.retired.get(&origin) {
                Some(&top) if seqno <= top => Check::TooOld,
                _ => Check::New,
            },
        }
    }

    /// Accepts `seqno` of `origin`, which [`Windows::check`] found `New` and whose signature
    /// was verified.
    pub fn accept(&mut self, origin: u64, seqno: u64) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(w) = self.windows.get_mut(&origin) {
            w.accept(seqno);
            w.used = clock;
            return;
        }
        if self.windows.len() >= self.capacity {
            self.evict();
        }
        self.retired.remove(&origin);
        self.windows
            .insert(origin, Window::new(seqno, self.words, clock));
    }

    fn evict(&mut self) {
        let Some((&oldest, _)) = self.windows.iter().min_by_key(|(_, w)| w.used) else {
            return;
        };
        let top = self.windows.remove(&oldest).map_or(0, |w| w.top);
        if self.retired.len() >= self.retired_capacity
            && let Some(&any) = self.retired.keys().next()
        {
            self.retired.remove(&any);
        }
        self.retired.insert(oldest, top);
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.windows.len(), self.retired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_new_once_and_old_ones_stay_refused() {
        let mut w = Windows::new(128, 10);
        assert_eq!(w.check(1, 1000), Check::New);
        w.accept(1, 1000);
        assert_eq!(w.check(1, 1000), Check::Duplicate);
        assert_eq!(
            w.check(1, 999),
            Check::New,
            "below the top, inside the window"
        );
        w.accept(1, 999);
        assert_eq!(w.check(1, 999), Check::Duplicate);
        w.accept(1, 1100);
        assert_eq!(w.check(1, 1000), Check::Duplicate, "kept across a shift");
        assert_eq!(w.check(1, 999), Check::Duplicate);
        assert_eq!(w.check(1, 998), Check::New);
        assert_eq!(w.check(1, 1100 - 128), Check::TooOld);
        w.accept(1, 1100 + 64 + 5); // a shift across a word boundary
        assert_eq!(w.check(1, 1100), Check::Duplicate);
        assert_eq!(w.check(1, 1101), Check::New);
        assert_eq!(w.check(1, 1000), Check::TooOld);
        w.accept(1, 1297); // 128 past the last top: the whole window shifts out
        assert_eq!(w.check(1, 1297), Check::Duplicate);
        assert_eq!(w.check(1, 1169), Check::TooOld);
        assert_eq!(w.check(1, 1170), Check::New);
        w.accept(1, u64::MAX);
        assert_eq!(w.check(1, u64::MAX), Check::Duplicate);
        assert_eq!(w.check(1, 1100), Check::TooOld);
        assert_eq!(w.check(2, 1000), Check::New, "windows are per origin");
    }

    #[test]
    fn shifting_moves_every_bit_by_the_same_amount() {
        for by in [1u64, 5, 63, 64, 65, 100, 191, 192, 255, 256, 1000] {
            let mut bits = [0u64; 4];
            let set = [0u64, 1, 62, 63, 64, 130, 200];
            for i in set {
                bits[(i / 64) as usize] |= 1 << (i % 64);
            }
            shift_up(&mut bits, by);
            for i in 0..256u64 {
                let want = i >= by && set.contains(&(i - by));
                let got = bits[(i / 64) as usize] & (1 << (i % 64)) != 0;
                assert_eq!(got, want, "shift {by}, bit {i}");
            }
        }
    }

    #[test]
    fn forgotten_windows_still_refuse_what_they_accepted() {
        let mut w = Windows::new(64, 2);
        w.accept(1, 100);
        w.accept(2, 200);
        w.accept(2, 201);
        w.accept(3, 300); // evicts origin 1, the least recently used
        assert_eq!(w.len(), (2, 1));
        assert_eq!(w.check(1, 100), Check::TooOld);
        assert_eq!(w.check(1, 99), Check::TooOld);
        assert_eq!(w.check(1, 101), Check::New);
        w.accept(1, 101);
        assert_eq!(w.check(1, 101), Check::Duplicate);
        assert_eq!(w.len(), (2, 1), "origin 2 retired in turn");
        for origin in 10..100 {
            w.accept(origin, 1);
        }
        let (windows, retired) = w.len();
        assert!(windows <= 2 && retired <= 16, "{windows} {retired}");
    }
}
