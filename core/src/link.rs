//! A long-lived, length-prefixed frame link per connection: one outbound stream that carries this
//! node's frames, one inbound stream that carries the peer's.
//!
//! Flood and status make every decision in their behaviour (who gets a message, when to ask for
//! a status) and need from each connection only "send these bytes" and "here is what the peer
//! sent". This handler is that, once, with the limits every protocol needs: a frame size limit
//! checked before any byte of the frame is buffered, a per-connection send queue bounded in
//! frames and bytes that the behaviour checks *before* it hands a frame over ([`Queue`]), and
//! malformed input closing only the stream it came on.

use std::{
    collections::VecDeque,
    fmt, io,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use crate::framed::{FrameCodec, FramedIo};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use libp2p_core::upgrade::ReadyUpgrade;
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, ConnectionId, NotifyHandler, Stream, StreamProtocol,
    SubstreamProtocol, ToSwarm,
    handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
};

/// Frames read from the inbound stream per `poll`, so one busy link cannot starve the others.
const READ_BATCH: usize = 64;
/// Consecutive failures to (re)open the outbound stream before the link gives up on it.
const MAX_OPEN_FAILURES: u8 = 3;

/// Turns a frame body into a protocol message, or says why it is malformed.
pub type DecodeFn<T> = fn(Bytes) -> Result<T, String>;

/// How a link behaves; shared by all of a behaviour's connections.
pub struct LinkConfig<T> {
    /// The protocol negotiated for both streams.
    pub protocol: StreamProtocol,
    /// Largest frame body, either way. Longer length prefixes close the inbound stream.
    pub max_frame: usize,
    /// Most frames queued for one connection.
    pub max_queue_frames: usize,
    /// Most bytes queued for one connection.
    pub max_queue_bytes: usize,
    /// Decodes a received frame body.
    pub decode: DecodeFn<T>,
    /// Counts the frames and bytes every connection of the link moves.
    pub traffic: Arc<Traffic>,
}

impl<T> fmt::Debug for LinkConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkConfig")
            .field("protocol", &self.protocol)
            .field("max_frame", &self.max_frame)
            .field("max_queue_frames", &self.max_queue_frames)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .finish()
    }
}

/// Frames and frame-body bytes a protocol moved over all its connections, each way (varint
/// length prefixes and the layers below are not counted). Shared by every handler of the
/// protocol: the per-frame cost is two relaxed atomic adds, and it can be read at any time, e.g.
/// by a metrics scrape.
#[derive(Debug, Default)]
pub struct Traffic {
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl Traffic {
    /// Counts one frame of `len` body bytes read from a peer.
    pub fn received(&self, len: usize) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counts one frame of `len` body bytes handed to a peer's stream.
    pub fn sent(&self, len: usize) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Frames read so far.
    pub fn frames_in(&self) -> u64 {
        self.frames_in.load(Ordering::Relaxed)
    }

    /// Body bytes read so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Frames sent so far.
    pub fn frames_out(&self) -> u64 {
        self.frames_out.load(Ordering::Relaxed)
    }

    /// Body bytes sent so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }
}

/// What is queued for one connection, shared by the behaviour (which reserves room before it
/// sends) and the handler (which releases it once the frame is written or dropped). Reserving
/// on the behaviour's side lets a `send` fail at once, with a typed error, when a peer lags.
#[derive(Debug)]
pub struct Queue {
    frames: AtomicUsize,
    bytes: AtomicUsize,
    max_frames: usize,
    max_bytes: usize,
}

impl Queue {
    /// An empty queue with these limits.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Queue {
            frames: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_frames,
            max_bytes,
        }
    }

    /// Reserves room for one frame of `len` bytes; false when the queue is full.
    pub fn try_reserve(&self, len: usize) -> bool {
        // One writer (the behaviour) reserves; the handler only releases, so check-then-add
        // cannot overshoot.
        if self.frames.load(Ordering::Acquire) >= self.max_frames
            || self.bytes.load(Ordering::Acquire) + len > self.max_bytes
        {
            return false;
        }
        self.frames.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(len, Ordering::AcqRel);
        true
    }

    /// Reserves room for `frame` and returns the swarm command that hands it to connection
    /// `connection`'s handler; `None` when the queue is full (the frame is not queued).
    pub fn send<E>(
        &self,
        peer_id: PeerId,
        connection: ConnectionId,
        frame: Bytes,
    ) -> Option<ToSwarm<E, LinkCommand>> {
        self.try_reserve(frame.len())
            .then(|| ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: LinkCommand::Send(frame),
            })
    }

    fn release(&self, len: usize) {
        self.frames.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Frames queued now.
    pub fn frames(&self) -> usize {
        self.frames.load(Ordering::Acquire)
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

/// Behaviour → handler.
#[derive(Debug)]
pub enum LinkCommand {
    /// Send a frame body; its room must have been reserved with [`Queue::try_reserve`].
    Send(Bytes),
    /// Close the peer's stream (the behaviour found its content malformed).
    CloseInbound(String),
}

/// Handler → behaviour.
#[derive(Debug)]
pub enum LinkEvent<T> {
    /// Our outbound stream is open: frames sent now go out.
    OutboundOpened,
    /// The peer opened its stream to us.
    InboundOpened,
    /// The link cannot be used on this connection, for good: the peer does not speak the
    /// protocol, or opening the stream kept failing. Frames sent to it are dropped.
    Unsupported,
    /// A decoded frame from the peer.
    Received(T),
    /// The outbound stream failed; the frames queued on it are lost.
    OutboundFailed(String),
    /// The inbound stream was closed: by the peer, or by us over malformed input (the reason).
    InboundClosed(String),
}

enum Outbound {
    /// Not opened yet (opened on the first poll), or lost and nothing to send.
    Idle,
    Opening,
    Open(Box<FramedIo<Stream, FrameCodec>>),
    /// The peer does not speak the protocol, or opening kept failing.
    Dead,
}

/// The per-connection handler of a link.
pub struct Handler<T> {
    config: Arc<LinkConfig<T>>,
    queue: Arc<Queue>,
    outbound: Outbound,
    open_failures: u8,
    to_send: VecDeque<Bytes>,
    inbound: Option<FramedIo<Stream, FrameCodec>>,
    events: VecDeque<LinkEvent<T>>,
}

impl<T> Handler<T> {
    /// A handler for one connection; `queue` is the behaviour's view of what it holds.
    pub fn new(config: Arc<LinkConfig<T>>, queue: Arc<Queue>) -> Self {
        Handler {
            config,
            queue,
            outbound: Outbound::Idle,
            open_failures: 0,
            to_send: VecDeque::new(),
            inbound: None,
            events: VecDeque::new(),
        }
    }

    fn drop_queued(&mut self) {
        for frame in self.to_send.drain(..) {
            self.queue.release(frame.len());
        }
    }

    fn outbound_failed(&mut self, reason: String) {
        tracing::debug!(protocol = %self.config.protocol, %reason, "link outbound stream failed");
        self.open_failures += 1;
        self.drop_queued();
        if self.open_failures >= MAX_OPEN_FAILURES {
            // For good on this connection: say so, or the behaviour keeps sending into it.
            tracing::info!(protocol = %self.config.protocol, %reason, "link given up on this connection");
            self.outbound = Outbound::Dead;
            self.events.push_back(LinkEvent::Unsupported);
        } else {
            self.outbound = Outbound::Idle;
            self.events.push_back(LinkEvent::OutboundFailed(reason));
        }
    }

    fn inbound_closed(&mut self, reason: String) {
        if self.inbound.take().is_some() {
            tracing::debug!(protocol = %self.config.protocol, %reason, "link inbound stream closed");
            self.events.push_back(LinkEvent::InboundClosed(reason));
        }
    }

    fn poll_outbound(&mut self, cx: &mut Context<'_>) {
        let Outbound::Open(stream) = &mut self.outbound else {
            return;
        };
        let mut error = None;
        while !self.to_send.is_empty() {
            match stream.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    let frame = self.to_send.pop_front().expect("checked non-empty");
                    let len = frame.len();
                    self.queue.release(len);
                    if let Err(e) = stream.start_send_unpin(frame) {
                        error = Some(e.to_string());
                        break;
                    }
                    self.config.traffic.sent(len);
                }
                Poll::Ready(Err(e)) => {
                    error = Some(e.to_string());
                    break;
                }
                Poll::Pending => break,
            }
        }
        if error.is_none()
            && let Poll::Ready(Err(e)) = stream.poll_flush_unpin(cx)
        {
            error = Some(e.to_string());
        }
        if error.is_none() {
            // The peer never writes on our stream; reading it notices a reset or close.
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(_))) => error = Some("the peer wrote on our stream".into()),
                Poll::Ready(Some(Err(e))) => error = Some(e.to_string()),
                Poll::Ready(None) => error = Some("closed by the peer".into()),
                Poll::Pending => {}
            }
        }
        if let Some(reason) = error {
            self.outbound_failed(reason);
        }
    }

    fn poll_inbound(&mut self, cx: &mut Context<'_>) {
        let mut batch_done = true;
        for _ in 0..READ_BATCH {
            let Some(stream) = &mut self.inbound else {
                return;
            };
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(body))) => {
                    self.config.traffic.received(body.len());
                    match (self.config.decode)(body) {
                        Ok(message) => self.events.push_back(LinkEvent::Received(message)),
                        Err(reason) => {
                            tracing::info!(protocol = %self.config.protocol, %reason, "closing a peer's stream: malformed frame");
                            return self.inbound_closed(format!("malformed frame: {reason}"));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::info!(protocol = %self.config.protocol, reason = %e, "closing a peer's stream: bad framing");
                    return self.inbound_closed(format!("bad frame: {e}"));
                }
                Poll::Ready(Some(Err(e))) => {
                    return self.inbound_closed(format!("stream failed: {e}"));
                }
                Poll::Ready(None) => return self.inbound_closed("closed by the peer".into()),
                Poll::Pending => {
                    batch_done = false;
                    break;
                }
            }
        }
        if batch_done {
            // Frames may be buffered with no read pending to wake us.
            cx.waker().wake_by_ref();
        }
    }
}

impl<T: Send + fmt::Debug + 'static> ConnectionHandler for Handler<T> {
    type FromBehaviour = LinkCommand;
    type ToBehaviour = LinkEvent<T>;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.config.protocol.clone()), ())
    }

    fn on_behaviour_event(&mut self, command: LinkCommand) {
        match command {
            LinkCommand::Send(frame) => {
                if matches!(self.outbound, Outbound::Dead) {
                    self.queue.release(frame.len());
                } else {
                    self.to_send.push_back(frame);
                }
            }
            LinkCommand::CloseInbound(reason) => {
                tracing::info!(protocol = %self.config.protocol, %reason, "closing a peer's stream");
                self.inbound_closed(reason);
            }
        }
    }

    fn connection_keep_alive(&self) -> bool {
        !self.to_send.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        // Opened at once (both sides announce on connect), and again after a failure when
        // there is something to send.
        if matches!(self.outbound, Outbound::Idle)
            && (self.open_failures == 0 || !self.to_send.is_empty())
        {
            self.outbound = Outbound::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(
                    ReadyUpgrade::new(self.config.protocol.clone()),
                    (),
                ),
            });
        }
        self.poll_outbound(cx);
        self.poll_inbound(cx);
        match self.events.pop_front() {
            Some(e) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e)),
            None => Poll::Pending,
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                // One inbound stream per connection: a new one replaces the old, bounding what
                // a peer can make us hold.
                self.inbound = Some(FramedIo::new(
                    stream,
                    FrameCodec::new(self.config.max_frame),
                ));
                self.events.push_back(LinkEvent::InboundOpened);
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.open_failures = 0;
                self.outbound = Outbound::Open(Box::new(FramedIo::new(
                    stream,
                    FrameCodec::write_only(self.config.max_frame),
                )));
                self.events.push_back(LinkEvent::OutboundOpened);
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                if matches!(error, libp2p_swarm::StreamUpgradeError::NegotiationFailed) {
                    self.outbound = Outbound::Dead;
                    self.drop_queued();
                    self.events.push_back(LinkEvent::Unsupported);
                } else {
                    self.outbound_failed(format!("cannot open the stream: {error}"));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_reserves_within_limits() {
        let q = Queue::new(2, 10);
        assert!(q.try_reserve(6));
        assert!(!q.try_reserve(5), "bytes limit");
        assert!(q.try_reserve(4));
        assert!(!q.try_reserve(0), "frames limit");
        q.release(6);
        assert_eq!((q.frames(), q.bytes()), (1, 4));
        assert!(q.try_reserve(6));
    }
}
