//! Reading one unicast stream: 1.1 messages put back together from their parts and
//! decompressed, within bounds a peer cannot stretch (see SPEC.md, "Parts").

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    task::{Context, Poll},
};

use bcos_p2p_core::stream_pair::CloseReason;
use bytes::Bytes;
use futures::FutureExt as _;

use crate::{
    codec::{FLAG_ZSTD, Frame, KIND_ONEWAY, KIND_REQUEST, Wire, message},
    compress::{Inflating, Zstd},
    outgoing::{MAX_PARTIAL, PARTIAL_BYTES},
    recycle,
    traffic::Compression,
};

/// Messages complete and not handed on yet (waiting for a decompression of their module, or
/// decompressing) at most, and their bytes (as they will be handed on): past either, the
/// decompressions running are finished on the connection's task (see [`Incoming::settle`]).
const MAX_HELD: usize = 256;
const MAX_HELD_BYTES: usize = PARTIAL_BYTES;

/// A message complete and not handed on yet.
#[derive(Debug)]
struct Held {
    /// Requests and one-way messages are handed on in their module's order; answers (matched
    /// by id) as soon as they are ready.
    order: Option<u16>,
    wire_len: usize,
    /// What it holds, for the bound: its payload, or while decompressing, the compressed
    /// bytes and what they inflate to.
    size: usize,
    state: HeldState,
}

#[derive(Debug)]
enum HeldState {
    Ready(Frame),
    /// Decompressing on the compression threads; `data` is the compressed payload (shared with
    /// the job, not copied), kept to finish here if need be.
    Inflating {
        kind: u8,
        id: u64,
        module: u16,
        data: Bytes,
        job: Inflating,
    },
    /// It came bad: the stream closes when its turn comes.
    Failed(String),
}

/// A message in parts, copied together as its parts come: the copy and the page faults of a
/// large message are spread over its parts instead of stalling the connection (every stream
/// on it, the urgent pair's too) for the whole message at its last part.
#[derive(Debug)]
struct Partial {
    kind: u8,
    module: u16,
    flags: u8,
    total: usize,
    /// What came so far. Capacity grows with what came (doubling, never past `total`), so a
    /// peer that declares a large message and sends little makes us hold little.
    whole: Vec<u8>,
}

impl Partial {
    fn append(&mut self, data: &[u8]) {
        let spare = self.whole.capacity() - self.whole.len();
        if spare < data.len() {
            let room = self.total - self.whole.len();
            let grow = self.whole.len().max(data.len()).min(room);
            // For a message whose buffer would be kept, a kept one for all of it, if any: its
            // pages are already in place (memory held anyway, whatever the peer sends).
            match recycle::take(self.total) {
                Some(mut buf) => {
                    buf.extend_from_slice(&self.whole);
                    self.whole = buf;
                }
                None => self.whole.reserve_exact(grow),
            }
        }
        self.whole.extend_from_slice(data);
    }
}

/// The receiving side of one unicast stream: [`Incoming::take`] each frame, then hand on
/// what [`Incoming::next`] gives. Large compressed payloads are decompressed on the
/// compression threads, while the messages of other modules go on.
#[derive(Debug)]
pub(crate) struct Incoming {
    max_message: usize,
    partial: HashMap<u64, Partial>,
    declared: usize,
    zstd: Zstd,
    /// The modules whose payloads decompress on the high-priority threads (ours: whichever
    /// stream a peer sends them on).
    high: Arc<HashSet<u16>>,
    held: VecDeque<Held>,
    held_bytes: usize,
}

fn malformed(why: String) -> CloseReason {
    CloseReason::Malformed(why)
}

impl Incoming {
    /// Messages of up to `max_message` bytes (before and after decompression); `high`: the
    /// high-priority modules.
    pub(crate) fn new(max_message: usize, high: Arc<HashSet<u16>>) -> Self {
        Incoming {
            max_message,
            partial: HashMap::new(),
            declared: 0,
            // Settings only matter for compressing; any decompress.
            zstd: Zstd::new(Compression::default()),
            high,
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    /// Whether messages complete wait to be handed on (decompressing, or behind one that is).
    pub(crate) fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Takes one frame; the message it completes comes from [`Incoming::next`] (at once, or
    /// after a decompression). An error: the stream must close.
    pub(crate) fn take(&mut self, wire: Wire) -> Result<(), CloseReason> {
        if let Some((frame, wire_len)) = self.join(wire)? {
            self.push(frame, wire_len);
        }
        Ok(())
    }

    /// The next message to hand on, with the size it had on the wire: `None` while none is
    /// ready; an error: the stream must close. With `cx`, a decompression still running wakes
    /// it when it ends.
    pub(crate) fn next(
        &mut self,
        cx: Option<&mut Context<'_>>,
    ) -> Option<Result<(Frame, usize), CloseReason>> {
        self.collect(cx, false);
        // The first message ready whose module has none before it.
        let mut blocked = HashSet::new();
        let mut at = None;
        for (k, h) in self.held.iter().enumerate() {
            let free = h.order.is_none_or(|m| !blocked.contains(&m));
            if free && !matches!(h.state, HeldState::Inflating { .. }) {
                at = Some(k);
                break;
            }
            if let Some(m) = h.order {
                blocked.insert(m);
            }
        }
        let h = self.held.remove(at?)?;
        self.held_bytes = self.held_bytes.saturating_sub(h.size);
        Some(match h.state {
            HeldState::Ready(frame) => Ok((frame, h.wire_len)),
            HeldState::Failed(why) => Err(malformed(why)),
            HeldState::Inflating { .. } => unreachable!("only finished messages are taken"),
        })
    }

    /// Finishes the decompressions running here, on the connection's task: what is held is
    /// then at most what one message adds, whatever the threads are busy with (a job whose
    /// result is dropped does not run).
    pub(crate) fn settle(&mut self) {
        self.collect(None, true);
    }

    /// Takes the outcomes of the decompressions that ended (with `cx`, the others wake it when
    /// they end); with `here`, the others are done on the caller.
    fn collect(&mut self, mut cx: Option<&mut Context<'_>>, here: bool) {
        let (zstd, limit) = (&mut self.zstd, self.max_message);
        for h in &mut self.held {
            let HeldState::Inflating {
                kind,
                id,
                module,
                data,
                job,
            } = &mut h.state
            else {
                continue;
            };
            // `Some(None)`: ended without an outcome (the threads are gone): done here.
            let done = match cx.as_deref_mut() {
                Some(cx) => match job.poll_unpin(cx) {
                    Poll::Ready(done) => Some(done.ok()),
                    Poll::Pending => None,
                },
                None => match job.try_recv() {
                    Ok(Some(done)) => Some(Some(done)),
                    Ok(None) => None,
                    Err(_) => Some(None),
                },
            };
            let done = match done {
                Some(done) => done,
                None if here => None,
                None => continue,
            };
            let done = done.unwrap_or_else(|| zstd.decompress(data, limit));
            h.state = ready(*kind, *id, *module, done);
        }
    }

    /// Queues a message complete and ready to be handed on.
    fn push(&mut self, frame: Frame, wire_len: usize) {
        let (order, size) = match &frame {
            Frame::Request {
                module, payload, ..
            }
            | Frame::Oneway { module, payload } => (Some(*module), payload.len()),
            Frame::Response { payload, .. } => (None, payload.len()),
            Frame::Error { reason, .. } => (None, reason.len()),
        };
        self.hold(Held {
            order,
            wire_len,
            size,
            state: HeldState::Ready(frame),
        });
    }

    fn hold(&mut self, held: Held) {
        if self.held.len() >= MAX_HELD || self.held_bytes.saturating_add(held.size) > MAX_HELD_BYTES
        {
            self.settle();
        }
        self.held_bytes += held.size;
        self.held.push_back(held);
    }

    /// Puts one message back together: the message it completes, if any, with the size it had
    /// on the wire; a large compressed one is held while it decompresses.
    fn join(&mut self, wire: Wire) -> Result<Option<(Frame, usize)>, CloseReason> {
        match wire {
            Wire::Start {
                kind,
                id,
                module,
                flags,
                total,
                data,
            } => {
                let total = total as usize;
                if total > self.max_message {
                    return Err(malformed(format!(
                        "message of {total} bytes exceeds the limit of {}",
                        self.max_message
                    )));
                }
                if data.len() == total {
                    return self.finish(kind, id, module, flags, data);
                }
                if self.partial.contains_key(&id) {
                    return Err(malformed(format!(
                        "message id {id} started again while in parts"
                    )));
                }
                if self.partial.len() >= MAX_PARTIAL
                    || (!self.partial.is_empty()
                        && self.declared.saturating_add(total) > PARTIAL_BYTES)
                {
                    return Err(malformed(format!(
                        "more than {MAX_PARTIAL} messages or {PARTIAL_BYTES} bytes in parts"
                    )));
                }
                self.declared += total;
                let mut partial = Partial {
                    kind,
                    module,
                    flags,
                    total,
                    whole: Vec::new(),
                };
                partial.append(&data);
                self.partial.insert(id, partial);
                Ok(None)
            }
            Wire::More { id, data } => {
                let Some(p) = self.partial.get_mut(&id) else {
                    return Err(malformed(format!(
                        "continuation of message {id}, which is not in parts"
                    )));
                };
                if p.whole.len() + data.len() > p.total {
                    return Err(malformed(format!(
                        "message {id} longer than the {} bytes it declared",
                        p.total
                    )));
                }
                p.append(&data);
                if p.whole.len() < p.total {
                    return Ok(None);
                }
                let p = self.partial.remove(&id).expect("present");
                self.declared -= p.total;
                self.finish(p.kind, id, p.module, p.flags, recycle::bytes(p.whole))
            }
        }
    }

    fn finish(
        &mut self,
        kind: u8,
        id: u64,
        module: u16,
        flags: u8,
        data: Bytes,
    ) -> Result<Option<(Frame, usize)>, CloseReason> {
        let wire_len = data.len();
        let payload = if flags & FLAG_ZSTD != 0 {
            let started = self
                .zstd
                .offload_decompress(&data, self.max_message, self.high.contains(&module))
                .map_err(malformed)?;
            if let Some((job, inflated)) = started {
                // The frame's kind is checked when the frame is made, after.
                let order = matches!(kind, KIND_REQUEST | KIND_ONEWAY).then_some(module);
                self.hold(Held {
                    order,
                    wire_len,
                    // Counted with the compressed bytes: the declared size is the peer's word.
                    size: inflated.saturating_add(data.len()),
                    state: HeldState::Inflating {
                        kind,
                        id,
                        module,
                        data,
                        job,
                    },
                });
                return Ok(None);
            }
            self.zstd
                .decompress(&data, self.max_message)
                .map_err(malformed)?
        } else {
            data
        };
        let frame = message(kind, id, module, payload).map_err(|e| malformed(e.to_string()))?;
        Ok(Some((frame, wire_len)))
    }
}

/// A decompressed message's state: ready to hand on, or failed.
fn ready(kind: u8, id: u64, module: u16, done: Result<Bytes, String>) -> HeldState {
    match done.and_then(|payload| message(kind, id, module, payload).map_err(|e| e.to_string())) {
        Ok(frame) => HeldState::Ready(frame),
        Err(why) => HeldState::Failed(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `w` and the message ready then, if any.
    fn take(i: &mut Incoming, w: Wire) -> Result<Option<(Frame, usize)>, CloseReason> {
        i.take(w)?;
        i.next(None).transpose()
    }

    fn start(id: u64, total: u32, data: &[u8]) -> Wire {
        Wire::Start {
            kind: KIND_REQUEST,
            id,
            module: 3,
            flags: 0,
            total,
            data: Bytes::copy_from_slice(data),
        }
    }

    fn more(id: u64, data: &[u8]) -> Wire {
        Wire::More {
            id,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn parts_interleave_and_come_back_whole() {
        let mut i = Incoming::new(1000, Arc::default());
        assert!(take(&mut i, start(1, 6, b"abc")).unwrap().is_none());
        assert!(take(&mut i, start(2, 4, b"xy")).unwrap().is_none());
        let (f, _) = take(&mut i, start(3, 1, b"!")).unwrap().unwrap();
        assert!(matches!(f, Frame::Request { id: 3, .. }));
        assert!(take(&mut i, more(2, b"z")).unwrap().is_none());
        let (f, len) = take(&mut i, more(1, b"def")).unwrap().unwrap();
        assert_eq!(len, 6);
        assert_eq!(
            f,
            Frame::Request {
                id: 1,
                module: 3,
                payload: Bytes::from_static(b"abcdef")
            }
        );
        let (f, _) = take(&mut i, more(2, b"w")).unwrap().unwrap();
        assert!(matches!(f, Frame::Request { id: 2, payload, .. } if payload == "xyzw"));
        assert!(i.partial.is_empty() && i.declared == 0);
    }

    /// A message is copied together as its parts come, and what is held grows with what came:
    /// a peer declaring 16 MiB and sending 64 KiB parts makes us hold at most twice what it
    /// sent (never the declared size up front), and the whole comes back byte for byte.
    #[test]
    fn parts_are_joined_as_they_come_and_hold_what_came() {
        const TOTAL: usize = 16 << 20;
        const PART: usize = 64 << 10;
        let mut i = Incoming::new(TOTAL, Arc::default());
        let byte = |k: usize| (k % 251) as u8;
        let part = |n: usize| Bytes::from((n * PART..(n + 1) * PART).map(byte).collect::<Vec<_>>());
        let mut w = start(7, TOTAL as u32, &[]);
        if let Wire::Start { data, .. } = &mut w {
            *data = part(0);
        }
        assert!(take(&mut i, w).unwrap().is_none());
        for n in 1..TOTAL / PART - 1 {
            assert!(
                take(
                    &mut i,
                    Wire::More {
                        id: 7,
                        data: part(n)
                    }
                )
                .unwrap()
                .is_none()
            );
            let p = &i.partial[&7];
            assert_eq!(p.whole.len(), (n + 1) * PART, "copied in as it came");
            assert!(
                p.whole.capacity() <= 2 * p.whole.len(),
                "{} held",
                p.whole.capacity()
            );
        }
        let last = Wire::More {
            id: 7,
            data: part(TOTAL / PART - 1),
        };
        let (f, len) = take(&mut i, last).unwrap().unwrap();
        assert_eq!(len, TOTAL);
        let Frame::Request { payload, .. } = f else {
            panic!("a request");
        };
        assert!(payload.iter().enumerate().all(|(k, b)| *b == byte(k)));
        assert!(i.partial.is_empty() && i.declared == 0);
    }

    #[test]
    fn broken_part_sequences_close_the_stream() {
        let cases: Vec<Vec<Wire>> = vec![
            vec![more(9, b"a")],
            vec![start(1, 4, b"ab"), start(1, 4, b"ab")],
            vec![start(1, 4, b"ab"), more(1, b"abc")],
            vec![start(1, 2000, b"ab")],
            (0..=MAX_PARTIAL as u64)
                .map(|id| start(id, 100, b"a"))
                .collect(),
            vec![
                start(1, 900, b"a"),
                Wire::Start {
                    kind: KIND_ONEWAY,
                    id: 5,
                    module: 1,
                    flags: FLAG_ZSTD,
                    total: 4,
                    data: Bytes::from_static(b"junk"),
                },
            ],
        ];
        for (n, case) in cases.into_iter().enumerate() {
            let mut i = Incoming::new(1000, Arc::default());
            let last = case.len() - 1;
            for (k, w) in case.into_iter().enumerate() {
                let r = take(&mut i, w);
                if k < last {
                    assert!(r.is_ok(), "case {n} frame {k}");
                } else {
                    assert!(r.is_err(), "case {n}");
                }
            }
        }
    }

    #[test]
    fn declared_lengths_beyond_the_bound_close_the_stream() {
        let mut i = Incoming::new(usize::MAX, Arc::default());
        let big = u32::try_from(PARTIAL_BYTES / 2 + 1).unwrap();
        assert!(take(&mut i, start(1, big, b"a")).unwrap().is_none());
        assert!(take(&mut i, start(2, big, b"a")).is_err());
        // A single message may be as long as a message may be.
        let mut i = Incoming::new(usize::MAX, Arc::default());
        assert!(take(&mut i, start(1, u32::MAX, b"a")).unwrap().is_none());
    }

    #[test]
    fn a_decompression_bomb_closes_the_stream() {
        let bomb = zstd::bulk::compress(&vec![0u8; 4 << 20], 1).unwrap();
        let mut i = Incoming::new(1 << 20, Arc::default());
        let r = take(
            &mut i,
            Wire::Start {
                kind: KIND_ONEWAY,
                id: 1,
                module: 1,
                flags: FLAG_ZSTD,
                total: bomb.len() as u32,
                data: Bytes::from(bomb),
            },
        );
        assert!(r.unwrap_err().to_string().contains("over the limit"));
    }

    /// A compressed whole message (one frame) of `kind`.
    fn zstd_frame(kind: u8, id: u64, module: u16, payload: &[u8]) -> Wire {
        let data = zstd::bulk::compress(payload, 1).unwrap();
        Wire::Start {
            kind,
            id,
            module,
            flags: FLAG_ZSTD,
            total: data.len() as u32,
            data: Bytes::from(data),
        }
    }

    fn plain(kind: u8, id: u64, module: u16) -> Wire {
        Wire::Start {
            kind,
            id,
            module,
            flags: 0,
            total: 2,
            data: Bytes::from_static(b"hi"),
        }
    }

    fn id_of(f: &Frame) -> u64 {
        match f {
            Frame::Request { id, .. } | Frame::Response { id, .. } | Frame::Error { id, .. } => *id,
            Frame::Oneway { .. } => u64::MAX,
        }
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl futures::task::ArcWake for Count {
        fn wake_by_ref(me: &std::sync::Arc<Self>) {
            me.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// An incoming stream decompressing on compression threads of its own, whose one bulk
    /// thread is held busy until the returned sender is dropped; module 7 is high-priority.
    fn held_incoming() -> (
        Incoming,
        std::sync::mpsc::Sender<()>,
        crate::compress::Pending,
    ) {
        use crate::compress::Pools;
        let pools: &'static Pools = Box::leak(Box::new(Pools::new(1, 1)));
        let (hold, held) = pools.pool(false).hold();
        let mut i = Incoming::new(64 << 20, Arc::new(HashSet::from([7])));
        i.zstd = Zstd::with_pools(Compression::default(), pools);
        (i, hold, held)
    }

    /// A high-priority module's payload decompresses on the high-priority threads while the
    /// others are busy.
    #[test]
    fn high_priority_payloads_decompress_on_their_own_threads() {
        let (mut i, _hold, _held) = held_incoming();
        let block = b"consensus ".repeat(100_000);
        i.take(zstd_frame(KIND_REQUEST, 1, 5, &block)).unwrap();
        i.take(zstd_frame(KIND_REQUEST, 2, 7, &block)).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let got = loop {
            if let Some(m) = i.next(None) {
                break m.unwrap().0;
            }
            assert!(std::time::Instant::now() < until, "module 7 waited");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(id_of(&got), 2, "module 7 first; module 5's thread is held");
        assert!(i.next(None).is_none());
    }

    /// A large compressed request decompresses off the caller while the messages of other
    /// modules, and answers, are handed on; the module's later message waits for it, and the
    /// end of the decompression wakes the task.
    #[test]
    fn large_payloads_decompress_aside_and_their_module_keeps_its_order() {
        let (mut i, hold, _held) = held_incoming();
        let block = br#"{"tx":"0xabc","from":"0x1","to":"0x2"},"#.repeat(30_000);
        assert!(block.len() >= crate::compress::OFFLOAD_BYTES);
        i.take(zstd_frame(KIND_REQUEST, 1, 4, &block)).unwrap();
        // Held: what it inflates to, and the compressed bytes (the header is the peer's word).
        assert!(i.held_bytes > block.len());
        i.take(plain(KIND_REQUEST, 2, 5)).unwrap();
        i.take(plain(KIND_REQUEST, 3, 4)).unwrap();
        i.take(plain(crate::codec::KIND_RESPONSE, 9, 0)).unwrap();
        let mut out = Vec::new();
        while let Some(m) = i.next(None) {
            out.push(id_of(&m.unwrap().0));
        }
        assert_eq!(
            out,
            [2, 9],
            "module 5 and the answer go; module 4 waits for its block"
        );
        assert!(i.holds());
        let wakes = std::sync::Arc::new(Count(Default::default()));
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(i.next(Some(&mut cx)).is_none());
        drop(hold);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while wakes.0.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < until, "never woken");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (first, wire_len) = i.next(Some(&mut cx)).unwrap().unwrap();
        assert!(wire_len < block.len() / 10);
        assert_eq!(
            first,
            Frame::Request {
                id: 1,
                module: 4,
                payload: Bytes::from(block)
            }
        );
        assert_eq!(id_of(&i.next(None).unwrap().unwrap().0), 3);
        assert!(i.next(None).is_none() && !i.holds() && i.held_bytes == 0);
    }

    /// Messages waiting behind a decompression are bounded: past the bound the decompression
    /// is finished on the caller, however long the threads stay busy.
    #[test]
    fn what_waits_behind_a_decompression_is_bounded() {
        let (mut i, _hold, _held) = held_incoming();
        let block = b"block ".repeat(100_000);
        i.take(zstd_frame(KIND_ONEWAY, 1, 4, &block)).unwrap();
        let mut out = Vec::new();
        for id in 0..MAX_HELD as u64 + 10 {
            // As the handler does: take a frame, hand on what is ready.
            i.take(plain(KIND_REQUEST, 100 + id, 4)).unwrap();
            assert!(i.held.len() <= MAX_HELD + 1);
            while let Some(m) = i.next(None) {
                out.push(m.unwrap().0);
            }
        }
        // The thread is still held: the block was inflated here, and came first.
        assert!(matches!(&out[0], Frame::Oneway { module: 4, payload } if payload == &block));
        let ids: Vec<u64> = out[1..].iter().map(id_of).collect();
        assert_eq!(ids, (100..100 + MAX_HELD as u64 + 10).collect::<Vec<_>>());
    }

    /// A large compressed payload whose header is sound and whose body is not fails when its
    /// decompression ends: the stream closes then, and not before the messages ahead of it.
    #[test]
    fn a_large_payload_that_fails_to_inflate_closes_the_stream_in_its_turn() {
        let (mut i, hold, _held) = held_incoming();
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        let mut data = c.compress(&b"block ".repeat(100_000)).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        i.take(Wire::Start {
            kind: KIND_REQUEST,
            id: 1,
            module: 4,
            flags: FLAG_ZSTD,
            total: n as u32,
            data: Bytes::from(data),
        })
        .unwrap();
        i.take(plain(KIND_REQUEST, 2, 5)).unwrap();
        assert_eq!(id_of(&i.next(None).unwrap().unwrap().0), 2);
        drop(hold);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            match i.next(None) {
                Some(r) => break r.unwrap_err(),
                None => {
                    assert!(std::time::Instant::now() < until, "never ended");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        };
        assert!(err.to_string().contains("bad compressed payload"), "{err}");
    }
}
