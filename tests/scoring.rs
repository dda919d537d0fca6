//! Peer scores and bans between real nodes: a member that sends forged frames or floods past
//! its budget is banned (closed, refused with the code `banned`, back once the ban ends), a
//! configured peer's ban is capped and it is redialled, and honest nodes keep delivering
//! throughout. (The score arithmetic itself, decay included, is tested next to its code.)

mod common;

use std::time::{Duration, Instant};

use bcos_p2p::{
    NodeId, NodeKey, Offence,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    config::{Config, PeerAddr},
    connection,
    flood::{self, Event as FloodEvent},
    metrics::Registry,
    node::{Node, NodeEvent},
};
use bytes::Bytes;
use common::{
    Events, TIMEOUT,
    frames::{cert_frame, data_frame, signed_by},
    next, node,
};
use futures::StreamExt as _;

fn ca() -> CertificateAuthority {
    CertificateAuthority::new_root(bcos_p2p::KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap()
}

/// A member's certificate and key.
fn member(ca: &CertificateAuthority) -> (NodeKey, ca_tls::Config) {
    node(ca, bcos_p2p::KeyType::Secp256k1, Period::days(1))
}

/// Starts a node with `key` on loopback, dialling `peers`, `tweak` applied; its metrics go to
/// `registry` when given.
async fn start(
    (key, tls): (NodeKey, ca_tls::Config),
    peers: Vec<libp2p::Multiaddr>,
    tweak: impl FnOnce(&mut Config),
    registry: Option<&mut Registry>,
) -> (Node, Events) {
    let mut config = Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.network.peers = peers.into_iter().map(PeerAddr).collect();
    tweak(&mut config);
    let mut n = match registry {
        Some(r) => Node::start_with_metrics(key, tls, config, r).await,
        None => Node::start(key, tls, config).await,
    }
    .unwrap();
    let events: Events = Box::pin(n.events().unwrap());
    (n, events)
}

/// `member` (key, certificate) dials node `v` and writes `rounds` on a flood stream, `every`
/// apart (see [`common::write_rounds_as`]); returns the writing task and the member's swarm.
fn flood_into(
    v: &Node,
    (key, tls): (&NodeKey, &ca_tls::Config),
    rounds: Vec<Vec<u8>>,
    every: Duration,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let (addr, target) = (v.listen_addrs()[0].clone(), v.node_id().to_peer_id());
    common::write_rounds_as(key, tls, addr, target, flood::PROTOCOL_NAME, rounds, every)
}

/// Waits for the node to connect to `peer`.
async fn connected(events: &mut Events, peer: &NodeId) {
    next(events, |e| match e {
        NodeEvent::Connected { node, .. } if node == peer => Some(()),
        _ => None,
    })
    .await
}

/// Waits for `peer`'s ban; returns its length and the offence named.
async fn banned(events: &mut Events, peer: &NodeId) -> (Duration, Offence) {
    next(events, |e| match e {
        NodeEvent::Connection(connection::Event::Banned {
            node,
            duration,
            offence,
            ..
        }) if node == peer => Some((*duration, *offence)),
        _ => None,
    })
    .await
}

/// Waits for a flood message from `origin` with `payload`.
async fn message(events: &mut Events, origin: &NodeId, payload: &[u8]) {
    next(events, |e| match e {
        NodeEvent::Flood(FloodEvent::Message {
            origin: o,
            payload: p,
            ..
        }) if o == origin && p[..] == *payload => Some(()),
        _ => None,
    })
    .await
}

/// `h` broadcasts `payload`; `v` must deliver it.
async fn still_delivers(h: &Node, v_events: &mut Events, payload: &'static [u8]) {
    h.broadcast(Bytes::from_static(payload)).await.unwrap();
    message(v_events, h.node_id(), payload).await;
}

/// Ten DATA frames from `member` as origin whose signatures are another key's.
fn forged(member: &NodeKey) -> Vec<u8> {
    let other = NodeKey::generate(bcos_p2p::KeyType::Secp256k1).unwrap();
    (1..=10)
        .flat_map(|seqno| signed_by(&other, member, (seqno, 10, 0), None, b"forged"))
        .collect()
}

/// The value of the OpenMetrics sample `series` (name with labels) in `registry`, 0 if absent.
fn sample(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A member whose frames carry bad signatures is disconnected and banned; while banned its new
/// connection is refused with the code `banned`; once the ban ends it connects again and its
/// messages are delivered. The honest node's broadcasts are delivered all along.
#[tokio::test]
async fn a_member_sending_bad_signatures_is_banned_refused_and_back_after_the_ban() {
    let ca = ca();
    let short_bans = |c: &mut Config| c.connection.ban_min_ms = 3000;
    let (v, mut ve) = start(member(&ca), vec![], short_bans, None).await;
    let (h, _he) = start(
        member(&ca),
        vec![v.listen_addrs()[0].clone()],
        short_bans,
        None,
    )
    .await;
    connected(&mut ve, h.node_id()).await;
    let (attacker, tls) = member(&ca);
    let who = attacker.node_id().clone();
    let rounds = vec![forged(&attacker); 6];
    let (io, swarm) = flood_into(&v, (&attacker, &tls), rounds, Duration::from_millis(100));
    let (duration, offence) = banned(&mut ve, &who).await;
    let ban_end = Instant::now() + duration;
    assert_eq!(offence, Offence::BadSignature);
    assert_eq!(duration, Duration::from_secs(3), "the first ban is ban_min");
    still_delivers(&h, &mut ve, b"during the ban").await;
    io.abort();
    swarm.abort();

    // Back during the ban: refused, with the stable code.
    let fresh = data_frame(&attacker, 100, 10, b"too early");
    let (io, swarm) = flood_into(&v, (&attacker, &tls), vec![fresh], Duration::ZERO);
    let (code, left) = next(&mut ve, |e| match e {
        NodeEvent::Refused {
            node: Some(n),
            reason,
            ..
        } if *n == who => Some((reason.code(), reason.clone())),
        _ => None,
    })
    .await;
    assert_eq!(code, "banned", "{left}");
    assert!(
        matches!(left, connection::Refusal::Banned { remaining } if remaining <= duration),
        "{left:?}"
    );
    io.abort();
    swarm.abort();

    // After the ban: it connects and is heard again.
    tokio::time::sleep_until((ban_end + Duration::from_millis(200)).into()).await;
    // Its chain first: origins must be members (flood SPEC §8), and its forgeries never got
    // as far as asking for it.
    let mut back = cert_frame(&tls);
    back.extend(data_frame(&attacker, 101, 10, b"back"));
    let (io, swarm) = flood_into(&v, (&attacker, &tls), vec![back], Duration::ZERO);
    connected(&mut ve, &who).await;
    message(&mut ve, &who, b"back").await;
    still_delivers(&h, &mut ve, b"after the ban").await;
    io.abort();
    swarm.abort();
}

/// A configured peer that sends malformed frames is banned, for no longer than
/// `ban_max_configured_ms` whatever `ban_min_ms` says, is not dialled during the ban, and is
/// dialled and connected again when it ends.
#[tokio::test]
async fn a_configured_peer_is_banned_briefly_and_redialled_when_the_ban_ends() {
    let ca = ca();
    let (vkey, vtls) = member(&ca);
    let target = vkey.node_id().to_peer_id();
    let (peer, ptls) = member(&ca);
    let who = peer.node_id().clone();
    // Each round a frame of an unknown kind: malformed.
    let garbage = b"\x05\x09junk".to_vec();
    let (addr, io, swarm) = common::listening_member(
        &peer,
        &ptls,
        target,
        flood::PROTOCOL_NAME,
        vec![garbage; 6],
        Duration::from_millis(100),
    )
    .await;
    let tweak = |c: &mut Config| {
        c.connection.ban_min_ms = 60_000;
        c.connection.ban_max_configured_ms = 1500;
        c.connection.redial_min_ms = 100;
    };
    let (_v, mut ve) = start((vkey, vtls), vec![addr.clone()], tweak, None).await;
    connected(&mut ve, &who).await;
    let (duration, offence) = banned(&mut ve, &who).await;
    let ban_end = Instant::now() + duration;
    assert_eq!(offence, Offence::Malformed);
    assert_eq!(
        duration,
        Duration::from_millis(1500),
        "capped for a configured peer"
    );
    // Nothing is dialled to it until the ban ends; then it is, and connects.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let e = tokio::time::timeout_at(deadline.into(), ve.next())
            .await
            .expect("reconnected in time")
            .expect("node runs");
        match e {
            NodeEvent::Connection(connection::Event::Dialing { addr: a, .. }) if a == addr => {
                assert!(Instant::now() >= ban_end, "dialled during its ban");
            }
            NodeEvent::Connected { node, .. } if node == who => {
                assert!(Instant::now() >= ban_end, "connected during its ban");
                break;
            }
            _ => {}
        }
    }
    io.abort();
    swarm.abort();
}

/// A member flooding past its budget: the excess is dropped unread and counted, the honest
/// node's messages are still delivered, and as it keeps on it is banned.
#[tokio::test]
async fn a_member_flooding_past_its_budget_is_dropped_then_banned() {
    let ca = ca();
    let tweak = |c: &mut Config| c.flood.budget_frames_per_s = 20;
    let mut registry = Registry::default();
    let (v, mut ve) = start(member(&ca), vec![], tweak, Some(&mut registry)).await;
    let (h, _he) = start(member(&ca), vec![v.listen_addrs()[0].clone()], tweak, None).await;
    connected(&mut ve, h.node_id()).await;
    let (attacker, tls) = member(&ca);
    let who = attacker.node_id().clone();
    // 100 valid messages every 300 ms: 330 a second against a budget of 20.
    let rounds: Vec<Vec<u8>> = (0..40u64)
        .map(|r| {
            (1..=100)
                .flat_map(|i| data_frame(&attacker, r * 100 + i, 1, b"flood"))
                .collect()
        })
        .collect();
    let (io, swarm) = flood_into(&v, (&attacker, &tls), rounds, Duration::from_millis(300));
    connected(&mut ve, &who).await;
    still_delivers(&h, &mut ve, b"while flooded").await;
    let (_, offence) = banned(&mut ve, &who).await;
    assert_eq!(offence, Offence::OverBudget);
    still_delivers(&h, &mut ve, b"after the ban").await;
    // The sampled flood counters are copied every 0.5 s.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let dropped = sample(&registry, "bcos_p2p_flood_over_budget_total");
    let delivered = sample(&registry, "bcos_p2p_flood_delivered_total");
    assert!(dropped >= 300.0, "dropped {dropped}, delivered {delivered}");
    assert!(
        dropped > 3.0 * delivered,
        "dropped {dropped}, delivered {delivered}"
    );
    let reports = sample(
        &registry,
        "bcos_p2p_peer_offences_total{kind=\"over_budget\"}",
    );
    assert!(reports >= 5.0, "{reports} reports");
    let bans = sample(
        &registry,
        "bcos_p2p_peers_banned_total{reason=\"over_budget\"}",
    );
    assert_eq!(bans, 1.0);
    io.abort();
    swarm.abort();
}

/// A few copies below the replay window (what an honest relay may send late) are reported but
/// never ban: the member stays connected and its next message is delivered.
#[tokio::test]
async fn a_few_too_old_copies_never_ban_a_peer() {
    let ca = ca();
    let mut registry = Registry::default();
    let (v, mut ve) = start(member(&ca), vec![], |_| {}, Some(&mut registry)).await;
    let (relay, tls) = member(&ca);
    let who = relay.node_id().clone();
    // Seqno 10 000 moves the window past 1..=5 (4096 wide); then five late copies, one a round.
    let mut first = cert_frame(&tls);
    first.extend(data_frame(&relay, 10_000, 1, b"new"));
    let mut rounds = vec![first];
    rounds.extend((1..=5).map(|s| data_frame(&relay, s, 1, b"late")));
    rounds.push(data_frame(&relay, 10_001, 1, b"still heard"));
    let (io, swarm) = flood_into(&v, (&relay, &tls), rounds, Duration::from_millis(100));
    message(&mut ve, &who, b"new").await;
    message(&mut ve, &who, b"still heard").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        sample(&registry, "bcos_p2p_peer_offences_total{kind=\"too_old\"}"),
        5.0
    );
    assert_eq!(sample(&registry, "bcos_p2p_flood_too_old_total"), 5.0);
    let peers = v.peers().await.unwrap();
    assert!(peers.iter().any(|p| p.node == who), "still connected");
    io.abort();
    swarm.abort();
}
