//! Yamux for libp2p with a send frame size of our choosing.
//!
//! `libp2p-yamux` 0.48 fixes yamux's 16 KiB send frames: every 16 KiB of a bulk transfer costs a
//! body allocation, a channel hand-off to the connection task and a socket write. go-yamux and
//! js-yamux send 64 KiB frames by default, and every yamux reader takes them (rust-yamux reads
//! bodies up to 1 MiB; the others bound frames by the stream's window only). This adapter drives
//! the same `yamux` crate under the same protocol name, `/yamux/1.0.0`, with 64 KiB send frames
//! by default; what goes on the wire stays plain yamux.
//!
//! The receive windows of a connection's streams grow together by at most
//! [`DEFAULT_WINDOW_GROWTH`] beyond yamux's first 256 KiB each (yamux alone lets them reach
//! 1 GiB), which bounds how much of one stream can queue ahead of another's next frame.
//!
//! Inbound streams that arrive while the swarm is not asking for them are held, at most
//! [`MAX_PENDING_INBOUND`]; more are dropped (which resets them), so a peer cannot grow the queue.

use std::{
    collections::VecDeque,
    io, iter,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::{
    AsyncRead, AsyncWrite,
    future::{self, Ready},
};
use libp2p_core::{
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
};

/// The send frame size [`Config::default`] uses: go-yamux's and js-yamux's default.
pub const DEFAULT_FRAME_SIZE: usize = 64 * 1024;
/// The smallest send frame size [`Config::set_frame_size`] accepts.
pub const MIN_FRAME_SIZE: usize = 1024;
/// The largest send frame size [`Config::set_frame_size`] accepts: the largest body rust-yamux
/// reads.
pub const MAX_FRAME_SIZE: usize = 1024 * 1024;
/// How far yamux may grow the receive windows of a connection's streams, together, beyond
/// the 256 KiB each starts with: [`Config::default`]'s [`Config::set_window_growth`].
///
/// yamux doubles a stream's window whenever the sender used half of it within two round
/// trips, up to the connection's limit (1 GiB by default). Round trips measured under load
/// include the queue itself, so on a fast link with a busy receiver a bulk stream's window
/// keeps growing, and so does the queue of bytes in the receiver's socket that every other
/// stream's next frame waits behind (a consensus message behind a block transfer). 8 MiB
/// keeps that queue short and still fills 1 Gbit/s at 60 ms round trip on one stream
/// (window / RTT); raise it for longer, faster links.
pub const DEFAULT_WINDOW_GROWTH: usize = 8 * 1024 * 1024;
/// The round trip for which a window growth set is meant in full ([`Config::fit_to_round_trip`]):
/// [`DEFAULT_WINDOW_GROWTH`] fills 1 Gbit/s at it.
pub const FULL_GROWTH_RTT: Duration = Duration::from_millis(60);
/// The least growth [`Config::fit_to_round_trip`] leaves: one stream at 1 Gbit/s over a
/// round trip of 10 ms (its window 1.25 MiB with the first 256 KiB).
pub const MIN_WINDOW_GROWTH: usize = 1024 * 1024;
/// The window every yamux stream starts with.
const STREAM_WINDOW: usize = yamux::DEFAULT_CREDIT as usize;
/// yamux's default stream limit per connection.
const YAMUX_MAX_STREAMS: usize = 512;
/// yamux's default receive window limit per connection.
const YAMUX_CONNECTION_WINDOW: usize = 1024 * 1024 * 1024;

/// Inbound streams held for the swarm at most; rust-yamux peers stop opening streams at 256
/// unacknowledged ones, so only a misbehaving peer meets this bound.
pub const MAX_PENDING_INBOUND: usize = 256;

/// The muxer upgrade: yamux with our send frame size.
#[derive(Debug, Clone)]
pub struct Config {
    inner: yamux::Config,
    frame_size: usize,
    max_num_streams: usize,
    window_growth: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        let mut config = Config {
            inner: yamux::Config::default(),
            frame_size: 0,
            max_num_streams: YAMUX_MAX_STREAMS,
            window_growth: None,
        };
        config.set_frame_size(DEFAULT_FRAME_SIZE);
        config.set_window_growth(Some(DEFAULT_WINDOW_GROWTH));
        config
    }
}

impl Config {
    /// Sets the largest data frame body sent, clamped to
    /// [`MIN_FRAME_SIZE`]..=[`MAX_FRAME_SIZE`]. Larger frames mean fewer allocations, hand-offs
    /// and socket writes per byte; a frame also never exceeds the stream's send window.
    pub fn set_frame_size(&mut self, bytes: usize) -> &mut Self {
        self.frame_size = bytes.clamp(MIN_FRAME_SIZE, MAX_FRAME_SIZE);
        self.inner.set_split_send_size(self.frame_size);
        self
    }

    /// The largest data frame body sent.
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Sets the maximum number of streams open at once on a connection (yamux's default: 512).
    pub fn set_max_num_streams(&mut self, streams: usize) -> &mut Self {
        self.max_num_streams = streams;
        self.apply_windows();
        self
    }

    /// Sets how far the receive windows of a connection's streams may grow together beyond
    /// their first 256 KiB ([`DEFAULT_WINDOW_GROWTH`]); `None`: as far as yamux's own limit
    /// (1 GiB for the connection).
    pub fn set_window_growth(&mut self, bytes: Option<usize>) -> &mut Self {
        self.window_growth = bytes;
        self.apply_windows();
        self
    }

    /// The growth set by [`Self::set_window_growth`].
    pub fn window_growth(&self) -> Option<usize> {
        self.window_growth
    }

    /// Scales the window growth to a path whose round trip without a queue is `rtt`: the
    /// growth set is for paths of [`FULL_GROWTH_RTT`] or longer, a shorter path gets the same
    /// rate (growth × rtt / [`FULL_GROWTH_RTT`]), at least [`MIN_WINDOW_GROWTH`] (never more
    /// than the growth set).
    ///
    /// One stream moves at most its window per round trip; what a window holds beyond that
    /// only waits in the receiver's buffers, and another stream's next frame waits behind it.
    /// Measured on loopback (a 32 MiB request stream beside 1 KiB requests, both nodes on two
    /// cores): the growth of 8 MiB gave the small requests p99 6.1–7.7 ms, 1 MiB 3.5–3.6 ms,
    /// the bulk moving at the same 1.7–1.8 GB/s.
    pub fn fit_to_round_trip(&mut self, rtt: Duration) -> &mut Self {
        if let Some(growth) = self.window_growth {
            let share = rtt.as_secs_f64() / FULL_GROWTH_RTT.as_secs_f64();
            let fitted = (growth as f64 * share.min(1.0)) as usize;
            self.set_window_growth(Some(fitted.max(MIN_WINDOW_GROWTH).min(growth)));
        }
        self
    }

    /// Hands the stream count and the connection's receive window to yamux, which checks the
    /// window against the count on every change: unbounded first, then the count, then the
    /// window.
    fn apply_windows(&mut self) {
        let streams = self.max_num_streams;
        let window = match self.window_growth {
            Some(growth) => streams.saturating_mul(STREAM_WINDOW).saturating_add(growth),
            None => YAMUX_CONNECTION_WINDOW.max(streams.saturating_mul(STREAM_WINDOW)),
        };
        self.inner.set_max_connection_receive_window(None);
        self.inner.set_max_num_streams(streams);
        self.inner.set_max_connection_receive_window(Some(window));
    }

    fn connection<C>(self, io: C, mode: yamux::Mode) -> Muxer<C>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        Muxer {
            connection: yamux::Connection::new(io, self.inner, mode),
            pending_inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = Ready<io::Result<Muxer<C>>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(self.connection(io, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = Ready<io::Result<Muxer<C>>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(self.connection(io, yamux::Mode::Client)))
    }
}

/// A yamux connection as a libp2p [`StreamMuxer`]; its substreams are [`yamux::Stream`]s.
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Inbound streams accepted while [`StreamMuxer::poll`] drove the connection, oldest first.
    pending_inbound: VecDeque<yamux::Stream>,
    /// The task that last found no inbound stream, woken when one is held.
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// Polls yamux for the next inbound stream; this is also what reads and dispatches frames.
    fn next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, MuxError>> {
        match self.connection.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => Poll::Ready(Ok(stream)),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(MuxError(e))),
            Poll::Ready(None) => Poll::Ready(Err(MuxError(yamux::ConnectionError::Closed))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = yamux::Stream;
    type Error = MuxError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.pending_inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        let polled = this.next_inbound(cx);
        if polled.is_pending() {
            this.inbound_waker = Some(cx.waker().clone());
        }
        polled
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut()
            .connection
            .poll_new_outbound(cx)
            .map_err(MuxError)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().connection.poll_close(cx).map_err(MuxError)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        loop {
            let stream = match this.next_inbound(cx) {
                Poll::Ready(Ok(stream)) => stream,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if this.pending_inbound.len() >= MAX_PENDING_INBOUND {
                tracing::warn!(
                    stream = %stream.id(),
                    held = MAX_PENDING_INBOUND,
                    "yamux: too many inbound streams waiting to be accepted; resetting this one"
                );
                drop(stream);
                continue;
            }
            this.pending_inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
    }
}

/// A yamux connection error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct MuxError(yamux::ConnectionError);
