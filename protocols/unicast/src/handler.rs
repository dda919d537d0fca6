//! The per-connection half of unicast: one long-lived outbound stream carrying this node's
//! requests (and their responses back), one inbound stream carrying the peer's requests (and our
//! responses). Frames are pipelined: many requests in flight, matched by id.
//!
//! Stock `libp2p-request-response` opens and negotiates a new substream per request; keeping
//! one stream per direction removes that round trip and the per-stream state, as FISCO BCOS
//! does with its single session per peer.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use libp2p_core::upgrade::ReadyUpgrade;
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, SubstreamProtocol,
    handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
};

use bcos_p2p_core::{framed::FramedIo, stream_pair::Traffic};

use crate::{
    Counters, Direction, Outcome,
    codec::{Codec, Frame},
};

const CLOSED_BY_PEER: &str = "closed by the peer";

/// Frames read from one stream per `poll`, so one busy stream cannot starve the others.
const READ_BATCH: usize = 64;

/// What the handler needs from the behaviour's configuration.
#[derive(Debug)]
pub(crate) struct Settings {
    pub protocol: StreamProtocol,
    pub max_frame: usize,
    pub max_inbound_pending: usize,
    pub max_inbound_pending_bytes: usize,
    pub modules: HashSet<u16>,
    pub counters: Arc<Counters>,
}

/// Behaviour → handler.
#[derive(Debug)]
pub enum Command {
    /// Send a request or oneway frame on the outbound stream.
    Send(Frame),
    /// Forget request `id`: the behaviour has ended it (timeout, failure).
    Cancel(u64),
    /// Answer an inbound request.
    Respond {
        /// The request id.
        id: u64,
        /// The inbound stream it came on (see [`HandlerEvent::Request`]).
        stream: u64,
        /// The answer, or the reason it failed.
        result: Result<Bytes, String>,
    },
}

/// Handler → behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// The peer sent a request for a module we serve.
    Request {
        /// Its id on the inbound stream.
        id: u64,
        /// Which inbound stream (a replacement stream starts a new one; answers to requests
        /// of an older stream are dropped, since ids are only unique per stream).
        stream: u64,
        /// The module.
        module: u16,
        /// The payload.
        payload: Bytes,
    },
    /// The peer sent a oneway message for a module we serve.
    Oneway {
        /// The module.
        module: u16,
        /// The payload.
        payload: Bytes,
    },
    /// The answer to one of our requests.
    Response {
        /// The request id.
        id: u64,
        /// The payload, or the peer's reason for failing.
        result: Result<Bytes, String>,
    },
    /// Our outbound stream failed or could not be opened: requests sent on it are lost.
    OutboundFailed(String),
}

enum Outbound {
    /// No stream; nothing to send yet.
    Idle,
    /// A stream is being opened and negotiated.
    Opening,
    /// The stream is open.
    Open(Box<FramedIo<Stream, Codec>>),
}

/// The unicast connection handler.
pub struct Handler {
    settings: Arc<Settings>,
    outbound: Outbound,
    /// Frames waiting for the outbound stream (bounded by the behaviour's in-flight limit).
    to_send: VecDeque<Frame>,
    /// Ids of the requests in `to_send`, and those of them cancelled (skipped when popped).
    queued: HashSet<u64>,
    cancelled: HashSet<u64>,
    /// Our requests written and not yet answered (or cancelled).
    awaiting: HashSet<u64>,
    inbound: Option<FramedIo<Stream, Codec>>,
    /// Responses waiting for the inbound stream (at most one per pending inbound request).
    to_answer: VecDeque<Frame>,
    /// Inbound requests handed to the behaviour and not yet answered, with their sizes.
    inbound_pending: HashMap<(u64, u64), usize>,
    inbound_pending_bytes: usize,
    /// Generation of the current inbound stream.
    inbound_stream: u64,
    events: VecDeque<HandlerEvent>,
}

impl Handler {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        Handler {
            settings,
            outbound: Outbound::Idle,
            to_send: VecDeque::new(),
            queued: HashSet::new(),
            cancelled: HashSet::new(),
            awaiting: HashSet::new(),
            inbound: None,
            to_answer: VecDeque::new(),
            inbound_pending: HashMap::new(),
            inbound_pending_bytes: 0,
            inbound_stream: 0,
            events: VecDeque::new(),
        }
    }

    fn outbound_failed(&mut self, reason: String) {
        tracing::debug!(%reason, "unicast outbound stream failed");
        self.outbound = Outbound::Idle;
        self.to_send.clear();
        self.queued.clear();
        self.cancelled.clear();
        self.awaiting.clear();
        self.events.push_back(HandlerEvent::OutboundFailed(reason));
    }

    fn inbound_failed(&mut self, reason: String) {
        if reason == CLOSED_BY_PEER {
            tracing::debug!("the peer closed its unicast stream");
        } else {
            tracing::info!(%reason, "closing the peer's unicast stream");
        }
        self.inbound = None;
        self.to_answer.clear();
    }

    /// Handles one frame read from the inbound stream.
    fn on_inbound_frame(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Request {
                id,
                module,
                payload,
            } => {
                if !self.settings.modules.contains(&module) {
                    self.settings
                        .counters
                        .count(Direction::Inbound, Outcome::UnknownModule);
                    self.to_answer.push_back(Frame::Error {
                        id,
                        reason: format!("no handler for module {module}"),
                    });
                } else if self.inbound_pending.len() >= self.settings.max_inbound_pending
                    || self.inbound_pending_bytes + payload.len()
                        > self.settings.max_inbound_pending_bytes
                {
                    self.settings
                        .counters
                        .count(Direction::Inbound, Outcome::Busy);
                    self.to_answer.push_back(Frame::Error {
                        id,
                        reason: "busy".into(),
                    });
                } else {
                    tracing::trace!(id, module, size = payload.len(), "unicast request received");
                    self.inbound_pending
                        .insert((self.inbound_stream, id), payload.len());
                    self.inbound_pending_bytes += payload.len();
                    self.events.push_back(HandlerEvent::Request {
                        id,
                        stream: self.inbound_stream,
                        module,
                        payload,
                    });
                }
            }
            Frame::Oneway { module, payload } => {
                if self.settings.modules.contains(&module) {
                    self.events
                        .push_back(HandlerEvent::Oneway { module, payload });
                } else {
                    tracing::debug!(
                        module,
                        "dropping a oneway message for a module we do not serve"
                    );
                }
            }
            other => return Err(format!("unexpected {other:?} on the inbound stream")),
        }
        Ok(())
    }

    /// Drives the outbound stream: writes queued frames, flushes, reads responses.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) {
        let Outbound::Open(stream) = &mut self.outbound else {
            return;
        };
        let (queued, cancelled, awaiting) =
            (&mut self.queued, &mut self.cancelled, &mut self.awaiting);
        let traffic = self.settings.counters.traffic();
        let mut error = write_queued(stream, &mut self.to_send, traffic, cx, |frame| {
            if let Frame::Request { id, .. } = frame {
                queued.remove(id);
                if cancelled.remove(id) {
                    return false;
                }
                awaiting.insert(*id);
            }
            true
        })
        .err();
        if error.is_none() {
            for _ in 0..READ_BATCH {
                let frame = stream.poll_next_unpin(cx);
                if let Poll::Ready(Some(Ok(frame))) = &frame {
                    traffic.received(frame.body_len());
                }
                let (id, result) = match frame {
                    Poll::Ready(Some(Ok(Frame::Response { id, payload }))) => (id, Ok(payload)),
                    Poll::Ready(Some(Ok(Frame::Error { id, reason }))) => (id, Err(reason)),
                    Poll::Ready(Some(Ok(other))) => {
                        error = Some(format!("unexpected {other:?} on the outbound stream"));
                        break;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        error = Some(e.to_string());
                        break;
                    }
                    Poll::Ready(None) => {
                        error = Some("stream closed by the peer".into());
                        break;
                    }
                    Poll::Pending => break,
                };
                self.awaiting.remove(&id);
                self.events.push_back(HandlerEvent::Response { id, result });
            }
        }
        if let Some(reason) = error {
            self.outbound_failed(reason);
        }
    }

    /// Drives the inbound stream: writes queued responses, reads requests, then writes the
    /// answers that reading produced (unknown module, busy) so they leave without delay.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) {
        if let Err(reason) = self.write_answers(cx) {
            return self.inbound_failed(reason);
        }
        // Stop reading while answers pile up: the peer's writes then back up in TCP (the write
        // side's waker brings us back). After a full batch, ask to be polled again: frames
        // may be buffered with no read pending to wake us.
        let mut batch_done = true;
        for _ in 0..READ_BATCH {
            if self.to_answer.len() >= self.settings.max_inbound_pending {
                batch_done = false;
                break;
            }
            let Some(stream) = &mut self.inbound else {
                return;
            };
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.settings.counters.traffic().received(frame.body_len());
                    if let Err(reason) = self.on_inbound_frame(frame) {
                        return self.inbound_failed(reason);
                    }
                }
                Poll::Ready(Some(Err(e))) => return self.inbound_failed(format!("bad frame: {e}")),
                Poll::Ready(None) => return self.inbound_failed(CLOSED_BY_PEER.into()),
                Poll::Pending => {
                    batch_done = false;
                    break;
                }
            }
        }
        if batch_done {
            cx.waker().wake_by_ref();
        }
        if let Err(reason) = self.write_answers(cx) {
            self.inbound_failed(reason);
        }
    }

    /// Writes queued answers on the inbound stream and flushes.
    fn write_answers(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        match &mut self.inbound {
            Some(stream) => write_queued(
                stream,
                &mut self.to_answer,
                self.settings.counters.traffic(),
                cx,
                |_| true,
            ),
            None => Ok(()),
        }
    }
}

/// Moves frames from `queue` into `stream` while it accepts them (counting them in `traffic`),
/// then flushes. `admit` sees each frame as it leaves the queue and may drop it (returns false).
fn write_queued(
    stream: &mut FramedIo<Stream, Codec>,
    queue: &mut VecDeque<Frame>,
    traffic: &Traffic,
    cx: &mut Context<'_>,
    mut admit: impl FnMut(&Frame) -> bool,
) -> Result<(), String> {
    while !queue.is_empty() {
        match stream.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {
                let frame = queue.pop_front().expect("checked non-empty");
                if admit(&frame) {
                    let len = frame.body_len();
                    stream.start_send_unpin(frame).map_err(|e| e.to_string())?;
                    traffic.sent(len);
                }
            }
            Poll::Ready(Err(e)) => return Err(e.to_string()),
            Poll::Pending => break,
        }
    }
    match stream.poll_flush_unpin(cx) {
        Poll::Ready(Err(e)) => Err(e.to_string()),
        _ => Ok(()),
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Command;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.settings.protocol.clone()), ())
    }

    fn on_behaviour_event(&mut self, command: Command) {
        match command {
            Command::Send(frame @ Frame::Oneway { .. })
                if self.to_send.len() >= self.settings.max_inbound_pending =>
            {
                // Requests are bounded by the behaviour's in-flight limit; one-way messages are
                // best-effort and are dropped, not queued without end, when the peer lags.
                tracing::warn!(
                    size = frame.body_len(),
                    "unicast queue full: dropping a one-way message"
                );
            }
            Command::Send(frame) => {
                if let Frame::Request { id, .. } = &frame {
                    self.queued.insert(*id);
                }
                self.to_send.push_back(frame);
            }
            Command::Cancel(id) => {
                // Timed out or already reported failed: do not send it (skipped when it reaches
                // the front of the queue, O(1) here), stop waiting for it.
                if self.queued.remove(&id) {
                    self.cancelled.insert(id);
                }
                self.awaiting.remove(&id);
            }
            Command::Respond { id, stream, result } => {
                if let Some(size) = self.inbound_pending.remove(&(stream, id)) {
                    self.inbound_pending_bytes -= size;
                }
                if self.inbound.is_some() && stream == self.inbound_stream {
                    self.to_answer.push_back(match result {
                        Ok(payload) => Frame::Response { id, payload },
                        Err(reason) => Frame::Error { id, reason },
                    });
                }
            }
        }
    }

    fn connection_keep_alive(&self) -> bool {
        !self.to_send.is_empty()
            || !self.awaiting.is_empty()
            || !self.inbound_pending.is_empty()
            || !self.to_answer.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        if matches!(self.outbound, Outbound::Idle) && !self.to_send.is_empty() {
            self.outbound = Outbound::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(
                    ReadyUpgrade::new(self.settings.protocol.clone()),
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
                if self.inbound.is_some() {
                    // One inbound stream per connection: a second one replaces the first
                    // (bounding what a peer can make us hold); answers still owed are dropped.
                    tracing::debug!("peer opened a second unicast stream; replacing the first");
                    self.to_answer.clear();
                }
                self.inbound_stream += 1;
                self.inbound = Some(FramedIo::new(stream, Codec::new(self.settings.max_frame)));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.outbound = Outbound::Open(Box::new(FramedIo::new(
                    stream,
                    Codec::new(self.settings.max_frame),
                )));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.outbound_failed(format!("cannot open a unicast stream: {error}"));
            }
            _ => {}
        }
    }
}
