//! Status sync between real swarms (TCP loopback + CA-TLS + yamux): convergence, exact query
//! counts, restarts, disconnects, limits, and hostile peers speaking raw frames.

mod common;

use std::{collections::HashSet, task::Poll, time::Duration};

use asynchronous_codec::Framed;
use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    behaviour::build_swarm_with,
    ca_tls::{
        self,
        pki::{CertificateAuthority, Period},
    },
    status::{self, Config, Event, Stats, StatusError, codec::Message},
};
use bcos_p2p_core::framed::FrameCodec;
use bytes::Bytes;
use common::{TIMEOUT, node};
use futures::{AsyncReadExt as _, SinkExt as _, StreamExt as _};
use libp2p::{Multiaddr, Swarm, swarm::SwarmEvent};

type Node = Swarm<status::Behaviour>;

fn ca() -> CertificateAuthority {
    CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap()
}

fn build(key: &NodeKey, tls: &ca_tls::Config, config: Config) -> Node {
    let book = tls.node_ids().clone();
    build_swarm_with(key, tls, |_| status::Behaviour::new(config, book)).unwrap()
}

/// Nodes with these configs, each listening on loopback, all connected to each other, every one
/// holding every other's first status (seq 1).
async fn mesh(
    ca: &CertificateAuthority,
    configs: Vec<Config>,
) -> (Vec<NodeId>, Vec<Node>, Vec<Multiaddr>) {
    let mut ids = Vec::new();
    let mut nodes = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    for config in configs {
        let (key, tls) = node(ca, KeyType::Secp256k1, Period::days(1));
        let mut swarm = build(&key, &tls, config);
        let port = common::listen_port(&mut swarm).await;
        addrs.push(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
        ids.push(key.node_id().clone());
        nodes.push(swarm);
    }
    let n = nodes.len();
    for i in 0..n {
        for addr in &addrs[i + 1..] {
            nodes[i].dial(addr.clone()).unwrap();
        }
    }
    drive(&mut nodes, |nodes, _| {
        nodes.iter().all(|s| {
            s.behaviour().statuses().count() == n - 1
                && s.behaviour().statuses().all(|(_, st)| st.seq() == 1)
        })
    })
    .await;
    (ids, nodes, addrs)
}

fn configs(n: usize, tweak: impl Fn(&mut Config)) -> Vec<Config> {
    (0..n)
        .map(|_| {
            let mut c = Config::default();
            tweak(&mut c);
            c
        })
        .collect()
}

/// Polls every node until `done` says so; `done` sees each behaviour event (with the index of
/// the node that emitted it), and `None` whenever the nodes went quiet, so conditions on state
/// and counters are checked too. Bounded by [`TIMEOUT`].
async fn drive(
    nodes: &mut [Node],
    mut done: impl FnMut(&mut [Node], Option<(usize, Event)>) -> bool,
) {
    let run = futures::future::poll_fn(|cx| {
        for _ in 0..1000 {
            let mut progressed = false;
            for i in 0..nodes.len() {
                if let Poll::Ready(Some(e)) = nodes[i].poll_next_unpin(cx) {
                    progressed = true;
                    if let SwarmEvent::Behaviour(ev) = e
                        && done(nodes, Some((i, ev)))
                    {
                        return Poll::Ready(());
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if done(nodes, None) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    });
    tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("condition not reached in time");
}

fn stats(nodes: &[Node]) -> Vec<Stats> {
    nodes.iter().map(|n| n.behaviour().stats()).collect()
}

fn payload_of(ev: &Event) -> Option<(&NodeId, u64, &Bytes)> {
    match ev {
        Event::StatusUpdated {
            node, seq, payload, ..
        } => Some((node, *seq, payload)),
        Event::PeerGone { .. } => None,
    }
}

#[tokio::test]
async fn eight_node_mesh_converges_after_a_change_querying_only_the_changed_node() {
    let (ids, mut nodes, _) = mesh(&ca(), configs(8, |_| {})).await;
    let before = stats(&nodes);
    for s in &before {
        assert_eq!((s.queries_sent, s.queries_received), (7, 7), "{s:?}");
    }
    let seq = nodes[0]
        .behaviour_mut()
        .set_status(Bytes::from_static(b"height=100"))
        .unwrap();
    assert_eq!(seq, 2);
    let mut updated = HashSet::new();
    drive(&mut nodes, |_, ev| {
        if let Some((i, ev)) = ev
            && let Some((node, 2, payload)) = payload_of(&ev)
            && *node == ids[0]
        {
            assert_eq!(payload, &Bytes::from_static(b"height=100"));
            updated.insert(i);
        }
        updated.len() == 7
    })
    .await;
    for n in &nodes[1..] {
        let s = n.behaviour().status_of(&ids[0]).unwrap();
        assert_eq!((s.seq(), &s.payload()[..]), (2, &b"height=100"[..]));
    }
    // Exactly one query per peer, all to the node that changed.
    let after = stats(&nodes);
    assert_eq!(after[0].queries_received - before[0].queries_received, 7);
    assert_eq!(after[0].queries_sent, before[0].queries_sent);
    for (b, a) in before.iter().zip(&after).skip(1) {
        assert_eq!(a.queries_sent - b.queries_sent, 1);
        assert_eq!(a.queries_received, b.queries_received);
    }
}

#[tokio::test]
async fn only_changed_peers_are_queried_and_built_in_fields_propagate() {
    let (ids, mut nodes, _) = mesh(&ca(), configs(4, |_| {})).await;
    let before = stats(&nodes);
    nodes[1]
        .behaviour_mut()
        .set_status(Bytes::from_static(b"one"))
        .unwrap();
    let seq = nodes[2]
        .behaviour_mut()
        .set_topics(["blocks", "amop/a"])
        .unwrap();
    assert_eq!(seq, 2);
    // Setting the same set again is no change: no seq, no announcement, no query.
    assert_eq!(
        nodes[2].behaviour_mut().set_topics(["amop/a", "blocks"]),
        Ok(2)
    );
    drive(&mut nodes, |nodes, _| {
        [0, 3].iter().all(|&i| {
            let b = nodes[i].behaviour();
            b.status_of(&ids[1]).is_some_and(|s| s.seq() == 2)
                && b.status_of(&ids[2]).is_some_and(|s| s.seq() == 2)
        }) && nodes[1]
            .behaviour()
            .status_of(&ids[2])
            .is_some_and(|s| s.seq() == 2)
            && nodes[2]
                .behaviour()
                .status_of(&ids[1])
                .is_some_and(|s| s.seq() == 2)
    })
    .await;
    let topics = nodes[0].behaviour().status_of(&ids[2]).unwrap();
    assert_eq!(topics.topics(), ["amop/a", "blocks"]);
    assert!(topics.has_topic("blocks"));
    let after = stats(&nodes);
    let delta = |f: fn(&Stats) -> u64| -> Vec<u64> {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| f(a) - f(b))
            .collect()
    };
    assert_eq!(delta(|s| s.queries_received), [0, 3, 3, 0]);
    assert_eq!(delta(|s| s.queries_sent), [2, 1, 1, 2]);
}

#[tokio::test]
async fn repeated_announcements_of_the_same_seq_cause_no_query() {
    let (_, mut nodes, _) = mesh(
        &ca(),
        configs(2, |c| c.announce_interval = Duration::from_millis(20)),
    )
    .await;
    let before = stats(&nodes);
    drive(&mut nodes, |nodes, _| {
        stats(nodes)
            .iter()
            .zip(&before)
            .all(|(a, b)| a.announces_received >= b.announces_received + 20)
    })
    .await;
    for (a, b) in stats(&nodes).iter().zip(&before) {
        assert_eq!(
            (a.queries_sent, a.queries_received, a.responses_sent),
            (b.queries_sent, b.queries_received, b.responses_sent)
        );
    }
}

#[tokio::test]
async fn a_restarted_peer_is_relearned_with_seq_1() {
    let ca = ca();
    let (ka, ta) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let (kb, tb) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let ib = kb.node_id().clone();
    let mut a = build(&ka, &ta, Config::default());
    let mut b = build(&kb, &tb, Config::default());
    let port = common::listen_port(&mut a).await;
    let a_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    b.dial(a_addr.clone()).unwrap();
    b.behaviour_mut()
        .set_status(Bytes::from_static(b"before"))
        .unwrap();
    let mut nodes = vec![a, b];
    drive(&mut nodes, |nodes, _| {
        nodes[0]
            .behaviour()
            .status_of(&ib)
            .is_some_and(|s| s.seq() == 2)
    })
    .await;
    let old = nodes[0].behaviour().status_of(&ib).unwrap().incarnation();

    // "Restart" B: its swarm goes away, a new one starts from the same key.
    drop(nodes.pop());
    let mut gone = false;
    drive(&mut nodes, |_, ev| {
        gone |= matches!(ev, Some((0, Event::PeerGone { node }))if node == ib);
        gone
    })
    .await;
    assert!(nodes[0].behaviour().status_of(&ib).is_none());
    let mut b2 = build(&kb, &tb, Config::default());
    b2.dial(a_addr).unwrap();
    nodes.push(b2);
    let mut relearned = None;
    drive(&mut nodes, |_, ev| {
        if let Some((0, Event::StatusUpdated { node, status, .. })) = ev
            && node == ib
        {
            relearned = Some(status);
        }
        relearned.is_some()
    })
    .await;
    let s = relearned.unwrap();
    assert_eq!((s.seq(), s.payload().len()), (1, 0));
    assert_ne!(s.incarnation(), old);
}

#[tokio::test]
async fn disconnect_removes_the_entry() {
    let (ids, mut nodes, _) = mesh(&ca(), configs(3, |_| {})).await;
    assert!(nodes[2].disconnect_peer_id(ids[0].to_peer_id()).is_ok());
    let (mut gone_at_0, mut gone_at_2) = (false, false);
    drive(&mut nodes, |_, ev| {
        match ev {
            Some((0, Event::PeerGone { node })) => gone_at_0 |= node == ids[2],
            Some((2, Event::PeerGone { node })) => gone_at_2 |= node == ids[0],
            _ => {}
        }
        gone_at_0 && gone_at_2
    })
    .await;
    let known = |n: &Node| -> HashSet<NodeId> {
        n.behaviour().statuses().map(|(id, _)| id.clone()).collect()
    };
    assert_eq!(known(&nodes[0]), HashSet::from([ids[1].clone()]));
    assert_eq!(known(&nodes[2]), HashSet::from([ids[1].clone()]));
    assert_eq!(known(&nodes[1]).len(), 2);
    // The rest of the mesh keeps syncing.
    nodes[1]
        .behaviour_mut()
        .set_status(Bytes::from_static(b"x"))
        .unwrap();
    drive(&mut nodes, |nodes, _| {
        [0, 2].iter().all(|&i| {
            nodes[i]
                .behaviour()
                .status_of(&ids[1])
                .is_some_and(|s| s.seq() == 2)
        })
    })
    .await;
}

#[tokio::test]
async fn oversize_statuses_are_rejected_on_both_sides() {
    const LIMIT: usize = 1024;
    let fast = |c: &mut Config| c.announce_interval = Duration::from_millis(100);
    let mut cs = configs(3, fast);
    cs[0].max_payload = LIMIT; // A: small limit
    cs[1].max_payload = 1 << 20; // B: sends more than A accepts
    let (ids, mut nodes, _) = mesh(&ca(), cs).await;
    let (a, b, c) = (0, 1, 2);

    // Locally: refused before anything is sent.
    assert_eq!(
        nodes[a]
            .behaviour_mut()
            .set_status(Bytes::from(vec![0; LIMIT + 1])),
        Err(StatusError::TooLarge {
            size: LIMIT + 1,
            limit: LIMIT
        })
    );
    assert_eq!(nodes[a].behaviour().local().seq(), 1);

    // From a peer: just over A's payload limit (inside its frame margin), then far over its
    // frame limit. Each time A closes B's stream and keeps the old status; C takes it.
    let accepted = nodes[a].behaviour().stats().responses_accepted;
    for (seq, size, malformed) in [(2, LIMIT + 1, 1), (3, 512 * 1024, 2)] {
        assert_eq!(
            nodes[b]
                .behaviour_mut()
                .set_status(Bytes::from(vec![7; size])),
            Ok(seq)
        );
        drive(&mut nodes, |nodes, _| {
            nodes[a].behaviour().stats().malformed == malformed
                && nodes[c]
                    .behaviour()
                    .status_of(&ids[b])
                    .is_some_and(|s| s.seq() == seq)
        })
        .await;
        assert_eq!(nodes[a].behaviour().status_of(&ids[b]).unwrap().seq(), 1);
    }
    // The refused status is not asked for again while B keeps announcing it.
    let announces = nodes[a].behaviour().stats().announces_received;
    drive(&mut nodes, |nodes, _| {
        nodes[a].behaviour().stats().announces_received >= announces + 6
    })
    .await;
    let sa = nodes[a].behaviour().stats();
    assert_eq!((sa.malformed, sa.responses_accepted), (2, accepted));

    // A keeps working with C, and with B once B's status fits again.
    nodes[c]
        .behaviour_mut()
        .set_status(Bytes::from_static(b"c"))
        .unwrap();
    nodes[b]
        .behaviour_mut()
        .set_status(Bytes::from_static(b"small"))
        .unwrap();
    drive(&mut nodes, |nodes, _| {
        let a = nodes[a].behaviour();
        a.status_of(&ids[c]).is_some_and(|s| s.seq() == 2)
            && a.status_of(&ids[b]).is_some_and(|s| s.seq() == 4)
    })
    .await;
}

/// A peer with a valid certificate that speaks raw frames: it runs a `libp2p-stream` swarm in
/// a task, dials `target`, accepts the target's status stream (so it reads what the target
/// sends) and opens its own.
struct RawPeer {
    node: NodeId,
    control: libp2p_stream::Control,
    incoming: libp2p_stream::IncomingStreams,
    task: tokio::task::JoinHandle<()>,
}

type Frames = Framed<libp2p::Stream, FrameCodec>;

impl RawPeer {
    fn new(ca: &CertificateAuthority, target: Multiaddr) -> RawPeer {
        let (key, tls) = node(ca, KeyType::Secp256k1, Period::days(1));
        let mut swarm = build_swarm_with(&key, &tls, |_| libp2p_stream::Behaviour::new()).unwrap();
        let mut control = swarm.behaviour().new_control();
        let incoming = control.accept(status::PROTOCOL_NAME).unwrap();
        swarm.dial(target).unwrap();
        let task = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        RawPeer {
            node: key.node_id().clone(),
            control,
            incoming,
            task,
        }
    }

    /// Opens a status stream to `target` (retrying until the connection is up).
    async fn open(&mut self, target: &NodeId) -> Frames {
        loop {
            match self
                .control
                .open_stream(target.to_peer_id(), status::PROTOCOL_NAME)
                .await
            {
                Ok(s) => return Framed::new(s, FrameCodec::new(1 << 20)),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The target's status stream to us.
    async fn accept(&mut self) -> Frames {
        let (_, s) = self.incoming.next().await.unwrap();
        Framed::new(s, FrameCodec::new(1 << 20))
    }
}

/// Two honest nodes in sync, and a raw peer dialling the first.
async fn honest_pair_and_raw_peer() -> (Vec<NodeId>, Vec<Node>, RawPeer) {
    let ca = ca();
    let (ids, nodes, addrs) = mesh(&ca, configs(2, |_| {})).await;
    let raw = RawPeer::new(&ca, addrs[0].clone());
    (ids, nodes, raw)
}

/// The next query on `from`, skipping announcements.
async fn next_query(from: &mut Frames) -> (u64, u64) {
    loop {
        let frame = from.next().await.expect("stream open").unwrap();
        match Message::decode(frame).unwrap() {
            Message::Query { incarnation, seq } => return (incarnation, seq),
            Message::Announce { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn announce(incarnation: u64, seq: u64) -> Bytes {
    Message::Announce { incarnation, seq }.encode()
}

fn status_frame(incarnation: u64, seq: u64, payload: &'static [u8]) -> Bytes {
    Message::Status(status::Status::new(incarnation, seq).with_payload(Bytes::from_static(payload)))
        .encode()
}

/// Waits for the other end to close `stream`: we read its end (or a reset), never data.
async fn expect_closed(mut stream: libp2p::Stream) {
    let mut buf = [0u8; 16];
    match stream.read(&mut buf).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("got {n} bytes back instead of the stream's end"),
    }
}

/// The node at index 1 changes its status; node 0 still learns it (seq 2).
async fn still_syncs(nodes: &mut [Node], id1: &NodeId) {
    nodes[1]
        .behaviour_mut()
        .set_status(Bytes::from_static(b"still here"))
        .unwrap();
    drive(nodes, |nodes, _| {
        nodes[0]
            .behaviour()
            .status_of(id1)
            .is_some_and(|s| s.seq() == 2)
    })
    .await;
}

/// Drives `nodes` until `task` has finished, then returns its result.
async fn drive_until_done<T>(nodes: &mut [Node], task: tokio::task::JoinHandle<T>) -> T {
    drive(nodes, |_, _| task.is_finished()).await;
    task.await.expect("the raw peer's script failed")
}

#[tokio::test]
async fn stale_unsolicited_and_new_incarnation_responses() {
    let ca = ca();
    let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let mut a = build(&key, &tls, Config::default());
    let ia = key.node_id().clone();
    let port = common::listen_port(&mut a).await;
    let mut raw = RawPeer::new(&ca, format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
    let peer = raw.node.clone();
    let mut nodes = vec![a];

    let script = tokio::spawn(async move {
        let mut to_a = raw.open(&ia).await;
        let mut from_a = raw.accept().await;
        // Never asked for: ignored.
        to_a.send(status_frame(100, 1, b"unasked")).await.unwrap();
        to_a.send(announce(100, 5)).await.unwrap();
        assert_eq!(next_query(&mut from_a).await, (100, 5));
        // Older than announced: ignored, and not re-asked until the next announcement.
        to_a.send(status_frame(100, 3, b"old")).await.unwrap();
        to_a.send(announce(100, 5)).await.unwrap();
        assert_eq!(next_query(&mut from_a).await, (100, 5));
        to_a.send(status_frame(100, 5, b"five")).await.unwrap();
        // A restart without a disconnect: a new incarnation counting from 1 again.
        to_a.send(announce(200, 1)).await.unwrap();
        assert_eq!(next_query(&mut from_a).await, (200, 1));
        to_a.send(status_frame(200, 1, b"reborn")).await.unwrap();
        // A late answer from the old incarnation, unasked; then a repeat; then news.
        to_a.send(status_frame(100, 9, b"late")).await.unwrap();
        to_a.send(announce(200, 1)).await.unwrap();
        to_a.send(announce(200, 2)).await.unwrap();
        assert_eq!(next_query(&mut from_a).await, (200, 2));
        (raw, to_a, from_a)
    });
    let (_raw, _to_a, _from_a) = drive_until_done(&mut nodes, script).await;
    // The query for (200, 2) is in flight; all frames before it have been handled.
    let s = nodes[0].behaviour().stats();
    assert_eq!(
        (
            s.responses_unsolicited,
            s.responses_stale,
            s.responses_accepted
        ),
        (2, 1, 2)
    );
    assert_eq!(s.queries_sent, 4);
    let held = nodes[0].behaviour().status_of(&peer).unwrap();
    assert_eq!(
        (held.incarnation(), held.seq(), &held.payload()[..]),
        (200, 1, &b"reborn"[..])
    );
    _raw.task.abort();
}

#[tokio::test]
async fn malformed_responses_close_the_stream_and_are_not_asked_again() {
    let (ids, mut nodes, mut raw) = honest_pair_and_raw_peer().await;
    let ia = ids[0].clone();
    let full = status_frame(7, 1, b"a payload that gets cut");
    let script = tokio::spawn(async move {
        let mut to_a = raw.open(&ia).await;
        let mut from_a = raw.accept().await;
        to_a.send(announce(7, 1)).await.unwrap();
        assert_eq!(next_query(&mut from_a).await, (7, 1));
        // The answer, with its CBOR record cut short.
        to_a.send(full.slice(..full.len() - 5)).await.unwrap();
        // A closes that stream: we read its end, never an answer.
        expect_closed(to_a.into_inner()).await;
        // On a new stream: the refused (7, 1) is not asked for again; (7, 2) is.
        let mut to_a = raw.open(&ia).await;
        to_a.send(announce(7, 1)).await.unwrap();
        to_a.send(announce(7, 2)).await.unwrap();
        assert_eq!(next_query(&mut from_a).await, (7, 2));
        to_a.send(status_frame(7, 2, b"fine")).await.unwrap();
        (raw, to_a, from_a)
    });
    let (raw, _to_a, _from_a) = drive_until_done(&mut nodes, script).await;
    let peer = raw.node.clone();
    drive(&mut nodes, |nodes, _| {
        nodes[0]
            .behaviour()
            .status_of(&peer)
            .is_some_and(|s| s.payload() == &b"fine"[..])
    })
    .await;
    assert_eq!(nodes[0].behaviour().stats().malformed, 1);
    // Meanwhile the node kept serving its honest peer.
    still_syncs(&mut nodes, &ids[1]).await;
    raw.task.abort();
}

#[tokio::test]
async fn garbage_frames_close_only_that_stream() {
    let (ids, mut nodes, mut raw) = honest_pair_and_raw_peer().await;
    let ia = ids[0].clone();
    let mut trailing = announce(1, 1).to_vec();
    trailing.push(0);
    let garbage: Vec<Vec<u8>> = vec![
        vec![0x09; 17],                                            // unknown kind
        vec![0x01; 5],                                             // shorter than the head
        trailing, // an announcement with trailing bytes
        [&[0x03u8][..], &[0; 16][..], &[0xa1, 0x61][..]].concat(), // a status record cut short
    ];
    let count = garbage.len() as u64;
    let script = tokio::spawn(async move {
        for body in garbage {
            let mut to_a = raw.open(&ia).await;
            to_a.send(Bytes::from(body)).await.unwrap();
            expect_closed(to_a.into_inner()).await;
        }
        // A length prefix of 2^40: closed before any body is read.
        let mut stream = raw
            .control
            .open_stream(ia.to_peer_id(), status::PROTOCOL_NAME)
            .await
            .unwrap();
        futures::AsyncWriteExt::write_all(
            &mut stream,
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0, 0, 0],
        )
        .await
        .unwrap();
        expect_closed(stream).await;
        raw
    });
    let raw = drive_until_done(&mut nodes, script).await;
    drive(&mut nodes, |nodes, _| {
        nodes[0].behaviour().stats().malformed == count + 1
    })
    .await;
    assert!(nodes[0].behaviour().status_of(&raw.node).is_none());
    still_syncs(&mut nodes, &ids[1]).await;
    raw.task.abort();
}
