//! Topic flooding between real swarms (TCP loopback + CA-TLS + yamux) on several topologies:
//! exactly-once delivery to subscribers, broadcast to all, one copy per receiver, TTL, churn,
//! backpressure and hostile input.

mod byzantine;
mod common;

use std::{
    task::Poll,
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    behaviour::build_swarm_with,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    flood::{self, Config, Event, FloodError, MessageId},
};
use bytes::Bytes;
use byzantine::Dropper;
use common::{
    TIMEOUT,
    frames::{cert_frame, data_frame, signed_by},
    node,
};
use futures::StreamExt as _;
use libp2p::{Multiaddr, Swarm, swarm::NetworkBehaviour, swarm::SwarmEvent};

const TOPIC: &str = "blocks";

/// Held by the tests that form whole meshes (hundreds of CA-TLS handshakes in a debug build),
/// so that they do not form them at the same time and time out on a loaded 2-core machine.
static MESH_FORMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A delivered message: id, topic, payload, hops.
type Got = (MessageId, Option<String>, Bytes, u8);

/// What a test node runs: the flood behaviour, or a wrapper of it.
trait Flooding: NetworkBehaviour<ToSwarm = Event> + Unpin {
    fn wrap(flood: flood::Behaviour) -> Self;
    fn flood(&mut self) -> &mut flood::Behaviour;
}

impl Flooding for flood::Behaviour {
    fn wrap(flood: flood::Behaviour) -> Self {
        flood
    }
    fn flood(&mut self) -> &mut flood::Behaviour {
        self
    }
}

impl Flooding for Dropper {
    fn wrap(inner: flood::Behaviour) -> Self {
        Dropper {
            inner,
            dropping: false,
            drop_data_from: None,
        }
    }
    fn flood(&mut self) -> &mut flood::Behaviour {
        &mut self.inner
    }
}

/// Nodes in one process, polled together by the test.
struct Net<B: Flooding = flood::Behaviour> {
    ca: CertificateAuthority,
    ids: Vec<NodeId>,
    /// Each node's key (to make the frames a node would send, as a replaying attacker has them).
    keys: Vec<NodeKey>,
    swarms: Vec<Option<Swarm<B>>>,
    addrs: Vec<Option<Multiaddr>>,
    /// Message events per node.
    got: Vec<Vec<Got>>,
}

impl Net {
    async fn new(n: usize, tweak: impl Fn(usize, &mut Config)) -> Net {
        Net::start(n, tweak).await
    }
}

impl<B: Flooding> Net<B> {
    async fn start(n: usize, tweak: impl Fn(usize, &mut Config)) -> Net<B> {
        let mut net = Net {
            ca: CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1))
                .unwrap(),
            ids: Vec::new(),
            keys: Vec::new(),
            swarms: Vec::new(),
            addrs: Vec::new(),
            got: Vec::new(),
        };
        for i in 0..n {
            let mut config = Config::default();
            tweak(i, &mut config);
            net.add(config);
        }
        net.run_until("listen addresses", |net| {
            net.addrs
                .iter()
                .zip(&net.swarms)
                .all(|(a, s)| a.is_some() || s.is_none())
        })
        .await;
        net
    }

    /// Adds a node listening on loopback; returns its index.
    fn add(&mut self, config: Config) -> usize {
        let (key, tls) = node(&self.ca, KeyType::Secp256k1, Period::days(1));
        let book = tls.node_ids().clone();
        let mut swarm = build_swarm_with(&key, &tls, |_| {
            let mut flood = flood::Behaviour::new(&key, config, book);
            flood.set_membership(bcos_p2p::security::ca_membership(&tls));
            B::wrap(flood)
        })
        .unwrap();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        self.ids.push(key.node_id().clone());
        self.keys.push(key);
        self.swarms.push(Some(swarm));
        self.addrs.push(None);
        self.got.push(Vec::new());
        self.ids.len() - 1
    }

    /// A member with `key` and `tls` writing `frames` on a flood stream to node `i`
    /// ([`common::write_garbage_as`]): its I/O task and its swarm's.
    fn write_as(
        &self,
        i: usize,
        key: &NodeKey,
        tls: &ca_tls::Config,
        frames: Vec<u8>,
    ) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
        let addr = self.addrs[i].clone().expect("node listens");
        let target = self.ids[i].to_peer_id();
        common::write_garbage_as(key, tls, addr, target, flood::PROTOCOL_NAME, frames)
    }

    fn flood(&mut self, i: usize) -> &mut flood::Behaviour {
        self.swarms[i]
            .as_mut()
            .expect("node is running")
            .behaviour_mut()
            .flood()
    }

    fn live(&self) -> Vec<usize> {
        (0..self.swarms.len())
            .filter(|i| self.swarms[*i].is_some())
            .collect()
    }

    /// A counter of [`flood::Stats`] summed over the running nodes.
    fn total(&mut self, counter: impl Fn(&flood::Stats) -> u64) -> u64 {
        self.live()
            .into_iter()
            .map(|i| counter(&self.flood(i).stats()))
            .sum()
    }

    /// Polls every swarm until none has anything to report, or for at most 10 ms.
    async fn step(&mut self) {
        let progress = futures::future::poll_fn(|cx| {
            let mut any = false;
            for i in 0..self.swarms.len() {
                while let Some(Poll::Ready(Some(event))) =
                    self.swarms[i].as_mut().map(|s| s.poll_next_unpin(cx))
                {
                    any = true;
                    match event {
                        SwarmEvent::NewListenAddr { address, .. } => {
                            self.addrs[i].get_or_insert(address);
                        }
                        SwarmEvent::Behaviour(Event::Message {
                            id,
                            topic,
                            payload,
                            hops,
                            ..
                        }) => self.got[i].push((id, topic.map(|t| t.to_string()), payload, hops)),
                        _ => {}
                    }
                }
            }
            if any { Poll::Ready(()) } else { Poll::Pending }
        });
        let _ = tokio::time::timeout(Duration::from_millis(10), progress).await;
    }

    async fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Net<B>) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.step().await;
        }
    }

    async fn run_for(&mut self, time: Duration) {
        let end = Instant::now() + time;
        while Instant::now() < end {
            self.step().await;
        }
    }

    /// Dials every edge (a dials b) and waits until both ends of each are connected.
    async fn connect(&mut self, edges: &[(usize, usize)]) {
        for &(a, b) in edges {
            let addr = self.addrs[b].clone().unwrap();
            self.swarms[a].as_mut().unwrap().dial(addr).unwrap();
        }
        // Both ends: the listener learns of the connection a little after the dialler.
        let pairs: Vec<_> = edges
            .iter()
            .flat_map(|&(a, b)| [(a, self.ids[b].to_peer_id()), (b, self.ids[a].to_peer_id())])
            .collect();
        self.run_until("connections", |net| {
            pairs
                .iter()
                .all(|(a, p)| net.swarms[*a].as_ref().unwrap().is_connected(p))
        })
        .await;
    }

    /// Waits until every running node reaches `reachable` others and all views agree.
    async fn settle(&mut self, reachable: usize) {
        let live = self.live();
        self.run_until("views to agree", |net| {
            let mut digests = Vec::new();
            for &i in &live {
                if net.flood(i).reachable().len() != reachable {
                    return false;
                }
                match net.flood(i).view_digest() {
                    Some(d) => digests.push(d),
                    None => return false,
                }
            }
            digests.windows(2).all(|w| w[0] == w[1])
        })
        .await;
    }

    /// Nodes `0..origins` broadcast once each at the same moment; waits until every running
    /// node got every other's broadcast, and checks that none comes twice.
    async fn broadcast_from_each(&mut self, origins: usize) {
        let before = self.deliveries();
        let ids: Vec<MessageId> = (0..origins)
            .map(|o| {
                self.flood(o)
                    .broadcast(Bytes::from(format!("broadcast from {o}")))
                    .unwrap()
            })
            .collect();
        let live = self.live();
        let expected = before + live.len() * origins - origins;
        let deadline = Instant::now() + TIMEOUT;
        while self.deliveries() < expected && Instant::now() < deadline {
            self.step().await;
        }
        let missing: Vec<(usize, usize)> = live
            .iter()
            .flat_map(|&i| (0..origins).map(move |o| (i, o)))
            .filter(|&(i, o)| i != o && self.count(i, &ids[o]) == 0)
            .collect();
        if let Some(&(first, _)) = missing.first() {
            panic!(
                "{} of {} deliveries missing (node, origin): {missing:?}; {:?}",
                missing.len(),
                expected - before,
                self.flood(first).stats()
            );
        }
        // Late duplicates would show up now.
        self.run_for(Duration::from_millis(300)).await;
        assert_eq!(self.deliveries(), expected, "a message delivered twice");
    }

    /// How many times node `i` got message `id`.
    fn count(&self, i: usize, id: &MessageId) -> usize {
        self.got[i].iter().filter(|(m, ..)| m == id).count()
    }

    fn deliveries(&self) -> usize {
        self.got.iter().map(Vec::len).sum()
    }
}

fn mesh(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect()
}

fn line(n: usize) -> Vec<(usize, usize)> {
    (0..n - 1).map(|i| (i, i + 1)).collect()
}

fn ring(n: usize) -> Vec<(usize, usize)> {
    let mut edges = line(n);
    edges.push((n - 1, 0));
    edges
}

fn star(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (i, 0)).collect()
}

/// A random 3-regular graph on `n` (even) nodes: a ring plus a random perfect matching of
/// chords (connected by the ring), from a fixed seed so failures reproduce.
fn regular3(n: usize, mut seed: u64) -> Vec<(usize, usize)> {
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let ring = ring(n);
    let adjacent = |a: usize, b: usize| {
        ring.iter()
            .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
    };
    for _ in 0..10_000 {
        let mut nodes: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            nodes.swap(i, next() % (i + 1));
        }
        let chords: Vec<(usize, usize)> = nodes.chunks(2).map(|c| (c[0], c[1])).collect();
        if chords.iter().all(|&(a, b)| !adjacent(a, b)) {
            let mut edges = ring.clone();
            edges.extend(chords);
            return edges;
        }
    }
    panic!("no 3-regular graph found");
}

/// Every node multicasts once and broadcasts once on `edges`; subscribers are the even nodes.
/// Each subscriber gets every multicast exactly once, non-subscribers none, everyone every
/// broadcast exactly once, and no node receives any message twice on the wire.
async fn exactly_once_on(n: usize, edges: &[(usize, usize)]) -> Net {
    let mut net = Net::new(n, |_, _| {}).await;
    let subscribed: Vec<usize> = (0..n).step_by(2).collect();
    for &i in &subscribed {
        assert!(net.flood(i).subscribe(TOPIC).unwrap());
    }
    net.connect(edges).await;
    net.settle(n - 1).await;
    for i in 0..n {
        let mut expected: Vec<NodeId> = subscribed
            .iter()
            .filter(|s| **s != i)
            .map(|s| net.ids[*s].clone())
            .collect();
        let mut seen = net.flood(i).subscribers(TOPIC);
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "node {i}'s view of the subscribers");
    }
    let mut sent = Vec::new();
    for o in 0..n {
        let m = net
            .flood(o)
            .multicast(TOPIC, Bytes::from(format!("multicast from {o}")))
            .unwrap();
        let b = net
            .flood(o)
            .broadcast(Bytes::from(format!("broadcast from {o}")))
            .unwrap();
        sent.push((o, m, b));
    }
    let s = subscribed.len();
    let expected = s * (s - 1) + (n - s) * s + n * (n - 1);
    net.run_until("every delivery", |net| net.deliveries() >= expected)
        .await;
    // Late duplicates would show up now.
    net.run_for(Duration::from_millis(200)).await;
    for (o, m, b) in &sent {
        for i in 0..n {
            let (want_m, want_b) = if i == *o {
                (0, 0)
            } else {
                (usize::from(subscribed.contains(&i)), 1)
            };
            assert_eq!(net.count(i, m), want_m, "multicast from {o} at node {i}");
            assert_eq!(net.count(i, b), want_b, "broadcast from {o} at node {i}");
        }
    }
    assert_eq!(net.deliveries(), expected);
    for i in 0..n {
        let stats = net.flood(i).stats();
        assert_eq!(stats.duplicates, 0, "node {i} got a copy twice: {stats:?}");
        assert_eq!(stats.dropped, 0);
    }
    net
}

/// A node joining a settled full mesh of 12 over links to all 12 is sent headers, and fetches
/// each record it lacks once: it receives about 2 records per node (the one it asked for, and
/// each node's next version listing it), not every node's whole database (12 × 13 records
/// before summaries).
#[tokio::test]
async fn a_new_link_costs_headers_not_the_whole_database() {
    const N: usize = 12;
    let mut net = Net::new(N, |_, _| {}).await;
    net.connect(&mesh(N)).await;
    net.settle(N - 1).await;
    let newcomer = net.add(Config::default());
    net.run_until("the newcomer's address", |net| {
        net.addrs[newcomer].is_some()
    })
    .await;
    let edges: Vec<(usize, usize)> = (0..N).map(|i| (newcomer, i)).collect();
    net.connect(&edges).await;
    net.settle(N).await;
    let stats = net.flood(newcomer).stats();
    assert!(
        stats.records_received <= 3 * N as u64 + 3,
        "the newcomer received {} records: {stats:?}",
        stats.records_received
    );
    assert!(stats.records_stored >= N as u64, "{stats:?}");
    assert_eq!(net.flood(newcomer).reachable().len(), N);
}

/// A record's header travels down the record's tree: a node that lacks a new record hears of
/// it from its parent in the record node's tree and one announcer there, not from every
/// neighbour that stored it (SPEC.md §3). Node 0 links to nodes 1–6, each of which links to
/// all of nodes 7–12: when node 0 subscribes, nodes 1–6 get its record from it, and each of
/// nodes 7–12 is sent the header by 2 of its 6 neighbours (12 summaries, where passing it on
/// from every neighbour that stored it took 36), and still gets the record.
#[tokio::test]
async fn a_record_header_goes_down_the_tree_not_over_every_link() {
    const MIDDLE: std::ops::Range<usize> = 1..7;
    const FAR: std::ops::Range<usize> = 7..13;
    let mut net = Net::new(FAR.end, |_, _| {}).await;
    let mut edges: Vec<(usize, usize)> = MIDDLE.map(|m| (0, m)).collect();
    edges.extend(MIDDLE.flat_map(|m| FAR.map(move |f| (m, f))));
    net.connect(&edges).await;
    net.settle(FAR.end - 1).await;
    // Past the pacing of the records that formed the links.
    net.run_for(Duration::from_millis(1100)).await;
    let before = net.total(|s| s.summaries_sent);
    net.flood(0).subscribe("news").unwrap();
    let node0 = net.ids[0].clone();
    net.run_until("node 0's new record everywhere", |net| {
        (1..FAR.end).all(|i| {
            net.flood(i)
                .topics_of(&node0)
                .is_some_and(|t| t.iter().any(|t| t == "news"))
        })
    })
    .await;
    // Every node that stored it has passed its header on by now (headers wait 250 ms).
    net.run_for(Duration::from_secs(1)).await;
    let summaries = net.total(|s| s.summaries_sent) - before;
    assert!(
        summaries <= 2 * FAR.len() as u64,
        "{summaries} summaries passed node 0's header on to {} nodes",
        FAR.len()
    );
}

/// Fifty subscriptions made over one second are announced in at most three records (one per
/// `min_announce_interval`), not one per 20 ms burst: control traffic per link stays bounded
/// however fast a node changes (SPEC.md §3).
#[tokio::test]
async fn a_burst_of_changes_is_paced() {
    let mut net = Net::new(2, |_, _| {}).await;
    net.connect(&[(0, 1)]).await;
    net.settle(1).await;
    // Past the pacing interval of the records that formed the link.
    net.run_for(Duration::from_millis(1100)).await;
    let before = net.flood(1).stats().records_received;
    for i in 0..50 {
        net.flood(0).subscribe(&format!("topic {i}")).unwrap();
        net.run_for(Duration::from_millis(20)).await;
    }
    let node0 = net.ids[0].clone();
    net.run_until("every subscription at node 1", |net| {
        net.flood(1)
            .topics_of(&node0)
            .is_some_and(|t| t.len() == 50)
    })
    .await;
    let records = net.flood(1).stats().records_received - before;
    assert!(records <= 3, "{records} records for 50 changes in 1 s");
}

#[tokio::test]
async fn full_mesh_of_8_origin_sends_cover_everyone() {
    let n = 8;
    let mut net = exactly_once_on(n, &mesh(n)).await;
    // Nobody forwards: the frames sent are exactly the deliveries.
    let frames = net.total(|s| s.frames_sent);
    assert_eq!(frames as usize, net.deliveries());
    assert!(net.got.iter().flatten().all(|(.., hops)| *hops == 1));
}

#[tokio::test]
async fn line_of_6() {
    let net = exactly_once_on(6, &line(6)).await;
    // The far end is 5 hops from the first node.
    let far = net.got[5]
        .iter()
        .find(|(id, ..)| id.origin == net.ids[0])
        .unwrap();
    assert_eq!(far.3, 5);
}

#[tokio::test]
async fn ring_of_8() {
    exactly_once_on(8, &ring(8)).await;
}

#[tokio::test]
async fn star_of_7() {
    exactly_once_on(7, &star(7)).await;
}

#[tokio::test]
async fn random_3_regular_of_12() {
    exactly_once_on(12, &regular3(12, 7)).await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_joiners_get_later_messages() {
    let mut net = Net::new(4, |_, _| {}).await;
    for i in 1..4 {
        net.flood(i).subscribe(TOPIC).unwrap();
    }
    net.connect(&line(4)).await;
    net.settle(3).await;
    assert!(net.flood(2).unsubscribe(TOPIC).unwrap());
    assert!(!net.flood(2).unsubscribe(TOPIC).unwrap());
    let gone = net.ids[2].clone();
    net.run_until("the unsubscription to spread", |net| {
        !net.flood(0).subscribers(TOPIC).contains(&gone)
    })
    .await;
    let first = net
        .flood(0)
        .multicast(TOPIC, Bytes::from_static(b"one"))
        .unwrap();
    net.run_until("delivery", |net| {
        net.count(1, &first) == 1 && net.count(3, &first) == 1
    })
    .await;
    assert_eq!(
        net.count(2, &first),
        0,
        "an unsubscribed relay does not deliver"
    );

    // A node joins at the far end later, already subscribed.
    let late = net.add(Config::default());
    net.flood(late).subscribe(TOPIC).unwrap();
    net.run_until("its listen address", |net| net.addrs[late].is_some())
        .await;
    net.connect(&[(late, 3)]).await;
    net.settle(4).await;
    let second = net
        .flood(0)
        .multicast(TOPIC, Bytes::from_static(b"two"))
        .unwrap();
    net.run_until("delivery to the joiner", |net| {
        net.count(late, &second) == 1
    })
    .await;
    assert_eq!(net.count(late, &first), 0, "it missed what came before it");
    let hops = net.got[late].last().unwrap().3;
    assert_eq!(hops, 4);
}

#[tokio::test]
async fn ring_with_a_killed_node_delivers_the_other_way_round() {
    let n = 8;
    let mut net = Net::new(n, |_, _| {}).await;
    net.connect(&ring(n)).await;
    net.settle(n - 1).await;
    // Node 2 to node 3 is one hop; with 3 killed, the message must go round the other way.
    net.swarms[3] = None;
    net.settle(n - 2).await;
    let id = net
        .flood(2)
        .broadcast(Bytes::from_static(b"around"))
        .unwrap();
    let others: Vec<usize> = net.live().into_iter().filter(|i| *i != 2).collect();
    net.run_until("delivery to every survivor", |net| {
        others.iter().all(|i| net.count(*i, &id) == 1)
    })
    .await;
    let at4 = net.got[4].iter().find(|(m, ..)| *m == id).unwrap();
    assert_eq!(at4.3, 6, "2 → 1 → 0 → 7 → 6 → 5 → 4");
}

#[tokio::test]
async fn ttl_limits_hops() {
    let mut net = Net::new(6, |_, _| {}).await;
    net.connect(&line(6)).await;
    net.settle(5).await;
    let short = net
        .flood(0)
        .publish_with_ttl(None, Bytes::from_static(b"near"), 3)
        .unwrap();
    let long = net.flood(0).broadcast(Bytes::from_static(b"far")).unwrap();
    // Links keep order: once the later message is everywhere, the earlier one went as far as
    // it will go.
    net.run_until("the second broadcast", |net| {
        (1..6).all(|i| net.count(i, &long) == 1)
    })
    .await;
    for i in 1..6 {
        assert_eq!(net.count(i, &short), usize::from(i <= 3), "node {i}");
    }
    assert_eq!(net.got[3][0].3, 3);
}

#[tokio::test]
async fn bad_topics_and_oversize_payloads_are_rejected() {
    let mut net = Net::new(1, |_, c| c.max_frame = 4096).await;
    let f = net.flood(0);
    for bad in [String::new(), "x".repeat(256)] {
        assert!(matches!(
            f.subscribe(&bad),
            Err(FloodError::InvalidTopic(_))
        ));
        assert!(matches!(
            f.unsubscribe(&bad),
            Err(FloodError::InvalidTopic(_))
        ));
        assert!(matches!(
            f.multicast(&bad, Bytes::new()),
            Err(FloodError::InvalidTopic(_))
        ));
    }
    assert!(f.subscribe(&"é".repeat(127)).is_ok(), "254 bytes of UTF-8");
    // A record lists at most 1024 topics: the 1025th subscription is refused, not published.
    for i in 1..flood::wire::MAX_TOPICS {
        assert!(f.subscribe(&format!("topic-{i}")).unwrap());
    }
    assert_eq!(
        f.subscribe("one too many"),
        Err(FloodError::TooManyTopics(flood::wire::MAX_TOPICS))
    );
    assert!(
        !f.subscribe("topic-1").unwrap(),
        "a known topic is still fine"
    );
    let max = 4096 - flood::wire::DATA_OVERHEAD;
    assert_eq!(
        f.broadcast(Bytes::from(vec![0; max + 1])),
        Err(FloodError::TooLarge { size: max + 1, max })
    );
    assert!(f.broadcast(Bytes::from(vec![0; max])).is_ok());
}

#[tokio::test]
async fn full_queues_fail_the_send_then_recover() {
    // Three frames: the first broadcast goes with a LINKS frame (SPEC.md §3), then two DATA.
    let mut net = Net::new(2, |_, c| c.max_queue_frames = 3).await;
    net.connect(&[(0, 1)]).await;
    net.settle(1).await;
    // The swarm is not polled in between, so nothing leaves the queue.
    let a = net.flood(0).broadcast(Bytes::from_static(b"1")).unwrap();
    let b = net.flood(0).broadcast(Bytes::from_static(b"2")).unwrap();
    assert_eq!(
        net.flood(0).broadcast(Bytes::from_static(b"3")),
        Err(FloodError::QueueFull(1))
    );
    assert_eq!(net.flood(0).stats().dropped, 1);
    net.run_until("delivery", |net| {
        net.count(1, &a) == 1 && net.count(1, &b) == 1
    })
    .await;
    let c = net.flood(0).broadcast(Bytes::from_static(b"4")).unwrap();
    net.run_until("delivery after the queue drained", |net| {
        net.count(1, &c) == 1
    })
    .await;
}

#[tokio::test]
async fn a_stalled_peer_does_not_hold_up_the_others() {
    // 0 is connected to 1 and 2; 1 stops reading (its swarm is no longer polled).
    let mut net = Net::new(3, |_, c| c.max_queue_bytes = 1 << 20).await;
    net.connect(&[(0, 1), (0, 2)]).await;
    net.settle(2).await;
    let stalled = net.swarms[1].take();
    let payload = Bytes::from(vec![7u8; 128 * 1024]);
    for k in 0..48 {
        let id = net
            .flood(0)
            .broadcast(payload.clone())
            .unwrap_or_else(|e| panic!("broadcast {k}: {e}"));
        net.run_until("the live peer to get it", |net| net.count(2, &id) == 1)
            .await;
    }
    let stats = net.flood(0).stats();
    assert!(
        stats.dropped > 0,
        "the stalled peer's queue never filled: {stats:?}"
    );
    drop(stalled);
}

/// Garbage, a malformed body and a 2^40 length prefix on a flood stream close that stream; the
/// node keeps serving its other peers.
#[tokio::test]
async fn garbage_closes_only_that_stream() {
    let mut net = Net::new(2, |_, _| {}).await;
    net.connect(&[(0, 1)]).await;
    net.settle(1).await;
    let target = net.ids[1].to_peer_id();
    let addr = net.addrs[1].clone().unwrap();
    for garbage in [
        b"\x05\xff\xff\xff\xff\xffjunk".to_vec(),
        b"\x03\x7f\x00\x00".to_vec(),
        common::varint(1 << 40),
    ] {
        let (io, attacker_task) =
            common::write_garbage(&net.ca, addr.clone(), target, flood::PROTOCOL_NAME, garbage);
        let before = net.flood(1).stats().malformed;
        net.run_until("the garbage stream to close", |_| io.is_finished())
            .await;
        io.await.unwrap();
        assert_eq!(net.flood(1).stats().malformed, before + 1);
        let id = net
            .flood(0)
            .broadcast(Bytes::from_static(b"still there?"))
            .unwrap();
        net.run_until("delivery", |net| net.count(1, &id) == 1)
            .await;
        attacker_task.abort();
    }
}

/// A message sent the moment a connection is up (before any flood stream or record exists)
/// still arrives: frames wait for the stream instead of being dropped.
#[tokio::test]
async fn messages_sent_right_after_connecting_arrive() {
    let mut net = Net::new(2, |_, _| {}).await;
    net.connect(&[(0, 1)]).await;
    let id = net
        .flood(0)
        .broadcast(Bytes::from_static(b"first words"))
        .unwrap();
    let back = net
        .flood(1)
        .broadcast(Bytes::from_static(b"and the answer"))
        .unwrap();
    net.run_until("both deliveries", |net| {
        net.count(1, &id) == 1 && net.count(0, &back) == 1
    })
    .await;
}

/// Frames from keys that are no members are not delivered: the receiver asks the peer that
/// passed them on for the origin's certificate chain, and a chain from another CA, or none at
/// all, leaves them undelivered. Each stranger's key is parsed once for all its frames, and
/// members' messages still go through.
#[tokio::test]
async fn a_non_members_messages_are_not_delivered() {
    let mut net = Net::new(2, |_, c| c.member_timeout = Duration::from_millis(300)).await;
    net.connect(&[(0, 1)]).await;
    net.settle(1).await;
    let target = net.ids[1].to_peer_id();
    let addr = net.addrs[1].clone().unwrap();
    // One stranger with a chain from another CA (of the same name), one with no chain at all.
    let other_ca =
        CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap();
    let (foreign, foreign_tls) = node(&other_ca, KeyType::Secp256k1, Period::days(1));
    let stranger = NodeKey::generate(KeyType::Secp256k1).unwrap();
    let mut frames = Vec::new();
    for seqno in 1..=50 {
        frames.extend(data_frame(&stranger, seqno, 1, b"from a stranger"));
    }
    frames.extend(data_frame(&foreign, 1, 1, b"from another chain"));
    frames.extend(cert_frame(&foreign_tls));
    let before = net.flood(1).stats();
    let (io, attacker) = common::write_garbage(&net.ca, addr, target, flood::PROTOCOL_NAME, frames);
    net.run_until("every frame dropped", |net| {
        net.flood(1).stats().non_members >= before.non_members + 51
    })
    .await;
    net.run_for(Duration::from_millis(500)).await;
    let after = net.flood(1).stats();
    assert_eq!(after.delivered, before.delivered, "{after:?}");
    assert_eq!(after.non_members, before.non_members + 51, "{after:?}");
    assert_eq!(after.bad_certificates, before.bad_certificates + 1);
    assert_eq!(after.origins_checked, before.origins_checked + 2);
    assert!(net.got[1].is_empty());
    let id = net
        .flood(0)
        .broadcast(Bytes::from_static(b"member"))
        .unwrap();
    net.run_until("a member's message", |net| net.count(1, &id) == 1)
        .await;
    io.abort();
    attacker.abort();
}

/// A member makes up 5000 origins (any key signs) and sends a record and a message from each.
/// None is taken, parking stays within the member's share, and an honest newcomer still joins:
/// its subscription spreads and its broadcast arrives. (Before origins had to be members, 3616
/// made-up messages were delivered and 3618 made-up records stored within 4 s, on the way to
/// filling the 4096-node table.)
#[tokio::test]
async fn five_thousand_made_up_origins_fill_nothing() {
    const FAKES: usize = 5000;
    let mut net = Net::new(2, |_, c| c.member_timeout = Duration::from_millis(200)).await;
    net.connect(&[(0, 1)]).await;
    net.settle(1).await;
    let (attacker, tls) = node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let mut frames = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for _ in 0..FAKES {
        let fake = NodeKey::generate(KeyType::Secp256k1).unwrap();
        let me = flood::topology::short_id(attacker.node_id().as_bytes());
        frames.extend(record_frame(&fake, &fake, (now, 1), vec![me]));
        frames.extend(data_frame(&fake, 1, 1, b"made up"));
    }
    let before = net.flood(1).stats();
    let (io, swarm) = net.write_as(1, &attacker, &tls, frames);
    net.run_until("every made-up frame dropped", |net| {
        net.flood(1).stats().non_members >= before.non_members + 2 * FAKES as u64
    })
    .await;
    let after = net.flood(1).stats();
    assert_eq!(after.delivered, before.delivered, "{after:?}");
    assert_eq!(after.records_stored, before.records_stored, "{after:?}");
    assert_eq!(net.flood(1).reachable(), vec![net.ids[0].clone()]);
    let newcomer = net.add(Config::default());
    net.run_until("the newcomer's address", |net| {
        net.addrs[newcomer].is_some()
    })
    .await;
    net.connect(&[(newcomer, 1)]).await;
    net.flood(newcomer).subscribe(TOPIC).unwrap();
    net.run_until("the newcomer's subscription everywhere", |net| {
        (0..2).all(|i| net.flood(i).subscribers(TOPIC) == vec![net.ids[newcomer].clone()])
    })
    .await;
    let id = net
        .flood(newcomer)
        .broadcast(Bytes::from_static(b"hello"))
        .unwrap();
    net.run_until("the newcomer's broadcast", |net| {
        net.count(0, &id) == 1 && net.count(1, &id) == 1
    })
    .await;
    io.abort();
    swarm.abort();
}

/// A member forges node 0's next ten ids (signing them with its own key, the only one it has):
/// none is delivered, and node 0's real messages with those ids reach everyone.
#[tokio::test]
async fn a_member_cannot_forge_another_nodes_messages() {
    let mut net = Net::new(3, |_, _| {}).await;
    net.connect(&mesh(3)).await;
    net.settle(2).await;
    let first = net.flood(0).broadcast(Bytes::from_static(b"real")).unwrap();
    net.run_until("the first real message", |net| {
        net.count(1, &first) == 1 && net.count(2, &first) == 1
    })
    .await;
    let (attacker, tls) = node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let mut frames = Vec::new();
    for i in 1..=10 {
        frames.extend(signed_by(
            &attacker,
            &net.keys[0],
            (first.seqno + i, 10, 0),
            None,
            b"forged",
        ));
    }
    let (io, swarm) = net.write_as(1, &attacker, &tls, frames);
    net.run_until("the forgery to be caught", |net| {
        net.flood(1).stats().bad_signatures >= 1
    })
    .await;
    let mut real = Vec::new();
    for _ in 0..10 {
        real.push(net.flood(0).broadcast(Bytes::from_static(b"real")).unwrap());
    }
    net.run_until("every real message", |net| {
        real.iter()
            .all(|id| net.count(1, id) == 1 && net.count(2, id) == 1)
    })
    .await;
    net.run_for(Duration::from_millis(300)).await;
    for i in 0..3 {
        assert!(
            net.got[i]
                .iter()
                .all(|(.., payload, _)| &payload[..] == b"real"),
            "node {i} delivered a forged message"
        );
    }
    // Its stream is closed (the frames already read are checked and dropped first).
    let stats = net.flood(1).stats();
    assert!((1..=10).contains(&stats.bad_signatures), "{stats:?}");
    assert!(stats.malformed >= 1, "{stats:?}");
    io.abort();
    swarm.abort();
}

/// A message replayed by a member, at once and later, and one older than the replay window,
/// is not delivered again.
#[tokio::test]
async fn a_replayed_message_is_not_delivered_again() {
    let mut net = Net::new(2, |_, c| c.replay_window = 64).await;
    net.connect(&[(0, 1)]).await;
    net.settle(1).await;
    // A message as node 0 sends it, replayed below: the same origin, seqno and signature.
    let old = net.flood(0).broadcast(Bytes::from_static(b"once")).unwrap();
    let mut ids = vec![old.clone()];
    for _ in 0..64 {
        ids.push(net.flood(0).broadcast(Bytes::from_static(b"once")).unwrap());
    }
    let latest = ids.last().unwrap().clone();
    net.run_until("every message once", |net| {
        ids.iter().all(|id| net.count(1, id) == 1)
    })
    .await;
    let before = net.flood(1).stats();
    // The frames exactly as node 0 sent them (its signatures are deterministic, RFC 6979), as
    // a member that recorded them has them.
    let view = net.flood(0).view_digest().unwrap();
    let replays = [
        (latest.seqno, "the latest, inside the window"),
        (old.seqno, "the oldest, now below the window"),
    ];
    for (seqno, what) in replays {
        let frame = signed_by(&net.keys[0], &net.keys[0], (seqno, 10, view), None, b"once");
        let target = net.ids[1].to_peer_id();
        let addr = net.addrs[1].clone().unwrap();
        let (io, swarm) = common::write_garbage(&net.ca, addr, target, flood::PROTOCOL_NAME, frame);
        net.run_for(Duration::from_millis(1500)).await;
        io.abort();
        swarm.abort();
        assert!(
            ids.iter().all(|id| net.count(1, id) == 1),
            "{what}: delivered again"
        );
    }
    let after = net.flood(1).stats();
    assert_eq!(after.duplicates, before.duplicates + 1, "{after:?}");
    assert_eq!(after.too_old, before.too_old + 1, "{after:?}");
    assert_eq!(after.delivered, before.delivered);
}

/// A member's own message asking for 255 hops goes no further than the receivers' ttl.
#[tokio::test]
async fn a_member_cannot_send_a_message_further_than_the_ttl() {
    let mut net = Net::new(4, |_, c| c.ttl = 2).await;
    net.connect(&line(4)).await;
    net.settle(3).await;
    let (attacker, tls) = node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let mut frame = cert_frame(&tls);
    frame.extend(data_frame(&attacker, 1, 255, b"far"));
    let (io, swarm) = net.write_as(0, &attacker, &tls, frame);
    net.run_until("nodes 0 and 1 to get it", |net| {
        !net.got[0].is_empty() && !net.got[1].is_empty()
    })
    .await;
    net.run_for(Duration::from_millis(1000)).await;
    assert_eq!((net.got[0].len(), net.got[1].len()), (1, 1));
    assert!(
        net.got[2].is_empty() && net.got[3].is_empty(),
        "went past 2 hops: {:?}",
        net.got
    );
    io.abort();
    swarm.abort();
}

/// A RECORD frame (with its length prefix) claiming to be `of`'s, signed by `signer`.
fn record_frame(
    signer: &NodeKey,
    of: &NodeKey,
    (incarnation, version): (u64, u64),
    neighbours: Vec<u64>,
) -> Vec<u8> {
    let mut record = flood::wire::Record {
        key_type: of.key_type().code(),
        origin: Bytes::copy_from_slice(of.node_id().as_bytes()),
        incarnation,
        version,
        neighbours,
        topics: vec![],
        signature: Bytes::new(),
    };
    record.signature = signer.sign(&record.signed_message()).unwrap().into();
    let body = flood::wire::Frame::Record(record).encode();
    let mut frame = common::varint(body.len() as u64);
    frame.extend_from_slice(&body);
    frame
}

/// A member forges node 2's record: to node 2 itself with `(u64::MAX, u64::MAX)` (which made it
/// overflow its version), and to node 1 listing only the attacker as node 2's neighbour (which
/// routed node 2's traffic to the attacker). Neither is taken: node 2 still gets every
/// broadcast and multicast, and its own records still spread.
#[tokio::test]
async fn a_member_cannot_forge_a_record() {
    let mut net = Net::new(3, |_, c| c.digest_interval = Duration::from_millis(300)).await;
    net.connect(&mesh(3)).await;
    net.settle(2).await;
    let (attacker, tls) = node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let me = flood::topology::short_id(attacker.node_id().as_bytes());
    let victim = net.keys[2].clone();
    let mut tasks = Vec::new();
    for (target, neighbours) in [(2, vec![me]), (1, vec![me])] {
        let frame = record_frame(&attacker, &victim, (u64::MAX, u64::MAX), neighbours);
        let (io, swarm) = net.write_as(target, &attacker, &tls, frame);
        tasks.extend([io, swarm]);
    }
    net.run_until("both forgeries caught", |net| {
        net.flood(1).stats().bad_signatures == 1 && net.flood(2).stats().bad_signatures == 1
    })
    .await;
    // Several digest rounds: a forged record that had been stored would have spread by now.
    net.run_for(Duration::from_millis(1500)).await;
    net.flood(2).subscribe(TOPIC).unwrap();
    net.run_until("node 2's subscription to spread", |net| {
        net.flood(0).subscribers(TOPIC) == vec![net.ids[2].clone()]
    })
    .await;
    let broadcast = net.flood(0).broadcast(Bytes::from_static(b"b")).unwrap();
    let multicast = net
        .flood(1)
        .multicast(TOPIC, Bytes::from_static(b"m"))
        .unwrap();
    net.run_until("node 2 to get both", |net| {
        net.count(2, &broadcast) == 1 && net.count(2, &multicast) == 1
    })
    .await;
    for task in tasks {
        task.abort();
    }
}

/// A member's own record whose incarnation is an hour ahead of the receiver's clock is refused
/// (else every later record of that node would have to outgrow it).
#[tokio::test]
async fn a_record_from_the_future_is_refused() {
    let mut net = Net::new(1, |_, _| {}).await;
    let (member, tls) = node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let hour_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        + 3_600_000_000_000;
    let mut frame = cert_frame(&tls);
    frame.extend(record_frame(&member, &member, (hour_ahead, 1), vec![]));
    let (io, swarm) = net.write_as(0, &member, &tls, frame);
    net.run_until("the record refused", |net| {
        net.flood(0).stats().records_refused == 1
    })
    .await;
    assert_eq!(net.flood(0).stats().records_stored, 0);
    assert_eq!(net.flood(0).topics_of(member.node_id()), None);
    io.abort();
    swarm.abort();
}

/// A member publishing its own record far faster than the pacing of SPEC.md §3 allows (200
/// validly signed versions at once): node 0 stores a burst of 10 and drops the rest unchecked,
/// so node 1 behind it gets no more either; one member cannot make the network verify, store
/// and spread records at its will. Both nodes still pass broadcasts.
#[tokio::test]
async fn a_member_cannot_publish_records_faster_than_the_pacing() {
    let mut net = Net::new(2, |_, _| {}).await;
    net.connect(&line(2)).await;
    net.settle(1).await;
    let stored = |net: &mut Net<_>, i| net.flood(i).stats().records_stored;
    let before = [stored(&mut net, 0), stored(&mut net, 1)];
    let (member, tls) = node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut frame = cert_frame(&tls);
    for version in 1..=200 {
        frame.extend(record_frame(
            &member,
            &member,
            (incarnation, version),
            vec![],
        ));
    }
    let (io, swarm) = net.write_as(0, &member, &tls, frame);
    net.run_until("all 200 records read", |net| {
        net.flood(0).stats().records_received >= 200
    })
    .await;
    // Digest rounds for node 1 to fetch what node 0 took.
    net.run_for(Duration::from_millis(1500)).await;
    let taken = [
        stored(&mut net, 0) - before[0],
        stored(&mut net, 1) - before[1],
    ];
    let over = net.flood(0).stats().records_over_pace;
    eprintln!("stored {taken:?}, {over} over the pace");
    assert!(taken[0] <= 11 && taken[1] <= taken[0], "stored {taken:?}");
    assert!(over >= 189, "{over} dropped over the pace");
    assert_eq!(net.flood(0).stats().bad_signatures, 0);
    let b = net
        .flood(1)
        .broadcast(Bytes::from_static(b"still"))
        .unwrap();
    net.run_until("node 0 to get node 1's broadcast", |net| {
        net.count(0, &b) == 1
    })
    .await;
    io.abort();
    swarm.abort();
}

/// A node that refuses an origin (its deny list, network-wide) neither delivers nor relays that
/// origin's messages: in the line 0-1-2-3, node 2 refuses node 0, so node 3 never gets node 0's
/// broadcasts, while everyone else's still pass through node 2.
#[tokio::test]
async fn a_refused_origins_messages_are_not_relayed() {
    let mut net = Net::new(4, |_, _| {}).await;
    net.connect(&line(4)).await;
    net.settle(3).await;
    let refused = net.ids[0].clone();
    net.flood(2).set_origin_filter(move |node| *node != refused);
    let from_0 = net
        .flood(0)
        .broadcast(Bytes::from_static(b"from 0"))
        .unwrap();
    let from_1 = net
        .flood(1)
        .broadcast(Bytes::from_static(b"from 1"))
        .unwrap();
    net.run_until("node 1's broadcast everywhere", |net| {
        [0, 2, 3].iter().all(|&i| net.count(i, &from_1) == 1)
    })
    .await;
    net.run_until("node 0's broadcast at node 1", |net| {
        net.count(1, &from_0) == 1
    })
    .await;
    net.run_for(Duration::from_millis(500)).await;
    assert_eq!((net.count(2, &from_0), net.count(3, &from_0)), (0, 0));
    assert_eq!(net.flood(2).stats().refused_origins, 1);
}

/// Two connected nodes with settled views, node 1 reporting its peers' offences to the handle
/// returned, and a member (key and TLS config) that has not connected yet.
async fn two_nodes_and_a_member(
    tweak: impl Fn(usize, &mut Config),
) -> (Net, bcos_p2p::Offences, NodeKey, ca_tls::Config) {
    let mut net = Net::new(2, tweak).await;
    let offences = bcos_p2p::Offences::default();
    net.flood(1).set_offences(offences.clone());
    net.connect(&[(0, 1)]).await;
    net.settle(1).await;
    let (member, tls) = node(&net.ca, KeyType::Secp256k1, Period::days(1));
    (net, offences, member, tls)
}

/// A member sending far more than its budget at once: the excess is dropped unread and counted,
/// the member is reported once (not once per frame), and the other peer's messages still
/// arrive.
#[tokio::test]
async fn a_member_past_its_budget_has_the_excess_dropped() {
    let (mut net, offences, member, tls) =
        two_nodes_and_a_member(|_, c| c.budget_frames_per_s = 20).await;
    let mut frames = cert_frame(&tls);
    frames.extend((1..=200).flat_map(|seqno| data_frame(&member, seqno, 1, b"flood")));
    let before = net.flood(1).stats();
    let (io, swarm) = net.write_as(1, &member, &tls, frames);
    net.run_until("every frame judged", |net| {
        let s = net.flood(1).stats();
        s.delivered + s.over_budget >= before.delivered + before.over_budget + 200
    })
    .await;
    let stats = net.flood(1).stats();
    let from_member = net.got[1]
        .iter()
        .filter(|(id, ..)| id.origin == *member.node_id())
        .count();
    // Two seconds' worth at once, and what came back while they arrived.
    assert!((40..=60).contains(&from_member), "{from_member}: {stats:?}");
    assert_eq!(stats.over_budget as usize, 200 - from_member, "{stats:?}");
    let reported = offences.totals()[bcos_p2p::Offence::OverBudget.index()];
    assert!((1..=2).contains(&reported), "{reported} reports");
    let id = net.flood(0).broadcast(Bytes::from_static(b"mine")).unwrap();
    net.run_until("node 0's message", |net| net.count(1, &id) == 1)
        .await;
    io.abort();
    swarm.abort();
}

/// 16 nodes on a random 4-regular graph, two of them members that keep their links and records
/// (so they stay in everyone's trees) but drop every message frame they receive and never
/// announce nor serve one: the pair chosen is the one whose drops cut the most (origin,
/// receiver) pairs off the trees. Lazy repair still brings every broadcast and multicast of
/// every honest node to every honest node it is for, exactly once.
#[tokio::test]
async fn two_dropping_relays_cut_no_honest_node_off() {
    let n = 16;
    let edges = byzantine::regular(n, 4, 5);
    let mut net: Net<Dropper> = Net::start(n, |_, _| {}).await;
    let short: Vec<u64> = net
        .ids
        .iter()
        .map(|id| flood::topology::short_id(id.as_bytes()))
        .collect();
    let mut worst: Option<(usize, [usize; 2])> = None;
    for a in 0..n {
        for b in a + 1..n {
            if byzantine::connected(n, &edges, &[a, b]) {
                let lost = byzantine::cut_off(&short, &edges, &[a, b]);
                if worst.is_none_or(|(most, _)| lost > most) {
                    worst = Some((lost, [a, b]));
                }
            }
        }
    }
    let (lost, droppers) = worst.expect("two nodes whose loss leaves the others connected");
    assert!(lost > 0, "the droppers cut nobody off the trees");
    for d in droppers {
        net.swarms[d].as_mut().unwrap().behaviour_mut().dropping = true;
    }
    let honest: Vec<usize> = (0..n).filter(|i| !droppers.contains(i)).collect();
    let subscribed: Vec<usize> = (0..n).step_by(2).collect();
    for &i in &subscribed {
        net.flood(i).subscribe(TOPIC).unwrap();
    }
    net.connect(&edges).await;
    net.settle(n - 1).await;
    let mut sent = Vec::new();
    let mut expected = 0;
    for &o in &honest {
        for round in 0..3 {
            let m = net
                .flood(o)
                .multicast(TOPIC, Bytes::from(format!("multicast {round} from {o}")))
                .unwrap();
            let b = net
                .flood(o)
                .broadcast(Bytes::from(format!("broadcast {round} from {o}")))
                .unwrap();
            sent.push((o, m, b));
        }
        let subscribers = honest.iter().filter(|&&i| i != o && i % 2 == 0).count();
        expected += 3 * (subscribers + honest.len() - 1);
    }
    net.run_until("every delivery to an honest node", |net| {
        net.deliveries() >= expected
    })
    .await;
    // Late duplicates (a pulled copy after the real one) would show up now.
    net.run_for(Duration::from_millis(500)).await;
    for (o, m, b) in &sent {
        for &i in honest.iter().filter(|&&i| i != *o) {
            assert_eq!(
                net.count(i, m),
                usize::from(i % 2 == 0),
                "multicast from {o} at {i}"
            );
            assert_eq!(net.count(i, b), 1, "broadcast from {o} at {i}");
        }
    }
    assert_eq!(net.deliveries(), expected);
    let repaired: u64 = honest.iter().map(|&i| net.flood(i).stats().repaired).sum();
    assert!(repaired > 0, "nothing was repaired: {lost} losses expected");
}

/// A relay whose process stops with messages in flight to it (they reached its connections,
/// never its behaviour) does not cut off the nodes behind it in the origin's tree: their other
/// neighbours announce the messages and they pull them.
#[tokio::test]
async fn a_relay_that_fails_with_messages_in_flight_cuts_nobody_off() {
    let n = 10;
    let edges = byzantine::regular(n, 3, 3);
    let mut net = Net::new(n, |_, _| {}).await;
    net.connect(&edges).await;
    net.settle(n - 1).await;
    let short: Vec<u64> = net
        .ids
        .iter()
        .map(|id| flood::topology::short_id(id.as_bytes()))
        .collect();
    // The child of node 0 in node 0's tree with the most nodes behind it.
    let parent = byzantine::tree(&short, &edges, 0);
    let behind = |relay: usize| {
        (0..n)
            .filter(|&i| {
                let mut at = parent[i];
                while let Some(p) = at {
                    if p == relay {
                        return true;
                    }
                    at = parent[p];
                }
                false
            })
            .count()
    };
    let relay = (1..n)
        .filter(|&r| parent[r] == Some(0) && byzantine::connected(n, &edges, &[r]))
        .max_by_key(|&r| behind(r))
        .expect("a child of node 0");
    assert!(behind(relay) > 0, "node {relay} relays nothing of node 0's");
    // No longer polled: what reaches its connections never reaches its behaviour.
    let frozen = net.swarms[relay].take();
    let ids: Vec<MessageId> = (0..5)
        .map(|k| {
            net.flood(0)
                .broadcast(Bytes::from(format!("in flight {k}")))
                .unwrap()
        })
        .collect();
    net.run_for(Duration::from_millis(20)).await;
    drop(frozen);
    let others: Vec<usize> = (1..n).filter(|i| *i != relay).collect();
    net.run_until("every message at every survivor", |net| {
        others
            .iter()
            .all(|&i| ids.iter().all(|id| net.count(i, id) == 1))
    })
    .await;
    net.run_for(Duration::from_millis(300)).await;
    for &i in &others {
        for id in &ids {
            assert_eq!(net.count(i, id), 1, "node {i}");
        }
    }
    let repaired: u64 = others.iter().map(|&i| net.flood(i).stats().repaired).sum();
    assert!(repaired > 0);
}

/// Every node of a full mesh of 24 broadcasts the moment its connections are up, while every
/// view of the graph is still changing: each broadcast reaches every node exactly once, and
/// the data frames stay about one per delivery (down the trees, the rest pulled after an
/// announcement) instead of one per link per message, as flooding would (24 × 23 × 22).
/// `MESH_N=128 cargo test --release --test flood broadcasts_while` runs it at 128 nodes.
#[tokio::test]
async fn broadcasts_while_a_mesh_forms_arrive_once_without_flooding() {
    let _one_at_a_time = MESH_FORMING.lock().await;
    let n: usize = std::env::var("MESH_N").map_or(24, |v| v.parse().unwrap());
    let mut net = Net::new(n, |_, _| {}).await;
    net.connect(&mesh(n)).await;
    net.broadcast_from_each(n).await;
    let expected = n * (n - 1);
    let frames = net.total(|s| s.frames_sent);
    assert!(
        frames <= 2 * expected as u64,
        "{frames} data frames for {expected} deliveries"
    );
    // Each came straight from its origin, which says whom it sent it to (LINKS): a node
    // announces it only to the neighbours whose announcer it is, not to every neighbour its
    // lagging records do not link with the origin.
    let announced = net.total(|s| s.ihave_ids);
    assert!(
        announced <= 4 * expected as u64,
        "{announced} ids announced for {expected} deliveries"
    );
}

/// A broadcast sent the moment a full mesh forms, whose copy from the origin one node loses
/// (its link drops it): the origin's LINKS still list that node, so nobody else treats it as
/// cut off, but the node after it in the list announces the message there, and it pulls it.
#[tokio::test]
async fn a_copy_lost_between_the_origin_and_a_node_it_lists_is_repaired() {
    let _one_at_a_time = MESH_FORMING.lock().await;
    let n = 8;
    let mut net: Net<Dropper> = Net::start(n, |_, _| {}).await;
    let origin = net.ids[0].to_peer_id();
    let victim = 3;
    net.swarms[victim]
        .as_mut()
        .unwrap()
        .behaviour_mut()
        .drop_data_from = Some(origin);
    net.connect(&mesh(n)).await;
    net.broadcast_from_each(1).await;
    assert_eq!(net.flood(victim).stats().repaired, 1);
}

/// Broadcasts sent while a node joins a settled full mesh: every old node is out of step (its
/// record lags its new link: records are paced), yet each broadcast came to it straight from
/// its origin, which sends its own broadcast to every neighbour. So it announces the message
/// only to the neighbours the origin does not link with (the newcomer) and to those whose
/// announcer it is (three each while out of step): about four ids per delivery, not one from
/// every node to every other (n − 1 per delivery, the cost that dominated a forming 128-node
/// mesh's broadcasts).
#[tokio::test]
async fn broadcasts_while_a_node_joins_are_not_announced_to_everyone() {
    let _one_at_a_time = MESH_FORMING.lock().await;
    let n = 12;
    // Records at least 2 s apart: the old nodes' next ones (with the newcomer) wait while the
    // broadcasts go.
    let paced = |_, c: &mut Config| c.min_announce_interval = Duration::from_secs(2);
    let mut net = Net::new(n, paced).await;
    net.connect(&mesh(n)).await;
    net.settle(n - 1).await;
    let new = net.add(Config::default());
    net.run_until("the newcomer's address", |net| net.addrs[new].is_some())
        .await;
    let edges: Vec<_> = (0..n).map(|i| (new, i)).collect();
    net.connect(&edges).await;
    let newcomer = net.ids[new].clone();
    net.run_until("flood links to the newcomer", |net| {
        (0..n).all(|i| net.flood(i).neighbours().contains(&newcomer))
    })
    .await;
    let views: Vec<_> = (0..n).map(|i| net.flood(i).view_digest()).collect();
    assert!(
        views.windows(2).all(|w| w[0] == w[1]),
        "the old nodes' records (still without the newcomer) agree"
    );
    let before = net.total(|s| s.ihave_ids);
    net.broadcast_from_each(n).await;
    // Each to the n − 1 other old nodes and the newcomer.
    let expected = n * n;
    let announced = net.total(|s| s.ihave_ids) - before;
    assert!(
        announced <= 5 * expected as u64,
        "{announced} ids announced for {expected} deliveries"
    );
}

/// The record traffic of a forming full mesh of 16, and of the same mesh idle for 30 s, held
/// against the bounds of SPEC.md §3: each node publishes at most `5 + T / 8 s` records in `T`
/// seconds, each link carries a record version at most once per direction (no records are
/// passed on in a full mesh, only headers), and an idle mesh sends digests only.
#[tokio::test]
async fn a_forming_and_an_idle_mesh_send_records_within_the_bound() {
    let _one_at_a_time = MESH_FORMING.lock().await;
    let n = 16;
    let mut net = Net::new(n, |_, _| {}).await;
    let started = Instant::now();
    net.connect(&mesh(n)).await;
    net.settle(n - 1).await;
    let formation = started.elapsed().as_secs_f64();
    let stats: Vec<_> = (0..n).map(|i| net.flood(i).stats()).collect();
    let own_bound = 5.0 + formation / 8.0;
    let published: u64 = stats.iter().map(|s| s.records_stored).sum();
    let received: u64 = stats.iter().map(|s| s.records_received).sum();
    let links = (n * (n - 1)) as f64; // directed
    // Every version a node stores was published by its node within the bound ...
    assert!(
        published as f64 <= n as f64 * (n - 1) as f64 * own_bound,
        "{published} records stored in {formation:.1} s"
    );
    // ... and crossed at most one link into each node, bar the few asked again after 2 s
    // (a record both pushed by its node and fetched: at most twice).
    assert!(
        received <= 2 * published,
        "{received} records received for {published} versions stored"
    );
    assert!(
        (received as f64) <= links * own_bound,
        "{received} records over {links} links in {formation:.1} s"
    );
    let before: Vec<_> = (0..n)
        .map(|i| (net.flood(i).stats(), net.flood(i).traffic().bytes_out()))
        .collect();
    net.run_for(Duration::from_secs(30)).await;
    let mut idle_bytes = 0;
    for (i, (s, bytes)) in before.iter().enumerate() {
        let now = net.flood(i).stats();
        assert_eq!(
            now.records_sent, s.records_sent,
            "node {i} sent records while idle"
        );
        assert_eq!(
            now.summaries_sent, s.summaries_sent,
            "node {i} resynced while idle"
        );
        idle_bytes += net.flood(i).traffic().bytes_out() - bytes;
    }
    // Digests only: 9 bytes per link and direction every 5 s (7 rounds at most in 30 s).
    assert!(
        idle_bytes as f64 <= links * 9.0 * 7.0,
        "{idle_bytes} bytes in 30 s of idle over {links} directed links"
    );
    eprintln!(
        "formation {formation:.1} s: {published} versions, {received} records received; idle: {:.2} B/link/s",
        idle_bytes as f64 / links * 2.0 / 30.0
    );
}

/// A member that sends control frames as fast as it can write them (IHAVEs here, each of 64
/// made-up ids the node must look up) has what is past its control budget dropped unread and
/// is reported; the node's other peers keep being served.
#[tokio::test]
async fn a_member_flooding_control_frames_has_the_excess_dropped() {
    const SENT: u64 = 5000;
    let (mut net, offences, member, tls) = two_nodes_and_a_member(|_, _| {}).await;
    let mut frames = cert_frame(&tls);
    for i in 0..SENT {
        let ids: Vec<(u64, u64)> = (0..64).map(|j| (0xdead_0000 + j, i + 1)).collect();
        for ids in flood::wire::Ids::new(ids) {
            let body = flood::wire::Frame::Ihave(ids).encode();
            frames.extend(common::varint(body.len() as u64));
            frames.extend_from_slice(&body);
        }
    }
    let (io, swarm) = net.write_as(1, &member, &tls, frames);
    net.run_until("the member reported", |_| {
        offences.totals()[bcos_p2p::Offence::OverBudget.index()] >= 1
    })
    .await;
    // Two seconds' worth of the default budget (1000 a second) at once, and what came back
    // while the rest arrived: the others are dropped unread.
    net.run_until("every frame judged", |net| {
        let s = net.flood(1).stats();
        s.control_over_budget + 2000 + 1000 >= SENT
    })
    .await;
    let dropped = net.flood(1).stats().control_over_budget;
    assert!(dropped <= SENT - 2000, "{dropped} of {SENT} dropped");
    let id = net.flood(0).broadcast(Bytes::from_static(b"mine")).unwrap();
    net.run_until("node 0's message", |net| net.count(1, &id) == 1)
        .await;
    io.abort();
    swarm.abort();
}
