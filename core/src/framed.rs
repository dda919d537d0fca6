//! [`FramedIo`]: varint-length-prefixed frames over a byte stream, with fewer copies than
//! `asynchronous_codec::Framed` for large frames.
//!
//! Measured on the unicast bulk benchmark (1 MiB requests), `Framed` cost about a tenth of the
//! CPU in copies of our own making: its reader reads into an 8 KiB stack buffer and appends that
//! to its `BytesMut` (two copies per byte, 128 reads per MiB, and the `BytesMut` grows by
//! doubling, copying the frame again), and its writer encodes every payload into its buffer
//! before writing it. This type keeps the same `Stream` + `Sink` interface and:
//!
//! - reads straight into the spare space of its buffer, sized from the frame's length prefix
//!   once that is complete (and checked against the decoder's limit), so a frame of up to
//!   [`EAGER_RESERVE`] is received into one allocation with no copy after the read; larger
//!   frames grow with what has arrived: a frame's buffer is never larger than the greater of
//!   [`EAGER_RESERVE`] and about twice what has arrived, so a peer that announces a 32 MiB
//!   frame and stalls holds at most 2 MiB (one stream, after authentication);
//! - keeps the buffer of the previous large frame and reads the next one into it once the
//!   receiver has dropped that frame: no allocation, and no page faults (glibc returns freed
//!   megabyte buffers to the kernel: 65 000 faults per 512 MiB of 1 MiB frames before);
//! - writes large payloads (at least [`ZERO_COPY_MIN`] bytes) from the caller's `Bytes` without
//!   copying them, in one write each; coalesces small frames into one buffer as `Framed` does,
//!   and writes that in pieces of at most [`COALESCED_WRITE_MAX`];
//! - accepts new frames while less than a high-water mark (128 KiB, as `Framed`) is queued;
//! - holds no read buffer while the stream is idle: once everything read is decoded and the
//!   stream has nothing more for now, the buffer goes (the next read allocates one). Two to
//!   six streams per connection each kept 8 KiB or more for good before; measured with
//!   `benches/conn_memory.rs`: 35 KiB of heap per idle connection end. Nor a write buffer once
//!   all is written. Small frames (under [`COPY_BELOW`]) are copied out of the read buffer
//!   ([`take_frame`]), so that one kept for long does not keep the buffer alive.
//!
//! New space is zeroed once (reading needs initialised memory, and this crate has no
//! `unsafe`); later reads into it reuse it.
//!
//! The length prefix itself is cut by [`take_frame`], which every protocol's decoder calls;
//! [`FrameCodec`] is the codec of plain byte frames.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use asynchronous_codec::Decoder;
use bytes::{Buf, Bytes, BytesMut};
use futures::{AsyncRead, AsyncWrite, Sink, Stream};

mod codec;

pub use codec::{COPY_BELOW, FrameCodec, take_frame};

/// Payloads at least this long are written from the caller's buffer instead of being copied
/// into the write buffer, in one write each (what the muxer then splits into its frames);
/// shorter ones are copied and coalesced, which costs less than a write of their own.
pub const ZERO_COPY_MIN: usize = 16 * 1024;

/// Coalesced small frames are written at most this much at a time. Under a muxer each write
/// becomes a frame the receiver must have whole before it can read any of it: a 64 KiB batch of
/// 1 KiB frames reaches the application only when its last byte has arrived, while in 16 KiB
/// pieces the receiver works on the first frames as the rest travel. Unicast bench, 1 KiB
/// requests with 64 in flight over 64 KiB yamux frames, 15 runs each: 65k msgs/s and p50 970 µs
/// writing batches whole, 84k and 740 µs in 16 KiB pieces (77k/786 µs at 8 KiB, 72k/845 µs at
/// 4 KiB). Large payloads are written whole; the muxer splits them at its own frame size.
pub const COALESCED_WRITE_MAX: usize = 16 * 1024;

/// Frames up to this size get their whole buffer as soon as their length prefix is known.
pub const EAGER_RESERVE: usize = 2 * 1024 * 1024;

/// Spare space read into when the next frame's length is not known yet.
const MIN_READ: usize = 8 * 1024;

/// Reads of at least this size recycle the buffer of an earlier large frame (see
/// [`FramedIo`]'s `retired`).
const RECYCLE_MIN: usize = 64 * 1024;

/// Bytes queued for writing above which `poll_ready` writes before accepting more.
const HIGH_WATER_MARK: usize = 128 * 1024;

/// Encodes frames for [`FramedIo`].
pub trait EncodeFrame {
    /// What is sent.
    type Item;

    /// Appends `item`'s frame to `dst`, except that it may return a trailing payload, which is
    /// then written right after what is in `dst`, uncopied. Errors leave `dst` unchanged.
    fn encode_frame(&mut self, item: Self::Item, dst: &mut BytesMut) -> io::Result<Option<Bytes>>;
}

/// Frames over `io`, decoded by and encoded with `codec`; see the [module docs](self).
#[derive(Debug)]
pub struct FramedIo<S, C> {
    io: S,
    codec: C,
    /// `read[..filled]`: bytes read and not yet decoded; `read[filled..]`: space to read into.
    read: BytesMut,
    filled: usize,
    /// Buffers allocated for reading so far.
    allocations: usize,
    /// The buffer of the previous large frame (shared with that frame until the receiver drops
    /// it). Reading the next large frame into it once it is free again saves an allocation,
    /// and with glibc's malloc the page faults of fresh memory: freed megabyte buffers are
    /// returned to the kernel and faulted in again, which cost a quarter of the bulk
    /// throughput. At most one is kept, only while large frames arrive.
    retired: Option<BytesMut>,
    eof: bool,
    /// Bytes to write, in order: the segments, then `head`. A segment is a payload written
    /// uncopied (`true`: in one write) or coalesced frames split off `head` before one.
    segments: VecDeque<(Bytes, bool)>,
    head: BytesMut,
    queued: usize,
}

impl<S, C> FramedIo<S, C> {
    /// Frames over `io` with `codec`.
    pub fn new(io: S, codec: C) -> Self {
        FramedIo {
            io,
            codec,
            read: BytesMut::new(),
            filled: 0,
            allocations: 0,
            retired: None,
            eof: false,
            segments: VecDeque::new(),
            head: BytesMut::new(),
            queued: 0,
        }
    }

    /// Bytes accepted by the sink and not yet written to `io`.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Bytes read from `io` and not yet decoded.
    pub fn buffered_bytes(&self) -> usize {
        self.filled
    }
}

/// The length of the frame at the front of `data` (prefix included), once its prefix is
/// complete.
fn frame_len(data: &[u8]) -> Option<usize> {
    let (len, rest) = unsigned_varint::decode::usize(data).ok()?;
    Some(len.saturating_add(data.len() - rest.len()))
}

impl<S, C> FramedIo<S, C>
where
    S: AsyncRead + Unpin,
    C: Decoder,
{
    /// Runs the decoder over the bytes read so far.
    fn decode(&mut self) -> Result<Option<C::Item>, C::Error> {
        let mut data = self.read.split_to(self.filled);
        let result = self.codec.decode(&mut data);
        self.filled = data.len();
        // Contiguous unless the decoder reallocated: then the (unused) space is copied back.
        data.unsplit(std::mem::take(&mut self.read));
        self.read = data;
        result
    }

    /// Makes room to read into: the rest of the current frame once its length is known (up to
    /// [`EAGER_RESERVE`], or doubling what has arrived beyond that), else [`MIN_READ`] bytes.
    fn make_room(&mut self) {
        let spare = self.read.len() - self.filled;
        let (target, grow) = match frame_len(&self.read[..self.filled]) {
            Some(total) if total > self.filled => {
                let need = total - self.filled;
                if total < RECYCLE_MIN {
                    // Small frames again: stop holding a large buffer.
                    self.retired = None;
                }
                if total <= EAGER_RESERVE {
                    // The rest of the frame and the start of the next one.
                    (need + MIN_READ, spare < need)
                } else {
                    let step = need.min(self.filled.max(EAGER_RESERVE));
                    (step, spare < MIN_READ.min(need))
                }
            }
            _ => (MIN_READ, spare < MIN_READ / 8),
        };
        if !grow {
            return;
        }
        let len = self.filled + target.max(MIN_READ);
        // Keep only the undecoded bytes: a new buffer then copies just those.
        self.read.truncate(self.filled);
        if !self.read.try_reclaim(len - self.filled) {
            // A large frame: read into the buffer of an earlier one if its frame was dropped.
            let recycled = if target >= RECYCLE_MIN {
                self.retired.take().and_then(|mut old| {
                    old.clear();
                    old.try_reclaim(len).then_some(old)
                })
            } else {
                None
            };
            let mut next = recycled.unwrap_or_else(|| {
                self.allocations += 1;
                // Large buffers rounded up, so that the next frame of about the same size fits
                // when this one is recycled.
                BytesMut::with_capacity(if len >= RECYCLE_MIN {
                    len.next_multiple_of(RECYCLE_MIN)
                } else {
                    len
                })
            });
            next.extend_from_slice(&self.read);
            let previous = std::mem::replace(&mut self.read, next);
            // Keep this buffer (shared with the frames decoded from it) to recycle later.
            if target >= RECYCLE_MIN {
                self.retired = Some(previous);
            }
        }
        // Zero the space once: reads need initialised memory.
        self.read.resize(len, 0);
    }
}

impl<S, C> Stream for FramedIo<S, C>
where
    S: AsyncRead + Unpin,
    C: Decoder + Unpin,
    C::Error: From<io::Error>,
{
    type Item = Result<C::Item, C::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.decode()? {
                return Poll::Ready(Some(Ok(item)));
            }
            if this.eof {
                return Poll::Ready(match this.filled {
                    0 => None,
                    n => Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("stream ended inside a frame ({n} bytes left)"),
                    )
                    .into())),
                });
            }
            this.make_room();
            let n = match Pin::new(&mut this.io).poll_read(cx, &mut this.read[this.filled..]) {
                Poll::Ready(n) => n?,
                Poll::Pending => {
                    if this.filled == 0 && this.retired.is_none() {
                        // Nothing left to decode and nothing more to read for now: an idle
                        // stream holds no read buffer (the next read allocates one again).
                        // While large frames arrive (a buffer is retired), the buffer is kept:
                        // it is the one the next large frame after this will be read into.
                        this.read = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            };
            if n == 0 {
                this.eof = true;
            }
            this.filled += n;
        }
    }
}

impl<S, C> FramedIo<S, C>
where
    S: AsyncWrite + Unpin,
{
    /// Writes queued bytes until all are written (`Ready(Ok)`) or `io` is not ready.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let (chunk, whole): (&[u8], bool) = match self.segments.front() {
                Some((segment, payload)) => (segment, *payload),
                None if !self.head.is_empty() => (&self.head, false),
                None => {
                    // All written: an idle stream holds no write buffer either.
                    self.head = BytesMut::new();
                    return Poll::Ready(Ok(()));
                }
            };
            let chunk = match whole {
                true => chunk,
                false => &chunk[..chunk.len().min(COALESCED_WRITE_MAX)],
            };
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, chunk))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.queued -= n;
            match self.segments.front_mut() {
                Some((segment, _)) => {
                    segment.advance(n);
                    if segment.is_empty() {
                        self.segments.pop_front();
                    }
                }
                None => self.head.advance(n),
            }
        }
    }
}

impl<S, C> Sink<C::Item> for FramedIo<S, C>
where
    S: AsyncWrite + Unpin,
    C: EncodeFrame + Unpin,
{
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.queued >= HIGH_WATER_MARK {
            if let Poll::Ready(Err(e)) = this.poll_write_queued(cx) {
                return Poll::Ready(Err(e));
            }
            if this.queued >= HIGH_WATER_MARK {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: C::Item) -> io::Result<()> {
        let this = &mut *self;
        let before = this.head.len();
        let payload = this.codec.encode_frame(item, &mut this.head)?;
        this.queued += this.head.len() - before;
        if let Some(payload) = payload.filter(|p| !p.is_empty()) {
            this.queued += payload.len();
            if !this.head.is_empty() {
                this.segments.push_back((this.head.split().freeze(), false));
            }
            this.segments.push_back((payload, true));
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_queued(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use bytes::BufMut as _;
    use futures::{SinkExt as _, StreamExt as _, io::Cursor};

    use super::*;

    /// Length-prefixed byte frames; payloads of `ZERO_COPY_MIN` or more are returned uncopied.
    struct Raw {
        max: usize,
    }

    impl Decoder for Raw {
        type Item = Bytes;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
            take_frame(src, 0, self.max)
        }
    }

    impl EncodeFrame for Raw {
        type Item = Bytes;
        fn encode_frame(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<Option<Bytes>> {
            let mut prefix = unsigned_varint::encode::usize_buffer();
            dst.put_slice(unsigned_varint::encode::usize(item.len(), &mut prefix));
            if item.len() >= ZERO_COPY_MIN {
                return Ok(Some(item));
            }
            dst.put_slice(&item);
            Ok(None)
        }
    }

    /// A reader that hands out at most `step` bytes per read and is `Pending` every other call;
    /// at the end of `data` it ends the stream, or stalls if `stall` is set.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        toggle: bool,
        stall: bool,
    }

    impl Trickle {
        fn new(data: Vec<u8>, step: usize, stall: bool) -> Self {
            Trickle {
                data,
                pos: 0,
                step,
                toggle: false,
                stall,
            }
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.toggle = !self.toggle;
            if self.stall && self.pos == self.data.len() {
                return Poll::Pending;
            }
            if self.toggle {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    fn sizes() -> Vec<usize> {
        vec![
            0,
            1,
            100,
            ZERO_COPY_MIN - 1,
            ZERO_COPY_MIN,
            70_000,
            3,
            EAGER_RESERVE + 5,
            5,
            3 * EAGER_RESERVE + 17,
            1024,
        ]
    }

    fn frames() -> Vec<Bytes> {
        sizes()
            .into_iter()
            .enumerate()
            .map(|(i, n)| Bytes::from((0..n).map(|j| (i * 31 + j * 7) as u8).collect::<Vec<_>>()))
            .collect()
    }

    async fn encode_all(frames: &[Bytes]) -> Vec<u8> {
        let mut io = FramedIo::new(Cursor::new(Vec::new()), Raw { max: usize::MAX });
        for f in frames {
            io.feed(f.clone()).await.unwrap();
        }
        io.flush().await.unwrap();
        assert_eq!(io.queued_bytes(), 0);
        io.io.into_inner()
    }

    #[test]
    fn frames_round_trip_through_any_read_sizes() {
        futures::executor::block_on(async {
            let frames = frames();
            let wire = encode_all(&frames).await;
            // The wire is exactly prefix + body per frame, whichever way a payload was written.
            let expected: usize = frames
                .iter()
                .map(|f| {
                    let mut b = unsigned_varint::encode::usize_buffer();
                    unsigned_varint::encode::usize(f.len(), &mut b).len() + f.len()
                })
                .sum();
            assert_eq!(wire.len(), expected);
            for step in [1, 7, 4096, 65_536, usize::MAX] {
                let reader = Trickle::new(wire.clone(), step, false);
                let mut io = FramedIo::new(reader, Raw { max: usize::MAX });
                let mut got = Vec::new();
                while let Some(frame) = io.next().await {
                    got.push(frame.unwrap());
                    if step == 1 && got.len() == 7 {
                        break; // one byte at a time: the small frames are enough
                    }
                }
                assert_eq!(got, frames[..got.len()], "step {step}");
                if step != 1 {
                    assert_eq!(got.len(), frames.len(), "step {step}");
                }
            }
        });
    }

    #[test]
    fn a_stalled_large_frame_holds_at_most_2_mib_or_twice_what_arrived() {
        // A peer announces a 30 MiB frame and sends 2 MiB of it: the buffer stays near 2 MiB.
        let mut prefix = unsigned_varint::encode::usize_buffer();
        let mut data = unsigned_varint::encode::usize(30 << 20, &mut prefix).to_vec();
        data.extend(std::iter::repeat_n(1u8, 2 << 20));
        let reader = Trickle::new(data, 64 * 1024, true);
        let mut io = FramedIo::new(reader, Raw { max: 32 << 20 });
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..200 {
            assert!(io.poll_next_unpin(&mut cx).is_pending());
        }
        assert_eq!(io.buffered_bytes(), (2 << 20) + 4);
        assert!(io.read.capacity() <= 5 << 20, "{}", io.read.capacity());

        // The same announcement with 100 bytes sent: at most EAGER_RESERVE is held.
        let mut data = unsigned_varint::encode::usize(30 << 20, &mut prefix).to_vec();
        data.extend(std::iter::repeat_n(1u8, 100));
        let reader = Trickle::new(data, 64 * 1024, true);
        let mut io = FramedIo::new(reader, Raw { max: 32 << 20 });
        for _ in 0..20 {
            assert!(io.poll_next_unpin(&mut cx).is_pending());
        }
        assert_eq!(io.buffered_bytes(), 104);
        assert!(
            io.read.capacity() <= EAGER_RESERVE + RECYCLE_MIN,
            "{}",
            io.read.capacity()
        );
    }

    #[test]
    fn large_frames_reuse_the_buffer_of_a_dropped_frame() {
        futures::executor::block_on(async {
            let frames: Vec<Bytes> = (0..8u8).map(|i| Bytes::from(vec![i; 1 << 20])).collect();
            let wire = encode_all(&frames).await;
            let reader = Trickle::new(wire, 256 * 1024, false);
            let mut io = FramedIo::new(reader, Raw { max: 2 << 20 });
            // The receiver keeps the newest frame and drops the one before it.
            let mut held = None;
            let mut n = 0;
            while let Some(frame) = io.next().await {
                let frame = frame.unwrap();
                assert_eq!(frame, frames[n]);
                n += 1;
                held = Some(frame);
            }
            drop(held);
            assert_eq!(n, frames.len());
            // The first read buffer (twice: the stream waits before its first frame, and an
            // idle stream holds none), one per frame for the first two large frames, then the
            // buffer of a dropped frame each time (without it: one per frame; 16 frames take
            // no more).
            assert!(io.allocations <= 4, "{} buffers allocated", io.allocations);
        });
    }

    #[test]
    fn oversize_and_truncated_frames_are_errors() {
        futures::executor::block_on(async {
            let mut prefix = unsigned_varint::encode::u64_buffer();
            let huge = unsigned_varint::encode::u64(1 << 40, &mut prefix).to_vec();
            let mut io = FramedIo::new(Cursor::new(huge), Raw { max: 1 << 20 });
            assert!(io.next().await.unwrap().is_err());
            assert!(
                io.read.capacity() <= MIN_READ,
                "nothing reserved from the prefix"
            );

            let mut cut = encode_all(&[Bytes::from(vec![9u8; 100])]).await;
            cut.truncate(50);
            let mut io = FramedIo::new(Cursor::new(cut), Raw { max: 1 << 20 });
            let err = io.next().await.unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

            let mut io = FramedIo::new(Cursor::new(Vec::new()), Raw { max: 1 << 20 });
            assert!(
                io.next().await.is_none(),
                "a clean end is the end of the stream"
            );
        });
    }

    /// Accepts every write whole and records its size.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
        data: Vec<u8>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.len());
            self.data.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn coalesced_frames_go_in_pieces_and_large_payloads_whole() {
        futures::executor::block_on(async {
            let small: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; 1000])).collect();
            let big = Bytes::from(vec![9u8; 200_000]);
            let mut io = FramedIo::new(Recorder::default(), Raw { max: usize::MAX });
            for f in small.iter().take(60) {
                io.feed(f.clone()).await.unwrap();
            }
            io.feed(big.clone()).await.unwrap();
            for f in small.iter().skip(60) {
                io.feed(f.clone()).await.unwrap();
            }
            io.flush().await.unwrap();
            let Recorder { writes, data } = io.io;
            // 60 frames (with the big one's prefix) in 4 pieces, the payload in one write, the
            // last 40 frames in 3 pieces.
            let frame = 2 + 1000;
            let before = 60 * frame + 3;
            let after = 40 * frame;
            let pieces = |n: usize| {
                let mut v = vec![COALESCED_WRITE_MAX; n / COALESCED_WRITE_MAX];
                v.push(n % COALESCED_WRITE_MAX);
                v
            };
            let mut expected = pieces(before);
            expected.push(big.len());
            expected.extend(pieces(after));
            assert_eq!(writes, expected);
            assert_eq!(
                data,
                encode_all(&[&small[..60], &[big], &small[60..]].concat()).await
            );
        });
    }

    #[test]
    fn large_payloads_are_written_uncopied_and_small_ones_coalesced() {
        futures::executor::block_on(async {
            let big = Bytes::from(vec![3u8; 200_000]);
            let mut io = FramedIo::new(Cursor::new(Vec::new()), Raw { max: usize::MAX });
            io.start_send_unpin(Bytes::from_static(b"a")).unwrap();
            io.start_send_unpin(Bytes::from_static(b"bc")).unwrap();
            io.start_send_unpin(big.clone()).unwrap();
            io.start_send_unpin(Bytes::from_static(b"d")).unwrap();
            // Two small frames and the big one's prefix in one segment, the payload itself (the
            // same memory), then the last frame in `head`.
            assert_eq!(io.segments.len(), 2);
            assert_eq!(io.segments[0].0.len(), 2 + 3 + 3);
            assert_eq!(io.segments[1].0.as_ptr(), big.as_ptr());
            assert_eq!(&io.head[..], b"\x01d");
            assert_eq!(io.queued_bytes(), 8 + 200_000 + 2);
            // Past the high-water mark the sink writes before it accepts more.
            let mut cx = Context::from_waker(Waker::noop());
            assert!(io.poll_ready_unpin(&mut cx).is_ready());
            assert_eq!(io.queued_bytes(), 0);
            io.flush().await.unwrap();
            let wire = io.io.into_inner();
            assert_eq!(wire.len(), 8 + 200_000 + 2);
            assert_eq!(&wire[..8], b"\x01a\x02bc\xc0\x9a\x0c");
        });
    }
}
