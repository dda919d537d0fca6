//! The connection manager between real swarms (TCP loopback + CA-TLS + yamux): dialling
//! configured peers, redial after a restart, one connection per pair under simultaneous dials,
//! self-dials, run-time deny/allow, dead connections, backoff and connection limits.
//!
//! Each swarm runs in its own task; the test talks to it through [`Running`]. Timings are
//! logged with eprintln; only generous bounds are asserted.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bcos_p2p::{
    KeyType, NodeId, NodeKey,
    behaviour::build_swarm_with,
    ca_tls::{
        self, Refusal as TlsRefusal,
        pki::{CertificateAuthority, Period},
    },
    config::PeerAddr,
    connection::{self, Config, Event, JITTER, Refusal},
    flood,
    node::NodeEvent,
};
use common::{TIMEOUT, node};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{
    Multiaddr, Swarm,
    multiaddr::Protocol,
    swarm::{ConnectionId, SwarmEvent},
};
use tokio::sync::{mpsc, oneshot};

type Node = Swarm<connection::Behaviour>;

fn ca() -> CertificateAuthority {
    CertificateAuthority::new_root(KeyType::Secp256k1, "CN=ca", Period::days(1)).unwrap()
}

/// A test config: fast redials, default pings.
fn fast() -> Config {
    Config {
        redial_min: Duration::from_millis(200),
        redial_max: Duration::from_secs(2),
        ..Config::default()
    }
}

fn build(key: &NodeKey, tls: &ca_tls::Config, config: Config) -> Node {
    let (access, book) = (tls.access_list().clone(), tls.node_ids().clone());
    let local = key.node_id().clone();
    build_swarm_with(key, tls, |_| {
        connection::Behaviour::new(local, config, access, book)
    })
    .unwrap()
}

fn loopback(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

/// A swarm's state inside its task: the swarm and its live connections (id -> dialled by us).
struct State {
    swarm: Node,
    live: HashMap<ConnectionId, bool>,
}

type Command = Box<dyn FnOnce(&mut State) + Send>;

/// A manager swarm running in its own task.
struct Running {
    name: &'static str,
    id: NodeId,
    addr: Multiaddr,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
    start: Instant,
}

impl Running {
    /// Builds a manager for `key`, listens on loopback `port` (0: any) and runs it.
    async fn start(
        name: &'static str,
        key: &NodeKey,
        tls: &ca_tls::Config,
        config: Config,
        port: u16,
    ) -> Running {
        let mut swarm = build(key, tls, config);
        swarm.listen_on(loopback(port)).unwrap();
        let addr = tokio::time::timeout(TIMEOUT, async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    return address;
                }
            }
        })
        .await
        .expect("listener did not start");
        Running::spawn(name, key.node_id().clone(), addr, swarm)
    }

    fn spawn(name: &'static str, id: NodeId, addr: Multiaddr, swarm: Node) -> Running {
        let (event_tx, events) = mpsc::unbounded_channel();
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
        let task = tokio::spawn(async move {
            let mut state = State {
                swarm,
                live: HashMap::new(),
            };
            loop {
                tokio::select! {
                    e = state.swarm.select_next_some() => match e {
                        SwarmEvent::Behaviour(e) => {
                            let _ = event_tx.send(e);
                        }
                        SwarmEvent::ConnectionEstablished { connection_id, endpoint, .. } => {
                            state.live.insert(connection_id, endpoint.is_dialer());
                        }
                        SwarmEvent::ConnectionClosed { connection_id, .. } => {
                            state.live.remove(&connection_id);
                        }
                        _ => {}
                    },
                    c = command_rx.recv() => match c {
                        Some(c) => c(&mut state),
                        None => return,
                    },
                }
            }
        });
        Running {
            name,
            id,
            addr,
            events,
            commands,
            task,
            start: Instant::now(),
        }
    }

    /// Runs `f` on the swarm's state and returns its result.
    async fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut State) -> R + Send + 'static) -> R {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Box::new(move |s: &mut State| {
                let _ = tx.send(f(s));
            }))
            .expect("swarm task runs");
        tokio::time::timeout(TIMEOUT, rx)
            .await
            .expect("swarm task answers in time")
            .expect("swarm task answers")
    }

    /// Runs `f` on the manager.
    async fn manager<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut connection::Behaviour) -> R + Send + 'static,
    ) -> R {
        self.call(move |s| f(s.swarm.behaviour_mut())).await
    }

    /// The next event, logged.
    async fn next_event(&mut self, deadline: Duration) -> Option<Event> {
        let e = tokio::time::timeout(deadline, self.events.recv())
            .await
            .ok()
            .flatten()?;
        eprintln!(
            "[{:>6} ms] {}: {e:?}",
            self.start.elapsed().as_millis(),
            self.name
        );
        Some(e)
    }

    /// Waits (at most [`TIMEOUT`]) for an event `want` accepts; returns it.
    async fn wait(&mut self, what: &str, mut want: impl FnMut(&Event) -> bool) -> Event {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(e) if want(&e) => return e,
                Some(_) => {}
                None => panic!("{}: no {what} within {TIMEOUT:?}", self.name),
            }
        }
    }

    /// Every event for `span`.
    async fn collect(&mut self, span: Duration) -> Vec<Event> {
        let deadline = Instant::now() + span;
        let mut out = Vec::new();
        while let Some(e) = self
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            out.push(e);
        }
        out
    }

    /// Live connections as the swarm reports them: (count, how many we dialled).
    async fn live(&self) -> (usize, usize) {
        self.call(|s| (s.live.len(), s.live.values().filter(|d| **d).count()))
            .await
    }

    async fn connected(&self) -> Vec<(NodeId, Multiaddr)> {
        self.manager(|m| m.connected()).await
    }

    async fn add_peer(&self, addr: Multiaddr) {
        self.manager(move |m| m.add_peer(addr)).await
    }

    fn port(&self) -> u16 {
        match self.addr.iter().nth(1) {
            Some(Protocol::Tcp(p)) => p,
            _ => panic!("not a TCP address: {}", self.addr),
        }
    }

    /// Stops the swarm (its connections and listener close).
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn connected_to(node: &NodeId) -> impl FnMut(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Connected { node: n, .. } if n == node)
}

fn disconnected_from(node: &NodeId) -> impl FnMut(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Disconnected { node: n, .. } if n == node)
}

#[tokio::test]
async fn configured_peers_are_dialled_and_connected() {
    let ca = ca();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
        nodes.push(Running::start(name, &key, &tls, fast(), 0).await);
    }
    let [mut a, mut b, c] = <[Running; 3]>::try_from(nodes).ok().unwrap();
    // b by multiaddr with /p2p/, c the FISCO way (host:port).
    let b_addr = b.addr.clone().with(Protocol::P2p(b.id.to_peer_id()));
    let c_addr: PeerAddr = format!("127.0.0.1:{}", c.port()).parse().unwrap();
    a.add_peer(b_addr).await;
    a.add_peer(c_addr.0).await;

    let mut want = vec![b.id.clone(), c.id.clone()];
    while !want.is_empty() {
        if let Event::Connected { node, outbound, .. } = a
            .wait("connections to b and c", |e| {
                matches!(e, Event::Connected { .. })
            })
            .await
        {
            assert!(outbound, "a dialled");
            want.retain(|n| *n != node);
        }
    }
    let mut connected = a.connected().await;
    connected.sort();
    let mut expected = vec![
        (b.id.clone(), b.addr.clone()),
        (c.id.clone(), c.addr.clone()),
    ];
    expected.sort();
    assert_eq!(connected, expected);
    match b.wait("a's connection", connected_to(&a.id)).await {
        Event::Connected { outbound, .. } => assert!(!outbound, "b was dialled"),
        other => panic!("unexpected {other:?}"),
    }

    // Pings measure the round trip.
    a.wait(
        "a ping answered by b",
        |e| matches!(e, Event::Ping { node, .. } if *node == b.id),
    )
    .await;
    let b_id = b.id.clone();
    let rtt = a.manager(move |m| m.rtt(&b_id)).await;
    eprintln!("rtt to b: {rtt:?}");
    assert!(rtt.is_some_and(|r| r < TIMEOUT));
    assert_eq!(a.live().await, (2, 2));
}

#[tokio::test]
async fn reconnects_after_the_peer_restarts_on_the_same_port() {
    let ca = ca();
    let (ka, ta) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let (kb, tb) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let config = Config {
        stable_after: Duration::from_millis(500),
        ..fast()
    };
    let mut a = Running::start("a", &ka, &ta, config.clone(), 0).await;
    let b = Running::start("b", &kb, &tb, fast(), 0).await;
    let port = b.port();
    let b_id = b.id.clone();
    a.add_peer(b.addr.clone()).await;
    a.wait("connection to b", connected_to(&b_id)).await;

    let down = Instant::now();
    b.stop().await;
    match a.wait("b's disconnect", disconnected_from(&b_id)).await {
        Event::Disconnected { retry_in, .. } => assert!(retry_in.is_some(), "b is redialled"),
        other => panic!("unexpected {other:?}"),
    }
    // While b is down, dials fail and are retried ever later.
    let mut delays = Vec::new();
    while delays.len() < 3 {
        if let Event::DialFailed {
            retry_in: Some(d), ..
        } = a
            .wait("a failed dial to b", |e| {
                matches!(e, Event::DialFailed { .. })
            })
            .await
        {
            delays.push(d);
        }
    }
    assert!(delays[2] > config.redial_min, "{delays:?}");

    let up = Instant::now();
    let b = Running::start("b'", &kb, &tb, fast(), port).await;
    a.wait("reconnection to b", connected_to(&b_id)).await;
    eprintln!(
        "reconnected {} ms after b restarted ({} ms after it went down)",
        up.elapsed().as_millis(),
        down.elapsed().as_millis()
    );
    assert!(up.elapsed() < Duration::from_secs(10));
    assert_eq!(a.connected().await.len(), 1);

    // The connection stays up past `stable_after`: the backoff starts over.
    tokio::time::sleep(config.stable_after * 2).await;
    b.stop().await;
    match a.wait("b's disconnect", disconnected_from(&b_id)).await {
        Event::Disconnected { retry_in, .. } => {
            let d = retry_in.expect("b is redialled");
            assert!(d <= config.redial_min, "{d:?} after a stable connection");
        }
        other => panic!("unexpected {other:?}"),
    }
    a.wait("the first redial", |e| {
        matches!(e, Event::Dialing { attempt: 1, .. })
    })
    .await;
}

#[tokio::test]
async fn a_new_node_at_a_configured_address_is_learnt_after_wrong_peer_id() {
    let ca = ca();
    let (ka, ta) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let (kb, tb) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let (kc, tc) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let mut a = Running::start("a", &ka, &ta, fast(), 0).await;
    let b = Running::start("b", &kb, &tb, fast(), 0).await;
    let (port, b_id) = (b.port(), b.id.clone());
    // Configured without /p2p/: a learns b's PeerId from the connection.
    a.add_peer(b.addr.clone()).await;
    a.wait("connection to b", connected_to(&b_id)).await;
    b.stop().await;
    a.wait("b's disconnect", disconnected_from(&b_id)).await;

    // Another node (re-keyed) answers at the address now.
    let c = Running::start("c", &kc, &tc, fast(), port).await;
    match a
        .wait("a dial finding another node", |e| {
            matches!(e, Event::DialFailed { error, .. } if error.contains("Unexpected peer ID"))
        })
        .await
    {
        Event::DialFailed { retry_in, .. } => assert!(retry_in.is_some()),
        other => panic!("unexpected {other:?}"),
    }
    a.wait("connection to the new node", connected_to(&c.id))
        .await;
    assert_eq!(a.connected().await, vec![(c.id.clone(), c.addr.clone())]);
}

#[tokio::test]
async fn simultaneous_dials_leave_one_connection_both_sides_agree_on() {
    let ca = ca();
    let mut duplicates = 0;
    for round in 0..6 {
        let (ka, ta) = node(&ca, KeyType::Secp256k1, Period::days(1));
        let (kb, tb) = node(&ca, KeyType::Secp256k1, Period::days(1));
        // Both listen before either runs, and each is configured with the other before the
        // first poll: both dial at once.
        let mut sa = build(&ka, &ta, fast());
        let mut sb = build(&kb, &tb, fast());
        let pa = common::listen_port(&mut sa).await;
        let pb = common::listen_port(&mut sb).await;
        sa.behaviour_mut().add_peer(loopback(pb));
        sb.behaviour_mut().add_peer(loopback(pa));
        let mut a = Running::spawn("a", ka.node_id().clone(), loopback(pa), sa);
        let mut b = Running::spawn("b", kb.node_id().clone(), loopback(pb), sb);
        let (b_id, a_id) = (b.id.clone(), a.id.clone());
        a.wait("connection to b", connected_to(&b_id)).await;
        b.wait("connection to a", connected_to(&a_id)).await;
        // Let any duplicate settle, then look at both ends.
        let (ea, eb) = tokio::join!(
            a.collect(Duration::from_millis(1500)),
            b.collect(Duration::from_millis(1500))
        );
        let dups = |es: &[Event]| {
            es.iter()
                .filter(|e| matches!(e, Event::DuplicateClosed { .. }))
                .count()
        };
        duplicates += dups(&ea) + dups(&eb);
        for es in [&ea, &eb] {
            assert!(
                !es.iter().any(|e| matches!(e, Event::Disconnected { .. })),
                "round {round}: the kept connection must not churn: {es:?}"
            );
        }
        let (la, lb) = (a.live().await, b.live().await);
        eprintln!("round {round}: a live {la:?}, b live {lb:?}");
        assert_eq!(la.0, 1, "round {round}: a has one connection");
        assert_eq!(lb.0, 1, "round {round}: b has one connection");
        // Both keep the connection the smaller NodeId dialled.
        let a_smaller = a.id < b.id;
        assert_eq!(la.1 == 1, a_smaller, "round {round}: a's kept connection");
        assert_eq!(lb.1 == 1, !a_smaller, "round {round}: b's kept connection");
        assert_eq!(a.connected().await.len(), 1);
        assert_eq!(b.connected().await.len(), 1);
        a.stop().await;
        b.stop().await;
    }
    eprintln!("duplicates closed over all rounds: {duplicates}");
    assert!(duplicates > 0, "no round dialled both ways at once");
}

#[tokio::test]
async fn dialling_itself_is_refused_and_not_retried() {
    let ca = ca();
    let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let mut swarm = build(&key, &tls, fast());
    // On every interface, so that 127.0.0.2 (not a listen address) reaches us too.
    swarm
        .listen_on("/ip4/0.0.0.0/tcp/0".parse().unwrap())
        .unwrap();
    let addr = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await
                && address.to_string().starts_with("/ip4/127.0.0.1/")
            {
                return address;
            }
        }
    })
    .await
    .unwrap();
    let mut a = Running::spawn("a", key.node_id().clone(), addr.clone(), swarm);
    let port = a.port();
    // A listen address: refused without a dial. Another address of ours: found by the
    // handshake (the peer is ourselves), then never dialled again.
    let other: Multiaddr = format!("/ip4/127.0.0.2/tcp/{port}").parse().unwrap();
    a.add_peer(addr.clone()).await;
    a.add_peer(other.clone()).await;
    let events = a.collect(Duration::from_secs(2)).await;
    // Our own PeerId: refused before any dial.
    let third: Multiaddr = format!("/ip4/127.0.0.3/tcp/{port}").parse().unwrap();
    a.add_peer(third.clone().with(Protocol::P2p(a.id.to_peer_id())))
        .await;
    let more = a.collect(Duration::from_millis(500)).await;

    let count = |es: &[Event], f: &dyn Fn(&Event) -> bool| es.iter().filter(|e| f(e)).count();
    let dials_to = |a: &Multiaddr| {
        let a = a.clone();
        move |e: &Event| matches!(e, Event::Dialing { addr, .. } if *addr == a)
    };
    let refused = |a: &Multiaddr| {
        let a = a.clone();
        move |e: &Event| matches!(e, Event::SelfRefused { addr } if *addr == a)
    };
    assert_eq!(count(&events, &dials_to(&addr)), 0, "{events:?}");
    assert_eq!(count(&events, &refused(&addr)), 1, "{events:?}");
    assert_eq!(count(&events, &dials_to(&other)), 1, "{events:?}");
    assert_eq!(count(&events, &refused(&other)), 1, "{events:?}");
    assert_eq!(count(&more, &dials_to(&third)), 0, "{more:?}");
    assert_eq!(count(&more, &refused(&third)), 1, "{more:?}");
    assert!(a.connected().await.is_empty());
    assert_eq!(a.live().await.0, 0);
}

#[tokio::test]
async fn deny_drops_the_peer_at_once_and_allow_restores_it() {
    let ca = ca();
    let (ka, ta) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let (kb, tb) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let mut a = Running::start("a", &ka, &ta, fast(), 0).await;
    let mut b = Running::start("b", &kb, &tb, fast(), 0).await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.add_peer(b.addr.clone()).await;
    b.add_peer(a.addr.clone()).await;
    a.wait("connection to b", connected_to(&b_id)).await;
    b.wait("connection to a", connected_to(&a_id)).await;

    let t = Instant::now();
    let id = b_id.clone();
    a.manager(move |m| m.deny(id)).await;
    a.wait(
        "b dropped",
        |e| matches!(e, Event::Dropped { node } if *node == b_id),
    )
    .await;
    match a.wait("b's disconnect", disconnected_from(&b_id)).await {
        Event::Disconnected { retry_in, .. } => assert_eq!(retry_in, None, "denied: no redial"),
        other => panic!("unexpected {other:?}"),
    }
    eprintln!("b disconnected {} ms after deny", t.elapsed().as_millis());
    assert!(t.elapsed() < Duration::from_secs(5));

    // b keeps trying; a's handshake refuses it, and a never dials b.
    let refused = a
        .wait("b refused", |e| matches!(e, Event::Refused { .. }))
        .await;
    match refused {
        Event::Refused { reason, node, .. } => {
            assert!(
                matches!(reason, Refusal::Tls(TlsRefusal::Denied)),
                "{reason:?}"
            );
            assert_eq!(reason.code(), "denied");
            assert_eq!(node, Some(b_id.clone()));
        }
        other => panic!("unexpected {other:?}"),
    }
    b.wait("b's dial refused by a", |e| {
        matches!(
            e,
            Event::Refused {
                reason: Refusal::Tls(TlsRefusal::RejectedByPeer(_)),
                ..
            }
        )
    })
    .await;
    let quiet = a.collect(Duration::from_secs(1)).await;
    assert!(
        !quiet
            .iter()
            .any(|e| matches!(e, Event::Dialing { .. } | Event::Connected { .. })),
        "{quiet:?}"
    );
    assert!(a.connected().await.is_empty());
    assert_eq!(a.live().await.0, 0);

    // b stops trying, so the reconnection is a's own, at once.
    let a_addr = a.addr.clone();
    assert!(b.manager(move |m| m.remove_peer(&a_addr)).await);
    let t = Instant::now();
    let id = b_id.clone();
    a.manager(move |m| m.allow(id)).await;
    let b_addr = b.addr.clone();
    a.wait(
        "a redials b",
        |e| matches!(e, Event::Dialing { addr, attempt: 1 } if *addr == b_addr),
    )
    .await;
    eprintln!("a redialled b {} ms after allow", t.elapsed().as_millis());
    assert!(t.elapsed() < Duration::from_secs(2), "redialled at once");
    a.wait("connection to b", connected_to(&b_id)).await;
    assert_eq!(a.connected().await.len(), 1);
}

/// A peer whose swarm keeps running but that answers pings only until `silent` is set (it then
/// holds the ping streams without a reply).
async fn pong_peer(ca: &CertificateAuthority, silent: Arc<AtomicBool>) -> (Multiaddr, NodeId) {
    let (key, tls) = node(ca, KeyType::Secp256k1, Period::days(1));
    let mut swarm = build_swarm_with(&key, &tls, |_| libp2p_stream::Behaviour::new()).unwrap();
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(libp2p::ping::PROTOCOL_NAME)
        .unwrap();
    let port = common::listen_port(&mut swarm).await;
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let silent = silent.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 32];
                loop {
                    if stream.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    if silent.load(Ordering::SeqCst) {
                        // Hold the stream, never answer.
                        futures::future::pending::<()>().await;
                    }
                    if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (loopback(port), key.node_id().clone())
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_as_dead() {
    let ca = ca();
    let silent = Arc::new(AtomicBool::new(false));
    let (peer_addr, peer) = pong_peer(&ca, silent.clone()).await;
    let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let config = Config {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(300),
        ping_max_failures: 3,
        ..fast()
    };
    let config_dead_after = config.dead_after();
    let mut a = Running::start("a", &key, &tls, config, 0).await;
    a.add_peer(peer_addr).await;
    a.wait("connection", connected_to(&peer)).await;
    a.wait("a ping answered", |e| matches!(e, Event::Ping { .. }))
        .await;

    silent.store(true, Ordering::SeqCst);
    let t = Instant::now();
    match a
        .wait("the connection declared dead", |e| {
            matches!(e, Event::Dead { .. })
        })
        .await
    {
        Event::Dead {
            node,
            failures,
            silent,
        } => {
            assert_eq!(node, peer);
            // Whichever comes first: the third failure, or the deadline without an answer.
            assert!(
                failures == 3 || silent >= config_dead_after,
                "{failures} failures, {silent:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    eprintln!(
        "dead {} ms after the peer went silent",
        t.elapsed().as_millis()
    );
    match a.wait("the disconnect", disconnected_from(&peer)).await {
        Event::Disconnected {
            reason, retry_in, ..
        } => {
            assert!(reason.contains("dead"), "{reason}");
            assert!(retry_in.is_some(), "a configured peer is redialled");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// A busy member: it holds every ping stream without an answer (its answers would wait behind
/// its work), but until `quiet` is set it keeps sending the node flood DIGEST frames, every
/// 100 ms, once connected to `target`.
async fn busy_peer(
    ca: &CertificateAuthority,
    target: NodeId,
    quiet: Arc<AtomicBool>,
) -> (Multiaddr, NodeId) {
    let (key, tls) = node(ca, KeyType::Secp256k1, Period::days(1));
    let mut swarm = build_swarm_with(&key, &tls, |_| libp2p_stream::Behaviour::new()).unwrap();
    let mut control = swarm.behaviour().new_control();
    let mut pings = control.accept(libp2p::ping::PROTOCOL_NAME).unwrap();
    let port = common::listen_port(&mut swarm).await;
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((_, stream)) = pings.next().await {
            held.push(stream);
        }
    });
    tokio::spawn(async move {
        let target = target.to_peer_id();
        let deadline = Instant::now() + TIMEOUT;
        let mut stream = loop {
            match control.open_stream(target, flood::PROTOCOL_NAME).await {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("no flood stream to the node: {e}"),
            }
        };
        // varint(9) ‖ DIGEST: kind 0x03 and an 8-byte digest.
        let digest = [9, 3, 0, 0, 0, 0, 0, 0, 0, 1];
        for _ in 0..600 {
            if quiet.load(Ordering::SeqCst) {
                // Hold the stream open, send nothing more.
                futures::future::pending::<()>().await;
            }
            if stream.write_all(&digest).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (loopback(port), key.node_id().clone())
}

/// Pings alone would close a busy peer's connection, and the storm of reconnections that
/// follows on a loaded mesh costs more than the load: a peer whose frames keep coming is alive,
/// however late its ping answers. Once it goes quiet too, it is closed as dead as before.
#[tokio::test]
async fn a_peer_that_keeps_sending_frames_is_not_closed_for_unanswered_pings() {
    let ca = ca();
    let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let quiet = Arc::new(AtomicBool::new(false));
    let (peer_addr, peer) = busy_peer(&ca, key.node_id().clone(), quiet.clone()).await;
    let mut config = bcos_p2p::config::Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.network.peers = vec![PeerAddr(peer_addr)];
    let c = &mut config.connection;
    (c.ping_interval_ms, c.ping_timeout_ms, c.ping_max_failures) = (200, 300, 3);
    // 3 periods plus a timeout: 0.9 s.
    let dead_after = Duration::from_millis(900);
    let mut node = bcos_p2p::node::Node::start(key, tls, config).await.unwrap();
    let mut events: common::Events = Box::pin(node.events().unwrap());
    common::next(&mut events, |e| {
        matches!(e, NodeEvent::Connected { node, .. } if *node == peer).then_some(())
    })
    .await;

    // Five deadlines' worth of unanswered pings, with frames coming all along.
    let kept = Instant::now();
    while kept.elapsed() < dead_after * 5 {
        match tokio::time::timeout(Duration::from_millis(100), events.next()).await {
            Ok(Some(NodeEvent::Connection(Event::Dead {
                failures, silent, ..
            }))) => {
                panic!("closed as dead while sending: {failures} failures, silent {silent:?}")
            }
            Ok(Some(NodeEvent::Disconnected { reason, .. })) => panic!("disconnected: {reason}"),
            Ok(None) => panic!("the node stopped"),
            _ => {}
        }
    }

    quiet.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let silent = common::next(&mut events, |e| match e {
        NodeEvent::Connection(Event::Dead { node, silent, .. }) if *node == peer => Some(*silent),
        _ => None,
    })
    .await;
    eprintln!(
        "dead {} ms after the peer went quiet (silent {silent:?})",
        t.elapsed().as_millis()
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// A TCP relay to `target` that, once `cut` is set, drops everything and answers nothing
/// while holding the sockets open: a link that went dark.
async fn cuttable_relay(target: Multiaddr, cut: Arc<AtomicBool>) -> Multiaddr {
    let Some(Protocol::Tcp(port)) = target.iter().nth(1) else {
        panic!("not a TCP address: {target}");
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = loopback(listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (a_read, a_write) = inbound.into_split();
            let (b_read, b_write) = outbound.into_split();
            for (mut from, mut to) in [(a_read, b_write), (b_read, a_write)] {
                let cut = cut.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if cut.load(Ordering::SeqCst) {
                            // Hold both sockets, never deliver: the link is dark.
                            futures::future::pending::<()>().await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    relay
}

#[tokio::test]
async fn a_link_that_goes_dark_is_closed_as_dead_within_dead_after() {
    // Over a cut link, libp2p's ping reports failures only as each new ping stream's fixed 10 s
    // negotiation times out; the manager's own deadline must close the connection first.
    let ca = ca();
    let (key_b, tls_b) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let b = Running::start("b", &key_b, &tls_b, fast(), 0).await;
    let cut = Arc::new(AtomicBool::new(false));
    let relay = cuttable_relay(b.addr.clone(), cut.clone()).await;
    let (key_a, tls_a) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let config = Config {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(300),
        ping_max_failures: 3,
        ..fast()
    };
    let dead_after = config.dead_after();
    assert_eq!(dead_after, Duration::from_millis(900));
    let mut a = Running::start("a", &key_a, &tls_a, config, 0).await;
    a.add_peer(relay).await;
    a.wait("connection", connected_to(&b.id)).await;
    a.wait("a ping answered", |e| matches!(e, Event::Ping { .. }))
        .await;

    cut.store(true, Ordering::SeqCst);
    let t = Instant::now();
    match a
        .wait("the connection declared dead", |e| {
            matches!(e, Event::Dead { .. })
        })
        .await
    {
        Event::Dead { node, silent, .. } => {
            assert_eq!(node, b.id);
            assert!(silent >= dead_after, "closed after only {silent:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let took = t.elapsed();
    eprintln!("dark link closed {} ms after the cut", took.as_millis());
    // The last answered ping was at most one period before the cut; 10 s is where counting
    // failures alone would have got to (the first stream's negotiation timeout).
    assert!(took < Duration::from_secs(5), "took {took:?}");
    match a.wait("the disconnect", disconnected_from(&b.id)).await {
        Event::Disconnected { reason, .. } => assert!(reason.contains("dead"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn redial_backoff_grows_to_the_cap_with_bounded_jitter() {
    let ca = ca();
    let (key, tls) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let config = Config {
        redial_min: Duration::from_millis(50),
        redial_max: Duration::from_millis(400),
        ..Config::default()
    };
    let mut a = Running::start("a", &key, &tls, config.clone(), 0).await;
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = loopback(free.local_addr().unwrap().port());
    drop(free);
    a.add_peer(target.clone()).await;

    let mut retries = Vec::new();
    let mut attempts = Vec::new();
    while retries.len() < 8 {
        match a
            .wait("a dial", |e| {
                matches!(e, Event::Dialing { .. } | Event::DialFailed { .. })
            })
            .await
        {
            Event::Dialing { addr, attempt } => {
                assert_eq!(addr, target);
                attempts.push(attempt);
            }
            Event::DialFailed { addr, retry_in, .. } => {
                assert_eq!(addr, target);
                retries.push(retry_in.expect("redialled"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("retry delays: {retries:?}");
    assert_eq!(attempts, (1..=8).collect::<Vec<u32>>());
    for (n, got) in retries.iter().enumerate() {
        let base = config.backoff(n as u32);
        let expected = (50u64 << n).min(400);
        assert_eq!(base, Duration::from_millis(expected));
        assert!(
            *got <= base && *got >= base.mul_f64(1.0 - JITTER),
            "delay {n}: {got:?} not within jitter of {base:?}"
        );
    }
    let capped = &retries[3..];
    assert!(
        capped.iter().any(|d| *d != capped[0]),
        "jitter varies capped delays: {capped:?}"
    );

    // Removed: no more dials.
    let t = target.clone();
    assert!(a.manager(move |m| m.remove_peer(&t)).await);
    let _ = a.collect(Duration::from_millis(100)).await;
    let after = a.collect(Duration::from_secs(1)).await;
    assert!(
        !after.iter().any(|e| matches!(e, Event::Dialing { .. })),
        "{after:?}"
    );
}

#[tokio::test]
async fn connection_limits_refuse_excess_connections() {
    let ca = ca();
    let (ka, ta) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let limited = Config {
        max_established: Some(1),
        max_pending_incoming: Some(1),
        ..fast()
    };
    let mut a = Running::start("a", &ka, &ta, limited, 0).await;
    let a_id = a.id.clone();

    // Pending: a raw TCP connection that never handshakes holds the only pending slot, so the
    // next one is refused at once.
    let hold = tokio::net::TcpStream::connect(("127.0.0.1", a.port()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let extra = tokio::net::TcpStream::connect(("127.0.0.1", a.port()))
        .await
        .unwrap();
    let extra_port = extra.local_addr().unwrap().port();
    match a
        .wait("the second pending connection refused", |e| {
            matches!(e, Event::Refused { .. })
        })
        .await
    {
        Event::Refused { addr, reason, .. } => {
            assert!(matches!(reason, Refusal::Limit(_)), "{reason:?}");
            assert_eq!(reason.code(), "limit");
            assert_eq!(addr, loopback(extra_port));
        }
        other => panic!("unexpected {other:?}"),
    }
    drop((hold, extra));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Established: b gets the only slot, c is refused.
    let (kb, tb) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let (kc, tc) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let mut b = Running::start("b", &kb, &tb, fast(), 0).await;
    let c = Running::start("c", &kc, &tc, fast(), 0).await;
    b.add_peer(a.addr.clone()).await;
    b.wait("connection to a", connected_to(&a_id)).await;
    a.wait("b connected", connected_to(&b.id)).await;
    c.add_peer(a.addr.clone()).await;
    match a
        .wait("c refused", |e| {
            matches!(
                e,
                Event::Refused {
                    reason: Refusal::Limit(_),
                    ..
                }
            )
        })
        .await
    {
        Event::Refused { node, .. } => assert_eq!(node, Some(c.id.clone())),
        other => panic!("unexpected {other:?}"),
    }
    let _ = a.collect(Duration::from_millis(500)).await;
    assert_eq!(a.live().await.0, 1);
    let connected = a.connected().await;
    assert_eq!(connected.len(), 1);
    assert_eq!(connected[0].0, b.id);
}

/// A peer without the manager that dials `addr` twice.
fn double_dialler(key: &NodeKey, tls: &ca_tls::Config, addr: Multiaddr) {
    let mut swarm = build_swarm_with(key, tls, |_| libp2p::swarm::dummy::Behaviour).unwrap();
    swarm.dial(addr.clone()).unwrap();
    swarm.dial(addr).unwrap();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
}

#[tokio::test]
async fn duplicates_from_a_peer_without_the_manager_are_closed_too() {
    let ca = ca();
    let (km, tm) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let mut m = Running::start("m", &km, &tm, fast(), 0).await;
    // Both orders: the manager as the larger NodeId (it denies the second connection at
    // once) and as the smaller (it waits for the peer to close it, then closes it itself).
    for manager_larger in [true, false] {
        let (kp, tp) = loop {
            let (k, t) = node(&ca, KeyType::Secp256k1, Period::days(1));
            if (m.id > *k.node_id()) == manager_larger {
                break (k, t);
            }
        };
        let p = kp.node_id().clone();
        let t = Instant::now();
        double_dialler(&kp, &tp, m.addr.clone());
        m.wait(
            "the duplicate closed",
            |e| matches!(e, Event::DuplicateClosed { node } if *node == p),
        )
        .await;
        eprintln!(
            "manager larger: {manager_larger}: duplicate closed after {} ms",
            t.elapsed().as_millis()
        );
        // The larger side decides at once; the smaller one waits for the peer first.
        assert_eq!(
            t.elapsed() < connection::DUPLICATE_GRACE,
            manager_larger,
            "{:?}",
            t.elapsed()
        );
        let _ = m.collect(Duration::from_millis(300)).await;
        assert_eq!(m.live().await.0, 1, "one connection to the peer");
        let connected = m.connected().await;
        assert_eq!(connected.len(), 1);
        assert_eq!(connected[0].0, p);
        // Next round with a fresh peer.
        m.manager(move |b| b.deny(p)).await;
        let _ = m.collect(Duration::from_millis(300)).await;
        assert_eq!(m.live().await.0, 0);
    }
}

/// Strangers cannot take the established slots kept for configured peers: with
/// `max_established` 3 and one configured peer not connected, two strangers get in, the third
/// is refused, and the configured peer still connects when it comes.
#[tokio::test]
async fn strangers_cannot_take_the_slots_of_configured_peers() {
    let ca = ca();
    let (ka, ta) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let (kb, tb) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let config = Config {
        max_established: Some(3),
        // a's own dial of b fails (nothing listens there) and is not repeated in the test.
        redial_min: Duration::from_secs(120),
        redial_max: Duration::from_secs(120),
        ..Config::default()
    };
    let mut a = Running::start("a", &ka, &ta, config, 0).await;
    // b is configured by PeerId, at an address on which it never listens (a's redial must
    // not be what connects them), and away from the strangers' 127.0.0.1.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.5:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b_addr: Multiaddr = format!(
        "/ip4/127.0.0.5/tcp/{port}/p2p/{}",
        kb.node_id().to_peer_id()
    )
    .parse()
    .unwrap();
    a.add_peer(b_addr).await;
    let mut strangers = Vec::new();
    for name in ["c", "d"] {
        let (k, t) = node(&ca, KeyType::Secp256k1, Period::days(1));
        let s = Running::start(name, &k, &t, fast(), 0).await;
        s.add_peer(a.addr.clone()).await;
        a.wait("a stranger connected", connected_to(&s.id)).await;
        strangers.push(s);
    }
    let (ke, te) = node(&ca, KeyType::Secp256k1, Period::days(1));
    let e = Running::start("e", &ke, &te, fast(), 0).await;
    e.add_peer(a.addr.clone()).await;
    match a
        .wait("the third stranger refused", |ev| {
            matches!(
                ev,
                Event::Refused {
                    reason: Refusal::Limit(_),
                    ..
                }
            )
        })
        .await
    {
        Event::Refused { node, reason, .. } => {
            assert_eq!(node, Some(e.id.clone()));
            assert_eq!(reason.code(), "limit");
        }
        other => panic!("unexpected {other:?}"),
    }
    let b = Running::start("b", &kb, &tb, fast(), 0).await;
    b.add_peer(a.addr.clone()).await;
    a.wait("the configured peer connected", connected_to(&b.id))
        .await;
    assert_eq!(a.live().await.0, 3, "a holds b and both strangers");
}
