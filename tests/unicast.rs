//! Unicast between real swarms (TCP loopback + CA-TLS + yamux): replies, limits, failures.

mod common;

use std::time::Duration;

use bcos_p2p::{
    KeyType, NodeId,
    behaviour::build_swarm_with,
    ca_tls::pki::{CertificateAuthority, Period},
    unicast::{self, Config, Event, RequestId, UnicastError},
};
use bytes::Bytes;
use common::{TIMEOUT, node};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{Swarm, swarm::SwarmEvent};

type Node = Swarm<unicast::Behaviour>;

const ECHO: u16 = 1;
const SILENT: u16 = 2;

fn ca() -> CertificateAuthority {
    CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap()
}

/// A unicast node serving `ECHO` and `SILENT`, with `tweak` applied to its config.
fn unicast_node(ca: &CertificateAuthority, tweak: impl FnOnce(&mut Config)) -> (NodeId, Node) {
    let (key, tls) = node(ca, KeyType::Secp256k1, Period::days(1));
    let mut config = Config::with_modules([ECHO, SILENT]);
    tweak(&mut config);
    let book = tls.node_ids().clone();
    let swarm = build_swarm_with(&key, &tls, |_| unicast::Behaviour::new(config, book)).unwrap();
    (key.node_id().clone(), swarm)
}

/// Two connected unicast nodes.
async fn pair(
    tweak_a: impl FnOnce(&mut Config),
    tweak_b: impl FnOnce(&mut Config),
) -> (NodeId, Node, NodeId, Node) {
    let ca = ca();
    let (ia, mut a) = unicast_node(&ca, tweak_a);
    let (ib, mut b) = unicast_node(&ca, tweak_b);
    let (sa, _) = common::dial(&mut a, &mut b).await;
    sa.peer();
    (ia, a, ib, b)
}

/// What B does with a request.
#[derive(Clone, Copy)]
enum Server {
    /// Echo module ECHO; hold (never answer) module SILENT.
    Echo,
}

/// Drives both swarms: B serves per `server`, A's unicast events go to `on_a` until it returns
/// true. Channels B holds are returned so they are not dropped (dropping answers them).
async fn drive(
    a: &mut Node,
    b: &mut Node,
    server: Server,
    mut on_a: impl FnMut(&mut Node, Event) -> bool,
) -> Vec<unicast::ResponseChannel> {
    let mut held = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                e = a.select_next_some() => if let SwarmEvent::Behaviour(ev) = e
                    && on_a(a, ev)
                {
                    return;
                },
                e = b.select_next_some() => if let SwarmEvent::Behaviour(Event::Request { module, payload, channel, .. }) = e {
                    match (server, module) {
                        (Server::Echo, ECHO) => b.behaviour_mut().respond(channel, payload).unwrap(),
                        (Server::Echo, _) => held.push(channel),
                    }
                },
            }
        }
    })
    .await
    .expect("test did not finish in time");
    held
}

fn response(ev: Event) -> (RequestId, Result<Bytes, UnicastError>) {
    match ev {
        Event::Response { id, result } => (id, result),
        other => panic!("expected a response, got {other:?}"),
    }
}

#[tokio::test]
async fn request_gets_its_reply_and_oneway_is_delivered() {
    let (ia, mut a, ib, mut b) = pair(|_| {}, |_| {}).await;
    let id = a
        .behaviour_mut()
        .send_request(&ib, ECHO, Bytes::from_static(b"hello"));
    let mut got = None;
    drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got = Some(response(ev));
        true
    })
    .await;
    assert_eq!(got, Some((id, Ok(Bytes::from_static(b"hello")))));
    assert_eq!(a.behaviour().pending_requests(), 0);

    a.behaviour_mut()
        .send_oneway(&ib, ECHO, Bytes::from_static(b"fire"))
        .unwrap();
    let message = tokio::time::timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                e = b.select_next_some() => if let SwarmEvent::Behaviour(Event::Message { from, module, payload }) = e {
                    return (from, module, payload);
                },
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(message, (ia, ECHO, Bytes::from_static(b"fire")));
}

#[tokio::test]
async fn ten_thousand_concurrent_requests_are_all_answered() {
    let (_, mut a, ib, mut b) = pair(|_| {}, |_| {}).await;
    let mut expected = std::collections::HashMap::new();
    for i in 0..10_000u32 {
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        expected.insert(
            a.behaviour_mut().send_request(&ib, ECHO, payload.clone()),
            payload,
        );
    }
    assert_eq!(a.behaviour().pending_requests(), 10_000);
    drive(&mut a, &mut b, Server::Echo, |_, ev| {
        let (id, result) = response(ev);
        let want = expected.remove(&id).expect("one response per request");
        assert_eq!(result, Ok(want));
        expected.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_request_the_peer_never_answers_times_out() {
    let (_, mut a, ib, mut b) =
        pair(|c| c.request_timeout = Duration::from_millis(300), |_| {}).await;
    // Before the requests: their timers start when they are sent.
    let started = std::time::Instant::now();
    let id = a
        .behaviour_mut()
        .send_request(&ib, SILENT, Bytes::from_static(b"?"));
    let quick = a.behaviour_mut().send_request_with_timeout(
        &ib,
        SILENT,
        Bytes::new(),
        Duration::from_millis(100),
    );
    let mut got = Vec::new();
    let held = drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got.push(response(ev));
        got.len() == 2
    })
    .await;
    assert_eq!(
        got,
        vec![
            (quick, Err(UnicastError::Timeout)),
            (id, Err(UnicastError::Timeout))
        ]
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(held.len(), 2, "the server still holds both requests");
}

#[tokio::test]
async fn losing_the_connection_fails_pending_requests() {
    let (_, mut a, ib, mut b) = pair(|_| {}, |_| {}).await;
    let id = a.behaviour_mut().send_request(&ib, SILENT, Bytes::new());
    // Wait until B holds the request, then drop B's swarm (its connection goes with it).
    let channel = tokio::time::timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                e = b.select_next_some() => if let SwarmEvent::Behaviour(Event::Request { channel, .. }) = e {
                    return channel;
                },
            }
        }
    })
    .await
    .unwrap();
    drop(b);
    let got = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let SwarmEvent::Behaviour(ev) = a.select_next_some().await {
                return response(ev);
            }
        }
    })
    .await
    .unwrap();
    drop(channel);
    assert_eq!(got, (id, Err(UnicastError::ConnectionClosed)));
}

#[tokio::test]
async fn unknown_module_and_dropped_channels_are_answered_at_once() {
    let (_, mut a, ib, mut b) = pair(|_| {}, |_| {}).await;
    let unknown = a.behaviour_mut().send_request(&ib, 999, Bytes::new());
    let mut got = None;
    drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got = Some(response(ev));
        true
    })
    .await;
    assert_eq!(
        got,
        Some((
            unknown,
            Err(UnicastError::Remote("no handler for module 999".into()))
        ))
    );

    // A request whose channel the application drops is answered "no response", not left to time out.
    let id = a.behaviour_mut().send_request(&ib, SILENT, Bytes::new());
    let got = tokio::time::timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                e = a.select_next_some() => if let SwarmEvent::Behaviour(ev) = e { return response(ev) },
                e = b.select_next_some() => if let SwarmEvent::Behaviour(Event::Request { channel, .. }) = e { drop(channel) },
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, (id, Err(UnicastError::Remote("no response".into()))));
}

#[tokio::test]
async fn unconnected_nodes_and_oversize_messages_fail_at_once() {
    let limit = 64 * 1024;
    let (_, mut a, ib, mut b) = pair(
        |c| c.max_frame_size = 4 * limit,
        |c| c.max_frame_size = limit,
    )
    .await;
    let stranger = bcos_p2p::NodeKey::generate(KeyType::Secp256k1)
        .unwrap()
        .node_id()
        .clone();
    let not_connected = a
        .behaviour_mut()
        .send_request(&stranger, ECHO, Bytes::new());
    assert_eq!(
        a.behaviour_mut().send_oneway(&stranger, ECHO, Bytes::new()),
        Err(UnicastError::NotConnected)
    );
    // Too large for A itself: refused locally.
    let huge = a
        .behaviour_mut()
        .send_request(&ib, ECHO, Bytes::from(vec![0; 4 * limit]));
    let mut got = Vec::new();
    drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got.push(response(ev));
        got.len() == 2
    })
    .await;
    assert_eq!(got[0], (not_connected, Err(UnicastError::NotConnected)));
    assert!(
        matches!(got[1], (id, Err(UnicastError::TooLarge { limit: l, .. })) if id == huge && l == 4 * limit)
    );

    // Within A's limit but over B's: B closes that stream; A's request fails, it is not lost,
    // and A can send again (a new stream).
    let over = a
        .behaviour_mut()
        .send_request(&ib, ECHO, Bytes::from(vec![0; 2 * limit]));
    let mut got = None;
    drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got = Some(response(ev));
        true
    })
    .await;
    assert_eq!(got, Some((over, Err(UnicastError::ConnectionClosed))));
    let again = a
        .behaviour_mut()
        .send_request(&ib, ECHO, Bytes::from_static(b"ok"));
    let mut got = None;
    drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got = Some(response(ev));
        true
    })
    .await;
    assert_eq!(got, Some((again, Ok(Bytes::from_static(b"ok")))));

    // A response over the responder's limit is refused there and reported to the requester.
    let (_, mut a, ib, mut b) = pair(|_| {}, |c| c.max_frame_size = limit).await;
    let id = a.behaviour_mut().send_request(&ib, SILENT, Bytes::new());
    let got = tokio::time::timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                e = a.select_next_some() => if let SwarmEvent::Behaviour(ev) = e { return response(ev) },
                e = b.select_next_some() => if let SwarmEvent::Behaviour(Event::Request { channel, .. }) = e {
                    let err = b.behaviour_mut().respond(channel, Bytes::from(vec![0; limit])).unwrap_err();
                    assert!(matches!(err, UnicastError::TooLarge { .. }));
                },
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(&got, (i, Err(UnicastError::Remote(r))) if *i == id && r.contains("exceeds")),
        "{got:?}"
    );
}

/// Garbage and a 2^40 length prefix on a unicast stream close that stream; the node keeps
/// serving its other peers.
#[tokio::test]
async fn garbage_on_a_stream_closes_only_that_stream() {
    let ca = ca();
    let (_, mut a) = unicast_node(&ca, |_| {});
    let (ib, mut b) = unicast_node(&ca, |_| {});
    common::dial(&mut a, &mut b).await.0.peer();
    let b_addr = b.listeners().next().cloned().unwrap();

    for garbage in [b"\x05\xff\xff\xff\xff\xffjunk".to_vec(), {
        let mut buf = common::varint(1 << 40);
        buf.extend_from_slice(&[0; 64]);
        buf
    }] {
        // An attacker with a valid certificate opens a raw unicast stream and writes garbage.
        let (io, attacker_task) = common::write_garbage(
            &ca,
            b_addr.clone(),
            ib.to_peer_id(),
            unicast::PROTOCOL_1_0,
            garbage,
        );
        // Meanwhile A's requests keep being answered.
        let mut answered = 0;
        for _ in 0..3 {
            a.behaviour_mut()
                .send_request(&ib, ECHO, Bytes::from_static(b"still there?"));
        }
        drive(&mut a, &mut b, Server::Echo, |_, ev| {
            assert!(response(ev).1.is_ok());
            answered += 1;
            answered == 3
        })
        .await;
        tokio::time::timeout(TIMEOUT, async {
            while !io.is_finished() {
                tokio::select! {
                    _ = a.select_next_some() => {}
                    _ = b.select_next_some() => {}
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        })
        .await
        .expect("the garbage stream was not closed");
        io.await.unwrap();
        attacker_task.abort();
    }
}

/// Beyond `max_in_flight`, our own sends fail with Busy and the peer answers "busy".
#[tokio::test]
async fn in_flight_limits_apply_both_ways() {
    let (_, mut a, ib, mut b) = pair(|c| c.max_in_flight = 3, |c| c.max_in_flight = 2).await;
    let ids: Vec<RequestId> = (0..4)
        .map(|_| a.behaviour_mut().send_request(&ib, SILENT, Bytes::new()))
        .collect();
    let mut got = Vec::new();
    let held = drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got.push(response(ev));
        got.len() == 2
    })
    .await;
    // The 4th exceeds A's limit of 3; of the 3 sent, B holds 2 and answers the 3rd "busy".
    assert!(got.contains(&(ids[3], Err(UnicastError::Busy))), "{got:?}");
    assert!(
        got.contains(&(ids[2], Err(UnicastError::Remote("busy".into())))),
        "{got:?}"
    );
    assert_eq!(held.len(), 2);
    // Answering frees B's slots: the next request is served.
    drop(held);
    let next = a
        .behaviour_mut()
        .send_request(&ib, ECHO, Bytes::from_static(b"x"));
    let mut done = false;
    drive(&mut a, &mut b, Server::Echo, |_, ev| {
        let (id, result) = response(ev);
        if id == next {
            assert_eq!(result, Ok(Bytes::from_static(b"x")));
            done = true;
        }
        done
    })
    .await;
}

/// Held requests count against a byte budget too: a peer cannot make us hold unbounded bytes.
#[tokio::test]
async fn pending_bytes_are_bounded() {
    let (_, mut a, ib, mut b) = pair(
        |_| {},
        |c| {
            c.max_frame_size = 1024;
            c.max_pending_bytes = 1024;
        },
    )
    .await;
    let first = a
        .behaviour_mut()
        .send_request(&ib, SILENT, Bytes::from(vec![0; 600]));
    let second = a
        .behaviour_mut()
        .send_request(&ib, SILENT, Bytes::from(vec![0; 600]));
    let mut got = None;
    let held = drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got = Some(response(ev));
        true
    })
    .await;
    assert_eq!(
        got,
        Some((second, Err(UnicastError::Remote("busy".into()))))
    );
    assert_eq!(held.len(), 1);
    let _ = first;
}

/// Another peer cannot complete our request by answering with its id: only the connection the
/// request went out on may answer it.
#[tokio::test]
async fn another_peer_cannot_answer_our_request() {
    let ca = ca();
    let (_, mut a) = unicast_node(&ca, |_| {});
    let (ib, mut b) = unicast_node(&ca, |_| {});
    common::dial(&mut a, &mut b).await.0.peer();
    // The attacker accepts A's unicast stream and answers with forged ids.
    let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let ic = key.node_id().clone();
    let mut attacker = build_swarm_with(&key, &tls, |_| libp2p_stream::Behaviour::new()).unwrap();
    let mut incoming = attacker
        .behaviour()
        .new_control()
        .accept(unicast::PROTOCOL_1_0)
        .unwrap();
    common::dial(&mut a, &mut attacker).await.0.peer();
    let attacker_task = tokio::spawn(async move {
        loop {
            attacker.select_next_some().await;
        }
    });
    let victim = a.behaviour_mut().send_request(&ib, SILENT, Bytes::new());
    let to_attacker = a.behaviour_mut().send_request(&ic, ECHO, Bytes::new());
    let forge = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        let mut read = [0u8; 64];
        let _ = stream.read(&mut read).await.unwrap();
        // A Response frame for every id the victim request could have.
        for id in 0..4u64 {
            let mut frame = vec![11 + 6, 2];
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(b"forged");
            stream.write_all(&frame).await.unwrap();
        }
        stream.flush().await.unwrap();
        stream
    });
    let mut got = Vec::new();
    let held = drive(&mut a, &mut b, Server::Echo, |_, ev| {
        got.push(response(ev));
        got.iter().any(|(id, _)| *id == to_attacker)
    })
    .await;
    // The attacker's answer completes only the request sent to it; the victim request is
    // still pending, and B's real answer completes it.
    assert_eq!(got, vec![(to_attacker, Ok(Bytes::from_static(b"forged")))]);
    let _stream = forge.await.unwrap();
    assert_eq!(a.behaviour().pending_requests(), 1);
    // B may not have read the victim request yet: answer it when it arrives.
    let mut held = held;
    let got = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(channel) = held.pop() {
                b.behaviour_mut().respond(channel, Bytes::from_static(b"real")).unwrap();
            }
            tokio::select! {
                e = a.select_next_some() => if let SwarmEvent::Behaviour(ev) = e { return response(ev) },
                e = b.select_next_some() => if let SwarmEvent::Behaviour(Event::Request { channel, .. }) = e {
                    held.push(channel);
                },
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, (victim, Ok(Bytes::from_static(b"real"))));
    attacker_task.abort();
}

/// A peer that speaks only `/bcos/unicast/1.0.0` refuses the urgent stream pair. A burst of
/// one-way messages for a high-priority module, handed to that pair before the refusal is
/// known, reaches the peer on the main pair all the same, and once all are written the
/// connection holds none of them: it takes another `max_in_flight` of them at once.
#[tokio::test]
async fn oneways_moved_off_a_refused_urgent_pair_leave_no_backlog() {
    const BURST: usize = 1000;
    let ca = ca();
    let (_, mut a) = unicast_node(&ca, |c| {
        c.max_in_flight = BURST;
        c.traffic.priorities.insert(ECHO, unicast::Priority::High);
    });
    // The old peer: a 1.0 stream and nothing else (the urgent protocol is refused).
    let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let ib = key.node_id().clone();
    let mut b = build_swarm_with(&key, &tls, |_| libp2p_stream::Behaviour::new()).unwrap();
    let mut incoming = b
        .behaviour()
        .new_control()
        .accept(unicast::PROTOCOL_1_0)
        .unwrap();
    common::dial(&mut a, &mut b).await.0.peer();
    let b_task = tokio::spawn(async move {
        loop {
            b.select_next_some().await;
        }
    });
    let (to_test, mut received) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let (_, stream) = incoming.next().await.unwrap();
        let mut frames = asynchronous_codec::FramedRead::new(
            stream,
            unicast::codec::Codec::new(unicast::Config::default().max_frame_size),
        );
        while let Some(Ok(wire)) = frames.next().await {
            if let unicast::codec::Wire::Start {
                kind: unicast::codec::KIND_ONEWAY,
                module: ECHO,
                data,
                ..
            } = wire
            {
                let _ = to_test.send(u32::from_be_bytes(data[..4].try_into().unwrap()));
            }
        }
    });
    // Sends `BURST` numbered one-way messages from `first` (all routed before A's swarm runs,
    // so the first burst goes to the urgent pair, partly after it was refused); returns how
    // many were accepted.
    let burst = |a: &mut Node, first: u32| {
        (first..first + BURST as u32)
            .filter(|i| {
                a.behaviour_mut()
                    .send_oneway(&ib, ECHO, Bytes::from(i.to_be_bytes().to_vec()))
                    .is_ok()
            })
            .count()
    };
    // Drives A until the peer has each message numbered in `range` once.
    async fn delivered(
        a: &mut Node,
        received: &mut tokio::sync::mpsc::UnboundedReceiver<u32>,
        range: std::ops::Range<u32>,
    ) {
        let mut seen = std::collections::HashSet::new();
        tokio::time::timeout(TIMEOUT, async {
            while seen.len() < range.len() {
                tokio::select! {
                    _ = a.select_next_some() => {}
                    Some(i) = received.recv() => {
                        assert!(range.contains(&i) && seen.insert(i), "message {i} unexpected");
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("only {} of {range:?} arrived", seen.len()));
    }
    let n = BURST as u32;
    assert_eq!(burst(&mut a, 0), BURST);
    delivered(&mut a, &mut received, 0..n).await;
    let again = burst(&mut a, n);
    assert_eq!(
        again,
        BURST,
        "all {BURST} delivered, yet the connection took only {again} of {BURST} more one-way \
         messages (the rest refused as busy): its one-way backlog is off by {}",
        BURST - again
    );
    delivered(&mut a, &mut received, n..2 * n).await;
    reader.abort();
    b_task.abort();
}
