//! zstd for 1.1 messages: compress what is worth it, and decompress without letting a peer
//! choose how much memory that takes.

use std::{collections::HashMap, sync::OnceLock};

use bytes::Bytes;
use futures::{channel::oneshot, executor::ThreadPool};
use zstd::bulk::{Compressor, Decompressor};

use crate::traffic::Compression;

/// A compressed payload is sent only when it is at most this fraction of the original.
const WORTH_IT: f64 = 0.9;
/// After a payload of a module did not compress, up to this many of its next payloads are sent
/// as they are without trying (doubling per failure from 1): incompressible traffic (already
/// compressed or encrypted data) costs one attempt now and then, not one per message.
const MAX_SKIP: u32 = 64;

/// Payloads at least this large are compressed on [`pool`], off the connection's task: at
/// zstd level 1's few hundred MB/s, 256 KiB is under a millisecond, and a 32 MiB block is
/// tens of milliseconds during which nothing else of the connection would move.
pub(crate) const OFFLOAD_BYTES: usize = 256 * 1024;

/// A compression running on [`pool`]: the compressed bytes, or `None` if zstd failed.
pub(crate) type Pending = oneshot::Receiver<Option<Vec<u8>>>;

/// The threads that compress large payloads, shared by all connections of the process: as
/// many as the machine has cores, at most four, started on first use. A thread pool of the
/// `futures` crate (already the async toolkit here) rather than one of our own. `None` if the
/// threads could not be started.
fn pool() -> Option<&'static ThreadPool> {
    static POOL: OnceLock<Option<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        ThreadPool::builder()
            .pool_size(threads)
            .name_prefix("bcos-p2p-zstd-")
            .create()
            .inspect_err(
                |e| tracing::warn!(error = %e, "no compression threads; compressing inline"),
            )
            .ok()
    })
    .as_ref()
}

/// Per-module memory of how compression went.
#[derive(Debug, Default, Clone, Copy)]
struct Luck {
    skip_next: u32,
    backoff: u32,
}

/// One connection's compressor and decompressor (zstd contexts are reused between messages).
pub(crate) struct Zstd {
    settings: Compression,
    compressor: Option<Compressor<'static>>,
    decompressor: Option<Decompressor<'static>>,
    luck: HashMap<u16, Luck>,
}

impl std::fmt::Debug for Zstd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zstd")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Zstd {
    pub(crate) fn new(settings: Compression) -> Self {
        Zstd {
            settings,
            compressor: None,
            decompressor: None,
            luck: HashMap::new(),
        }
    }

    /// `payload` compressed, when compression is on, the payload is at least the threshold,
    /// and the result is worth sending instead; `None`: send it as it is.
    pub(crate) fn compress(&mut self, module: u16, payload: &[u8]) -> Option<Bytes> {
        if !self.should_try(module, payload.len()) {
            return None;
        }
        if self.compressor.is_none() {
            self.compressor = Compressor::new(self.settings.level).ok();
        }
        let compressed = self.compressor.as_mut()?.compress(payload).ok();
        self.judge(module, payload.len(), compressed)
    }

    /// Starts compressing `payload` on [`pool`] when [`Self::compress`] would try it: for
    /// large payloads, whose compression would hold up the connection (every stream on it)
    /// for milliseconds. Give the outcome to [`Self::judge`].
    pub(crate) fn offload(&mut self, module: u16, payload: &Bytes) -> Option<Pending> {
        if !self.should_try(module, payload.len()) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let (payload, level) = (payload.clone(), self.settings.level);
        let job = move || {
            // The receiver is gone when the message was dropped meanwhile.
            let _ = tx.send(zstd::bulk::compress(&payload, level).ok());
        };
        match pool() {
            Some(pool) => pool.spawn_ok(async move { job() }),
            // No threads could be started: compress here, as for small payloads.
            None => job(),
        }
        Some(rx)
    }

    /// Whether to try compressing a payload of `len` bytes of `module` now (counting down the
    /// module's skips after payloads that did not compress).
    fn should_try(&mut self, module: u16, len: usize) -> bool {
        if !self.settings.enabled || len < self.settings.threshold.max(1) {
            return false;
        }
        let luck = self.luck.entry(module).or_default();
        if luck.skip_next > 0 {
            luck.skip_next -= 1;
            return false;
        }
        true
    }

    /// What to send for a payload of `raw` bytes given its compressed form (`None`: it
    /// failed): the compressed bytes when they are worth it; remembers how it went.
    pub(crate) fn judge(
        &mut self,
        module: u16,
        raw: usize,
        compressed: Option<Vec<u8>>,
    ) -> Option<Bytes> {
        let luck = self.luck.entry(module).or_default();
        match compressed {
            Some(c) if (c.len() as f64) <= raw as f64 * WORTH_IT => {
                *luck = Luck::default();
                Some(Bytes::from(c))
            }
            _ => {
                luck.backoff = (luck.backoff.max(1) * 2).min(MAX_SKIP);
                luck.skip_next = luck.backoff;
                None
            }
        }
    }

    /// Decompresses one zstd frame whose content size is declared in it and is at most
    /// `limit`: exactly that much is allocated, so a tiny frame claiming gigabytes, a frame
    /// without a declared size, trailing data, or output larger than declared are errors, and
    /// none of them allocates more than `limit`.
    pub(crate) fn decompress(&mut self, data: &[u8], limit: usize) -> Result<Bytes, String> {
        let size = match zstd::zstd_safe::get_frame_content_size(data) {
            Ok(Some(size)) => size,
            Ok(None) => return Err("compressed payload without a content size".into()),
            Err(_) => return Err("compressed payload is not a zstd frame".into()),
        };
        if size > limit as u64 {
            return Err(format!(
                "compressed payload inflates to {size} bytes, over the limit of {limit}"
            ));
        }
        match zstd::zstd_safe::find_frame_compressed_size(data) {
            Ok(n) if n == data.len() => {}
            _ => return Err("compressed payload is not exactly one zstd frame".into()),
        }
        if self.decompressor.is_none() {
            self.decompressor = Some(Decompressor::new().map_err(|e| e.to_string())?);
        }
        let decompressor = self.decompressor.as_mut().expect("set above");
        let mut out = Vec::with_capacity(size as usize);
        let n = decompressor
            .decompress_to_buffer(data, &mut out)
            .map_err(|e| format!("bad compressed payload: {e}"))?;
        if n as u64 != size {
            return Err(format!(
                "compressed payload inflated to {n} bytes, not the {size} it declared"
            ));
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn zstd() -> Zstd {
        Zstd::new(Compression::default())
    }

    #[test]
    fn compressible_payloads_round_trip_and_small_or_random_ones_are_left() {
        let mut z = zstd();
        let text = br#"{"tx":"0xabc","from":"0x1","to":"0x2","value":1}"#.repeat(100);
        let c = z.compress(1, &text).expect("compresses");
        assert!(c.len() < text.len() / 5, "{}", c.len());
        assert_eq!(&z.decompress(&c, 1 << 20).unwrap()[..], &text[..]);
        assert!(z.compress(1, &text[..500]).is_none(), "below the threshold");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(z.compress(2, &random).is_none());
        // After a failure the next ones are not even tried; other modules are unaffected.
        assert!(z.luck[&2].skip_next > 0);
        assert!(z.compress(1, &text).is_some());
        let mut off = Zstd::new(Compression {
            enabled: false,
            ..Compression::default()
        });
        assert!(off.compress(1, &text).is_none());
    }

    #[test]
    fn bombs_and_lies_are_refused_without_allocating_them() {
        let mut z = zstd();
        // 64 MiB of zeros compresses to a few KiB; the limit is 32 MiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 1).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let err = z.decompress(&bomb, 32 << 20).unwrap_err();
        assert!(err.contains("over the limit"), "{err}");
        // No declared size (a streaming frame).
        let mut streamed = Vec::new();
        {
            let mut enc = zstd::stream::Encoder::new(&mut streamed, 1).unwrap();
            std::io::Write::write_all(&mut enc, &[7u8; 5000]).unwrap();
            enc.finish().unwrap();
        }
        assert!(z.decompress(&streamed, 1 << 20).is_err());
        // Two frames, the second one a bomb behind a small first.
        let mut two = zstd::bulk::compress(&[1u8; 100], 1).unwrap();
        two.extend_from_slice(&bomb);
        assert!(z.decompress(&two, 1 << 20).is_err());
        assert!(z.decompress(b"not zstd at all", 1 << 20).is_err());
        assert!(z.decompress(&[], 1 << 20).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut z = zstd();
            if let Ok(out) = z.decompress(&bytes, 1 << 16) {
                prop_assert!(out.len() <= 1 << 16);
            }
        }

        #[test]
        fn round_trip(data in proptest::collection::vec(0u8..4, 0..20_000)) {
            let mut z = zstd();
            if let Some(c) = z.compress(9, &data) {
                prop_assert_eq!(&z.decompress(&c, data.len()).unwrap()[..], &data[..]);
            }
        }
    }
}
