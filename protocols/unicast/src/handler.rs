//! The per-connection half of unicast: one long-lived outbound stream carrying this node's
//! requests (and their responses back), one inbound stream carrying the peer's requests (and our
//! responses). Frames are pipelined: many requests in flight, matched by id.
//!
//! Stock `libp2p-request-response` opens and negotiates a new substream per request; keeping
//! one stream per direction removes that round trip and the per-stream state, as FISCO BCOS
//! does with its single session per peer. The streams themselves are core's two-stream engine
//! ([`StreamPair`]); this module is the request bookkeeping on top: ids, replies awaited,
//! cancellations, the limits on what a peer may have us hold, and the answers we owe.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use bytes::Bytes;
use libp2p_swarm::StreamProtocol;

use bcos_p2p_core::stream_pair::{CloseReason, PairProtocol, Policy, StreamPair, Streams, Traffic};

use crate::{
    Counters, Direction, Outcome,
    codec::{Codec, Frame},
};

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
    OutboundFailed(CloseReason),
    /// The peer's stream was closed because the peer broke the protocol on it
    /// ([`CloseReason::is_violation`]).
    InboundViolation,
}

/// The unicast connection handler.
pub type Handler = StreamPair<Requests>;

/// Unicast's bookkeeping on one connection's two streams.
pub struct Requests {
    settings: Arc<Settings>,
    /// Ids of the requests queued for the outbound stream, and those of them cancelled
    /// (skipped when they leave the queue).
    queued: HashSet<u64>,
    cancelled: HashSet<u64>,
    /// Our requests written and not yet answered (or cancelled).
    awaiting: HashSet<u64>,
    /// Inbound requests handed to the behaviour and not yet answered, with their sizes.
    inbound_pending: HashMap<(u64, u64), usize>,
    inbound_pending_bytes: usize,
    /// Generation of the current inbound stream.
    inbound_stream: u64,
    events: VecDeque<HandlerEvent>,
}

impl Requests {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        Requests {
            settings,
            queued: HashSet::new(),
            cancelled: HashSet::new(),
            awaiting: HashSet::new(),
            inbound_pending: HashMap::new(),
            inbound_pending_bytes: 0,
            inbound_stream: 0,
            events: VecDeque::new(),
        }
    }
}

impl PairProtocol for Requests {
    type Codec = Codec;
    type Command = Command;
    type Event = HandlerEvent;

    /// Opened when there is something to send; never given up (a failed stream fails the
    /// requests on it, and the next request opens a new one). Answers go on the peer's stream.
    const POLICY: Policy = Policy {
        open_at_once: false,
        give_up_after: None,
        answers: true,
    };

    fn protocol(&self) -> &StreamProtocol {
        &self.settings.protocol
    }

    fn inbound_codec(&self) -> Codec {
        Codec::new(self.settings.max_frame)
    }

    fn outbound_codec(&self) -> Codec {
        Codec::new(self.settings.max_frame)
    }

    fn traffic(&self) -> &Traffic {
        self.settings.counters.traffic()
    }

    fn read_len(frame: &Frame) -> usize {
        frame.body_len()
    }

    fn write_len(frame: &Frame) -> usize {
        frame.body_len()
    }

    fn on_command(&mut self, command: Command, streams: &mut Streams<Codec>) {
        match command {
            Command::Send(frame @ Frame::Oneway { .. })
                if streams.queued() >= self.settings.max_inbound_pending =>
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
                // Never refused: unicast does not give its outbound stream up.
                let _ = streams.send(frame);
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
                let size = result.as_ref().map_or_else(String::len, Bytes::len);
                let hard_cap = self.settings.max_inbound_pending_bytes.saturating_mul(2);
                if stream == self.inbound_stream
                    && streams.answer_bytes().saturating_add(size) > hard_cap
                {
                    // Reading stopped at the bound, but answers to requests accepted before
                    // it can be larger than the requests were: a peer that does not read them
                    // loses the stream (and the answers) rather than have them pile up.
                    let queued = streams.answer_bytes();
                    if streams.close_inbound() {
                        tracing::info!(
                            queued,
                            size,
                            "closing the peer's unicast stream: it does not read its answers"
                        );
                    }
                    return;
                }
                if stream == self.inbound_stream {
                    streams.answer(match result {
                        Ok(payload) => Frame::Response { id, payload },
                        Err(reason) => Frame::Error { id, reason },
                    });
                }
            }
        }
    }

    fn admit(&mut self, frame: &Frame) -> bool {
        if let Frame::Request { id, .. } = frame {
            self.queued.remove(id);
            if self.cancelled.remove(id) {
                return false;
            }
            self.awaiting.insert(*id);
        }
        true
    }

    fn discard(&mut self, _: Frame) {}

    fn on_inbound(
        &mut self,
        frame: Frame,
        answers: &mut VecDeque<Frame>,
    ) -> Result<(), CloseReason> {
        match frame {
            Frame::Request {
                id,
                module,
                payload,
            } => {
                if self
                    .inbound_pending
                    .contains_key(&(self.inbound_stream, id))
                {
                    // Ids are unique among a stream's requests in flight: a second request with
                    // a pending id would overwrite the first's place in the caps (an empty
                    // payload again and again would escape the count and byte limits).
                    return Err(CloseReason::Malformed(format!(
                        "request id {id} reused while the first is still pending"
                    )));
                }
                if !self.settings.modules.contains(&module) {
                    self.settings
                        .counters
                        .count(Direction::Inbound, Outcome::UnknownModule);
                    answers.push_back(Frame::Error {
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
                    answers.push_back(Frame::Error {
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
            other => {
                return Err(CloseReason::Unexpected(format!(
                    "{other:?} on the inbound stream"
                )));
            }
        }
        Ok(())
    }

    /// Responses to our requests.
    fn on_reply(&mut self, frame: Frame) -> Result<(), CloseReason> {
        self.traffic().received(frame.body_len());
        let (id, result) = match frame {
            Frame::Response { id, payload } => (id, Ok(payload)),
            Frame::Error { id, reason } => (id, Err(reason)),
            other => {
                return Err(CloseReason::Unexpected(format!(
                    "{other:?} on the outbound stream"
                )));
            }
        };
        self.awaiting.remove(&id);
        self.events.push_back(HandlerEvent::Response { id, result });
        Ok(())
    }

    /// Stop reading while answers pile up: the answers not yet written and the requests being
    /// handled are bounded per connection in frames and in bytes. A peer that never reads
    /// its answers is held back by its own stream's flow control, and nothing else waits.
    fn read_paused(&self, answers: usize, answer_bytes: usize) -> bool {
        answers >= self.settings.max_inbound_pending
            || answer_bytes.saturating_add(self.inbound_pending_bytes)
                >= self.settings.max_inbound_pending_bytes
    }

    fn outbound_opened(&mut self) {}

    fn outbound_failed(&mut self, reason: CloseReason, _: bool) {
        tracing::debug!(%reason, "unicast outbound stream failed");
        self.queued.clear();
        self.cancelled.clear();
        self.awaiting.clear();
        self.events.push_back(HandlerEvent::OutboundFailed(reason));
    }

    /// Never called: unicast does not give its outbound stream up.
    fn unsupported(&mut self) {}

    fn inbound_opened(&mut self, replaced: bool) {
        if replaced {
            // One inbound stream per connection: a second one replaces the first (bounding
            // what a peer can make us hold); answers still owed are dropped.
            tracing::debug!("peer opened a second unicast stream; replacing the first");
        }
        self.inbound_stream += 1;
    }

    fn inbound_closed(&mut self, reason: CloseReason) {
        if reason.is_violation() {
            self.events.push_back(HandlerEvent::InboundViolation);
        }
        if matches!(reason, CloseReason::ClosedByPeer) {
            tracing::debug!("the peer closed its unicast stream");
        } else {
            tracing::info!(%reason, "closing the peer's unicast stream");
        }
    }

    fn keep_alive(&self) -> bool {
        !self.awaiting.is_empty() || !self.inbound_pending.is_empty()
    }

    fn next_event(&mut self) -> Option<HandlerEvent> {
        self.events.pop_front()
    }
}
