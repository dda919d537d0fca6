//! Routed connections between nodes in one process: requests to nodes with no direct
//! connection go over circuits through relays, authenticated and encrypted end to end.

mod common;

use std::time::{Duration, Instant};

use bcos_p2p::{
    KeyType, NodeId,
    ca_tls::pki::{CertificateAuthority, Period},
    config::{Config, DEFAULT_MODULE},
    node::{Node, NodeError, NodeEvent},
    unicast::UnicastError,
};
use bytes::Bytes;
use common::{Events, TIMEOUT, echo, start_node};
use futures::StreamExt as _;

fn ca() -> CertificateAuthority {
    CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap()
}

/// Nodes started one by one, node `i` dialling the nodes `edges` pair it with that started
/// before it; every node echoes requests.
struct Net {
    ca: CertificateAuthority,
    nodes: Vec<Node>,
    echoes: Vec<tokio::task::JoinHandle<()>>,
}

impl Net {
    async fn start(n: usize, edges: &[(usize, usize)], tweak: impl Fn(usize, &mut Config)) -> Net {
        let ca = ca();
        let mut nodes: Vec<Node> = Vec::new();
        let mut echoes = Vec::new();
        for i in 0..n {
            let peers: Vec<&Node> = edges
                .iter()
                .filter_map(|&(a, b)| match (a, b) {
                    (a, b) if b == i && a < i => Some(&nodes[a]),
                    (a, b) if a == i && b < i => Some(&nodes[b]),
                    _ => None,
                })
                .collect();
            let (node, events) = start_node(&ca, &peers, |c| tweak(i, c)).await;
            echoes.push(echo(events));
            nodes.push(node);
        }
        Net { ca, nodes, echoes }
    }

    /// Waits until every node's view reaches every other node.
    async fn settle(&self) {
        self.settle_to(self.nodes.len() - 1).await
    }

    /// Waits until every node's view reaches `others` other nodes.
    async fn settle_to(&self, others: usize) {
        let deadline = Instant::now() + TIMEOUT;
        for node in &self.nodes {
            loop {
                let reached = node.reachable().await.unwrap().len();
                if reached == others {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "views did not settle: {reached} of {others}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn id(&self, i: usize) -> NodeId {
        self.nodes[i].node_id().clone()
    }
}

fn line(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (i - 1, i)).collect()
}

fn ring(n: usize) -> Vec<(usize, usize)> {
    let mut edges = line(n);
    edges.push((n - 1, 0));
    edges
}

/// The relays of the routed connection `from` keeps to `to`.
async fn relays(from: &Node, to: &NodeId) -> Option<Vec<NodeId>> {
    from.peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| &p.node == to)
        .and_then(|p| p.relays)
}

/// Hops from `from` to `to` in `from`'s view.
async fn hops(from: &Node, to: &NodeId) -> Option<u32> {
    from.network()
        .await
        .unwrap()
        .into_iter()
        .find(|n| &n.node == to)
        .map(|n| n.hops)
}

/// Sends `payload` from `from` to `to` until it is answered (bounded by [`TIMEOUT`]), while a
/// view converges or the source routes round what failed; `what` names the wait.
async fn request_until_answered(
    net: &Net,
    from: usize,
    to: usize,
    payload: Bytes,
    what: &str,
) -> Bytes {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match net.nodes[from]
            .request(&net.id(to), DEFAULT_MODULE, payload.clone())
            .await
        {
            Ok(reply) => return reply,
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `from`'s view puts `to` at `hops` hops.
async fn wait_for_hops(net: &Net, from: usize, to: usize, hops_wanted: u32) {
    let deadline = Instant::now() + TIMEOUT;
    while hops(&net.nodes[from], &net.id(to)).await != Some(hops_wanted) {
        assert!(
            Instant::now() < deadline,
            "{to} never came {hops_wanted} hops from {from}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a request from `from` to `to` that must end in `unreachable` with a reason holding
/// `why`.
async fn unreachable_because(net: &Net, from: usize, to: usize, why: &str) {
    let err = net.nodes[from]
        .request(&net.id(to), DEFAULT_MODULE, Bytes::from_static(b"q"))
        .await
        .expect_err(why);
    assert!(
        matches!(
            err,
            NodeError::Unicast(UnicastError::Unreachable(ref reason)) if reason.contains(why)
        ),
        "{err}"
    );
}

/// Sends a request from `from` to `to` and checks the echo.
async fn echoed(net: &Net, from: usize, to: usize) {
    let payload = Bytes::from(format!("from {from} to {to}"));
    let reply = net.nodes[from]
        .request(&net.id(to), DEFAULT_MODULE, payload.clone())
        .await
        .unwrap_or_else(|e| panic!("{from} → {to}: {e}"));
    assert_eq!(reply, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_of_6_ends_reach_each_other_over_4_relays() {
    let net = Net::start(6, &line(6), |_, _| {}).await;
    net.settle().await;
    echoed(&net, 0, 5).await;
    let relays_0_5: Vec<NodeId> = (1..5).map(|i| net.id(i)).collect();
    assert_eq!(relays(&net.nodes[0], &net.id(5)).await, Some(relays_0_5));
    // The other way, over the same routed connection: the far end did not dial, so it knows
    // the connection is routed but not through whom.
    echoed(&net, 5, 0).await;
    assert_eq!(relays(&net.nodes[5], &net.id(0)).await, Some(Vec::new()));
    // A pair dialled from the other end.
    echoed(&net, 4, 1).await;
    assert_eq!(
        relays(&net.nodes[4], &net.id(1)).await,
        Some(vec![net.id(3), net.id(2)])
    );
    // Neighbours stay direct.
    echoed(&net, 2, 3).await;
    assert_eq!(relays(&net.nodes[2], &net.id(3)).await, None);
    drop(net.echoes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_of_8_opposite_nodes_reach_each_other_over_3_relays() {
    let net = Net::start(8, &ring(8), |_, _| {}).await;
    net.settle().await;
    for (from, to) in [(0, 4), (6, 2), (5, 1)] {
        echoed(&net, from, to).await;
        let hops = relays(&net.nodes[from], &net.id(to)).await.expect("routed");
        assert_eq!(hops.len(), 3, "{from} → {to}: {hops:?}");
        // Each relay links with the next, around the ring one way or the other.
        let mut at = from;
        for r in hops.iter().chain([&net.id(to)]) {
            let next = (0..8).find(|&i| &net.id(i) == r).unwrap();
            assert!(
                (next + 8 - at) % 8 == 1 || (at + 8 - next) % 8 == 1,
                "{at} → {next}"
            );
            at = next;
        }
    }
    drop(net.echoes);
}

/// What a dishonest relay does to the bytes it relays toward the destination.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Flips one byte.
    Alter,
    /// Sends a piece it already sent again.
    Replay,
    /// Forwards nothing and answers, in the destination's name, that it takes no routed
    /// connections.
    ForgeRefusal,
}

/// Bytes a dishonest relay passes on untouched first (past the handshakes, so that what it
/// spoils is the traffic of the connection that is up).
const HONEST_FOR: usize = 12 * 1024;

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Dishonest {
    connection: bcos_p2p::connection::Behaviour,
    identify: bcos_p2p::boxed::Boxed<
        libp2p::swarm::behaviour::toggle::Toggle<libp2p::identify::Behaviour>,
    >,
    unicast: bcos_p2p::unicast::Behaviour,
    flood: bcos_p2p::flood::Behaviour,
    status: bcos_p2p::status::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// A member dialling `peers` that runs every protocol of a node (it keeps links and publishes
/// its records, so paths go through it) but relays circuits with its own code, which spoils
/// them (`tamper`) once `HONEST_FOR` bytes have passed toward the destination.
async fn start_dishonest(
    ca: &CertificateAuthority,
    peers: &[&Node],
    tamper: Tamper,
) -> (NodeId, tokio::task::JoinHandle<()>) {
    use bcos_p2p::route::wire;
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    let (key, tls) = common::node(ca, KeyType::Secp256k1, Period::days(1));
    let mut config = Config::default();
    config.network.peers = peers
        .iter()
        .map(|p| bcos_p2p::config::PeerAddr(p.listen_addrs()[0].clone()))
        .collect();
    let b = bcos_p2p::behaviour::Behaviour::new(&key, &tls, &config);
    let behaviour = Dishonest {
        connection: b.connection,
        identify: b.identify,
        unicast: b.unicast,
        flood: b.flood,
        status: b.status,
        stream: libp2p_stream::Behaviour::new(),
    };
    let mut swarm = bcos_p2p::behaviour::build_swarm_with(&key, &tls, |_| behaviour).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let control = swarm.behaviour().stream.new_control();
    let mut incoming = control.clone().accept(wire::PROTOCOL).unwrap();
    let task = tokio::spawn(async move {
        let relay = |mut control: libp2p_stream::Control, mut inbound: libp2p::Stream| async move {
            let path = wire::read_header(&mut inbound).await.ok()?;
            if let Tamper::ForgeRefusal = tamper {
                let forged = wire::Reply {
                    code: wire::Code::NotAccepting,
                    hop: u8::try_from(path.len()).ok()?,
                };
                return wire::write_reply(&mut inbound, forged).await.ok();
            }
            let next = path.first()?.to_peer_id();
            let mut out = control.open_stream(next, wire::PROTOCOL).await.ok()?;
            out.write_all(&wire::encode_header(&path[1..])).await.ok()?;
            out.flush().await.ok()?;
            let reply = wire::read_reply(&mut out).await.ok()?;
            let back = wire::Reply {
                code: reply.code,
                hop: reply.hop + 1,
            };
            wire::write_reply(&mut inbound, back).await.ok()?;
            let (mut in_r, mut in_w) = inbound.split();
            let (mut out_r, mut out_w) = out.split();
            let forward = async {
                let mut buf = vec![0u8; 4096];
                let mut passed = 0usize;
                let mut last = Vec::new();
                let mut spoiled = false;
                loop {
                    let n = in_r.read(&mut buf).await.ok()?;
                    if n == 0 {
                        return Some(());
                    }
                    let mut chunk = buf[..n].to_vec();
                    passed += n;
                    if passed > HONEST_FOR && !spoiled {
                        spoiled = true;
                        match tamper {
                            Tamper::Alter => chunk[n / 2] ^= 0x01,
                            Tamper::Replay => out_w.write_all(&last).await.ok()?,
                            Tamper::ForgeRefusal => {}
                        }
                    }
                    out_w.write_all(&chunk).await.ok()?;
                    out_w.flush().await.ok()?;
                    last = chunk;
                }
            };
            let backward = futures::io::copy(&mut out_r, &mut in_w);
            let _ = futures::join!(forward, backward);
            Some(())
        };
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                Some((_, stream)) = incoming.next() => {
                    tokio::spawn(relay(control.clone(), stream));
                }
            }
        }
    });
    (key.node_id().clone(), task)
}

/// A relay that alters or replays the bytes of a circuit: the destination's TLS rejects them
/// (nothing altered is delivered), the source's request fails with an error, and the next
/// request goes round the relay on a longer path.
async fn dishonest_relay_is_detected_and_routed_around(tamper: Tamper) {
    // 0 — X — 3 (X dishonest) beside the line 0 — 1 — 2 — 3: the shortest path goes through X.
    let net = Net::start(4, &line(4), |_, _| {}).await;
    let (dishonest, task) = start_dishonest(&net.ca, &[&net.nodes[0], &net.nodes[3]], tamper).await;
    net.settle_to(4).await;
    // Until node 0's view has both links of the dishonest member, its shortest path to 3
    // is the line's.
    wait_for_hops(&net, 0, 3, 2).await;
    // Incompressible, so that it stays past the bytes the relay lets through untouched.
    let payload = common::noise(64 * 1024, 1);
    let spoiled = net.nodes[0]
        .request(&net.id(3), DEFAULT_MODULE, payload.clone())
        .await;
    assert!(
        spoiled.is_err(),
        "{tamper:?}: a request through the dishonest relay was answered"
    );
    // The source keeps the relay out: the next circuit goes the long way, and works (once
    // node 0's view has the whole line, if it does not yet).
    let what = format!("{tamper:?}: no request round the relay got through");
    let reply = request_until_answered(&net, 0, 3, payload.clone(), &what).await;
    assert_eq!(reply, payload);
    let relays = relays(&net.nodes[0], &net.id(3)).await.expect("routed");
    assert_eq!(relays, vec![net.id(1), net.id(2)], "{tamper:?}");
    assert!(!relays.contains(&dishonest));
    task.abort();
    drop(net.echoes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_alters_a_circuit_is_detected_and_routed_around() {
    dishonest_relay_is_detected_and_routed_around(Tamper::Alter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_replays_in_a_circuit_is_detected_and_routed_around() {
    dishonest_relay_is_detected_and_routed_around(Tamper::Replay).await;
}

/// A relay that refuses in the destination's name (a reply whose `hop` names the destination):
/// the source cannot tell who said it, so it tries once more round every relay of that path,
/// and the request is answered over the longer path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_forging_the_destinations_refusal_is_routed_around() {
    let net = Net::start(4, &line(4), |_, _| {}).await;
    let (dishonest, task) = start_dishonest(
        &net.ca,
        &[&net.nodes[0], &net.nodes[3]],
        Tamper::ForgeRefusal,
    )
    .await;
    net.settle_to(4).await;
    // Until node 0's view has both links of the dishonest member, the line is shortest.
    wait_for_hops(&net, 0, 3, 2).await;
    // Until node 0's view has the whole line, there is no other path.
    let q = Bytes::from_static(b"q");
    request_until_answered(&net, 0, 3, q, "never routed round the liar").await;
    let relays = relays(&net.nodes[0], &net.id(3)).await.expect("routed");
    assert_eq!(relays, vec![net.id(1), net.id(2)]);
    assert!(!relays.contains(&dishonest));
    task.abort();
    drop(net.echoes);
}

/// A destination that takes no routed connections (`[route] accept = false`): the request
/// ends in an explicit `unreachable` saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_takes_no_routed_connections_is_an_explicit_unreachable() {
    let net = Net::start(3, &line(3), |i, c| c.route.accept = i != 2).await;
    net.settle().await;
    unreachable_because(&net, 0, 2, "takes no routed connections").await;
    // Its neighbour still reaches it directly.
    echoed(&net, 1, 2).await;
    drop(net.echoes);
}

/// A direct connection replaces a routed one: once the two nodes connect, the routed
/// connection closes and requests go direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_connection_replaces_a_routed_one() {
    let net = Net::start(3, &line(3), |_, _| {}).await;
    net.settle().await;
    echoed(&net, 0, 2).await;
    assert!(relays(&net.nodes[0], &net.id(2)).await.is_some());
    net.nodes[0]
        .add_peer(net.nodes[2].listen_addrs()[0].clone())
        .await
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let both_direct = relays(&net.nodes[0], &net.id(2)).await.is_none()
            && relays(&net.nodes[2], &net.id(0)).await.is_none();
        let peers = net.nodes[0].peers().await.unwrap();
        let count = peers.iter().filter(|p| p.node == net.id(2)).count();
        if both_direct && count == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the routed connection stayed: {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    echoed(&net, 0, 2).await;
    assert_eq!(relays(&net.nodes[0], &net.id(2)).await, None);
    drop(net.echoes);
}

/// Relaying turned off on the only path: the request fails at once with an explicit
/// `unreachable` naming the refusal, not a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaying_off_on_the_only_path_is_an_explicit_unreachable() {
    let net = Net::start(3, &line(3), |i, c| c.route.relay = i != 1).await;
    net.settle().await;
    let started = Instant::now();
    unreachable_because(&net, 0, 2, "relaying is off").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(net.echoes);
}

/// A relay killed while requests are in flight over it: each request ends with its answer or
/// an explicit error (none waits for its timeout), and the next request goes the other way
/// round the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_fails_requests_explicitly_and_is_routed_around() {
    let net = Net::start(6, &ring(6), |_, c| c.unicast.request_timeout_ms = 120_000).await;
    net.settle().await;
    echoed(&net, 0, 3).await;
    let path = relays(&net.nodes[0], &net.id(3)).await.expect("routed");
    assert_eq!(path.len(), 2);
    let victim = (0..6).find(|&i| net.id(i) == path[0]).unwrap();
    // 64 requests of 1 MiB in flight; the first relay goes down once the first is answered.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(first_tx)));
    let mut requests = Vec::new();
    for i in 0..64u8 {
        let node = net.nodes[0].clone();
        let to = net.id(3);
        let first_tx = first_tx.clone();
        requests.push(tokio::spawn(async move {
            // Incompressible: the circuit must carry the whole megabyte.
            let payload = common::noise(1024 * 1024, u64::from(i));
            let started = Instant::now();
            let result = node.request(&to, DEFAULT_MODULE, payload.clone()).await;
            if let Some(tx) = first_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            (result.map(|r| r == payload), started.elapsed())
        }));
    }
    tokio::time::timeout(TIMEOUT, first_rx)
        .await
        .unwrap()
        .unwrap();
    net.nodes[victim].shutdown().await.unwrap();
    let (mut answered, mut failed) = (0, 0);
    for r in requests {
        let (result, took) = tokio::time::timeout(TIMEOUT, r)
            .await
            .expect("a request hung")
            .unwrap();
        assert!(took < TIMEOUT, "a request took {took:?}");
        match result {
            Ok(same) => {
                assert!(same, "an answer came back altered");
                answered += 1;
            }
            Err(e) => {
                assert!(
                    !matches!(e, NodeError::Unicast(UnicastError::Timeout)),
                    "a request waited for its timeout"
                );
                failed += 1;
            }
        }
    }
    assert_eq!(answered + failed, 64);
    assert!(
        failed >= 1,
        "every request was answered: the relay went down too late"
    );
    // Round the other way: the view drops the dead relay's links, or the source keeps it out.
    let again = Bytes::from_static(b"again");
    request_until_answered(&net, 0, 3, again, "no way round the dead relay").await;
    let path = relays(&net.nodes[0], &net.id(3)).await.expect("routed");
    assert!(!path.contains(&net.id(victim)), "{path:?}");
    drop(net.echoes);
}

/// A node's status change is seen by a node 4 hops away: a small status comes whole with
/// its network-wide announcement; a large one (past `INLINE_MAX`) is announced by seq and
/// fetched over a routed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_is_seen_4_hops_away() {
    let net = Net::start(5, &line(5), |_, _| {}).await;
    net.settle().await;
    status_seen_4_hops_away(&net, Bytes::from_static(b"height=7")).await;
    assert_eq!(
        relays(&net.nodes[0], &net.id(4)).await,
        None,
        "small: not fetched"
    );
    let large = Bytes::from(vec![b'h'; 4 * bcos_p2p::netstatus::INLINE_MAX]);
    status_seen_4_hops_away(&net, large).await;
    let fetched_over = relays(&net.nodes[0], &net.id(4)).await;
    assert_eq!(
        fetched_over.map(|r| r.len()),
        Some(3),
        "large: fetched over 3 relays"
    );
    drop(net.echoes);
}

async fn status_seen_4_hops_away(net: &Net, payload: Bytes) {
    let seq = net.nodes[4].set_status(payload.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let network = net.nodes[0].network().await.unwrap();
        let far = network
            .iter()
            .find(|n| n.node == net.id(4))
            .expect("node 4 is in the view");
        assert_eq!(far.hops, 4);
        if let Some(s) = &far.status.status
            && s.seq() == seq
        {
            assert_eq!(s.payload(), &payload);
            assert_eq!(far.status.announced.map(|(_, seq)| seq), Some(seq));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4's status not seen 4 hops away: {:?}",
            far.status.announced
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A topic request reaches a subscriber 3 hops away, and prefers a nearer one once there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_request_reaches_a_subscriber_3_hops_away_and_prefers_nearer_ones() {
    let net = Net::start(4, &line(4), |_, _| {}).await;
    net.settle().await;
    net.nodes[3].subscribe("blocks").await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let (by, reply) = loop {
        match net.nodes[0]
            .topic_request("blocks", DEFAULT_MODULE, Bytes::from_static(b"tip?"))
            .await
        {
            Ok(answer) => break answer,
            Err(e) => assert!(Instant::now() < deadline, "no subscriber found: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((by, &reply[..]), (net.id(3), &b"tip?"[..]));
    // A neighbour subscribes too: it is asked from then on.
    net.nodes[1].subscribe("blocks").await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (by, _) = net.nodes[0]
            .topic_request("blocks", DEFAULT_MODULE, Bytes::from_static(b"tip?"))
            .await
            .unwrap();
        if by == net.id(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nearer subscriber is never asked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        let (by, _) = net.nodes[0]
            .topic_request("blocks", DEFAULT_MODULE, Bytes::from_static(b"tip?"))
            .await
            .unwrap();
        assert_eq!(by, net.id(1));
    }
    drop(net.echoes);
}

/// A member that opens route streams with headers no node writes (too many nodes, a NodeId
/// that is no key, an unknown key type) has each closed, is scored down and banned, while the
/// node keeps opening circuits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_route_headers_are_closed_and_their_sender_banned() {
    let net = Net::start(3, &line(3), |_, _| {}).await;
    net.settle().await;
    let (member, member_tls) = common::node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let who = member.node_id().clone();
    let mut too_many = vec![1u8, 17];
    too_many.extend(std::iter::repeat_n(0u8, 64));
    // Each malformed in this version (another version would be a newer node's, not an offence).
    let rounds = vec![
        too_many.clone(),
        vec![1, 1, 1, 0, 4, 1, 2, 3, 4], // a 4-byte secp256k1 NodeId
        vec![1, 1, 99, 0, 1, 0],         // key type 99
        vec![1, 1, 1, 0, 0],             // an empty NodeId
        too_many,
        vec![1, 1, 1, 0, 4, 1, 2, 3, 4],
    ];
    // The watching node: linked to the line's end, and taking the member as a peer.
    let (wkey, wtls) = common::node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let target = wkey.node_id().to_peer_id();
    let (addr, io, swarm) = common::listening_member(
        &member,
        &member_tls,
        target,
        bcos_p2p::route::PROTOCOL,
        rounds,
        Duration::from_millis(100),
    )
    .await;
    let mut config = Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.network.peers = vec![
        bcos_p2p::config::PeerAddr(addr.clone()),
        bcos_p2p::config::PeerAddr(net.nodes[0].listen_addrs()[0].clone()),
    ];
    let mut watcher = Node::start(wkey, wtls, config).await.unwrap();
    let mut events: Events = Box::pin(watcher.events().unwrap());
    let banned =
        common::next(&mut events, |e| match e {
            NodeEvent::Connection(bcos_p2p::connection::Event::Banned {
                node, offence, ..
            }) if *node == who => Some(*offence),
            _ => None,
        })
        .await;
    assert_eq!(banned, bcos_p2p::Offence::Malformed);
    // The watcher still opens circuits: to the line's far end, through 0 and 1.
    let echo_task = echo(events);
    let deadline = Instant::now() + TIMEOUT;
    while !watcher.reachable().await.unwrap().contains(&net.id(2)) {
        assert!(Instant::now() < deadline, "the watcher never saw the line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = watcher
        .request(&net.id(2), DEFAULT_MODULE, Bytes::from_static(b"still?"))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"still?");
    echo_task.abort();
    io.abort();
    swarm.abort();
    drop((watcher, net.echoes));
}

/// A relay's budget of circuits per previous hop: past it the relay answers `busy`, and with
/// no other path the request ends in an explicit `unreachable`; circuits of other previous
/// hops are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_past_its_circuit_budget_refuses_more() {
    // A star: 1 in the middle, 0 and 2..4 round it; 1 relays at most 2 circuits per peer.
    let edges = [(0, 1), (1, 2), (1, 3), (1, 4)];
    let net = Net::start(5, &edges, |i, c| {
        if i == 1 {
            c.route.max_circuits_per_peer = 2;
        }
    })
    .await;
    net.settle().await;
    echoed(&net, 0, 2).await;
    echoed(&net, 0, 3).await;
    unreachable_because(&net, 0, 4, "relay budget spent").await;
    // Another previous hop has a budget of its own.
    echoed(&net, 2, 4).await;
    drop(net.echoes);
}

/// A routed connection that carries no unicast traffic for `[route] idle_timeout_ms` is closed
/// by the end that dialled it (both ends then forget it), and the next request opens another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_routed_connection_is_closed_and_reopened_on_demand() {
    let net = Net::start(3, &line(3), |_, c| c.route.idle_timeout_ms = 300).await;
    net.settle().await;
    echoed(&net, 0, 2).await;
    assert!(relays(&net.nodes[0], &net.id(2)).await.is_some());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let gone = relays(&net.nodes[0], &net.id(2)).await.is_none()
            && relays(&net.nodes[2], &net.id(0)).await.is_none();
        let peers = net.nodes[0].peers().await.unwrap();
        if gone && !peers.iter().any(|p| p.node == net.id(2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle routed connection stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    echoed(&net, 0, 2).await;
    assert_eq!(
        relays(&net.nodes[0], &net.id(2)).await,
        Some(vec![net.id(1)])
    );
    drop(net.echoes);
}

/// A member next to a node that makes up circuits to it and never completes their handshakes
/// holds at most 4 of its handshake slots: past them the node answers `busy` instead of `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_circuits_hold_few_handshake_slots() {
    use bcos_p2p::route::wire;
    use futures::AsyncWriteExt as _;
    let net = Net::start(1, &[], |_, _| {}).await;
    let (member, member_tls) = common::node(&net.ca, KeyType::Secp256k1, Period::days(1));
    let mut swarm = bcos_p2p::behaviour::build_swarm_with(&member, &member_tls, |_| {
        libp2p_stream::Behaviour::new()
    })
    .unwrap();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(net.nodes[0].listen_addrs()[0].clone()).unwrap();
    let swarm_task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let target = net.nodes[0].node_id().to_peer_id();
    let mut held = Vec::new();
    let (mut ok, mut busy) = (0, 0);
    let deadline = Instant::now() + TIMEOUT;
    // Each step bounded by the test's deadline: a step that never ends fails, naming itself.
    let until = tokio::time::Instant::from_std(deadline);
    let late =
        |what: &str, n: usize| format!("{what} of route stream {} took past {TIMEOUT:?}", n + 1);
    while held.len() < 8 {
        assert!(Instant::now() < deadline, "no route streams opened");
        let opened = tokio::time::timeout_at(until, control.open_stream(target, wire::PROTOCOL))
            .await
            .unwrap_or_else(|_| panic!("{}", late("opening", held.len())));
        let Ok(mut stream) = opened else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // A circuit to the node itself: an empty path. Then nothing: no handshake.
        tokio::time::timeout_at(until, async {
            stream.write_all(&wire::encode_header(&[])).await?;
            stream.flush().await
        })
        .await
        .unwrap_or_else(|_| panic!("{}", late("writing the header", held.len())))
        .unwrap();
        let reply = tokio::time::timeout_at(until, wire::read_reply(&mut stream))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} ({ok} ok, {busy} busy before)",
                    late("the reply", held.len())
                )
            });
        match reply.unwrap().code {
            wire::Code::Ok => ok += 1,
            wire::Code::Busy => busy += 1,
            other => panic!("unexpected answer {other}"),
        }
        held.push(stream);
        // Let the node's transport take the accepted circuit before the next one.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((ok, busy), (4, 4));
    swarm_task.abort();
    drop(net.echoes);
}
