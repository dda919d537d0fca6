//! Topic flooding (`/bcos/flood/2.1.0`): network-wide subscriptions, multicast to a topic's
//! subscribers, broadcast to every node — each delivered exactly once, also across nodes that
//! are not directly connected, with close to one copy per receiver on the wire.
//!
//! This is how FISCO BCOS spreads transactions, blocks and AMOP topic messages. Stock floodsub
//! sends every message to every subscribed peer again at every hop; gossipsub trades copies for
//! mesh upkeep. Here every node floods a small link-state record (its neighbours and topics)
//! when it changes, so every node knows the whole graph; a message then travels down the
//! breadth-first tree rooted at its origin, pruned to the branches that hold a subscriber. The
//! origin's own sends cover a full mesh; partial meshes are covered hop by hop. A bounded cache
//! of message ids makes delivery exactly-once even while views of the graph disagree (during
//! changes nodes fall back to flooding). A relay that drops what it should forward, or fails
//! with messages in flight, does not cut off the nodes behind it: their other neighbours
//! announce the ids they forwarded (IHAVE) and they pull what they lack (IWANT), Plumtree's
//! lazy repair. See `SPEC.md`.
//!
//! ```no_run
//! use bcos_p2p_flood::{Behaviour, Event};
//!
//! fn start(flood: &mut Behaviour) -> Result<(), bcos_p2p_flood::FloodError> {
//!     flood.subscribe("blocks")?;
//!     flood.multicast("blocks", bytes::Bytes::from_static(b"block 1"))?;
//!     flood.broadcast(bytes::Bytes::from_static(b"hello, everyone"))?;
//!     Ok(())
//! }
//! fn on_event(event: Event) {
//!     if let Event::Message { origin, topic, payload, hops, .. } = event {
//!         println!("{origin} ({hops} hops) on {topic:?}: {} bytes", payload.len());
//!     }
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod members;
mod messages;
mod origins;
mod pacing;
mod records;
mod repair;
pub mod topology;
mod window;
pub mod wire;

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bcos_p2p_core::{
    Heard, NodeId, NodeIdBook, NodeKey, Offence, Offences, Paths, PrimaryConnections,
    link::{Handler, Link, LinkCommand, LinkConfig, LinkEvent, Queue},
    paths::{PathAnswer, Target},
    route_link::is_routed,
    stream_pair::{CloseReason, Traffic},
};
use budget::Budgets;
use bytes::Bytes;
use either::Either;
use futures::FutureExt as _;
use futures_timer::Delay;
use libp2p_core::{Endpoint, Multiaddr, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure, FromSwarm, ListenFailure,
    NetworkBehaviour, NotifyHandler, StreamProtocol, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm, dummy,
};
use members::Members;
pub use members::{CheckChain, Membership};
use origins::Origins;
pub use topology::view::{View, ViewNode};
use topology::{Topology, short_id};
use window::Windows;
use wire::{Frame, MAX_TOPIC_LEN};

/// The protocol id.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/bcos/flood/2.1.0");

/// Settings of the flood behaviour.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most hops a message travels. Default 10, as FISCO BCOS.
    pub ttl: u8,
    /// Largest frame, either way (payload plus at most [`wire::DATA_OVERHEAD`] bytes). Default
    /// 32 MiB, as unicast.
    pub max_frame: usize,
    /// Most frames queued for one connection. Default 4096.
    pub max_queue_frames: usize,
    /// Most bytes queued for one connection. Default 64 MiB.
    pub max_queue_bytes: usize,
    /// How many of an origin's latest seqnos are told apart (its replay window, SPEC.md §4):
    /// a copy of an older message is refused as too old. Rounded up to a multiple of 64.
    /// Default 4096.
    pub replay_window: usize,
    /// Most origins whose replay windows are kept whole (past it, the least recently heard
    /// keeps only its highest seqno). Default 8192.
    pub max_origins: usize,
    /// How long a change of neighbours or topics waits before it is announced, so bursts of
    /// changes (start-up) make one record. Default 20 ms.
    pub announce_delay: Duration,
    /// Least time between two records of this node, so that a burst of changes (a mesh
    /// forming, churn) costs each link one record of this node per interval at most
    /// (SPEC.md §3). Default 1 s.
    pub min_announce_interval: Duration,
    /// Longest wait between two records of this node while it keeps changing: each record
    /// published less than twice this after the one before doubles the wait, starting from
    /// `min_announce_interval`, up to this (SPEC.md §3), as OSPF throttles LSAs. A mesh forming (every node gaining
    /// neighbours for many seconds) then costs each node a handful of records instead of one
    /// per `min_announce_interval`. Default 8 s.
    pub max_announce_interval: Duration,
    /// How often neighbours compare database digests (and resync when they differ). Default 5 s.
    pub digest_interval: Duration,
    /// How long the record of an unreachable node is kept. Default 60 s.
    pub record_ttl: Duration,
    /// Most nodes whose records are kept. Default 4096.
    pub max_nodes: usize,
    /// In CA mode, how long a peer asked for an origin's certificate chain has to answer
    /// before the next peer that passed on the origin's frames is asked (SPEC.md §8).
    /// Default 5 s.
    pub member_timeout: Duration,
    /// Most DATA frames per second taken from one peer (in bursts of up to two seconds'
    /// worth); past it frames are dropped unread ([`Stats::over_budget`]) and the peer is
    /// reported ([`Behaviour::set_offences`]). 0: no limit. Default 20 000.
    pub budget_frames_per_s: u32,
    /// Most DATA frame bytes per second taken from one peer, likewise (a burst always fits
    /// two frames of [`Config::max_frame`]). 0: no limit. Default 256 MiB.
    pub budget_bytes_per_s: u64,
    /// Most control frames per second taken from one peer (IHAVE, IWANT, SUMMARY,
    /// RECORD_REQUEST, DIGEST, CERT_REQUEST, CERT; in bursts of up to two seconds' worth); past
    /// it they are dropped unread ([`Stats::control_over_budget`]) and the peer is reported.
    /// An honest peer sends a few dozen a second. 0: no limit. Default 1000.
    pub control_budget_frames_per_s: u32,
    /// Most control frame bytes per second taken from one peer, likewise; an IHAVE or IWANT
    /// counts 18 bytes per id it lists, however compactly it encodes them (each id is a
    /// lookup). 0: no limit. Default 8 MiB.
    pub control_budget_bytes_per_s: u64,
    /// How often the ids of messages forwarded down a tree are announced (IHAVE) to the
    /// neighbours whose announcer this node is, in one frame per neighbour, and how often due
    /// pulls go out (SPEC.md §5). Default 50 ms.
    pub ihave_interval: Duration,
    /// How long a node that hears of a message it lacks waits for the copy down the tree
    /// before it pulls it (IWANT) from an announcer. Default 100 ms.
    pub repair_delay: Duration,
    /// How long a pull may take before the next announcer is asked. Default 250 ms.
    pub repair_timeout: Duration,
    /// How many neighbours announce each message to a node (its parent's link being the only
    /// one an announcement of the origin's own neighbours repairs, those have one). 0: none.
    /// Default 3.
    pub repair_announcers: usize,
    /// Most forwarded frames kept to answer pulls. 0 turns announcing off. Default 4096.
    pub repair_cache_frames: usize,
    /// Most bytes of forwarded frames kept to answer pulls. Default 32 MiB.
    pub repair_cache_bytes: usize,
    /// How long a forwarded frame is kept to answer pulls. Default 3 s.
    pub repair_cache_ttl: Duration,
    /// Most announced ids waiting to be pulled, in all. Default 8192.
    pub max_repair_pending: usize,
    /// Most announced ids waiting to be pulled that one peer announced first, and most ids one
    /// peer may pull from this node per second. Default 1024.
    pub repair_ids_per_peer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: 10,
            max_frame: 32 * 1024 * 1024,
            max_queue_frames: 4096,
            max_queue_bytes: 64 * 1024 * 1024,
            replay_window: 4096,
            max_origins: 8192,
            announce_delay: Duration::from_millis(20),
            min_announce_interval: Duration::from_secs(1),
            max_announce_interval: Duration::from_secs(8),
            digest_interval: Duration::from_secs(5),
            record_ttl: Duration::from_secs(60),
            max_nodes: 4096,
            member_timeout: Duration::from_secs(5),
            budget_frames_per_s: 20_000,
            budget_bytes_per_s: 256 * 1024 * 1024,
            control_budget_frames_per_s: 1000,
            control_budget_bytes_per_s: 8 * 1024 * 1024,
            ihave_interval: Duration::from_millis(50),
            repair_delay: Duration::from_millis(100),
            repair_timeout: Duration::from_millis(250),
            repair_announcers: topology::DEFAULT_ANNOUNCERS,
            repair_cache_frames: 4096,
            repair_cache_bytes: 32 * 1024 * 1024,
            repair_cache_ttl: Duration::from_secs(3),
            max_repair_pending: 8192,
            repair_ids_per_peer: 1024,
        }
    }
}

/// A topic name: UTF-8, 1 to 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Checks a topic name.
    pub fn new(name: impl Into<String>) -> Result<Self, FloodError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_TOPIC_LEN {
            return Err(FloodError::InvalidTopic(format!(
                "topic of {} bytes (1 to {MAX_TOPIC_LEN} allowed)",
                name.len()
            )));
        }
        Ok(Topic(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's network-wide id: its origin and the origin's sequence number. Sequence numbers
/// start from the origin's start time in nanoseconds, so a restarted node does not reuse ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The node that sent it.
    pub origin: NodeId,
    /// The origin's number for it.
    pub seqno: u64,
}

/// What the flood behaviour reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A multicast for a topic we subscribe to, or a broadcast. Each message once.
    Message {
        /// Its id.
        id: MessageId,
        /// Who sent it.
        origin: NodeId,
        /// The topic, or `None` for a broadcast.
        topic: Option<Topic>,
        /// The application's bytes.
        payload: Bytes,
        /// Hops it travelled (1 when the origin is a neighbour).
        hops: u8,
    },
    /// A node (anywhere in the network) subscribed to a topic.
    Subscribed {
        /// The node.
        node: NodeId,
        /// The topic.
        topic: Topic,
    },
    /// A node unsubscribed from a topic.
    Unsubscribed {
        /// The node.
        node: NodeId,
        /// The topic.
        topic: Topic,
    },
}

/// Why a flood call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FloodError {
    /// The topic name is empty, too long or not UTF-8.
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// The payload does not fit in a frame.
    #[error("payload of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The most a payload may have.
        max: usize,
    },
    /// This node already subscribes to the most topics a record may list.
    #[error("already subscribed to {0} topics, the most a node may have")]
    TooManyTopics(usize),
    /// Every queue the message had to go to is full: the peers are not keeping up.
    #[error("the send queues of all {0} peers the message goes to are full")]
    QueueFull(usize),
    /// The node key could not sign the message.
    #[error("cannot sign the message: {0}")]
    Sign(String),
}

/// Counters of what the behaviour did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages this node sent (multicast and broadcast).
    pub published: u64,
    /// Messages delivered to this node's application.
    pub delivered: u64,
    /// Copies received of messages already seen (dropped).
    pub duplicates: u64,
    /// Data frames refused because their id is below the origin's replay window: replays, or
    /// copies that came later than `replay_window` newer messages of their origin.
    pub too_old: u64,
    /// Data frames and records whose signature did not verify (dropped, and the sender's
    /// stream closed).
    pub bad_signatures: u64,
    /// Messages of origins the origin filter refuses (deny/allow lists): neither delivered
    /// nor forwarded.
    pub refused_origins: u64,
    /// Data frames sent on to other nodes (this node's own sends and answers to pulls
    /// included).
    pub frames_sent: u64,
    /// Data frames dropped because a peer's queue was full.
    pub dropped: u64,
    /// Records received that were newer than what we held.
    pub records_stored: u64,
    /// Signed records refused because their incarnation is too far ahead of our clock.
    pub records_refused: u64,
    /// Newer records of a node dropped unchecked because that node's records came faster
    /// than the pacing of SPEC.md §3 allows (a burst of 10, then one per
    /// `max_announce_interval`): what a member publishing at will would cost everyone.
    pub records_over_pace: u64,
    /// Record frames sent (announcements, forwards, answers to requests).
    pub records_sent: u64,
    /// Record frames received (new, old or refused).
    pub records_received: u64,
    /// SUMMARY frames sent (to new neighbours, and to neighbours whose digest differs).
    pub summaries_sent: u64,
    /// Streams closed over malformed input.
    pub malformed: u64,
    /// Data frames dropped unread because their sender was past its budget
    /// ([`Config::budget_frames_per_s`], [`Config::budget_bytes_per_s`]).
    pub over_budget: u64,
    /// Control frames dropped unread because their sender was past its control budget
    /// ([`Config::control_budget_frames_per_s`], [`Config::control_budget_bytes_per_s`]).
    pub control_over_budget: u64,
    /// Origin public keys parsed and checked: once per origin while remembered (up to
    /// 4096 of them).
    pub origins_checked: u64,
    /// In CA mode, frames dropped because their origin could not be shown to be a member (no
    /// peer gave a certificate chain that passes, or the parking space of the peer that sent
    /// them was full).
    pub non_members: u64,
    /// Certificate chains received that did not pass (the sender's stream closed).
    pub bad_certificates: u64,
    /// IHAVE frames sent: announcements of forwarded message ids to neighbours (lazy repair).
    pub ihave_sent: u64,
    /// Message ids announced in them, one per neighbour told.
    pub ihave_ids: u64,
    /// IWANT frames sent: pulls of announced messages this node lacked.
    pub iwant_sent: u64,
    /// Data frames sent in answer to a neighbour's pull.
    pub repair_served: u64,
    /// Messages this node accepted from the copy it pulled: what a failed or dropping relay
    /// did not pass on.
    pub repaired: u64,
}

struct Conn {
    id: ConnectionId,
    queue: Arc<Queue>,
    state: LinkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// The outbound stream is being opened (or reopened): frames queue until it is.
    Opening,
    /// The outbound stream is open: frames sent now go out.
    Open,
    /// The peer does not speak flood.
    Dead,
}

struct Peer {
    node: Option<NodeId>,
    short: Option<u64>,
    conns: Vec<Conn>,
    /// Whom the peer says it sends its own broadcasts to (its last LINKS, SPEC.md §3):
    /// short ids, ascending.
    links: Option<Vec<u64>>,
    /// A fingerprint of the last LINKS we sent the peer.
    links_sent: Option<u64>,
}

impl Peer {
    fn open(&self) -> Option<&Conn> {
        self.conns.iter().find(|c| c.state == LinkState::Open)
    }

    /// The connection to send on: the kept one (`primary`, while a duplicate closes) if its
    /// link is not dead, else an open one, else one still opening (the handler queues frames
    /// until its stream is up, so messages sent right after connecting are not lost).
    fn usable(&self, primary: Option<ConnectionId>) -> Option<&Conn> {
        self.conns
            .iter()
            .find(|c| Some(c.id) == primary && c.state != LinkState::Dead)
            .or_else(|| self.open())
            .or_else(|| self.conns.iter().find(|c| c.state == LinkState::Opening))
    }
}

/// The flood `NetworkBehaviour`.
pub struct Behaviour {
    config: Config,
    key: NodeKey,
    link: Arc<LinkConfig<Frame>>,
    node_ids: NodeIdBook,
    primaries: PrimaryConnections,
    me: NodeId,
    me_bytes: Bytes,
    topology: Topology,
    subscriptions: BTreeSet<String>,
    peers: HashMap<PeerId, Peer>,
    /// Flood neighbours (an open outbound stream): short id → peer.
    neighbours: HashMap<u64, PeerId>,
    seqno: u64,
    /// The ids accepted from each origin.
    windows: Windows,
    /// Checked NodeIds and signature verifiers of origins.
    origins: Origins,
    /// Checked certificate chains of origins (CA mode, [`Behaviour::set_membership`]).
    members: Option<Members>,
    /// Whether messages of an origin are taken ([`Behaviour::set_origin_filter`]).
    origin_filter: Box<dyn Fn(&NodeId) -> bool + Send>,
    /// Neighbours or topics changed since the last record we published.
    dirty: bool,
    announce_timer: Option<Delay>,
    /// When we last published our record.
    last_announce: Option<Instant>,
    /// How many more versions of each node's record we store now (SPEC.md §3).
    pacing: pacing::Pacing,
    /// The least time from `last_announce` to our next record: `min_announce_interval`,
    /// doubled by each record published while the node keeps changing.
    hold: Duration,
    digest_timer: Delay,
    /// When we last sent a peer the headers of our whole database (at most once per digest
    /// interval).
    resynced: HashMap<PeerId, Instant>,
    /// Since when each peer's digests have differed from ours: a difference is resynced only
    /// once it has lasted a digest interval (SPEC.md §3).
    differing: HashMap<PeerId, Instant>,
    /// Nodes whose records were stored since the last flush, per neighbour to pass their
    /// headers on to (SPEC.md §3).
    header_outbox: HashMap<PeerId, HashSet<u64>>,
    /// Runs while `header_outbox` holds headers (`records::HEADER_FLUSH`).
    header_timer: Option<Delay>,
    /// Records asked of a neighbour: short id → (the pair its summary listed, when).
    requested: HashMap<u64, ((u64, u64), Instant)>,
    /// Announcements, pulls and the frames kept for them (`repair.rs`).
    repair: repair::Repair,
    events: VecDeque<ToSwarm<Event, LinkCommand>>,
    stats: Stats,
    /// Each peer's budget of inbound data frames.
    budgets: Budgets,
    /// Each peer's budget of inbound control frames.
    control_budgets: Budgets,
    /// Where the peers' offences are reported ([`Behaviour::set_offences`]).
    offences: Offences,
    /// Where each connection's last frame is marked ([`Behaviour::set_heard`]).
    heard: Option<Heard>,
    /// Path questions this behaviour answers ([`Behaviour::set_paths`]).
    paths: Option<Paths>,
}

/// The wall clock in nanoseconds since the Unix epoch (saturating; 0 before the epoch): what
/// incarnations and first seqnos are made of, and what records' incarnations are checked
/// against.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn decode(body: Bytes) -> Result<Frame, String> {
    Frame::decode(body)
}

impl Behaviour {
    /// The behaviour for the node with `key`, which signs its messages; `node_ids` names peers
    /// (from the CA-TLS handshake).
    pub fn new(key: &NodeKey, config: Config, node_ids: NodeIdBook) -> Self {
        let me = key.node_id().clone();
        let start = unix_nanos().max(1);
        let link = Arc::new(LinkConfig {
            protocol: PROTOCOL_NAME,
            // Records and chains must fit whatever the message limit.
            max_frame: config
                .max_frame
                .max(wire::MAX_RECORD_LEN)
                .max(wire::MAX_CERT_FRAME_LEN),
            max_queue_frames: config.max_queue_frames,
            max_queue_bytes: config.max_queue_bytes,
            decode,
            traffic: Arc::default(),
        });
        Behaviour {
            me_bytes: Bytes::copy_from_slice(me.as_bytes()),
            topology: Topology::new(me.clone(), start, config.max_nodes),
            me,
            link,
            node_ids,
            primaries: PrimaryConnections::default(),
            subscriptions: BTreeSet::new(),
            peers: HashMap::new(),
            neighbours: HashMap::new(),
            seqno: start,
            windows: Windows::new(config.replay_window, config.max_origins),
            origins: Origins::new(origins::CAPACITY),
            origin_filter: Box::new(|_| true),
            members: None,
            key: key.clone(),
            dirty: false,
            announce_timer: None,
            last_announce: None,
            hold: config.min_announce_interval,
            pacing: pacing::Pacing::new(config.max_announce_interval),
            digest_timer: Delay::new(config.digest_interval),
            resynced: HashMap::new(),
            differing: HashMap::new(),
            header_outbox: HashMap::new(),
            header_timer: None,
            requested: HashMap::new(),
            repair: repair::Repair::default(),
            events: VecDeque::new(),
            stats: Stats::default(),
            budgets: Budgets::new(
                config.budget_frames_per_s,
                config.budget_bytes_per_s,
                config.max_frame,
            ),
            control_budgets: Budgets::new(
                config.control_budget_frames_per_s,
                config.control_budget_bytes_per_s,
                config.max_frame,
            ),
            offences: Offences::default(),
            heard: None,
            paths: None,
            config,
        }
    }

    /// Answers the path questions left in `paths` (by the route behaviour) from this node's
    /// link-state view: shortest paths over the links both ends publish. Default: none.
    pub fn set_paths(&mut self, paths: Paths) {
        self.paths = Some(paths);
    }

    /// A shortest path to `to` (the nodes after this one, `to` last) through none of `avoid`
    /// if there is one; None when unreachable.
    pub fn path_to(&mut self, to: &Target, avoid: &[NodeId]) -> Option<Vec<NodeId>> {
        let id = match to {
            Target::Node(n) => short_id(n.as_bytes()),
            Target::Peer(p) => self.topology.short_id_of_peer(p)?,
        };
        self.topology.path_to(id, avoid)
    }

    /// Hop counts to every node reachable now (this node 0), from the link-state view.
    pub fn distances(&mut self) -> Vec<(NodeId, u32)> {
        self.topology.distances()
    }

    /// Sends on the connection `primaries` names when a peer has several (the connection
    /// manager's choice while it closes a duplicate).
    pub fn set_primaries(&mut self, primaries: PrimaryConnections) {
        self.primaries = primaries;
    }

    /// Marks in `heard` (the connection manager's handle) when each connection last brought a
    /// frame of this protocol: the manager counts that as a sign of life besides ping.
    /// Default: nothing is marked.
    pub fn set_heard(&mut self, heard: Heard) {
        self.heard = Some(heard);
    }

    /// Reports what peers do wrong to `offences` (the connection manager's handle, which may
    /// ban them): bad signatures, malformed frames, copies below the replay window, frames
    /// past the budget. Default: a handle nobody reads.
    pub fn set_offences(&mut self, offences: Offences) {
        self.offences = offences;
    }

    /// Which origins this node takes messages from: a message whose (verified) origin the
    /// filter refuses is neither delivered nor forwarded by this node, wherever it came from.
    /// The composed node passes its deny/allow lists, so they apply to origins network-wide
    /// and not only to direct connections. Default: every origin.
    pub fn set_origin_filter(&mut self, filter: impl Fn(&NodeId) -> bool + Send + 'static) {
        self.origin_filter = Box::new(filter);
    }

    /// Subscribes to `topic`; false if already subscribed. The whole network learns it.
    pub fn subscribe(&mut self, topic: &str) -> Result<bool, FloodError> {
        let topic = Topic::new(topic)?;
        if self.subscriptions.len() >= wire::MAX_TOPICS && !self.subscriptions.contains(&topic.0) {
            return Err(FloodError::TooManyTopics(self.subscriptions.len()));
        }
        let added = self.subscriptions.insert(topic.0);
        if added {
            self.mark_dirty();
        }
        Ok(added)
    }

    /// Unsubscribes from `topic`; false if not subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> Result<bool, FloodError> {
        let topic = Topic::new(topic)?;
        let removed = self.subscriptions.remove(&topic.0);
        if removed {
            self.mark_dirty();
        }
        Ok(removed)
    }

    /// The topics this node subscribes to.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.subscriptions.iter().map(String::as_str)
    }

    /// The other nodes, reachable now, that subscribe to `topic` (as their records say).
    pub fn subscribers(&mut self, topic: &str) -> Vec<NodeId> {
        let me = &self.me;
        let mut nodes = self.topology.subscribers(topic);
        nodes.retain(|n| n != me);
        nodes
    }

    /// The other nodes reachable now through flood links, directly or not.
    pub fn reachable(&mut self) -> Vec<NodeId> {
        self.topology.reachable()
    }

    /// The topics of a reachable node, as its record says.
    pub fn topics_of(&mut self, node: &NodeId) -> Option<Vec<String>> {
        self.topology.topics_of(node)
    }

    /// The nodes this node has a flood link with.
    pub fn neighbours(&self) -> Vec<NodeId> {
        self.neighbours
            .values()
            .filter_map(|p| self.peers.get(p)?.node.clone())
            .collect()
    }

    /// What the behaviour did so far.
    pub fn stats(&self) -> Stats {
        Stats {
            origins_checked: self.origins.parsed,
            ..self.stats
        }
    }

    /// Frames and bytes moved over all connections, both ways: a live, shared counter (keep
    /// the `Arc` and read it at any time, e.g. from a metrics scrape).
    pub fn traffic(&self) -> Arc<Traffic> {
        self.link.traffic.clone()
    }

    /// This node's id.
    pub fn local_node(&self) -> &NodeId {
        &self.me
    }

    /// Sends `payload` to every reachable node that subscribes to `topic`.
    pub fn multicast(&mut self, topic: &str, payload: Bytes) -> Result<MessageId, FloodError> {
        let topic = Topic::new(topic)?;
        self.publish(Some(topic.0), payload)
    }

    /// Sends `payload` to every reachable node.
    pub fn broadcast(&mut self, payload: Bytes) -> Result<MessageId, FloodError> {
        self.publish(None, payload)
    }

    /// Sends `payload` to the subscribers of `topic` (`None`: to every node), travelling at most
    /// `ttl` hops instead of the configured TTL.
    pub fn publish_with_ttl(
        &mut self,
        topic: Option<&str>,
        payload: Bytes,
        ttl: u8,
    ) -> Result<MessageId, FloodError> {
        let topic = topic.map(Topic::new).transpose()?;
        self.publish_as(topic.map(|t| t.0), payload, ttl.max(1))
    }

    /// A digest of this node's view of the network (every reachable node's record version):
    /// nodes with equal digests route alike. `None` while a change of ours awaits announcing.
    pub fn view_digest(&mut self) -> Option<u64> {
        (!self.dirty).then(|| self.topology.digest())
    }

    /// Queues a frame on the peer's open connection; false when there is none or it is full.
    fn send(&mut self, peer: PeerId, frame: Bytes) -> bool {
        let primary = self.primaries.get(&peer);
        let Some(conn) = self.peers.get(&peer).and_then(|p| p.usable(primary)) else {
            return false;
        };
        match conn.queue.send(peer, conn.id, frame) {
            Some(command) => {
                self.events.push_back(command);
                true
            }
            None => false,
        }
    }

    /// Closes a peer's stream over content that decoded but makes no sense (counted as
    /// malformed when the handler reports the close).
    fn close_inbound(&mut self, peer: PeerId, conn: ConnectionId, reason: String) {
        let reason = CloseReason::Malformed(reason);
        tracing::info!(%peer, %reason, "closing a peer's flood stream");
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(conn),
            event: LinkCommand::CloseInbound(reason),
        });
    }

    /// The node that signed a frame from `peer`, given as (key type, NodeId bytes, signed
    /// message, signature): `None` if the key is not one or the signature does not verify, in
    /// which case the peer's stream is closed (an honest peer never passes such a frame on).
    pub(crate) fn check_signed(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        what: &str,
        (key_type, origin, message, signature): (u8, &Bytes, &[u8], &[u8]),
    ) -> Option<NodeId> {
        let (node, verifier) = match self.origins.get(key_type, origin) {
            Ok(o) => o,
            Err(e) => {
                self.close_inbound(peer, conn, format!("{what} with a bad origin: {e}"));
                return None;
            }
        };
        if !verifier.verify(message, signature) {
            self.stats.bad_signatures += 1;
            self.offences.report(peer, Offence::BadSignature);
            self.close_inbound(peer, conn, format!("{what} with a bad signature"));
            return None;
        }
        Some(node)
    }

    fn new_handler(&mut self, peer: PeerId, connection: ConnectionId) -> Handler<Frame> {
        let queue = Arc::new(Queue::new(
            self.config.max_queue_frames,
            self.config.max_queue_bytes,
        ));
        let node_ids = &self.node_ids;
        self.peers
            .entry(peer)
            .or_insert_with(|| {
                // The CA-TLS handshake recorded the NodeId before the connection got here.
                let node = node_ids.resolve(&peer);
                Peer {
                    short: node.as_ref().map(|n| short_id(n.as_bytes())),
                    node,
                    conns: Vec::new(),
                    links: None,
                    links_sent: None,
                }
            })
            .conns
            .push(Conn {
                id: connection,
                queue: queue.clone(),
                state: LinkState::Opening,
            });
        // Our chain goes first, so the peer takes our frames without asking (SPEC.md §8).
        if let Some(cert) = self.own_cert()
            && let Some(command) = queue.send(peer, connection, cert)
        {
            self.events.push_back(command);
        }
        Handler::new(Link::new(self.link.clone(), queue))
            .hearing(self.heard.as_ref().map(|h| h.cell(connection)))
    }

    fn forget_connection(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.conns.retain(|c| c.id != connection);
            // Our last LINKS may have gone down with it: sent again with our next broadcast.
            p.links_sent = None;
            let empty = p.conns.is_empty();
            self.refresh_neighbour(peer);
            if empty {
                self.peers.remove(&peer);
                self.resynced.remove(&peer);
                self.differing.remove(&peer);
                self.header_outbox.remove(&peer);
                self.members_forget(peer);
                self.budgets.forget(&peer, Instant::now());
                self.control_budgets.forget(&peer, Instant::now());
                self.repair.forget_peer(&peer);
            }
        }
    }

    fn forget_failed(&mut self, connection: ConnectionId) {
        let peer = self
            .peers
            .iter()
            .find(|(_, p)| p.conns.iter().any(|c| c.id == connection))
            .map(|(peer, _)| *peer);
        if let Some(peer) = peer {
            self.forget_connection(peer, connection);
        }
    }

    fn set_state(&mut self, peer: PeerId, connection: ConnectionId, state: LinkState) {
        if let Some(c) = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.conns.iter_mut().find(|c| c.id == connection))
        {
            c.state = state;
        }
        self.refresh_neighbour(peer);
    }
}

impl NetworkBehaviour for Behaviour {
    /// No flood link on a routed connection (a circuit through relays): links are direct
    /// connections only, as the records that paths are computed from say.
    type ConnectionHandler = Either<Handler<Frame>, dummy::ConnectionHandler>;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_routed(remote) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        Ok(Either::Left(self.new_handler(peer, connection)))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_routed(addr) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        Ok(Either::Left(self.new_handler(peer, connection)))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => self.forget_connection(peer_id, connection_id),
            // Another behaviour may deny a connection after we made its handler.
            FromSwarm::DialFailure(DialFailure { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.forget_failed(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let event = match event {
            Either::Left(event) => event,
            Either::Right(never) => match never {},
        };
        match event {
            LinkEvent::OutboundOpened => self.set_state(peer, connection, LinkState::Open),
            // The handler reopens the stream when there is something to send.
            LinkEvent::OutboundFailed(_) => self.set_state(peer, connection, LinkState::Opening),
            LinkEvent::Unsupported => self.set_state(peer, connection, LinkState::Dead),
            LinkEvent::InboundOpened => {}
            LinkEvent::InboundClosed(reason) => {
                if matches!(reason, CloseReason::Malformed(_) | CloseReason::BadFrame(_)) {
                    self.stats.malformed += 1;
                    self.offences.report(peer, Offence::Malformed);
                }
            }
            LinkEvent::Received(frame) if !self.control_within_budget(peer, &frame) => {}
            LinkEvent::Received(Frame::Data(data)) => {
                if self.within_budget(peer, &data) {
                    self.on_data(peer, connection, data)
                }
            }
            LinkEvent::Received(Frame::Record(record)) => self.on_record(peer, connection, record),
            LinkEvent::Received(Frame::Digest(digest)) => self.on_digest(peer, digest),
            LinkEvent::Received(Frame::Summary(headers)) => self.on_summary(peer, headers),
            LinkEvent::Received(Frame::RecordRequest(nodes)) => self.on_record_request(peer, nodes),
            LinkEvent::Received(Frame::Links(links)) => self.on_links(peer, links),
            LinkEvent::Received(Frame::CertRequest { key_type, origin }) => {
                self.on_cert_request(peer, key_type, origin)
            }
            LinkEvent::Received(Frame::Cert(cert)) => self.on_cert(peer, connection, cert),
            LinkEvent::Received(Frame::Ihave(ids)) => self.on_ihave(peer, ids),
            LinkEvent::Received(Frame::Iwant(ids)) => self.on_iwant(peer, ids),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(paths) = self.paths.clone() {
            for ask in paths.take_asks(cx) {
                let path = self.path_to(&ask.to, &ask.avoid);
                paths.answer(PathAnswer { id: ask.id, path });
            }
        }
        if let Some(timer) = &mut self.announce_timer
            && timer.poll_unpin(cx).is_ready()
        {
            self.announce_timer = None;
            if self.dirty {
                self.announce();
            }
        }
        if let Some(timer) = self.members.as_mut().and_then(|m| m.timer.as_mut())
            && timer.poll_unpin(cx).is_ready()
        {
            self.expire_pending();
            if let Some(timer) = self.members.as_mut().and_then(|m| m.timer.as_mut()) {
                let _ = timer.poll_unpin(cx);
            }
        }
        // After the steps above, so that a flush timer one of them starts is polled (armed).
        if let Some(timer) = &mut self.header_timer
            && timer.poll_unpin(cx).is_ready()
        {
            self.header_timer = None;
            self.flush_headers();
        }
        while let Some(timer) = &mut self.repair.timer
            && timer.poll_unpin(cx).is_ready()
        {
            self.repair_tick();
        }
        if self.digest_timer.poll_unpin(cx).is_ready() {
            self.digest_timer = Delay::new(self.config.digest_interval);
            let _ = self.digest_timer.poll_unpin(cx);
            let now = Instant::now();
            let removed = self.topology.collect_garbage(now, self.config.record_ttl);
            if removed > 0 {
                tracing::debug!(removed, "flood forgot unreachable nodes");
            }
            let frame = Frame::Digest(self.topology.digest()).encode();
            let peers: Vec<PeerId> = self.neighbours.values().copied().collect();
            for peer in peers {
                self.send(peer, frame.clone());
            }
        }
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e.map_in(Either::Left)),
            None => Poll::Pending,
        }
    }
}
