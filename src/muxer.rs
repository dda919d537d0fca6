//! yamux (`/yamux/1.0.0`) with data frames sized for TLS records.
//!
//! `libp2p-yamux` fixes yamux's largest data frame at 16 KiB. Under TLS a 16 KiB body plus its
//! 12-byte header is one full 16 KiB record and a 12-byte one, and every frame costs the muxer a
//! flush, a socket write and a wake-up of the connection task. Bulk transfers (block sync) then
//! spend their time on per-frame overhead. This upgrade speaks the same wire protocol through the
//! same `yamux` crate, but lets one data frame carry up to [`DEFAULT_MAX_FRAME`] bytes — as much
//! as the peer's window allows — chosen so that a frame fills whole TLS records. Peers need
//! nothing special: yamux frames may be as large as the receiver's window.

use std::{
    collections::VecDeque,
    iter,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use futures::{AsyncRead, AsyncWrite, future};
use libp2p::core::{
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
};

/// The largest TLS record plaintext.
const TLS_RECORD: usize = 16 * 1024;
/// The yamux frame header.
const HEADER: usize = 12;
/// Default largest data frame body: 16 TLS records' worth, header included.
pub const DEFAULT_MAX_FRAME: usize = 16 * TLS_RECORD - HEADER;
/// Inbound streams held while the swarm is not asking for them; more are reset. Equal to
/// yamux's own backlog of unacknowledged streams, so a well-behaved peer never hits it.
const MAX_BUFFERED_INBOUND: usize = 256;

/// The muxer upgrade: yamux with a configurable largest data frame.
#[derive(Debug, Clone)]
pub struct Config {
    inner: yamux::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config::with_max_frame(DEFAULT_MAX_FRAME)
    }
}

impl Config {
    /// yamux whose data frames carry at most `bytes` (at least 1 KiB is used).
    pub fn with_max_frame(bytes: usize) -> Self {
        let mut inner = yamux::Config::default();
        inner.set_split_send_size(bytes.max(1024));
        Config { inner }
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
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = future::Ready<Result<Muxer<C>, std::io::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, self.inner, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = future::Ready<Result<Muxer<C>, std::io::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, self.inner, yamux::Mode::Client)))
    }
}

/// One yamux connection.
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Inbound streams that arrived while the swarm polled the connection for other work (yamux
    /// makes progress only through `poll_next_inbound`), until `poll_inbound` takes them.
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Muxer<C> {
    fn new(io: C, config: yamux::Config, mode: yamux::Mode) -> Self {
        Muxer {
            connection: yamux::Connection::new(io, config, mode),
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        match self.connection.poll_next_inbound(cx) {
            Poll::Ready(Some(result)) => Poll::Ready(result),
            Poll::Ready(None) => Poll::Ready(Err(yamux::ConnectionError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> StreamMuxer for Muxer<C> {
    type Substream = yamux::Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        if let Some(stream) = self.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(result) = self.poll_next(cx) {
            return Poll::Ready(result);
        }
        self.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.connection.poll_new_outbound(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connection.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = std::task::ready!(this.poll_next(cx))?;
        if this.inbound.len() >= MAX_BUFFERED_INBOUND {
            tracing::warn!(stream = %stream, "inbound stream reset: too many not yet taken");
            drop(stream);
        } else {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
        // More may be ready; let the swarm come back after its other work.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
