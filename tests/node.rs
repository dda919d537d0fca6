//! The `Node` handle: every method, with its failures, between nodes in one process.

mod common;

use std::time::Instant;

use bcos_p2p::{
    KeyType, NodeId,
    ca_tls::pki::{CertificateAuthority, Period},
    config::DEFAULT_MODULE,
    flood,
    node::{NodeError, NodeEvent},
    status,
    unicast::UnicastError,
};
use bytes::Bytes;
use common::{Events, TIMEOUT, next, node, start_node};
use futures::StreamExt as _;

fn ca() -> CertificateAuthority {
    CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap()
}

/// Keeps answering requests on `events` by echo, in the background.
fn echo(mut events: Events) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let NodeEvent::Request {
                payload,
                responder,
                module,
                ..
            } = event
            {
                if module == DEFAULT_MODULE {
                    responder.respond(payload).await.unwrap();
                } else {
                    responder.respond_error("not here").await.unwrap();
                }
            }
        }
    })
}

async fn connected(events: &mut Events, to: &NodeId) {
    next(events, |e| match e {
        NodeEvent::Connected { node, .. } if node == to => Some(()),
        _ => None,
    })
    .await
}

/// The next request on `events`, unanswered: the caller holds its responder.
async fn next_request(events: &mut Events) -> bcos_p2p::node::Responder {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let NodeEvent::Request { responder, .. } = events.next().await.expect("node runs") {
                return responder;
            }
        }
    })
    .await
    .expect("a request in time")
}

#[tokio::test]
async fn request_reply_timeout_unknown_module_and_unknown_peer() {
    let ca = ca();
    let (a, ea) = start_node(&ca, &[], |_| {}).await;
    let (b, mut eb) = start_node(&ca, &[&a], |c| c.unicast.request_timeout_ms = 300).await;
    connected(&mut eb, a.node_id()).await;
    let _echo = echo(ea);

    let reply = b
        .request(a.node_id(), DEFAULT_MODULE, Bytes::from_static(b"ping"))
        .await
        .unwrap();
    assert_eq!(reply, "ping");

    // A module A does not serve is refused by A's unicast at once.
    let err = b.request(a.node_id(), 999, Bytes::new()).await.unwrap_err();
    assert!(
        matches!(&err, NodeError::Unicast(UnicastError::Remote(r)) if r.contains("999")),
        "{err}"
    );

    // A node nobody is connected to.
    let (stranger, _) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let err = b
        .request(stranger.node_id(), DEFAULT_MODULE, Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::Unicast(UnicastError::Unreachable(_))),
        "{err}"
    );
    let err = b
        .oneway(stranger.node_id(), DEFAULT_MODULE, Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::Unicast(UnicastError::Unreachable(_))),
        "{err}"
    );

    // Oneway delivery, to C.
    let (c, mut ec) = start_node(&ca, &[&b], |_| {}).await;
    connected(&mut ec, b.node_id()).await;
    connected(&mut eb, c.node_id()).await;
    b.oneway(c.node_id(), DEFAULT_MODULE, Bytes::from_static(b"note"))
        .await
        .unwrap();
    let b_id = b.node_id().clone();
    let got = next(&mut ec, |e| match e {
        NodeEvent::Oneway { payload, from, .. } if *from == b_id => Some(payload.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, "note");

    // A request C's application holds without answering times out (B's timeout is 300 ms).
    let held = tokio::spawn({
        let b = b.clone();
        let c_id = c.node_id().clone();
        async move { b.request(&c_id, DEFAULT_MODULE, Bytes::new()).await }
    });
    let responder = next_request(&mut ec).await;
    let started = Instant::now();
    let err = held.await.unwrap().unwrap_err();
    assert_eq!(err, NodeError::Unicast(UnicastError::Timeout));
    // A responder dropped unanswered answers "no response" at once.
    drop(responder);
    let quick = tokio::spawn({
        let b = b.clone();
        let c_id = c.node_id().clone();
        async move { b.request(&c_id, DEFAULT_MODULE, Bytes::new()).await }
    });
    drop(next_request(&mut ec).await);
    let err = quick.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, NodeError::Unicast(UnicastError::Remote(r)) if r == "no response"),
        "{err}"
    );
    assert!(started.elapsed() < TIMEOUT);
}

#[tokio::test]
async fn multicast_broadcast_topic_request_and_status() {
    let ca = ca();
    let (a, mut ea) = start_node(&ca, &[], |_| {}).await;
    let (b, mut eb) = start_node(&ca, &[&a], |_| {}).await;
    let (c, mut ec) = start_node(&ca, &[&a, &b], |_| {}).await;
    for (events, others) in [
        (&mut ea, [b.node_id(), c.node_id()]),
        (&mut eb, [a.node_id(), c.node_id()]),
        (&mut ec, [a.node_id(), b.node_id()]),
    ] {
        for o in others {
            connected(events, o).await;
        }
    }

    // No subscriber anywhere yet.
    let err = a
        .topic_request("orders", DEFAULT_MODULE, Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err, NodeError::TopicNotFound("orders".into()));
    assert!(matches!(
        a.subscribe("").await,
        Err(NodeError::Flood(flood::FloodError::InvalidTopic(_)))
    ));

    assert!(b.subscribe("orders").await.unwrap());
    assert!(!b.subscribe("orders").await.unwrap());
    // A learns it (network-wide subscription records).
    let b_id = b.node_id().clone();
    next(&mut ea, |e| match e {
        NodeEvent::Flood(flood::Event::Subscribed { node, topic })
            if *node == b_id && topic.as_str() == "orders" =>
        {
            Some(())
        }
        _ => None,
    })
    .await;

    let id = a
        .multicast("orders", Bytes::from_static(b"order 1"))
        .await
        .unwrap();
    let got = next(&mut eb, |e| match e {
        NodeEvent::Flood(flood::Event::Message {
            id: got,
            payload,
            topic,
            ..
        }) => Some((got.clone(), payload.clone(), topic.clone())),
        _ => None,
    })
    .await;
    assert_eq!(got.0, id);
    assert_eq!(got.1, "order 1");
    assert_eq!(got.2.unwrap().as_str(), "orders");

    let id = c.broadcast(Bytes::from_static(b"to all")).await.unwrap();
    for events in [&mut ea, &mut eb] {
        let got = next(events, |e| match e {
            NodeEvent::Flood(flood::Event::Message {
                id: got,
                topic: None,
                ..
            }) => Some(got.clone()),
            _ => None,
        })
        .await;
        assert_eq!(got, id);
    }

    // Topic request: B is the only subscriber, and it answers by echo.
    let _echo_b = echo(eb);
    let (who, reply) = a
        .topic_request("orders", DEFAULT_MODULE, Bytes::from_static(b"amop"))
        .await
        .unwrap();
    assert_eq!(&who, b.node_id());
    assert_eq!(reply, "amop");
    // When the chosen subscriber fails, another is tried: C subscribes but refuses the module
    // (echo answers other modules with an error), B too; both are tried, the last error wins.
    let _ = c.subscribe("orders").await.unwrap();
    let err = a
        .topic_request("orders", 77, Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::Unicast(UnicastError::Remote(_))),
        "{err}"
    );

    // Status: C's change reaches A.
    let seq = c.set_status(Bytes::from_static(b"height 7")).await.unwrap();
    let c_id = c.node_id().clone();
    next(&mut ea, |e| match e {
        NodeEvent::Status(status::Event::StatusUpdated {
            node,
            seq: s,
            payload,
            ..
        }) if *node == c_id && *s == seq => {
            assert_eq!(payload, "height 7");
            Some(())
        }
        _ => None,
    })
    .await;
    let peers = a.peers().await.unwrap();
    assert_eq!(peers.len(), 2);
    let pc = peers.iter().find(|p| p.node == c_id).unwrap();
    assert_eq!(pc.status_seq, Some(seq));
    assert!(a.unsubscribe("orders").await.is_ok());
}

#[tokio::test]
async fn deny_at_run_time_disconnects_and_allow_restores() {
    let ca = ca();
    let (a, mut ea) = start_node(&ca, &[], |_| {}).await;
    let (b, _eb) = start_node(&ca, &[&a], |_| {}).await;
    connected(&mut ea, b.node_id()).await;
    assert!(a.deny(b.node_id()).await.unwrap());
    assert!(!a.deny(b.node_id()).await.unwrap());
    let b_id = b.node_id().clone();
    next(&mut ea, |e| match e {
        NodeEvent::Disconnected { node, .. } if *node == b_id => Some(()),
        _ => None,
    })
    .await;
    assert!(a.peers().await.unwrap().is_empty());
    let err = a
        .request(b.node_id(), DEFAULT_MODULE, Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::Unicast(UnicastError::Unreachable(_))),
        "{err}"
    );
    assert!(a.allow(b.node_id()).await.unwrap());
    assert!(!a.allow(b.node_id()).await.unwrap());
}

#[tokio::test]
async fn shutdown_ends_every_handle() {
    let ca = ca();
    let (a, _ea) = start_node(&ca, &[], |_| {}).await;
    let other = a.clone();
    a.shutdown().await.unwrap();
    assert_eq!(other.peers().await, Err(NodeError::Stopped));
    assert_eq!(other.broadcast(Bytes::new()).await, Err(NodeError::Stopped));
}

/// Dropping every handle stops the node: its peers see it go.
#[tokio::test]
async fn dropping_every_handle_stops_the_node() {
    let ca = ca();
    let (a, ea) = start_node(&ca, &[], |_| {}).await;
    let (b, mut eb) = start_node(&ca, &[&a], |_| {}).await;
    connected(&mut eb, a.node_id()).await;
    let a_id = a.node_id().clone();
    let second = a.clone();
    drop((a, ea));
    drop(second);
    next(&mut eb, |e| match e {
        NodeEvent::Disconnected { node, .. } if *node == a_id => Some(()),
        _ => None,
    })
    .await;
    drop(b);
}

/// The NodeIds of a node's connected peers.
async fn peer_ids(node: &bcos_p2p::node::Node) -> Vec<NodeId> {
    let peers = node.peers().await.unwrap();
    peers.into_iter().map(|p| p.node).collect()
}

/// A CRL file made by an `openssl ca` that is not this chain's: a reload with it must fail.
fn foreign_crl(dir: &std::path::Path) -> Vec<bcos_p2p::ca_tls::Crl> {
    common::require_openssl();
    common::sh(
        dir,
        r#"
        printf '[ca]\ndefault_ca=c\n[c]\ndatabase=index\ncrlnumber=crlnumber\ncertificate=ca.crt\nprivate_key=ca.key\ndefault_md=sha256\ndefault_crl_days=30\n' > ca.cnf
        touch index; echo 01 > crlnumber
        openssl ecparam -genkey -name prime256v1 -noout -out ca.key
        openssl req -new -x509 -days 30 -subj "/CN=ca" -key ca.key -out ca.crt
        openssl ca -config ca.cnf -gencrl -out crl.pem 2>/dev/null
        "#,
    );
    bcos_p2p::ca_tls::Crl::read(dir.join("crl.pem")).unwrap()
}

/// `Node::reload` replaces the configured peers and the access lists at once: a new peer is
/// dialled, a removed one is no longer redialled, a newly denied one is dropped at once; a
/// reload with anything invalid (a CRL of another CA) changes nothing.
#[tokio::test]
async fn reload_replaces_peers_and_lists_all_or_nothing() {
    let ca = ca();
    let fast = |c: &mut bcos_p2p::config::Config| {
        c.connection.redial_min_ms = 100;
        c.connection.redial_max_ms = 200;
    };
    let (b, _eb) = start_node(&ca, &[], fast).await;
    let (c, _ec) = start_node(&ca, &[], fast).await;
    let (a, mut ea) = start_node(&ca, &[&b], fast).await;
    let (d, _ed) = start_node(&ca, &[&a], fast).await;
    connected(&mut ea, b.node_id()).await;
    connected(&mut ea, d.node_id()).await;

    let (b_addr, c_addr) = (b.listen_addrs()[0].clone(), c.listen_addrs()[0].clone());
    let done = a
        .reload(bcos_p2p::connection::Reload {
            peers: vec![c_addr.clone()],
            deny: vec![d.node_id().clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.added, std::slice::from_ref(&c_addr));
    assert_eq!(done.removed, std::slice::from_ref(&b_addr));
    assert_eq!(done.closed, [d.node_id().clone()]);
    // c connects and d's session closes, in either order.
    let (c_id, d_id) = (c.node_id().clone(), d.node_id().clone());
    let (mut c_up, mut d_down) = (false, false);
    next(&mut ea, |e| {
        match e {
            NodeEvent::Connected { node, .. } if *node == c_id => c_up = true,
            NodeEvent::Disconnected { node, .. } if *node == d_id => d_down = true,
            _ => {}
        }
        (c_up && d_down).then_some(())
    })
    .await;
    // b's connection stays, as an ordinary peer's; once it is gone b is not dialled again.
    let peers = peer_ids(&a).await;
    assert!(peers.contains(b.node_id()), "{peers:?}");
    b.shutdown().await.unwrap();
    let b_id = b.node_id().clone();
    next(&mut ea, |e| match e {
        NodeEvent::Disconnected { node, .. } if *node == b_id => Some(()),
        _ => None,
    })
    .await;
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(1500), async {
        next(&mut ea, |e| match e {
            NodeEvent::Connection(bcos_p2p::connection::Event::Dialing { addr, .. })
                if *addr == b_addr =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    })
    .await;
    assert!(quiet.is_err(), "the removed peer was dialled again");

    // Invalid: nothing changes (d stays denied, c stays configured).
    let tmp = tempfile::tempdir().unwrap();
    let err = a
        .reload(bcos_p2p::connection::Reload {
            peers: vec![],
            crls: foreign_crl(tmp.path()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Reload(_)), "{err}");
    next(&mut ea, |e| match e {
        NodeEvent::Refused { reason, .. } if reason.code() == "denied" => Some(()),
        _ => None,
    })
    .await;
    let peers = peer_ids(&a).await;
    assert_eq!(peers, [c.node_id().clone()]);
}

/// A noisy peer cannot push a quiet one's events out of the queue: while the application does
/// not read, b sends 20 000 one-way messages (more than the queue holds), then c sends 10; all
/// of c's are delivered, b's beyond its share are dropped and counted against b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_peer_does_not_push_out_another_peers_events() {
    const NOISE: u64 = 20_000;
    const CHUNK: u64 = 1_000;
    let ca = ca();
    let (a, mut ea) = start_node(&ca, &[], |_| {}).await;
    let (b, _eb) = start_node(&ca, &[&a], |_| {}).await;
    let (c, _ec) = start_node(&ca, &[&a], |_| {}).await;
    // Both connected, both ways (in whatever order).
    let deadline = Instant::now() + TIMEOUT;
    for (x, y) in [(&a, &b), (&a, &c), (&b, &a), (&c, &a)] {
        while !peer_ids(x).await.contains(y.node_id()) {
            assert!(Instant::now() < deadline, "never connected");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // From here on nobody reads a's events. Frames a has read, to pace the senders (a
    // one-way message is dropped at its sender when more than 16 384 wait there).
    let frames_in = || async { a.stats().await.unwrap().unicast_traffic.frames_in };
    let arrived = |want: u64| async move {
        let deadline = Instant::now() + TIMEOUT;
        while frames_in().await < want {
            assert!(Instant::now() < deadline, "a read fewer than {want} frames");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let base = frames_in().await;
    for chunk in 0..NOISE / CHUNK {
        for i in 0..CHUNK {
            let data = Bytes::from(format!("noise {}", chunk * CHUNK + i));
            b.oneway(a.node_id(), DEFAULT_MODULE, data).await.unwrap();
        }
        arrived(base + (chunk + 1) * CHUNK).await;
    }
    for i in 0..10 {
        let data = Bytes::from(format!("quiet {i}"));
        c.oneway(a.node_id(), DEFAULT_MODULE, data).await.unwrap();
    }
    arrived(base + NOISE + 10).await;
    let (mut from_b, mut from_c) = (0u64, 0u64);
    let read = async {
        while let Ok(Some(e)) =
            tokio::time::timeout(std::time::Duration::from_millis(500), ea.next()).await
        {
            if let NodeEvent::Oneway { from, .. } = e {
                if from == *b.node_id() {
                    from_b += 1;
                } else if from == *c.node_id() {
                    from_c += 1;
                }
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read).await.unwrap();
    assert_eq!(
        from_c, 10,
        "the quiet peer's messages delivered (b's: {from_b})"
    );
    assert!(
        from_b > 0 && from_b < NOISE,
        "b's messages delivered: {from_b} of {NOISE}"
    );
    let peers = a.peers().await.unwrap();
    let dropped = |id: &NodeId| {
        peers
            .iter()
            .find(|p| p.node == *id)
            .map(|p| p.dropped_events)
    };
    assert_eq!(dropped(b.node_id()), Some(NOISE - from_b));
    assert_eq!(dropped(c.node_id()), Some(0));
    assert!(a.stats().await.unwrap().dropped_events >= NOISE - from_b);
}

/// Answers larger than their requests cannot pile up for a peer that does not read them: a
/// member sends 200 tiny requests, the application answers each with 512 KiB, and the member
/// reads nothing for a while. The node closes the member's stream once twice its byte bound
/// (2 MiB here) of answers waits, so the member, reading at last, gets only some of them, then
/// the end of the stream; another peer is answered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_member_does_not_read_stay_bounded_when_larger_than_its_requests() {
    use futures::AsyncReadExt as _;
    use futures::AsyncWriteExt as _;
    const REQUESTS: u64 = 200;
    let ca = ca();
    let (a, ea) = start_node(&ca, &[], |c| {
        c.unicast.max_message_size = 1 << 20;
        c.unicast.max_pending_bytes = 2 << 20;
    })
    .await;
    let answering = tokio::spawn(async move {
        let mut ea = ea;
        while let Some(e) = ea.next().await {
            if let NodeEvent::Request { responder, .. } = e {
                let _ = responder.respond(Bytes::from(vec![7u8; 512 << 10])).await;
            }
        }
    });
    let (b, _eb) = start_node(&ca, &[&a], |_| {}).await;
    let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let (stream, swarm) = common::raw_stream_as(
        &key,
        &tls,
        a.listen_addrs()[0].clone(),
        a.node_id().to_peer_id(),
        bcos_p2p::unicast::PROTOCOL_1_0,
    )
    .await;
    let mut stream = stream.expect("a unicast stream to a");
    let requests: Vec<u8> = (1..=REQUESTS)
        .flat_map(|id| common::frames::unicast_request(id, DEFAULT_MODULE, b"x"))
        .collect();
    stream.write_all(&requests).await.unwrap();
    stream.flush().await.unwrap();
    // The member reads nothing for 3 s; b's requests are answered meanwhile.
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    let mut answered = 0;
    while Instant::now() < deadline {
        let reply = b.request(a.node_id(), DEFAULT_MODULE, Bytes::new()).await;
        assert_eq!(reply.expect("b is answered").len(), 512 << 10);
        answered += 1;
    }
    assert!(answered > 0);
    // Now it reads: answers (whole frames), then the end of the stream.
    let mut got = 0u64;
    let read = async {
        loop {
            let mut prefix = [0u8; 3];
            if stream.read_exact(&mut prefix).await.is_err() {
                return;
            }
            // 512 KiB + 11 header bytes: a 3-byte varint.
            let len = u64::from(prefix[0] & 0x7f)
                | u64::from(prefix[1] & 0x7f) << 7
                | u64::from(prefix[2]) << 14;
            let mut body = vec![0u8; len as usize];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            assert_eq!(body[0], 2, "a response");
            got += 1;
        }
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("the stream ends");
    assert!(
        got < REQUESTS / 2,
        "the member got {got} of {REQUESTS} answers of 512 KiB it did not read for 3 s"
    );
    swarm.abort();
    answering.abort();
}
