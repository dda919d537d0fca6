//! Flood benchmark: ours against libp2p-floodsub and libp2p-gossipsub, in one process, on the
//! same transport (TCP loopback + CA-TLS + yamux, sockets counting their bytes).
//!
//! Two topologies of 16 nodes: (a) a full mesh with half the nodes subscribed, (b) a random
//! 3-regular graph with every node subscribed. Nodes publish 1 KiB messages in turn; every
//! delivery is timed from its publish. `wire_per_delivered` = bytes read off every socket during
//! the publish phase ÷ (distinct deliveries × payload bytes). Then signed throughput on the mesh
//! (`signed_msgs_per_s`, `gossipsub_signed_msgs_per_s`: see `flood/throughput.rs`), and, per key
//! type, the time a
//! receiver spends accepting one new message id (signed bytes + signature check):
//! `verify_us_per_msg_<key type>`. Last, ours on a random 4-regular graph of 16 nodes, all
//! subscribed, two of which drop every message frame they receive (they keep their links and
//! records, so they stay in the trees): `byzantine_delivery` is the share of (message, honest
//! node) pairs delivered, `byzantine_p99_ms` the 99th percentile of their latencies; lazy
//! repair (flood SPEC §5) is what brings them round the droppers.
//!
//! `cargo bench --bench flood [-- --quick]`; the last line is JSON (see docs/ARCHITECTURE.md).

#[path = "../tests/byzantine/mod.rs"]
mod byzantine;
#[path = "support/mod.rs"]
mod support;
#[path = "flood/throughput.rs"]
mod throughput;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType,
    ca_tls::pki::{CertificateAuthority, Period},
    flood,
};
use bytes::Bytes;
use futures::StreamExt as _;
use libp2p::{
    Multiaddr, PeerId, floodsub, gossipsub,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use support::{Counter, build_counting_swarm, listen_local, quantile};
use tokio::sync::mpsc;

const NODES: usize = 16;
const PAYLOAD: usize = 1024;
const TOPIC: &str = "bench";

/// What the bench needs from each pub/sub system.
trait Pubsub: NetworkBehaviour<ToSwarm: Send> + Send + 'static {
    fn subscribe(&mut self);
    /// Publishes; false if the system refused.
    fn publish(&mut self, data: Bytes) -> bool;
    /// The payload, if the event is a delivery.
    fn delivery(event: Self::ToSwarm) -> Option<Bytes>;
    fn connected(&mut self, _peer: PeerId) {}
}

impl Pubsub for flood::Behaviour {
    fn subscribe(&mut self) {
        flood::Behaviour::subscribe(self, TOPIC).expect("valid topic");
    }
    fn publish(&mut self, data: Bytes) -> bool {
        self.multicast(TOPIC, data).is_ok()
    }
    fn delivery(event: flood::Event) -> Option<Bytes> {
        match event {
            flood::Event::Message { payload, .. } => Some(payload),
            _ => None,
        }
    }
}

impl Pubsub for byzantine::Dropper {
    fn subscribe(&mut self) {
        Pubsub::subscribe(&mut self.inner);
    }
    fn publish(&mut self, data: Bytes) -> bool {
        Pubsub::publish(&mut self.inner, data)
    }
    fn delivery(event: flood::Event) -> Option<Bytes> {
        flood::Behaviour::delivery(event)
    }
}

impl Pubsub for floodsub::Behaviour {
    fn subscribe(&mut self) {
        floodsub::Behaviour::subscribe(self, floodsub::Topic::new(TOPIC));
    }
    fn publish(&mut self, data: Bytes) -> bool {
        // `publish` drops messages of nodes that do not subscribe themselves; `publish_any`
        // sends them like the other systems do.
        self.publish_any(floodsub::Topic::new(TOPIC), data);
        true
    }
    fn delivery(event: floodsub::Event) -> Option<Bytes> {
        match event {
            floodsub::Event::Message(m) => Some(m.data),
            _ => None,
        }
    }
    fn connected(&mut self, peer: PeerId) {
        // Floodsub sends only to the peers in its partial view.
        self.add_node_to_partial_view(peer);
    }
}

impl Pubsub for gossipsub::Behaviour {
    fn subscribe(&mut self) {
        gossipsub::Behaviour::subscribe(self, &gossipsub::IdentTopic::new(TOPIC))
            .expect("subscribe");
    }
    fn publish(&mut self, data: Bytes) -> bool {
        gossipsub::Behaviour::publish(self, gossipsub::IdentTopic::new(TOPIC), data.to_vec())
            .is_ok()
    }
    fn delivery(event: gossipsub::Event) -> Option<Bytes> {
        match event {
            gossipsub::Event::Message { message, .. } => Some(message.data.into()),
            _ => None,
        }
    }
}

enum Command {
    Subscribe,
    Dial(Multiaddr),
    Publish(Bytes),
}

struct NodeHandle {
    commands: mpsc::UnboundedSender<Command>,
    counter: Counter,
    addr: Multiaddr,
    connections: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// (node, message index, when it arrived).
type Delivery = (usize, u64, Instant);

async fn spawn_node<B: Pubsub>(
    index: usize,
    ca: &CertificateAuthority,
    make: impl FnOnce(usize, &bcos_p2p::NodeKey, &bcos_p2p::ca_tls::Config) -> B,
    deliveries: mpsc::UnboundedSender<Delivery>,
) -> NodeHandle {
    let key = bcos_p2p::NodeKey::generate(KeyType::Secp256k1).expect("key");
    let cert = ca
        .issue_node(&key, "CN=node", Period::days(1))
        .expect("cert");
    let tls = bcos_p2p::ca_tls::Config::new(
        &key,
        ca.node_chain(cert).expect("chain"),
        vec![ca.root_der().expect("root")],
    )
    .expect("tls");
    let (mut swarm, counter) =
        build_counting_swarm(&key, &tls, |_| make(index, &key, &tls)).expect("swarm");
    let addr = listen_local(&mut swarm).await;
    let (commands, mut rx) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (conns, refusals) = (connections.clone(), refused.clone());
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Subscribe) => swarm.behaviour_mut().subscribe(),
                    Some(Command::Dial(addr)) => swarm.dial(addr).expect("dial"),
                    Some(Command::Publish(data)) => {
                        if !swarm.behaviour_mut().publish(data) {
                            refusals.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => return,
                },
                event = swarm.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        conns.fetch_add(1, Ordering::Relaxed);
                        swarm.behaviour_mut().connected(peer_id);
                    }
                    SwarmEvent::ConnectionClosed { .. } => {
                        conns.fetch_sub(1, Ordering::Relaxed);
                    }
                    SwarmEvent::Behaviour(e) => {
                        if let Some(data) = B::delivery(e) {
                            let msg = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
                            let _ = deliveries.send((index, msg, Instant::now()));
                        }
                    }
                    _ => {}
                },
            }
        }
    });
    NodeHandle {
        commands,
        counter,
        addr,
        connections,
        refused,
        task,
    }
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    delivery: f64,
    dup_deliveries: usize,
    wire_per_delivered: f64,
    p50_ms: f64,
    p99_ms: f64,
    refused: usize,
}

struct Run {
    messages: usize,
    warmup: Duration,
    interval: Duration,
}

/// Starts [`NODES`] nodes made by `make` (given their index), subscribes those marked in
/// `subscribed`, dials `edges`, waits until every connection is up and then `warmup`
/// (subscriptions spread, gossipsub builds its mesh, our records settle); returns the nodes
/// and their deliveries.
async fn start_nodes<B: Pubsub>(
    edges: &[(usize, usize)],
    subscribed: &[bool],
    warmup: Duration,
    make: impl Fn(usize, &bcos_p2p::NodeKey, &bcos_p2p::ca_tls::Config) -> B,
) -> (Vec<NodeHandle>, mpsc::UnboundedReceiver<Delivery>) {
    let ca = CertificateAuthority::new_root(KeyType::Secp256k1, "CN=bench", Period::days(1))
        .expect("ca");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        nodes.push(spawn_node(i, &ca, &make, tx.clone()).await);
    }
    for (i, node) in nodes.iter().enumerate() {
        if subscribed[i] {
            node.commands.send(Command::Subscribe).expect("node runs");
        }
    }
    let mut degree = [0; NODES];
    for &(a, b) in edges {
        nodes[a]
            .commands
            .send(Command::Dial(nodes[b].addr.clone()))
            .expect("node runs");
        degree[a] += 1;
        degree[b] += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..NODES).any(|i| nodes[i].connections.load(Ordering::Relaxed) < degree[i]) {
        assert!(Instant::now() < deadline, "connections did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(warmup).await;
    while rx.try_recv().is_ok() {}
    (nodes, rx)
}

/// Runs `run` on `edges` with nodes made by `make` (given their index); `droppers` publish
/// nothing and their deliveries are not expected.
async fn measure<B: Pubsub>(
    run: &Run,
    edges: &[(usize, usize)],
    subscribed: &[bool],
    droppers: &[usize],
    make: impl Fn(usize, &bcos_p2p::NodeKey, &bcos_p2p::ca_tls::Config) -> B,
) -> Outcome {
    let (nodes, mut rx) = start_nodes(edges, subscribed, run.warmup, make).await;

    let wire_before: u64 = nodes.iter().map(|n| n.counter.read_bytes()).sum();
    let mut published = Vec::with_capacity(run.messages);
    let mut expected = 0;
    let mut ticker = tokio::time::interval(run.interval);
    let origins: Vec<usize> = (0..NODES).filter(|i| !droppers.contains(i)).collect();
    for m in 0..run.messages {
        ticker.tick().await;
        let origin = origins[m % origins.len()];
        let mut data = vec![0u8; PAYLOAD];
        data[..8].copy_from_slice(&(m as u64).to_be_bytes());
        published.push(Instant::now());
        nodes[origin]
            .commands
            .send(Command::Publish(data.into()))
            .expect("node runs");
        expected += origins
            .iter()
            .filter(|i| **i != origin && subscribed[**i])
            .count();
    }
    let mut got: HashMap<(usize, u64), usize> = HashMap::new();
    let mut latencies = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    let mut grace_end: Option<Instant> = None;
    loop {
        let until = grace_end.unwrap_or(end).min(end);
        let Ok(Some((node, msg, at))) =
            tokio::time::timeout(until.saturating_duration_since(Instant::now()), rx.recv()).await
        else {
            break;
        };
        let count = got.entry((node, msg)).or_default();
        *count += 1;
        if *count == 1 {
            latencies.push(at.duration_since(published[msg as usize]).as_secs_f64() * 1e3);
        }
        if got.len() >= expected && grace_end.is_none() {
            // Wait a little for late duplicates.
            grace_end = Some(Instant::now() + Duration::from_millis(300));
        }
    }
    let wire_after: u64 = nodes.iter().map(|n| n.counter.read_bytes()).sum();
    let refused = nodes
        .iter()
        .map(|n| n.refused.load(Ordering::Relaxed))
        .sum();
    for node in nodes {
        node.task.abort();
    }
    let distinct = got.len();
    let dup_deliveries = got.values().map(|c| c - 1).sum();
    latencies.sort_by(f64::total_cmp);
    Outcome {
        delivery: distinct as f64 / expected as f64,
        dup_deliveries,
        wire_per_delivered: (wire_after - wire_before) as f64 / (distinct * PAYLOAD) as f64,
        p50_ms: if latencies.is_empty() {
            f64::NAN
        } else {
            quantile(&latencies, 0.5)
        },
        p99_ms: if latencies.is_empty() {
            f64::NAN
        } else {
            quantile(&latencies, 0.99)
        },
        refused,
    }
}

fn mesh() -> Vec<(usize, usize)> {
    (0..NODES)
        .flat_map(|a| (a + 1..NODES).map(move |b| (a, b)))
        .collect()
}

/// A random 3-regular graph: a ring plus a random perfect matching of chords (fixed seed).
fn regular3(mut seed: u64) -> Vec<(usize, usize)> {
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let ring: Vec<(usize, usize)> = (0..NODES).map(|i| (i, (i + 1) % NODES)).collect();
    let adjacent = |a: usize, b: usize| a.abs_diff(b) == 1 || a.abs_diff(b) == NODES - 1;
    loop {
        let mut nodes: Vec<usize> = (0..NODES).collect();
        for i in (1..NODES).rev() {
            nodes.swap(i, next() % (i + 1));
        }
        let chords: Vec<(usize, usize)> = nodes.chunks(2).map(|c| (c[0], c[1])).collect();
        if chords.iter().all(|&(a, b)| !adjacent(a, b)) {
            return ring.into_iter().chain(chords).collect();
        }
    }
}

/// Ours as a CA-mode node runs it: origins must be members (their chains checked once).
fn ours(_: usize, key: &bcos_p2p::NodeKey, tls: &bcos_p2p::ca_tls::Config) -> flood::Behaviour {
    let mut flood = flood::Behaviour::new(key, flood::Config::default(), tls.node_ids().clone());
    flood.set_membership(bcos_p2p::security::ca_membership(tls));
    flood
}

/// The nodes that drop every message frame in the byzantine run: the first two, not linked,
/// whose loss leaves the others connected (each relays in several of the 16 trees).
fn droppers(edges: &[(usize, usize)]) -> [usize; 2] {
    (0..NODES)
        .flat_map(|a| (a + 1..NODES).map(move |b| [a, b]))
        .find(|&[a, b]| !edges.contains(&(a, b)) && byzantine::connected(NODES, edges, &[a, b]))
        .expect("two nodes whose loss leaves the others connected")
}

fn stock_floodsub(
    _: usize,
    key: &bcos_p2p::NodeKey,
    _: &bcos_p2p::ca_tls::Config,
) -> floodsub::Behaviour {
    floodsub::Behaviour::new(key.peer_id())
}

/// Gossipsub for 16 nodes: the default mesh degree (6, 5–12), signed messages, and a 500 ms
/// heartbeat so the mesh forms within the warm-up.
fn stock_gossipsub(
    _: usize,
    key: &bcos_p2p::NodeKey,
    _: &bcos_p2p::ca_tls::Config,
) -> gossipsub::Behaviour {
    let kp = key.keypair().expect("the bench's keys are secp256k1");
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .expect("gossipsub config");
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(kp.clone()), config)
        .expect("gossipsub")
}

/// Microseconds a receiver spends accepting one new message id of a 1 KiB DATA frame from an
/// origin of `key_type`: building the signed bytes (with the payload's SHA-256) and verifying
/// the signature, as `on_data` does once per id. Median of `rounds` rounds of 50.
fn verify_us_per_msg(key_type: KeyType, rounds: usize) -> f64 {
    let key = bcos_p2p::NodeKey::generate(key_type).expect("key");
    let mut data = flood::wire::Data {
        key_type: key_type.code(),
        origin: Bytes::copy_from_slice(key.node_id().as_bytes()),
        seqno: 1,
        ttl: 10,
        hops: 1,
        view: 7,
        topic: None,
        signature: Bytes::new(),
        payload: Bytes::from(vec![7u8; PAYLOAD]),
    };
    data.signature = key.sign(&data.signed_message()).expect("sign").into();
    let verifier = key.node_id().verifier();
    let mut per_msg: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..50 {
                assert!(verifier.verify(&data.signed_message(), &data.signature));
            }
            start.elapsed().as_secs_f64() * 1e6 / 50.0
        })
        .collect();
    per_msg.sort_by(f64::total_cmp);
    per_msg[per_msg.len() / 2]
}

fn row(name: &str, o: &Outcome) {
    println!(
        "{name:<28} {:>8.3} {:>6} {:>10.3} {:>8.2} {:>8.2} {:>7}",
        o.delivery, o.dup_deliveries, o.wire_per_delivered, o.p50_ms, o.p99_ms, o.refused
    );
}

fn main() {
    // Malloc as the `bcos-p2p` binary sets it (bcos_p2p::malloc).
    bcos_p2p::malloc::tune();
    let quick = std::env::args().any(|a| a == "--quick");
    let run = if quick {
        Run {
            messages: 96,
            warmup: Duration::from_secs(2),
            interval: Duration::from_millis(4),
        }
    } else {
        Run {
            messages: 480,
            warmup: Duration::from_secs(3),
            interval: Duration::from_millis(4),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let half: Vec<bool> = (0..NODES).map(|i| i % 2 == 0).collect();
    let all = vec![true; NODES];
    let (mesh, regular, regular4) = (mesh(), regular3(11), byzantine::regular(NODES, 4, 5));
    let dropping = droppers(&regular4);
    let byzantine_node =
        |i: usize, key: &bcos_p2p::NodeKey, tls: &bcos_p2p::ca_tls::Config| byzantine::Dropper {
            inner: ours(i, key, tls),
            dropping: dropping.contains(&i),
            drop_data_from: None,
        };
    let (o_mesh, o_reg, f_mesh, f_reg, g_mesh, o_byz) = runtime.block_on(async {
        (
            measure(&run, &mesh, &half, &[], ours).await,
            measure(&run, &regular, &all, &[], ours).await,
            measure(&run, &mesh, &half, &[], stock_floodsub).await,
            measure(&run, &regular, &all, &[], stock_floodsub).await,
            measure(&run, &mesh, &half, &[], stock_gossipsub).await,
            measure(&run, &regular4, &all, &dropping, byzantine_node).await,
        )
    });
    println!(
        "flood: {NODES} nodes, {} messages of {PAYLOAD} B, one every {:?}",
        run.messages, run.interval
    );
    println!(
        "{:<28} {:>8} {:>6} {:>10} {:>8} {:>8} {:>7}",
        "system / topology", "delivery", "dups", "wire/deliv", "p50 ms", "p99 ms", "refused"
    );
    row("ours / mesh (half subs)", &o_mesh);
    row("floodsub / mesh", &f_mesh);
    row("gossipsub / mesh", &g_mesh);
    row("ours / 3-regular (all subs)", &o_reg);
    row("floodsub / 3-regular", &f_reg);
    row("ours / 4-regular, 2 droppers", &o_byz);
    let rounds = if quick { 5 } else { 21 };
    let verify: Vec<(KeyType, f64)> = KeyType::ALL
        .into_iter()
        .map(|t| (t, verify_us_per_msg(t, rounds)))
        .collect();
    for (t, us) in &verify {
        println!("accepting one new 1 KiB message from a {t} origin: {us:.1} us (signature check)");
    }
    let time = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    let (signed, g_signed) = runtime.block_on(async {
        (
            throughput::signed_msgs_per_s(run.warmup, time, ours).await,
            throughput::signed_msgs_per_s(run.warmup, time, stock_gossipsub).await,
        )
    });
    println!(
        "signed broadcasts of {PAYLOAD} B delivered to all {NODES} nodes of a mesh per second: ours {signed:.0}, gossipsub (signed, strict) {g_signed:.0}"
    );
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{{\"mesh_delivery\":{},\"mesh_dup_deliveries\":{},\"mesh_wire_per_delivered\":{},\"mesh_p99_ms\":{},\"regular_delivery\":{},\"regular_dup_deliveries\":{},\"regular_wire_per_delivered\":{},\"floodsub_mesh_wire_per_delivered\":{},\"gossipsub_mesh_wire_per_delivered\":{},\"gossipsub_mesh_p99_ms\":{},\"floodsub_regular_wire_per_delivered\":{},\"ratio_p99_vs_gossipsub\":{},\"byzantine_delivery\":{},\"byzantine_p99_ms\":{},\"signed_msgs_per_s\":{},\"gossipsub_signed_msgs_per_s\":{},{}}}",
        r(o_mesh.delivery),
        o_mesh.dup_deliveries,
        r(o_mesh.wire_per_delivered),
        r(o_mesh.p99_ms),
        r(o_reg.delivery),
        o_reg.dup_deliveries,
        r(o_reg.wire_per_delivered),
        r(f_mesh.wire_per_delivered),
        r(g_mesh.wire_per_delivered),
        r(g_mesh.p99_ms),
        r(f_reg.wire_per_delivered),
        r(o_mesh.p99_ms / g_mesh.p99_ms),
        r(o_byz.delivery),
        r(o_byz.p99_ms),
        r(signed),
        r(g_signed),
        verify
            .iter()
            .map(|(t, us)| format!("\"verify_us_per_msg_{t}\":{}", r(*us)))
            .collect::<Vec<_>>()
            .join(","),
    );
}
