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
    task::Context,
};

use bytes::Bytes;
use libp2p_swarm::StreamProtocol;

use bcos_p2p_core::bandwidth::ConnectionLimits;
use bcos_p2p_core::stream_pair::{
    CloseReason, MAX_OPEN_FAILURES, PairProtocol, Policy, StreamPair, Streams,
    Traffic as FrameTraffic, WorkFailed,
};

use crate::{
    Counters, Direction, Outcome,
    codec::{
        Codec, Frame, KIND_ERROR, KIND_ONEWAY, KIND_REQUEST, KIND_RESPONSE, Version, Wire, truncate,
    },
    counters::{Backlog, ModuleTraffic},
    incoming::Incoming,
    outgoing::Outgoing,
    traffic::Traffic,
};

/// What the handler needs from the behaviour's configuration.
#[derive(Debug)]
pub(crate) struct Settings {
    pub protocol: StreamProtocol,
    pub older: Vec<StreamProtocol>,
    /// The protocol of the second stream pair, for high-priority modules only.
    pub urgent: StreamProtocol,
    pub max_frame: usize,
    pub max_inbound_pending: usize,
    pub max_inbound_pending_bytes: usize,
    pub modules: HashSet<u16>,
    pub counters: Arc<Counters>,
    pub traffic: Traffic,
    /// Our high-priority modules (`traffic.priorities`): their payloads decompress on the
    /// high-priority threads, whichever stream a peer sends them on.
    pub high: Arc<HashSet<u16>>,
}

impl Settings {
    /// The reading state of a new stream.
    fn incoming(&self) -> Incoming {
        Incoming::new(self.max_frame, self.high.clone())
    }

    fn version(&self, protocol: &StreamProtocol) -> Version {
        if *protocol == self.protocol || *protocol == self.urgent {
            Version::V1_1
        } else {
            Version::V1_0
        }
    }

    fn codec(&self, protocol: &StreamProtocol) -> Codec {
        Codec::versioned(self.max_frame, self.version(protocol))
    }
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
    /// Our outbound stream failed or could not be opened: the requests sent or queued on it
    /// (these ids) are lost.
    OutboundFailed(CloseReason, Vec<u64>),
    /// The peer does not speak the urgent protocol: messages given to that stream pair, to be
    /// sent on the main one instead (one-way messages among them still counted in the
    /// connection's backlog).
    NoUrgent(Vec<Frame>),
    /// The peer's stream was closed because the peer broke the protocol on it
    /// ([`CloseReason::is_violation`]).
    InboundViolation,
}

/// The unicast connection handler.
pub type Handler = StreamPair<Requests>;

/// Unicast's bookkeeping on one connection's two streams.
pub struct Requests {
    settings: Arc<Settings>,
    /// Ids of our requests queued and not started yet, and those of them cancelled (dropped
    /// when they come up).
    queued: HashSet<u64>,
    cancelled: HashSet<u64>,
    /// Our requests started and not yet answered (or cancelled), with their modules.
    awaiting: HashMap<u64, u16>,
    /// Inbound requests handed to the behaviour and not yet answered, with their sizes and
    /// modules.
    inbound_pending: HashMap<(u64, u64), (usize, u16)>,
    inbound_pending_bytes: usize,
    /// Generation of the current inbound stream.
    inbound_stream: u64,
    /// What we send on our stream, and the answers we owe on the peer's, in order of priority.
    requests_out: Outgoing,
    answers_out: Outgoing,
    /// Messages in parts, or decompressing, on each stream.
    replies_in: Incoming,
    requests_in: Incoming,
    events: VecDeque<HandlerEvent>,
    /// Counters of the modules this connection carried (only served or awaited modules).
    module_traffic: HashMap<u16, Arc<ModuleTraffic>>,
    /// This is the urgent stream pair (high-priority modules on a stream of their own).
    urgent: bool,
    /// The urgent protocol was refused: whatever comes goes back to the behaviour.
    refused: bool,
}

/// Generations of the urgent pair's inbound streams have this bit set, so that the behaviour
/// knows which pair an answer goes to.
pub(crate) const URGENT_STREAMS: u64 = 1 << 63;

impl Requests {
    /// `backlog`: the behaviour's count of the one-way messages it handed this connection;
    /// `urgent`: the pair for high-priority modules; `connection`: the connection's own limits
    /// (shared by both pairs).
    pub(crate) fn new(
        settings: Arc<Settings>,
        backlog: Arc<Backlog>,
        urgent: bool,
        connection: ConnectionLimits,
    ) -> Self {
        let counters = settings.counters.clone();
        Requests {
            queued: HashSet::new(),
            cancelled: HashSet::new(),
            awaiting: HashMap::new(),
            inbound_pending: HashMap::new(),
            inbound_pending_bytes: 0,
            inbound_stream: if urgent { URGENT_STREAMS } else { 0 },
            requests_out: Outgoing::new(
                &settings.traffic,
                counters.clone(),
                backlog,
                connection.clone(),
            ),
            answers_out: Outgoing::new(&settings.traffic, counters, Arc::default(), connection),
            replies_in: settings.incoming(),
            requests_in: settings.incoming(),
            settings,
            events: VecDeque::new(),
            module_traffic: HashMap::new(),
            urgent,
            refused: false,
        }
    }

    /// A request or one-way message from the peer, whole and decompressed.
    fn on_request(
        &mut self,
        frame: Frame,
        wire_len: usize,
        answers: &mut VecDeque<Wire>,
    ) -> Result<(), CloseReason> {
        let error = |id, reason: &str| {
            Wire::whole(Frame::Error {
                id,
                reason: reason.into(),
            })
        };
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
                    let counters = &self.settings.counters;
                    counters.count(Direction::Inbound, Outcome::UnknownModule);
                    answers.push_back(error(id, &format!("no handler for module {module}")));
                    return Ok(());
                }
                let traffic = self.module_traffic(module);
                traffic.received(wire_len);
                let counters = &self.settings.counters;
                // The answers refused here count as the module's, as the requester counts them.
                if !self.settings.traffic.request_limits.admit(module) {
                    counters.count(Direction::Inbound, Outcome::RateLimited);
                    traffic.sent(RATE_LIMITED.len());
                    answers.push_back(error(id, RATE_LIMITED));
                } else if self.inbound_pending.len() >= self.settings.max_inbound_pending
                    || self.inbound_pending_bytes + payload.len()
                        > self.settings.max_inbound_pending_bytes
                {
                    counters.count(Direction::Inbound, Outcome::Busy);
                    traffic.sent(BUSY.len());
                    answers.push_back(error(id, BUSY));
                } else {
                    tracing::trace!(id, module, size = payload.len(), "unicast request received");
                    self.inbound_pending
                        .insert((self.inbound_stream, id), (payload.len(), module));
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
                if !self.settings.modules.contains(&module) {
                    tracing::debug!(
                        module,
                        "dropping a oneway message for a module we do not serve"
                    );
                } else if !self.settings.traffic.request_limits.admit(module) {
                    self.settings
                        .counters
                        .count(Direction::Inbound, Outcome::RateLimited);
                    tracing::debug!(module, "dropping a oneway message over the rate limit");
                } else {
                    self.module_traffic(module).received(wire_len);
                    self.events
                        .push_back(HandlerEvent::Oneway { module, payload });
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

    /// An answer to one of our requests, whole and decompressed.
    fn on_answer(&mut self, frame: Frame, wire_len: usize) -> Result<(), CloseReason> {
        let (id, result) = match frame {
            Frame::Response { id, payload } => (id, Ok(payload)),
            Frame::Error { id, reason } => (id, Err(reason)),
            other => {
                return Err(CloseReason::Unexpected(format!(
                    "{other:?} on the outbound stream"
                )));
            }
        };
        if let Some(module) = self.awaiting.remove(&id) {
            self.module_traffic(module).received(wire_len);
        }
        self.events.push_back(HandlerEvent::Response { id, result });
        Ok(())
    }

    /// The peer's stream is gone (or replaced): the messages completed on it and still held
    /// (decompressing, or waiting behind one that is) are handed on as they would have been;
    /// answers to them have nowhere to go. Then its reading state is dropped.
    fn flush_requests_in(&mut self) {
        self.requests_in.settle();
        let mut nowhere = VecDeque::new();
        while let Some(message) = self.requests_in.next(None) {
            if let Err(reason) = message.and_then(|(f, len)| self.on_request(f, len, &mut nowhere))
            {
                tracing::info!(%reason, "a message of the peer's closed unicast stream was bad");
                if reason.is_violation() {
                    self.events.push_back(HandlerEvent::InboundViolation);
                }
                break;
            }
        }
        self.requests_in = self.settings.incoming();
    }

    /// The counters of `module`, from the connection's own map (the shared one takes a lock).
    fn module_traffic(&mut self, module: u16) -> Arc<ModuleTraffic> {
        let counters = &self.settings.counters;
        self.module_traffic
            .entry(module)
            .or_insert_with(|| counters.module(module))
            .clone()
    }

    fn answer_payload(result: Result<Bytes, String>) -> (u8, Bytes) {
        match result {
            Ok(payload) => (KIND_RESPONSE, payload),
            Err(reason) => (
                KIND_ERROR,
                Bytes::copy_from_slice(truncate(&reason).as_bytes()),
            ),
        }
    }
}

impl PairProtocol for Requests {
    type Codec = Codec;
    type Command = Command;
    type Event = HandlerEvent;

    /// Opened when there is something to send; never given up (a failed stream fails the
    /// requests on it, and the next request opens a new one). Answers go on the peer's stream.
    /// The urgent pair gives up when the peer does not speak its protocol (and after 3 failed
    /// opens in a row): its messages then go on the main pair.
    fn policy(&self) -> Policy {
        Policy {
            open_at_once: false,
            give_up_after: self.urgent.then_some(MAX_OPEN_FAILURES),
            answers: true,
        }
    }

    fn protocol(&self) -> &StreamProtocol {
        if self.urgent {
            &self.settings.urgent
        } else {
            &self.settings.protocol
        }
    }

    fn older_versions(&self) -> &[StreamProtocol] {
        if self.urgent {
            &[]
        } else {
            &self.settings.older
        }
    }

    fn inbound_codec(&self, version: &StreamProtocol) -> Codec {
        self.settings.codec(version)
    }

    fn outbound_codec(&self, version: &StreamProtocol) -> Codec {
        self.settings.codec(version)
    }

    fn traffic(&self) -> &FrameTraffic {
        self.settings.counters.traffic()
    }

    fn read_len(wire: &Wire) -> usize {
        wire.data_len()
    }

    fn write_len(wire: &Wire) -> usize {
        wire.data_len()
    }

    fn on_command(&mut self, command: Command, streams: &mut Streams<Codec>) {
        if self.refused
            && let Command::Send(frame) = command
        {
            // Nothing is queued once refused (`unsupported` emptied it). A one-way message
            // goes back still counted in the backlog, as `unsupported`'s do.
            self.events.push_back(HandlerEvent::NoUrgent(vec![frame]));
            return;
        }
        match command {
            Command::Send(Frame::Oneway { module, payload }) => {
                self.requests_out
                    .push(KIND_ONEWAY, 0, module, module, payload);
            }
            Command::Send(Frame::Request {
                id,
                module,
                payload,
            }) => {
                self.queued.insert(id);
                self.requests_out
                    .push(KIND_REQUEST, id, module, module, payload);
            }
            Command::Send(other) => {
                tracing::error!(
                    ?other,
                    "unicast: only requests and one-way messages are sent"
                );
            }
            Command::Cancel(id) => {
                // Timed out or already reported failed: do not send it (dropped when it comes
                // up, O(1) here), stop waiting for it.
                if self.queued.remove(&id) {
                    self.cancelled.insert(id);
                }
                self.awaiting.remove(&id);
            }
            Command::Respond { id, stream, result } => {
                let module = match self.inbound_pending.remove(&(stream, id)) {
                    Some((size, module)) => {
                        self.inbound_pending_bytes -= size;
                        module
                    }
                    None => 0,
                };
                if stream != self.inbound_stream {
                    return;
                }
                let (kind, payload) = Self::answer_payload(result);
                let size = payload.len();
                let queued = streams
                    .answer_bytes()
                    .saturating_add(self.answers_out.bytes());
                let hard_cap = self.settings.max_inbound_pending_bytes.saturating_mul(2);
                if queued.saturating_add(size) > hard_cap {
                    // Reading stopped at the bound, but answers to requests accepted before
                    // it can be larger than the requests were: a peer that does not read them
                    // loses the stream (and the answers) rather than have them pile up.
                    self.answers_out.clear();
                    self.flush_requests_in();
                    if streams.close_inbound() {
                        tracing::info!(
                            queued,
                            size,
                            "closing the peer's unicast stream: it does not read its answers"
                        );
                    }
                    return;
                }
                self.answers_out.push(kind, id, 0, module, payload);
            }
        }
    }

    fn admit(&mut self, _: &Wire) -> bool {
        true
    }

    fn discard(&mut self, _: Wire) {}

    fn pull(&mut self, outbound: bool, cx: &mut Context<'_>) -> Option<Wire> {
        if !outbound {
            return self.answers_out.next(&mut HashSet::new(), cx);
        }
        let wire = self.requests_out.next(&mut self.cancelled, cx)?;
        if let Wire::Start {
            kind: KIND_REQUEST,
            id,
            module,
            ..
        } = &wire
        {
            self.queued.remove(id);
            self.awaiting.insert(*id, *module);
        }
        Some(wire)
    }

    fn holds_outbound(&self) -> bool {
        !self.refused && !self.requests_out.is_empty()
    }

    fn on_inbound(&mut self, wire: Wire, answers: &mut VecDeque<Wire>) -> Result<(), CloseReason> {
        self.requests_in.take(wire)?;
        while let Some(message) = self.requests_in.next(None) {
            let (frame, wire_len) = message?;
            self.on_request(frame, wire_len, answers)?;
        }
        Ok(())
    }

    /// Responses to our requests.
    fn on_reply(&mut self, wire: Wire) -> Result<(), CloseReason> {
        self.traffic().received(wire.data_len());
        self.replies_in.take(wire)?;
        while let Some(message) = self.replies_in.next(None) {
            let (frame, wire_len) = message?;
            self.on_answer(frame, wire_len)?;
        }
        Ok(())
    }

    /// Messages whose decompression ended.
    fn poll_work(&mut self, cx: &mut Context<'_>, answers: &mut VecDeque<Wire>) -> WorkFailed {
        let mut failed = WorkFailed::default();
        while let Some(message) = self.requests_in.next(Some(cx)) {
            if let Err(reason) = message.and_then(|(f, len)| self.on_request(f, len, answers)) {
                failed.inbound = Some(reason);
                break;
            }
        }
        while let Some(message) = self.replies_in.next(Some(cx)) {
            if let Err(reason) = message.and_then(|(f, len)| self.on_answer(f, len)) {
                failed.outbound = Some(reason);
                break;
            }
        }
        failed
    }

    /// Stop reading while answers pile up: the answers not yet written and the requests being
    /// handled are bounded per connection in frames and in bytes. A peer that never reads
    /// its answers is held back by its own stream's flow control, and nothing else waits.
    fn read_paused(&self, answers: usize, answer_bytes: usize) -> bool {
        answers.saturating_add(self.answers_out.len()) >= self.settings.max_inbound_pending
            || answer_bytes
                .saturating_add(self.answers_out.bytes())
                .saturating_add(self.inbound_pending_bytes)
                >= self.settings.max_inbound_pending_bytes
    }

    fn outbound_opened(&mut self, version: &StreamProtocol) {
        self.requests_out
            .set_version(self.settings.version(version));
        self.replies_in = self.settings.incoming();
    }

    fn outbound_failed(&mut self, reason: CloseReason, given_up: bool) {
        tracing::debug!(%reason, "unicast outbound stream failed");
        // Answers still decompressing were the failed stream's.
        self.replies_in = self.settings.incoming();
        let mut lost: Vec<u64> = self.awaiting.drain().map(|(id, _)| id).collect();
        if given_up {
            // The urgent pair after repeated failures: what is queued goes on the main pair.
            self.unsupported();
        } else {
            self.requests_out.clear();
            lost.extend(self.queued.drain());
        }
        self.cancelled.clear();
        self.events
            .push_back(HandlerEvent::OutboundFailed(reason, lost));
    }

    /// The urgent pair only: the peer does not speak its protocol. What it holds, and what it is
    /// given from now on, goes back to the behaviour for the main pair.
    fn unsupported(&mut self) {
        self.refused = true;
        self.queued.clear();
        let cancelled = std::mem::take(&mut self.cancelled);
        let frames: Vec<Frame> = self
            .requests_out
            .take_unstarted()
            .into_iter()
            .filter(|f| !matches!(f, Frame::Request { id, .. } if cancelled.contains(id)))
            .collect();
        self.events.push_back(HandlerEvent::NoUrgent(frames));
    }

    fn inbound_opened(&mut self, replaced: bool, version: &StreamProtocol) {
        if replaced {
            // One inbound stream per connection: a second one replaces the first (bounding
            // what a peer can make us hold); answers still owed are dropped.
            tracing::debug!("peer opened a second unicast stream; replacing the first");
        }
        self.answers_out.clear();
        self.answers_out.set_version(self.settings.version(version));
        self.flush_requests_in();
        self.inbound_stream += 1;
    }

    fn inbound_closed(&mut self, reason: CloseReason) {
        self.answers_out.clear();
        self.flush_requests_in();
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
        !self.awaiting.is_empty()
            || !self.inbound_pending.is_empty()
            || !self.answers_out.is_empty()
            || self.requests_in.holds()
    }

    fn next_event(&mut self) -> Option<HandlerEvent> {
        self.events.pop_front()
    }
}

/// The error a request over its module's rate limit gets.
pub const RATE_LIMITED: &str = "rate limited";

/// The error a request gets while too many of its peer's requests are in flight.
const BUSY: &str = "busy";
