//! The route protocol on one connection: route streams the peer opens (their headers read
//! under a deadline), streams this node opens to the peer for a circuit, answers, and the
//! pumps of the circuits whose previous hop is this peer.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, atomic::AtomicU64},
    task::{Context, Poll},
    time::Duration,
};

use bcos_p2p_core::{
    NodeId,
    route_link::{RouteLink, RoutedIncoming},
};
use futures::{
    FutureExt, StreamExt,
    future::{BoxFuture, select},
    stream::FuturesUnordered,
};
use futures_timer::Delay;
use libp2p_core::upgrade::ReadyUpgrade;
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, SubstreamProtocol,
    handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
};

use crate::{
    pump::{Bucket, Pump},
    wire::{self, Code, PROTOCOL, Reply},
};

/// How long the peer has to send a route stream's header, and a next hop to answer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most route streams of one connection whose header is still being read.
const MAX_READING: usize = 16;
/// Most route streams of one connection waiting for the behaviour's decision.
const MAX_WAITING: usize = 64;

/// What the behaviour tells the handler.
#[derive(Debug)]
pub enum In {
    /// Open a route stream for circuit `circuit`, send `path` as its header, read the reply.
    Open {
        /// The behaviour's name for the circuit.
        circuit: u64,
        /// The nodes after the peer, the destination last.
        path: Vec<NodeId>,
    },
    /// The peer's stream `stream` reached its destination (this node): answer ok and hand it
    /// to the transport.
    Accept {
        /// The handler's name for the stream.
        stream: u64,
    },
    /// Refuse the peer's stream `stream` with `code`.
    Refuse {
        /// The handler's name for the stream.
        stream: u64,
        /// Why.
        code: Code,
    },
    /// The next hop answered for the peer's stream `stream`: pass `reply` back (one hop more)
    /// and, if it is ok, copy between the two streams.
    Pipe {
        /// The handler's name for the stream.
        stream: u64,
        /// The behaviour's name for the circuit.
        circuit: u64,
        /// The stream to the next hop.
        next: Stream,
        /// The next hop's reply.
        reply: Reply,
    },
}

/// What the handler tells the behaviour.
#[derive(Debug)]
pub enum Out {
    /// The peer opened stream `stream` with this header.
    Inbound {
        /// The handler's name for the stream.
        stream: u64,
        /// The nodes after this one, the destination last.
        path: Vec<NodeId>,
    },
    /// The peer sent a route stream whose header is malformed (an offence).
    Malformed(String),
    /// A route stream was dropped unread for another reason: no header in time, the stream
    /// failed, a header version this node does not speak.
    Dropped(String),
    /// A stream opened for `circuit` got its reply, or failed.
    Opened {
        /// The behaviour's name for the circuit.
        circuit: u64,
        /// The stream and the reply, or why there is none.
        result: Result<(Stream, Reply), String>,
    },
    /// A relayed circuit ended (either side closed, or a stream failed).
    CircuitEnded {
        /// The behaviour's name for the circuit.
        circuit: u64,
    },
}

/// Settings shared by every connection's handler.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Where circuits this node is the destination of go.
    pub link: RouteLink,
    /// Relayed bytes, all circuits.
    pub relayed: Arc<AtomicU64>,
    /// Relayed bytes per second per previous-hop peer; 0: no limit.
    pub bytes_per_s: u64,
}

/// `f`'s output, or None when `limit` passes first.
async fn within<F: std::future::Future + Unpin>(f: F, limit: Duration) -> Option<F::Output> {
    match select(f, Delay::new(limit)).await {
        futures::future::Either::Left((out, _)) => Some(out),
        futures::future::Either::Right(_) => None,
    }
}

type Reading = BoxFuture<'static, (u64, Result<(Stream, Vec<NodeId>), Out>)>;
type Opening = BoxFuture<'static, (u64, Result<(Stream, Reply), String>)>;
type Circuit = BoxFuture<'static, Option<u64>>;

/// The route protocol's handler of one connection. Most connections never carry a circuit:
/// the state circuits need is made on the first route stream or circuit (every connection of
/// a node has this handler, so its idle size counts per connection).
pub struct Handler {
    shared: Shared,
    peer: PeerId,
    /// A routed connection: route streams are refused on it.
    routed: bool,
    state: Option<Box<State>>,
}

/// What a handler holds once the connection carries route streams.
struct State {
    next_stream: u64,
    reading: FuturesUnordered<Reading>,
    waiting: HashMap<u64, Stream>,
    to_open: VecDeque<(u64, Vec<NodeId>)>,
    opening: FuturesUnordered<Opening>,
    /// Answers being written, and pumps running: each yields a circuit that ended, if any.
    circuits: FuturesUnordered<Circuit>,
    bucket: Arc<Mutex<Bucket>>,
    events: VecDeque<Out>,
}

impl State {
    fn new(bytes_per_s: u64) -> Self {
        State {
            next_stream: 0,
            reading: FuturesUnordered::new(),
            waiting: HashMap::new(),
            to_open: VecDeque::new(),
            opening: FuturesUnordered::new(),
            circuits: FuturesUnordered::new(),
            bucket: Arc::new(Mutex::new(Bucket::new(bytes_per_s))),
            events: VecDeque::new(),
        }
    }
}

impl Handler {
    /// The handler of a connection to `peer`; `routed` for a routed connection.
    pub fn new(shared: Shared, peer: PeerId, routed: bool) -> Self {
        Handler {
            shared,
            peer,
            routed,
            state: None,
        }
    }

    /// The state, made on first use.
    fn st(&mut self) -> &mut State {
        let bytes_per_s = self.shared.bytes_per_s;
        self.state
            .get_or_insert_with(|| Box::new(State::new(bytes_per_s)))
    }

    /// Answers `stream` with `reply` and drops it.
    fn refuse(&mut self, mut stream: Stream, code: Code) {
        self.st().circuits.push(
            async move {
                let write = wire::write_reply(&mut stream, Reply { code, hop: 0 });
                let _ = within(write.boxed(), HEADER_TIMEOUT).await;
                None
            }
            .boxed(),
        );
    }

    fn on_inbound(&mut self, stream: Stream) {
        if self.routed {
            self.refuse(stream, Code::Nested);
            return;
        }
        if self.st().reading.len() >= MAX_READING || self.st().waiting.len() >= MAX_WAITING {
            tracing::debug!(peer = %self.peer, "route: too many route streams at once; dropping one");
            return;
        }
        let id = self.st().next_stream;
        self.st().next_stream += 1;
        let mut stream = stream;
        self.st().reading.push(
            async move {
                let read = within(wire::read_header(&mut stream).boxed(), HEADER_TIMEOUT).await;
                match read {
                    Some(Ok(path)) => (id, Ok((stream, path))),
                    Some(Err(e @ wire::WireError::Malformed(_))) => {
                        (id, Err(Out::Malformed(e.to_string())))
                    }
                    Some(Err(e)) => (id, Err(Out::Dropped(e.to_string()))),
                    None => (
                        id,
                        Err(Out::Dropped("no route header within the timeout".into())),
                    ),
                }
            }
            .boxed(),
        );
    }

    fn on_outbound(&mut self, mut stream: Stream, circuit: u64, path: Vec<NodeId>) {
        self.st().opening.push(
            async move {
                let talk = async {
                    use futures::AsyncWriteExt;
                    stream.write_all(&wire::encode_header(&path)).await?;
                    stream.flush().await?;
                    wire::read_reply(&mut stream).await
                }
                .boxed();
                let result = match within(talk, HEADER_TIMEOUT).await {
                    Some(Ok(reply)) => Ok(reply),
                    Some(Err(e)) => Err(format!("route stream: {e}")),
                    None => Err("no route reply within the timeout".into()),
                };
                (circuit, result.map(|reply| (stream, reply)))
            }
            .boxed(),
        );
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = In;
    type ToBehaviour = Out;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = (u64, Vec<NodeId>);

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn on_behaviour_event(&mut self, event: In) {
        match event {
            In::Open { circuit, path } => self.st().to_open.push_back((circuit, path)),
            In::Accept { stream } => {
                let Some(mut stream) = self.st().waiting.remove(&stream) else {
                    return;
                };
                let link = self.shared.link.clone();
                let via = self.peer;
                self.st().circuits.push(
                    async move {
                        let ok = Reply {
                            code: Code::Ok,
                            hop: 0,
                        };
                        let written =
                            within(wire::write_reply(&mut stream, ok).boxed(), HEADER_TIMEOUT)
                                .await;
                        if matches!(written, Some(Ok(())))
                            && !link.push_incoming(RoutedIncoming { stream, via })
                        {
                            tracing::debug!("route: the transport took no more routed connections");
                        }
                        None
                    }
                    .boxed(),
                );
            }
            In::Refuse { stream, code } => {
                if let Some(stream) = self.st().waiting.remove(&stream) {
                    self.refuse(stream, code);
                }
            }
            In::Pipe {
                stream,
                circuit,
                next,
                reply,
            } => {
                let Some(mut stream) = self.st().waiting.remove(&stream) else {
                    // The stream is gone: the circuit ends here (the next hop's stream drops).
                    self.st().events.push_back(Out::CircuitEnded { circuit });
                    return;
                };
                let bucket = self.st().bucket.clone();
                let relayed = self.shared.relayed.clone();
                self.st().circuits.push(
                    async move {
                        let back = Reply {
                            code: reply.code,
                            hop: reply.hop.saturating_add(1),
                        };
                        let written = matches!(
                            within(wire::write_reply(&mut stream, back).boxed(), HEADER_TIMEOUT)
                                .await,
                            Some(Ok(()))
                        );
                        if written
                            && reply.code == Code::Ok
                            && let Err(e) = Pump::new(stream, next, bucket, relayed).await
                        {
                            tracing::debug!(circuit, error = %e, "route: relayed circuit failed");
                        }
                        Some(circuit)
                    }
                    .boxed(),
                );
            }
        }
    }

    fn connection_keep_alive(&self) -> bool {
        self.state.as_ref().is_some_and(|st| {
            !st.circuits.is_empty() || !st.waiting.is_empty() || !st.opening.is_empty()
        })
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Out>> {
        let Some(st) = self.state.as_deref_mut() else {
            return Poll::Pending;
        };
        if let Some(e) = st.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        if let Some((circuit, path)) = st.to_open.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), (circuit, path))
                    .with_timeout(HEADER_TIMEOUT),
            });
        }
        if let Poll::Ready(Some((id, result))) = st.reading.poll_next_unpin(cx) {
            let event = match result {
                Ok((stream, path)) => {
                    st.waiting.insert(id, stream);
                    Out::Inbound { stream: id, path }
                }
                Err(out) => out,
            };
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if let Poll::Ready(Some((circuit, result))) = st.opening.poll_next_unpin(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(Out::Opened {
                circuit,
                result,
            }));
        }
        while let Poll::Ready(Some(ended)) = st.circuits.poll_next_unpin(cx) {
            if let Some(circuit) = ended {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(Out::CircuitEnded {
                    circuit,
                }));
            }
        }
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            (),
            Self::OutboundOpenInfo,
        >,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => self.on_inbound(stream),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: (circuit, path),
            }) => self.on_outbound(stream, circuit, path),
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                info: (circuit, _),
                error,
            }) => self.st().events.push_back(Out::Opened {
                circuit,
                result: Err(format!("route stream not opened: {error}")),
            }),
            _ => {}
        }
    }
}
