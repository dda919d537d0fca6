//! A long-lived, length-prefixed frame link per connection: one outbound stream that carries this
//! node's frames, one inbound stream that carries the peer's.
//!
//! Flood and status make every decision in their behaviour (who gets a message, when to ask for
//! a status) and need from each connection only "send these bytes" and "here is what the peer
//! sent". This is that, once, as a [`PairProtocol`] on the two-stream engine
//! ([`crate::stream_pair`]), with the limits every protocol needs: a frame size limit checked
//! before any byte of the frame is buffered, a per-connection send queue bounded in frames and
//! bytes that the behaviour checks *before* it hands a frame over ([`Queue`]), and malformed
//! input closing only the stream it came on.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use libp2p_identity::PeerId;
use libp2p_swarm::{ConnectionId, NotifyHandler, StreamProtocol, ToSwarm};

use crate::{
    framed::FrameCodec,
    stream_pair::{
        CloseReason, MAX_OPEN_FAILURES, PairProtocol, Policy, StreamPair, Streams, Traffic,
    },
};

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
    /// Close the peer's stream (the behaviour found its content malformed, or refused it).
    CloseInbound(CloseReason),
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
    OutboundFailed(CloseReason),
    /// The inbound stream was closed: by the peer, or by us over malformed input (the reason).
    InboundClosed(CloseReason),
}

/// The per-connection handler of a link.
pub type Handler<T> = StreamPair<Link<T>>;

/// What a link does with its frames on the two-stream engine: hands decoded frames to the
/// behaviour and releases each frame's room in the [`Queue`] once it is written or dropped.
pub struct Link<T> {
    config: Arc<LinkConfig<T>>,
    queue: Arc<Queue>,
    events: VecDeque<LinkEvent<T>>,
}

impl<T> Link<T> {
    /// The link of one connection (make its handler with [`StreamPair::new`]); `queue` is the
    /// behaviour's view of what it holds.
    pub fn new(config: Arc<LinkConfig<T>>, queue: Arc<Queue>) -> Self {
        Link {
            config,
            queue,
            events: VecDeque::new(),
        }
    }
}

impl<T: Send + fmt::Debug + 'static> PairProtocol for Link<T> {
    type Codec = FrameCodec;
    type Command = LinkCommand;
    type Event = LinkEvent<T>;

    /// Opened at once (both sides announce on connect); the peer never writes on our stream
    /// and we never write on the peer's.
    fn policy(&self) -> Policy {
        Policy {
            open_at_once: true,
            give_up_after: Some(MAX_OPEN_FAILURES),
            answers: false,
        }
    }

    fn protocol(&self) -> &StreamProtocol {
        &self.config.protocol
    }

    fn inbound_codec(&self, _: &StreamProtocol) -> FrameCodec {
        FrameCodec::new(self.config.max_frame)
    }

    fn outbound_codec(&self, _: &StreamProtocol) -> FrameCodec {
        FrameCodec::write_only(self.config.max_frame)
    }

    fn traffic(&self) -> &Traffic {
        &self.config.traffic
    }

    fn read_len(body: &Bytes) -> usize {
        body.len()
    }

    fn write_len(body: &Bytes) -> usize {
        body.len()
    }

    fn on_command(&mut self, command: LinkCommand, streams: &mut Streams<FrameCodec>) {
        match command {
            LinkCommand::Send(frame) => {
                if let Err(frame) = streams.send(frame) {
                    self.discard(frame);
                }
            }
            LinkCommand::CloseInbound(reason) => {
                tracing::info!(protocol = %self.config.protocol, %reason, "closing a peer's stream");
                if streams.close_inbound() {
                    self.inbound_closed(reason);
                }
            }
        }
    }

    fn admit(&mut self, frame: &Bytes) -> bool {
        self.queue.release(frame.len());
        true
    }

    fn discard(&mut self, frame: Bytes) {
        self.queue.release(frame.len());
    }

    fn on_inbound(&mut self, body: Bytes, _: &mut VecDeque<Bytes>) -> Result<(), CloseReason> {
        match (self.config.decode)(body) {
            Ok(message) => {
                self.events.push_back(LinkEvent::Received(message));
                Ok(())
            }
            Err(reason) => {
                tracing::info!(protocol = %self.config.protocol, %reason, "closing a peer's stream: malformed frame");
                Err(CloseReason::Malformed(reason))
            }
        }
    }

    /// The peer never writes on our stream; reading it notices a reset or close.
    fn on_reply(&mut self, _: Bytes) -> Result<(), CloseReason> {
        Err(CloseReason::Unexpected(
            "frame from the peer on our stream".into(),
        ))
    }

    fn outbound_opened(&mut self, _: &StreamProtocol) {
        self.events.push_back(LinkEvent::OutboundOpened);
    }

    fn outbound_failed(&mut self, reason: CloseReason, given_up: bool) {
        tracing::debug!(protocol = %self.config.protocol, %reason, "link outbound stream failed");
        if given_up {
            // For good on this connection: say so, or the behaviour keeps sending into it.
            tracing::info!(protocol = %self.config.protocol, %reason, "link given up on this connection");
            self.events.push_back(LinkEvent::Unsupported);
        } else {
            self.events.push_back(LinkEvent::OutboundFailed(reason));
        }
    }

    fn unsupported(&mut self) {
        self.events.push_back(LinkEvent::Unsupported);
    }

    fn inbound_opened(&mut self, _replaced: bool, _: &StreamProtocol) {
        self.events.push_back(LinkEvent::InboundOpened);
    }

    fn inbound_closed(&mut self, reason: CloseReason) {
        if let CloseReason::BadFrame(e) = &reason {
            tracing::info!(protocol = %self.config.protocol, reason = %e, "closing a peer's stream: bad framing");
        }
        tracing::debug!(protocol = %self.config.protocol, %reason, "link inbound stream closed");
        self.events.push_back(LinkEvent::InboundClosed(reason));
    }

    fn next_event(&mut self) -> Option<LinkEvent<T>> {
        self.events.pop_front()
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
