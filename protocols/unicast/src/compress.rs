//! zstd for 1.1 messages: compress what is worth it, and decompress without letting a peer
//! choose how much memory that takes.

use std::{
    collections::HashMap,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use futures::{channel::oneshot, executor::ThreadPool};
use zstd::bulk::{Compressor, Decompressor};

use crate::{recycle, traffic::Compression};

/// A compressed payload is sent only when it is at most this fraction of the original.
const WORTH_IT: f64 = 0.9;
/// After a payload of a module did not compress, up to this many of its next payloads are sent
/// as they are without trying (doubling per failure from 1): incompressible traffic (already
/// compressed or encrypted data) costs one attempt now and then, not one per message.
const MAX_SKIP: u32 = 64;

/// Payloads at least this large are compressed on [`Pools`], off the connection's task: at
/// zstd level 1's few hundred MB/s, 256 KiB is under a millisecond, and a 32 MiB block is
/// tens of milliseconds during which nothing else of the connection would move.
pub(crate) const OFFLOAD_BYTES: usize = 256 * 1024;

/// Jobs waiting or running on one set of compression threads at most. A job holds the
/// payload it shares with its message (no copy) until it runs; the cap bounds what many
/// connections sending large messages at once can queue, and past it a payload goes as it is
/// rather than wait behind seconds of other connections' blocks.
pub(crate) const MAX_JOBS: usize = 256;

/// A compression running on [`Pools`]: the compressed bytes, or `None` if zstd failed.
pub(crate) type Pending = oneshot::Receiver<Option<Vec<u8>>>;

/// A decompression running on [`Pools`]: the payload, or why the peer's frame is bad.
pub(crate) type Inflating = oneshot::Receiver<Result<Bytes, String>>;

/// Threads that compress large payloads, and how many jobs they were given and have not
/// finished.
pub(crate) struct Pool {
    threads: Option<ThreadPool>,
    jobs: AtomicUsize,
}

impl Pool {
    /// `threads` threads named `name`…, started now. Without threads (they could not be
    /// started) jobs run on the caller.
    fn new(threads: usize, name: &str) -> Self {
        let threads = ThreadPool::builder()
            .pool_size(threads.max(1))
            .name_prefix(name)
            .create()
            .inspect_err(
                |e| tracing::warn!(error = %e, "no compression threads; compressing inline"),
            )
            .ok();
        Pool {
            threads,
            jobs: AtomicUsize::new(0),
        }
    }

    /// Runs `job` on the threads, unless [`MAX_JOBS`] are there already (then `false`). A job
    /// whose message was dropped before its turn (`tx` closed) is skipped.
    fn spawn<T: Send + 'static>(
        &'static self,
        tx: oneshot::Sender<T>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> bool {
        if self.jobs.fetch_add(1, Ordering::Relaxed) >= MAX_JOBS {
            self.jobs.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let run = move || {
            if !tx.is_canceled() {
                let _ = tx.send(job());
            }
            self.jobs.fetch_sub(1, Ordering::Relaxed);
        };
        match &self.threads {
            Some(threads) => threads.spawn_ok(async move { run() }),
            None => run(),
        }
        true
    }
}

#[cfg(test)]
impl Pool {
    /// Jobs given and not finished.
    pub(crate) fn jobs(&self) -> usize {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Occupies one of the threads until the returned sender is dropped (or 10 s pass); the
    /// receiver tells when the thread is free again, and must be kept until then (a job whose
    /// receiver is gone does not run).
    pub(crate) fn hold(&'static self) -> (std::sync::mpsc::Sender<()>, Pending) {
        let (hold, wait) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = oneshot::channel();
        assert!(self.spawn(tx, move || {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(10));
            None
        }));
        (hold, rx)
    }
}

/// The compression threads of the process, shared by all connections: one set for messages of
/// high-priority modules and one for the rest, so that a consensus message never waits for
/// the threads behind other connections' blocks. They decompress large payloads too. Each set
/// has as many threads as the machine has cores, at most four (two for the high-priority set),
/// started on first use. Thread pools of the `futures` crate (already the async toolkit here)
/// rather than ones of our own.
pub(crate) struct Pools {
    urgent: Pool,
    bulk: Pool,
}

impl Pools {
    pub(crate) fn new(urgent_threads: usize, bulk_threads: usize) -> Self {
        Pools {
            urgent: Pool::new(urgent_threads, "bcos-p2p-zstd-high-"),
            bulk: Pool::new(bulk_threads, "bcos-p2p-zstd-"),
        }
    }

    pub(crate) fn shared() -> &'static Pools {
        static POOLS: OnceLock<Pools> = OnceLock::new();
        POOLS.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Pools::new(cores.min(2), cores.min(4))
        })
    }

    /// The set for high-priority modules (`urgent`) or for the others.
    pub(crate) fn pool(&self, urgent: bool) -> &Pool {
        if urgent { &self.urgent } else { &self.bulk }
    }
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
    pools: &'static Pools,
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
        Self::with_pools(settings, Pools::shared())
    }

    /// Large payloads compressed on `pools` instead of the process's.
    pub(crate) fn with_pools(settings: Compression, pools: &'static Pools) -> Self {
        Zstd {
            settings,
            compressor: None,
            decompressor: None,
            luck: HashMap::new(),
            pools,
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

    /// Starts compressing `payload` on [`Pools`] (the high-priority set when `urgent`) when
    /// [`Self::compress`] would try it: for large payloads, whose compression would hold up
    /// the connection (every stream on it) for milliseconds. Give the outcome to
    /// [`Self::judge`]. `None`: send it as it is (not worth trying, or the threads have
    /// [`MAX_JOBS`] already).
    pub(crate) fn offload(
        &mut self,
        module: u16,
        payload: &Bytes,
        urgent: bool,
    ) -> Option<Pending> {
        if !self.should_try(module, payload.len()) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let (payload, level) = (payload.clone(), self.settings.level);
        let job = move || zstd::bulk::compress(&payload, level).ok();
        if !self.pools.pool(urgent).spawn(tx, job) {
            tracing::debug!(
                module,
                "compression threads busy: sending a payload as it is"
            );
            return None;
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
        let size = inflated_size(data, limit)?;
        if self.decompressor.is_none() {
            self.decompressor = Some(Decompressor::new().map_err(|e| e.to_string())?);
        }
        inflate(self.decompressor.as_mut().expect("set above"), data, size)
    }

    /// Starts decompressing `data` (as [`Self::decompress`] would) on [`Pools`] (the
    /// high-priority set when `urgent`) when it inflates to [`OFFLOAD_BYTES`] or more: such a
    /// payload would hold up the connection for milliseconds. `Ok(None)`: decompress it here
    /// (small, or the threads have [`MAX_JOBS`] already); else the job and the size the frame
    /// declares. The frame's header is checked first, so a bomb is refused here and never
    /// reaches the threads.
    pub(crate) fn offload_decompress(
        &mut self,
        data: &Bytes,
        limit: usize,
        urgent: bool,
    ) -> Result<Option<(Inflating, usize)>, String> {
        let size = inflated_size(data, limit)?;
        if size < OFFLOAD_BYTES {
            return Ok(None);
        }
        let (tx, rx) = oneshot::channel();
        let data = data.clone();
        let job = move || {
            let mut decompressor = Decompressor::new().map_err(|e| e.to_string())?;
            inflate(&mut decompressor, &data, size)
        };
        if !self.pools.pool(urgent).spawn(tx, job) {
            tracing::debug!("compression threads busy: decompressing on the connection's task");
            return Ok(None);
        }
        Ok(Some((rx, size)))
    }
}

/// The size a compressed payload declares it inflates to, if it is exactly one zstd frame with
/// its content size declared and that size is at most `limit`.
fn inflated_size(data: &[u8], limit: usize) -> Result<usize, String> {
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
        Ok(n) if n == data.len() => Ok(size as usize),
        _ => Err("compressed payload is not exactly one zstd frame".into()),
    }
}

/// `data` inflated into exactly `size` bytes (allocated once, or in a kept buffer:
/// [`recycle`]), or why it does not. A kept buffer may be larger than `size`: a frame that
/// inflates past it fills no more than that buffer, already held, and is refused the same.
fn inflate(decompressor: &mut Decompressor<'_>, data: &[u8], size: usize) -> Result<Bytes, String> {
    let mut out = recycle::take(size).unwrap_or_else(|| Vec::with_capacity(size));
    let n = decompressor
        .decompress_to_buffer(data, &mut out)
        .map_err(|e| format!("bad compressed payload: {e}"))?;
    if n != size {
        return Err(format!(
            "compressed payload inflated to {n} bytes, not the {size} it declared"
        ));
    }
    Ok(recycle::bytes(out))
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

    /// A large payload inflates into a buffer larger than it, as a kept one may be, written
    /// over from the start (what an earlier message left there never shows).
    #[test]
    fn large_payloads_inflate_into_kept_buffers() {
        let text: Vec<u8> = br#"{"tx":"0xabc","from":"0x1","value":1}"#
            .iter()
            .copied()
            .cycle()
            .take(recycle::MIN + 3)
            .collect();
        let packed = zstd::bulk::compress(&text, 1).unwrap();
        let mut stale = vec![0xAAu8; 2 * recycle::MIN];
        stale.clear();
        let mut d = Decompressor::new().unwrap();
        let n = d.decompress_to_buffer(&packed[..], &mut stale).unwrap();
        assert_eq!((n, &stale[..]), (text.len(), &text[..]));
        let out = inflate(&mut d, &packed, text.len()).unwrap();
        assert_eq!(&out[..], &text[..]);
        // A payload longer than it declares is refused, whichever buffer it lands in.
        assert!(inflate(&mut d, &packed, text.len() - 1).is_err());
    }

    /// Waits (at most 10 s) for `rx`'s outcome.
    fn outcome(mut rx: Pending) -> Option<Option<Vec<u8>>> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            match rx.try_recv() {
                Ok(Some(out)) => return Some(out),
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(_) => return None,
            }
        }
        None
    }

    #[test]
    fn high_priority_payloads_do_not_wait_for_the_bulk_threads_and_jobs_are_capped() {
        let pools: &'static Pools = Box::leak(Box::new(Pools::new(1, 1)));
        let mut z = Zstd::with_pools(Compression::default(), pools);
        let text = Bytes::from(br#"{"tx":"0xabc","from":"0x1","value":1}"#.repeat(30_000));
        let (hold, blocker) = pools.bulk.hold();
        // The bulk thread is busy: a high-priority payload is compressed all the same.
        let job = z.offload(1000, &text, true).expect("tried");
        let compressed = outcome(job).expect("done while the bulk thread is held");
        let compressed = z.judge(1000, text.len(), compressed).expect("worth it");
        assert_eq!(z.decompress(&compressed, text.len()).unwrap(), text);
        // Bulk jobs queue up to the cap; past it a payload goes as it is, and the module is
        // not penalised for that (its next payload is tried again).
        let queued: Vec<Pending> = (1..MAX_JOBS)
            .map(|_| z.offload(2, &text, false).expect("queued"))
            .collect();
        assert_eq!(pools.bulk.jobs(), MAX_JOBS);
        assert!(z.offload(2, &text, false).is_none());
        assert_eq!(z.luck.get(&2).map_or(0, |l| l.skip_next), 0);
        assert_eq!(pools.urgent.jobs(), 0);
        // Messages dropped meanwhile: their jobs end without compressing.
        drop(queued);
        drop(hold);
        assert_eq!(outcome(blocker), Some(None));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pools.bulk.jobs() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(pools.bulk.jobs(), 0);
        assert!(z.offload(2, &text, false).is_some(), "room again");
    }

    #[test]
    fn jobs_of_dropped_messages_do_not_run() {
        let pools: &'static Pools = Box::leak(Box::new(Pools::new(1, 1)));
        let (hold, blocker) = pools.bulk.hold();
        let ran = std::sync::Arc::new(AtomicUsize::new(0));
        let mut kept = Vec::new();
        for i in 0..10 {
            let (tx, rx) = oneshot::channel();
            let ran = ran.clone();
            assert!(pools.bulk.spawn(tx, move || {
                ran.fetch_add(1, Ordering::Relaxed);
                Some(Vec::new())
            }));
            if i % 2 == 0 {
                kept.push(rx);
            }
        }
        drop(hold);
        assert_eq!(outcome(blocker), Some(None));
        for rx in kept {
            assert_eq!(outcome(rx), Some(Some(Vec::new())));
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pools.bulk.jobs() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(pools.bulk.jobs(), 0);
        assert_eq!(
            ran.load(Ordering::Relaxed),
            5,
            "only the kept messages' jobs ran"
        );
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
