//! Large message buffers kept for the next large message.
//!
//! A message of several MiB is joined in one buffer as its parts arrive. Above glibc's mmap
//! threshold (2 MiB as the node sets it, `bcos_p2p::malloc`) such a buffer is fresh pages from
//! the kernel: each page is faulted in and zeroed as the parts land, and unmapped when the
//! application drops the message. For a stream of 32 MiB blocks that was a third of the
//! receiving node's time. Here the buffer of a delivered message comes back when the last
//! `Bytes` of it is dropped, and the next large message is joined in it, its pages already
//! in place. Large payloads that arrive compressed are inflated into such buffers too. What
//! is kept is bounded ([`MAX_KEPT`] buffers, [`MAX_KEPT_BYTES`] in all); past
//! that a buffer is freed as before.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers of at least this capacity are kept (twice the mmap threshold: smaller ones come
/// from malloc's arenas, already reused).
pub(crate) const MIN: usize = 4 << 20;
/// Free buffers kept at most.
pub(crate) const MAX_KEPT: usize = 2;
/// Capacity of the free buffers kept, together, at most.
pub(crate) const MAX_KEPT_BYTES: usize = 64 << 20;

/// Free buffers, each emptied.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// The pool of the process: every connection's messages.
static POOL: Pool = Pool::new();

impl Pool {
    const fn new() -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
        }
    }

    /// The smallest kept buffer that holds `len` bytes, if `len` is at least [`MIN`] and
    /// one does.
    fn take(&self, len: usize) -> Option<Vec<u8>> {
        if len < MIN {
            return None;
        }
        let mut free = self.free.lock().ok()?;
        let at = (0..free.len())
            .filter(|&i| free[i].capacity() >= len)
            .min_by_key(|&i| free[i].capacity())?;
        Some(free.swap_remove(at))
    }

    /// Keeps `buf` (emptied) if it is large enough and the bounds allow; else frees it.
    fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() < MIN {
            return;
        }
        buf.clear();
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if free.len() < MAX_KEPT && kept.saturating_add(buf.capacity()) <= MAX_KEPT_BYTES {
            free.push(buf);
        }
    }

    /// `whole` as [`Bytes`] whose buffer comes back to this pool when the last of them is
    /// dropped (small buffers are plain `Bytes`).
    fn bytes(&'static self, whole: Vec<u8>) -> Bytes {
        if whole.capacity() < MIN {
            return Bytes::from(whole);
        }
        Bytes::from_owner(Kept {
            buf: whole,
            pool: self,
        })
    }
}

/// A kept buffer for a message of `len` bytes (see [`Pool::take`]).
pub(crate) fn take(len: usize) -> Option<Vec<u8>> {
    POOL.take(len)
}

/// A joined message's bytes, its buffer kept when they are dropped (see [`Pool::bytes`]).
pub(crate) fn bytes(whole: Vec<u8>) -> Bytes {
    POOL.bytes(whole)
}

/// A message's buffer on its way back to its pool.
struct Kept {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Kept {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> &'static Pool {
        Box::leak(Box::default())
    }

    fn filled(cap: usize, byte: u8) -> Vec<u8> {
        let mut v = Vec::with_capacity(cap);
        v.resize(cap / 2, byte);
        v
    }

    /// A large message's buffer comes back once its last `Bytes` is dropped, emptied, and
    /// serves the next message that fits; small ones are not kept.
    #[test]
    fn a_delivered_buffer_serves_the_next_large_message() {
        let pool = fresh();
        let message = pool.bytes(filled(MIN, 7));
        assert_eq!(message.len(), MIN / 2);
        assert!(message.iter().all(|&b| b == 7));
        let part = message.slice(10..20);
        drop(message);
        assert!(pool.take(MIN).is_none(), "a slice still holds it");
        drop(part);
        assert!(pool.take(MIN + 1).is_none(), "too small for this one");
        let again = pool.take(MIN).expect("kept");
        assert_eq!((again.len(), again.capacity() >= MIN), (0, true));
        assert!(pool.take(MIN).is_none(), "taken");
        assert!(
            pool.take(MIN / 2).is_none(),
            "small messages are not served"
        );
        drop(pool.bytes(filled(MIN / 2, 1)));
        assert!(
            pool.free.lock().unwrap().is_empty(),
            "small buffers are not kept"
        );
    }

    /// The smallest buffer that fits is taken, and what is kept stays within its bounds.
    #[test]
    fn kept_buffers_stay_within_their_bounds() {
        let pool = fresh();
        pool.put(Vec::with_capacity(2 * MIN));
        pool.put(Vec::with_capacity(MIN));
        assert!(
            pool.take(MIN).unwrap().capacity() < 2 * MIN,
            "the smaller one"
        );
        for _ in 0..2 * MAX_KEPT {
            pool.put(Vec::with_capacity(MIN));
        }
        let kept = pool.free.lock().unwrap().len();
        assert_eq!(kept, MAX_KEPT);
        let big = fresh();
        for _ in 0..MAX_KEPT {
            big.put(Vec::with_capacity(MAX_KEPT_BYTES / 2));
        }
        let free = big.free.lock().unwrap();
        assert!(free.iter().map(Vec::capacity).sum::<usize>() <= MAX_KEPT_BYTES);
        assert_eq!(free.len(), 2);
    }
}
