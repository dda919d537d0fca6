//! The connection handler every bcos protocol runs on: one long-lived outbound stream that
//! carries this node's frames, one inbound stream that carries the peer's.
//!
//! Flood, status and unicast all keep one stream per direction for the life of a connection
//! (no stream negotiation per message, as FISCO BCOS with its one session per peer), so what
//! that takes is written once, here: opening the outbound stream and reopening it after a
//! failure (or giving up on it), accepting the peer's stream (a new one replaces the old,
//! bounding what a peer can make us hold), writing queued frames, reading frames in batches so
//! that one busy stream cannot starve the others, the frame limit (the codec's), keeping the
//! connection alive while frames are queued, and saying why a stream closed ([`CloseReason`]).
//! What a protocol does with its frames is a [`PairProtocol`]: the flood/status link
//! ([`crate::link`]) and unicast's request bookkeeping.

use std::{
    collections::VecDeque,
    convert::Infallible,
    fmt, io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use asynchronous_codec::Decoder;
use futures::{SinkExt as _, StreamExt as _};
use libp2p_core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, StreamUpgradeError,
    SubstreamProtocol,
    handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
};

use crate::{
    framed::{EncodeFrame, FramedIo},
    heard::HeardAt,
};

/// The stream upgrade of a [`StreamPair`]: the protocol's versions, most preferred first; the
/// stream comes with the version negotiated.
#[derive(Debug, Clone)]
pub struct Versions(Vec<StreamProtocol>);

impl UpgradeInfo for Versions {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Versions {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, version: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, version)))
    }
}

impl OutboundUpgrade<Stream> for Versions {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, version: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, version)))
    }
}

/// Frames read from one stream per `poll`, so one busy stream cannot starve the others.
const READ_BATCH: usize = 64;

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

/// Why a stream closed (or failed to open). `Display` is the text logs and events show.
#[derive(Debug)]
pub enum CloseReason {
    /// The peer closed the stream.
    ClosedByPeer,
    /// Reading or writing failed.
    Io(io::Error),
    /// The framing is broken: a bad or overlong length prefix, a frame beyond the limit, or a
    /// frame the codec cannot decode.
    BadFrame(io::Error),
    /// A whole frame whose content is malformed: the decoder's (or the behaviour's) reason.
    Malformed(String),
    /// A well-formed frame that has no place on the stream it came on: what, and where.
    Unexpected(String),
    /// The behaviour refused what the peer sent, for this reason. Unlike
    /// [`CloseReason::Malformed`], a behaviour counts these closes itself when it asks for them.
    Refused(String),
    /// The outbound stream could not be opened.
    OpenFailed(StreamUpgradeError<Infallible>),
}

impl CloseReason {
    /// Whether the peer broke the protocol: broken framing, a malformed frame, or a frame
    /// where none belongs. An honest peer never does (what the protocols report as
    /// [`crate::Offence::Malformed`]).
    pub fn is_violation(&self) -> bool {
        matches!(
            self,
            CloseReason::BadFrame(_) | CloseReason::Malformed(_) | CloseReason::Unexpected(_)
        )
    }

    /// The reason a read failed: broken framing ([`io::ErrorKind::InvalidData`], what decoders
    /// return) or the stream itself.
    fn of_read(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::InvalidData {
            CloseReason::BadFrame(e)
        } else {
            CloseReason::Io(e)
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClosedByPeer => f.write_str("closed by the peer"),
            CloseReason::Io(e) => write!(f, "stream failed: {e}"),
            CloseReason::BadFrame(e) => write!(f, "bad frame: {e}"),
            CloseReason::Malformed(reason) => write!(f, "malformed frame: {reason}"),
            CloseReason::Unexpected(what) => write!(f, "unexpected {what}"),
            CloseReason::Refused(reason) => f.write_str(reason),
            CloseReason::OpenFailed(e) => write!(f, "cannot open the stream: {e}"),
        }
    }
}

/// Consecutive failures to (re)open an outbound stream before a protocol that gives up
/// ([`Policy::give_up_after`]) usually does.
pub const MAX_OPEN_FAILURES: u8 = 3;

/// What the engine does differently per protocol.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Open the outbound stream as soon as the connection is up (the protocol announces itself
    /// on connect), not only once a frame is queued.
    pub open_at_once: bool,
    /// Give up on the outbound stream after this many consecutive failures, and at once when
    /// the peer does not speak the protocol; frames are refused from then on
    /// ([`Streams::send`]). `None`: reopen it whenever a frame is queued, for as long as the
    /// connection lasts.
    pub give_up_after: Option<u8>,
    /// The protocol writes on the peer's stream too (answers to what it read there).
    pub answers: bool,
}

/// What a protocol reads: its codec's decoded item.
pub type InFrame<P> = <<P as PairProtocol>::Codec as Decoder>::Item;
/// What a protocol writes: its codec's encoded item.
pub type OutFrame<P> = <<P as PairProtocol>::Codec as EncodeFrame>::Item;

/// A protocol on top of [`StreamPair`]: what it does with the frames the engine moves, and the
/// events it reports. The engine calls these in the order things happen on the streams.
pub trait PairProtocol: Send + 'static {
    /// The codec of both streams; its decode errors close the stream they came on.
    type Codec: Decoder<Error = io::Error, Item: Send> + EncodeFrame<Item: Send> + Send + Unpin;
    /// Behaviour → handler.
    type Command: fmt::Debug + Send + 'static;
    /// Handler → behaviour.
    type Event: fmt::Debug + Send + 'static;

    /// How the engine treats the streams.
    fn policy(&self) -> Policy;

    /// The protocol negotiated for both streams.
    fn protocol(&self) -> &StreamProtocol;
    /// Older versions of the protocol also spoken, most preferred first: offered after
    /// [`PairProtocol::protocol`] when opening the outbound stream, and accepted inbound.
    fn older_versions(&self) -> &[StreamProtocol] {
        &[]
    }
    /// The codec of a new inbound stream that negotiated `version`.
    fn inbound_codec(&self, version: &StreamProtocol) -> Self::Codec;
    /// The codec of a new outbound stream that negotiated `version`.
    fn outbound_codec(&self, version: &StreamProtocol) -> Self::Codec;
    /// Counts the frames the engine reads from the inbound stream and writes on either.
    fn traffic(&self) -> &Traffic;
    /// The body size of a frame read, for [`Traffic`].
    fn read_len(frame: &InFrame<Self>) -> usize;
    /// The body size of a frame written, for [`Traffic`].
    fn write_len(frame: &OutFrame<Self>) -> usize;

    /// A command from the behaviour; frames to send go through `streams`.
    fn on_command(&mut self, command: Self::Command, streams: &mut Streams<Self::Codec>);
    /// A queued frame leaves the queue for the outbound stream: false drops it unwritten.
    fn admit(&mut self, frame: &OutFrame<Self>) -> bool;
    /// A queued frame is dropped unwritten: the outbound stream failed or was given up.
    fn discard(&mut self, frame: OutFrame<Self>);
    /// A frame from the peer's stream (counted already); answers to write on that stream go to
    /// `answers`. An error closes the peer's stream.
    fn on_inbound(
        &mut self,
        frame: InFrame<Self>,
        answers: &mut VecDeque<OutFrame<Self>>,
    ) -> Result<(), CloseReason>;
    /// A frame the peer wrote on our outbound stream (not counted: count it if it belongs
    /// there). An error fails the outbound stream.
    fn on_reply(&mut self, frame: InFrame<Self>) -> Result<(), CloseReason>;
    /// A frame the protocol holds back itself (its own scheduler), asked for when the stream's
    /// queue is empty and the stream can take a frame: `outbound` says which stream. A protocol
    /// that returns `None` while it holds frames wakes `cx` when it has one to give.
    fn pull(&mut self, _outbound: bool, _cx: &mut Context<'_>) -> Option<OutFrame<Self>> {
        None
    }
    /// Whether the protocol holds frames for the outbound stream (see [`PairProtocol::pull`]):
    /// they open it and keep the connection alive as queued frames do.
    fn holds_outbound(&self) -> bool {
        false
    }
    /// Reading the peer's stream waits while this holds, given the answers queued on it: how
    /// many, and their body bytes ([`PairProtocol::write_len`]).
    fn read_paused(&self, _answers: usize, _answer_bytes: usize) -> bool {
        false
    }

    /// The outbound stream is open, speaking `version`.
    fn outbound_opened(&mut self, version: &StreamProtocol);
    /// The outbound stream failed (its queued frames already discarded); `given_up`: for good,
    /// after [`Policy::give_up_after`] failures.
    fn outbound_failed(&mut self, reason: CloseReason, given_up: bool);
    /// The peer does not speak the protocol: the outbound stream is given up at once (only
    /// with [`Policy::give_up_after`]).
    fn unsupported(&mut self);
    /// The peer opened its stream, speaking `version`; `replaced`: it took the place of an open
    /// one, whose answers still queued were dropped.
    fn inbound_opened(&mut self, replaced: bool, version: &StreamProtocol);
    /// The peer's stream closed (its queued answers dropped).
    fn inbound_closed(&mut self, reason: CloseReason);
    /// Whether work of the protocol's own keeps the connection alive (queued frames always do).
    fn keep_alive(&self) -> bool {
        false
    }
    /// Work the protocol runs off the connection's task (it wakes `cx` when some ends), polled
    /// after the streams (so that work reading started is polled too); answers to write on the
    /// peer's stream go to `answers`. What it returns closes the streams it names.
    fn poll_work(
        &mut self,
        _cx: &mut Context<'_>,
        _answers: &mut VecDeque<OutFrame<Self>>,
    ) -> WorkFailed {
        WorkFailed::default()
    }
    /// The next event for the behaviour.
    fn next_event(&mut self) -> Option<Self::Event>;
}

/// Streams that [`PairProtocol::poll_work`] found broken, and why.
#[derive(Debug, Default)]
pub struct WorkFailed {
    /// The peer's stream closes.
    pub inbound: Option<CloseReason>,
    /// Our outbound stream fails.
    pub outbound: Option<CloseReason>,
}

enum Outbound<C> {
    /// Not opened yet, or lost and nothing to send.
    Idle,
    Opening,
    Open(Box<FramedIo<Stream, C>>),
    /// Given up (see [`Policy::give_up_after`]).
    Dead,
}

/// The two streams and their queues, as a [`PairProtocol`] sees them in
/// [`PairProtocol::on_command`].
pub struct Streams<C: EncodeFrame> {
    outbound: Outbound<C>,
    open_failures: u8,
    to_send: VecDeque<C::Item>,
    inbound: Option<FramedIo<Stream, C>>,
    /// Frames to write on the inbound stream (with [`Policy::answers`]), and their body bytes.
    to_answer: VecDeque<C::Item>,
    answer_bytes: usize,
}

impl<C: EncodeFrame> Streams<C> {
    /// Queues `frame` for the outbound stream (opening it if needed); gives it back when the
    /// stream was given up.
    pub fn send(&mut self, frame: C::Item) -> Result<(), C::Item> {
        if matches!(self.outbound, Outbound::Dead) {
            return Err(frame);
        }
        self.to_send.push_back(frame);
        Ok(())
    }

    /// Frames queued for the outbound stream.
    pub fn queued(&self) -> usize {
        self.to_send.len()
    }

    /// Body bytes of the answers queued for the peer's stream and not written yet.
    pub fn answer_bytes(&self) -> usize {
        self.answer_bytes
    }

    /// Queues `frame` for the inbound stream, if the peer's stream is open (else drops it).
    pub fn answer(&mut self, frame: C::Item) {
        if self.inbound.is_some() {
            self.to_answer.push_back(frame);
        }
    }

    /// Closes the peer's stream, dropping the answers queued on it; false if none was open.
    pub fn close_inbound(&mut self) -> bool {
        self.to_answer.clear();
        self.answer_bytes = 0;
        self.inbound.take().is_some()
    }
}

/// Marks `heard` (when set) at the first frame of a batch read (`marked`): one clock read per
/// batch, not per frame.
fn mark_heard(heard: &Option<Arc<HeardAt>>, marked: &mut bool) {
    if !*marked {
        if let Some(at) = heard {
            at.mark();
        }
        *marked = true;
    }
}

/// The connection handler: the two streams of one connection, driven for protocol `P`. Both
/// parts are boxed: libp2p keeps a connection's handler inline in its task's future, about
/// three times over (see [`crate::boxed`]), so a pointer there saves more than it costs here.
pub struct StreamPair<P: PairProtocol> {
    protocol: Box<P>,
    streams: Box<Streams<P::Codec>>,
    /// Marked at every frame the peer sends (see [`StreamPair::hearing`]).
    heard: Option<Arc<HeardAt>>,
}

impl<P: PairProtocol> StreamPair<P> {
    /// A handler for one connection.
    pub fn new(protocol: P) -> Self {
        StreamPair {
            protocol: Box::new(protocol),
            streams: Box::new(Streams {
                outbound: Outbound::Idle,
                open_failures: 0,
                to_send: VecDeque::new(),
                inbound: None,
                to_answer: VecDeque::new(),
                answer_bytes: 0,
            }),
            heard: None,
        }
    }

    /// Marks `at` (when given) whenever the peer sends a frame, on either stream: the
    /// connection manager counts that as a sign of life ([`crate::heard`]). `at` also counts
    /// the frame-body bytes read and written on both streams.
    pub fn hearing(mut self, at: Option<Arc<HeardAt>>) -> Self {
        self.heard = at;
        self
    }

    fn discard_queued(&mut self) {
        for frame in self.streams.to_send.drain(..) {
            self.protocol.discard(frame);
        }
    }

    fn outbound_failed(&mut self, reason: CloseReason) {
        let streams = &mut self.streams;
        streams.open_failures = streams.open_failures.saturating_add(1);
        let given_up = self
            .protocol
            .policy()
            .give_up_after
            .is_some_and(|max| streams.open_failures >= max);
        streams.outbound = if given_up {
            Outbound::Dead
        } else {
            Outbound::Idle
        };
        self.discard_queued();
        self.protocol.outbound_failed(reason, given_up);
    }

    fn close_inbound(&mut self, reason: CloseReason) {
        self.streams.close_inbound();
        self.protocol.inbound_closed(reason);
    }

    /// Adds the bytes of the answers the protocol queued since the queue held `before` frames
    /// (all of them again if it shrank: the protocol closed the stream meanwhile).
    fn count_answers(&mut self, before: usize) {
        let streams = &mut self.streams;
        let (start, base) = if streams.to_answer.len() < before {
            (0, 0)
        } else {
            (before, streams.answer_bytes)
        };
        let added = streams
            .to_answer
            .range(start..)
            .fold(0usize, |sum, f| sum.saturating_add(P::write_len(f)));
        streams.answer_bytes = base.saturating_add(added);
    }

    /// Polls the protocol's own work ([`PairProtocol::poll_work`]); true if it queued answers.
    fn poll_work(&mut self, cx: &mut Context<'_>) -> bool {
        let before = self.streams.to_answer.len();
        let failed = self.protocol.poll_work(cx, &mut self.streams.to_answer);
        if self.streams.inbound.is_none() {
            // Answers go on the peer's stream only (see `Streams::answer`).
            self.streams.to_answer.clear();
        }
        self.count_answers(before);
        if let Some(reason) = failed.outbound
            && matches!(self.streams.outbound, Outbound::Open(_))
        {
            self.outbound_failed(reason);
        }
        if let Some(reason) = failed.inbound
            && self.streams.inbound.is_some()
        {
            self.close_inbound(reason);
        }
        self.streams.to_answer.len() > before
    }

    /// Drives the outbound stream: writes queued frames, flushes, reads what the peer wrote.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) {
        let Outbound::Open(stream) = &mut self.streams.outbound else {
            return;
        };
        let written = write_queued(
            stream,
            &mut self.streams.to_send,
            &mut *self.protocol,
            (true, self.heard.as_deref()),
            cx,
        );
        let mut error = written.err().map(CloseReason::Io);
        if error.is_none() {
            let mut marked = false;
            for _ in 0..READ_BATCH {
                let reason = match stream.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        mark_heard(&self.heard, &mut marked);
                        if let Some(at) = &self.heard {
                            at.received(P::read_len(&frame));
                        }
                        match self.protocol.on_reply(frame) {
                            Ok(()) => continue,
                            Err(reason) => reason,
                        }
                    }
                    Poll::Ready(Some(Err(e))) => CloseReason::of_read(e),
                    Poll::Ready(None) => CloseReason::ClosedByPeer,
                    Poll::Pending => break,
                };
                error = Some(reason);
                break;
            }
        }
        if let Some(reason) = error {
            self.outbound_failed(reason);
        }
    }

    /// Drives the inbound stream: writes queued answers, reads frames, then writes the answers
    /// that reading produced so they leave without delay.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) {
        if let Err(e) = self.write_answers(cx) {
            return self.close_inbound(CloseReason::Io(e));
        }
        // While the protocol pauses reading, the peer's writes back up in TCP (the write side's
        // waker brings us back). After a full batch, ask to be polled again: frames may be
        // buffered with no read pending to wake us.
        let (mut batch_done, mut marked) = (true, false);
        for _ in 0..READ_BATCH {
            if self
                .protocol
                .read_paused(self.streams.to_answer.len(), self.streams.answer_bytes)
            {
                batch_done = false;
                break;
            }
            let Some(stream) = &mut self.streams.inbound else {
                return;
            };
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    mark_heard(&self.heard, &mut marked);
                    let len = P::read_len(&frame);
                    self.protocol.traffic().received(len);
                    if let Some(at) = &self.heard {
                        at.received(len);
                    }
                    let before = self.streams.to_answer.len();
                    let read = self.protocol.on_inbound(frame, &mut self.streams.to_answer);
                    self.count_answers(before);
                    if let Err(reason) = read {
                        return self.close_inbound(reason);
                    }
                }
                Poll::Ready(Some(Err(e))) => return self.close_inbound(CloseReason::of_read(e)),
                Poll::Ready(None) => return self.close_inbound(CloseReason::ClosedByPeer),
                Poll::Pending => {
                    batch_done = false;
                    break;
                }
            }
        }
        if batch_done {
            cx.waker().wake_by_ref();
        }
        if let Err(e) = self.write_answers(cx) {
            self.close_inbound(CloseReason::Io(e));
        }
    }

    /// Writes queued answers on the inbound stream and flushes (protocols that answer only).
    fn write_answers(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let streams = &mut *self.streams;
        match &mut streams.inbound {
            Some(stream) if self.protocol.policy().answers => {
                let written = write_queued(
                    stream,
                    &mut streams.to_answer,
                    &mut *self.protocol,
                    (false, self.heard.as_deref()),
                    cx,
                )?;
                streams.answer_bytes = streams.answer_bytes.saturating_sub(written);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Moves frames from `queue` into `stream` while it accepts them (counting them in the
/// protocol's traffic and, when given, the connection's cell), then flushes; returns the body
/// bytes of the answers that left the queue. On the outbound stream the protocol sees each
/// frame as it leaves the queue and may drop it ([`PairProtocol::admit`]). When the queue is
/// empty, frames the protocol holds itself follow ([`PairProtocol::pull`]).
fn write_queued<P: PairProtocol>(
    stream: &mut FramedIo<Stream, P::Codec>,
    queue: &mut VecDeque<OutFrame<P>>,
    protocol: &mut P,
    (outbound, heard): (bool, Option<&HeardAt>),
    cx: &mut Context<'_>,
) -> io::Result<usize> {
    let mut left = 0usize;
    loop {
        match stream.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {
                let frame = match queue.pop_front() {
                    Some(frame) if !outbound || protocol.admit(&frame) => {
                        left = left.saturating_add(P::write_len(&frame));
                        frame
                    }
                    Some(_) => continue,
                    None => match protocol.pull(outbound, cx) {
                        Some(frame) => frame,
                        None => break,
                    },
                };
                let len = P::write_len(&frame);
                stream.start_send_unpin(frame)?;
                protocol.traffic().sent(len);
                if let Some(at) = heard {
                    at.sent(len);
                }
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    match stream.poll_flush_unpin(cx) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(left),
    }
}

impl<P: PairProtocol> ConnectionHandler for StreamPair<P> {
    type FromBehaviour = P::Command;
    type ToBehaviour = P::Event;
    type InboundProtocol = Versions;
    type OutboundProtocol = Versions;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        let mut versions = vec![self.protocol.protocol().clone()];
        versions.extend_from_slice(self.protocol.older_versions());
        SubstreamProtocol::new(Versions(versions), ())
    }

    fn on_behaviour_event(&mut self, command: P::Command) {
        let before = self.streams.to_answer.len();
        self.protocol.on_command(command, &mut self.streams);
        self.count_answers(before);
    }

    fn connection_keep_alive(&self) -> bool {
        !self.streams.to_send.is_empty()
            || self.protocol.holds_outbound()
            || !self.streams.to_answer.is_empty()
            || self.protocol.keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(e) = self.protocol.next_event() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        // Opened at once when the policy says so, else (and again after a failure) when there
        // is something to send.
        let streams = &mut self.streams;
        if matches!(streams.outbound, Outbound::Idle)
            && ((self.protocol.policy().open_at_once && streams.open_failures == 0)
                || !streams.to_send.is_empty()
                || self.protocol.holds_outbound())
        {
            streams.outbound = Outbound::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: self.listen_protocol(),
            });
        }
        self.poll_outbound(cx);
        self.poll_inbound(cx);
        // After reading, so that the end of work it started wakes us; answers it queued are
        // written on the next poll, asked for now.
        if self.poll_work(cx) {
            cx.waker().wake_by_ref();
        }
        match self.protocol.next_event() {
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
                protocol: (mut stream, version),
                ..
            }) => {
                stream.ignore_for_keep_alive();
                // One inbound stream per connection: a new one replaces the old, bounding what
                // a peer can make us hold; answers still owed on the old one are dropped.
                let replaced = self.streams.close_inbound();
                let codec = self.protocol.inbound_codec(&version);
                self.streams.inbound = Some(FramedIo::new(stream, codec));
                self.protocol.inbound_opened(replaced, &version);
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (mut stream, version),
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.streams.open_failures = 0;
                let codec = self.protocol.outbound_codec(&version);
                self.streams.outbound = Outbound::Open(Box::new(FramedIo::new(stream, codec)));
                self.protocol.outbound_opened(&version);
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                if self.protocol.policy().give_up_after.is_some()
                    && matches!(error, StreamUpgradeError::NegotiationFailed)
                {
                    self.streams.outbound = Outbound::Dead;
                    self.discard_queued();
                    self.protocol.unsupported();
                } else {
                    self.outbound_failed(CloseReason::OpenFailed(error));
                }
            }
            _ => {}
        }
    }
}
