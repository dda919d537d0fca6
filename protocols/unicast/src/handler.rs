//! The per-connection half of unicast: one long-lived outbound stream carrying this node's
//! requests (and their responses back), one inbound stream carrying the peer's requests (and our
//! responses). Frames are pipelined: many requests in flight, matched by id.
//!
//! Stock `libp2p-request-response` opens and negotiates a new substream per request; keeping
//! one stream per direction removes that round trip and the per-stream state, as FISCO BCOS
//! does with its single session per peer.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    task::{Context, Poll},
};

use asynchronous_codec::Framed;
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use libp2p_core::upgrade::ReadyUpgrade;
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, SubstreamProtocol,
    handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
};

use crate::codec::{Codec, Frame};

const CLOSED_BY_PEER: &str = "closed by the peer";

/// Frames read from one stream per `poll`, so one busy stream cannot starve the others.
const READ_BATCH: usize = 64;

/// What the handler needs from the behaviour's configuration.
#[derive(Debug)]
pub(crate) struct Settings {
    pub protocol: StreamProtocol,
    pub max_frame: usize,
    pub max_inbound_pending: usize,
    pub modules: HashSet<u16>,
}

/// Behaviour → handler.
#[derive(Debug)]
pub enum Command {
    /// Send a request or oneway frame on the outbound stream.
    Send(Frame),
    /// Answer an inbound request.
    Respond {
        /// The request id.
        id: u64,
        /// The answer, or the reason it failed.
        result: Result<Bytes, String>,
    },
}

/// Handler → behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// The peer sent a request for a module we serve.
    Request {
        /// Its id on this connection.
        id: u64,
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
    Open(Box<Framed<Stream, Codec>>),
}

/// The unicast connection handler.
pub struct Handler {
    settings: Arc<Settings>,
    outbound: Outbound,
    /// Frames waiting for the outbound stream (bounded by the behaviour's in-flight limit).
    to_send: VecDeque<Frame>,
    /// Our requests written and not yet answered.
    awaiting: usize,
    inbound: Option<Framed<Stream, Codec>>,
    /// Responses waiting for the inbound stream (at most one per pending inbound request).
    to_answer: VecDeque<Frame>,
    /// Inbound requests handed to the behaviour and not yet answered.
    inbound_pending: usize,
    events: VecDeque<HandlerEvent>,
}

impl Handler {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        Handler {
            settings,
            outbound: Outbound::Idle,
            to_send: VecDeque::new(),
            awaiting: 0,
            inbound: None,
            to_answer: VecDeque::new(),
            inbound_pending: 0,
            events: VecDeque::new(),
        }
    }

    fn outbound_failed(&mut self, reason: String) {
        tracing::debug!(%reason, "unicast outbound stream failed");
        self.outbound = Outbound::Idle;
        self.to_send.clear();
        self.awaiting = 0;
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
                    self.to_answer.push_back(Frame::Error {
                        id,
                        reason: format!("no handler for module {module}"),
                    });
                } else if self.inbound_pending >= self.settings.max_inbound_pending {
                    self.to_answer.push_back(Frame::Error {
                        id,
                        reason: "busy".into(),
                    });
                } else {
                    tracing::trace!(id, module, size = payload.len(), "unicast request received");
                    self.inbound_pending += 1;
                    self.events.push_back(HandlerEvent::Request {
                        id,
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
        let mut error = None;
        while !self.to_send.is_empty() {
            match stream.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    let frame = self.to_send.pop_front().expect("checked non-empty");
                    if matches!(frame, Frame::Request { .. }) {
                        self.awaiting += 1;
                    }
                    if let Err(e) = stream.start_send_unpin(frame) {
                        error = Some(e.to_string());
                        break;
                    }
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
            for _ in 0..READ_BATCH {
                match stream.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(Frame::Response { id, payload }))) => {
                        self.awaiting = self.awaiting.saturating_sub(1);
                        self.events.push_back(HandlerEvent::Response {
                            id,
                            result: Ok(payload),
                        });
                    }
                    Poll::Ready(Some(Ok(Frame::Error { id, reason }))) => {
                        self.awaiting = self.awaiting.saturating_sub(1);
                        self.events.push_back(HandlerEvent::Response {
                            id,
                            result: Err(reason),
                        });
                    }
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
                }
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
        // Stop reading while answers pile up: the peer's writes then back up in TCP.
        for _ in 0..READ_BATCH {
            if self.to_answer.len() >= self.settings.max_inbound_pending {
                break;
            }
            let Some(stream) = &mut self.inbound else {
                return;
            };
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Err(reason) = self.on_inbound_frame(frame) {
                        return self.inbound_failed(reason);
                    }
                }
                Poll::Ready(Some(Err(e))) => return self.inbound_failed(format!("bad frame: {e}")),
                Poll::Ready(None) => return self.inbound_failed(CLOSED_BY_PEER.into()),
                Poll::Pending => break,
            }
        }
        if let Err(reason) = self.write_answers(cx) {
            self.inbound_failed(reason);
        }
    }

    /// Writes queued answers on the inbound stream and flushes.
    fn write_answers(&mut self, cx: &mut Context<'_>) -> Result<(), String> {
        let Some(stream) = &mut self.inbound else {
            return Ok(());
        };
        while !self.to_answer.is_empty() {
            match stream.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    let frame = self.to_answer.pop_front().expect("checked non-empty");
                    stream.start_send_unpin(frame).map_err(|e| e.to_string())?;
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
            Command::Send(frame) => self.to_send.push_back(frame),
            Command::Respond { id, result } => {
                self.inbound_pending = self.inbound_pending.saturating_sub(1);
                if self.inbound.is_some() {
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
            || self.awaiting > 0
            || self.inbound_pending > 0
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
                self.inbound = Some(Framed::new(stream, Codec::new(self.settings.max_frame)));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.outbound = Outbound::Open(Box::new(Framed::new(
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
