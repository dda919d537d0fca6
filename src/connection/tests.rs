//! Unit tests of the manager as a whole: the per-address limits seen through the
//! `NetworkBehaviour` calls the swarm makes, and address handling. (The config and the jitter
//! are tested next to their code.)

use libp2p::swarm::{ListenError, ListenFailure, behaviour::ConnectionEstablished};

use super::{admission::Denial, *};

/// A manager of a new node with `limit` as its per-address rate limit (and no cap on
/// pending connections per address).
fn manager(limit: Option<RateLimit>) -> Behaviour {
    let key = crate::NodeKey::generate(crate::KeyType::Secp256k1).unwrap();
    let config = Config {
        new_inbound_per_ip: limit,
        max_pending_incoming_per_ip: None,
        ..Config::default()
    };
    let (access, book) = (AccessList::default(), NodeIdBook::default());
    Behaviour::new(key.node_id().clone(), config, access, book)
}

#[test]
fn new_inbound_connections_are_limited_per_address_except_configured_peers() {
    let mut b = manager(Some(RateLimit {
        per_second: 1,
        burst: 2,
    }));
    b.add_peer("/ip4/10.0.0.9/tcp/30300".parse().unwrap());
    b.queue.clear();
    let local: Multiaddr = "/ip4/10.0.0.5/tcp/30300".parse().unwrap();
    let mut ids = 0..;
    let mut pending = |b: &mut Behaviour, remote: &str| {
        let id = ConnectionId::new_unchecked(ids.next().unwrap());
        let remote: Multiaddr = remote.parse().unwrap();
        b.handle_pending_inbound_connection(id, &local, &remote)
    };
    assert!(pending(&mut b, "/ip4/10.0.0.1/tcp/5000").is_ok());
    assert!(pending(&mut b, "/ip4/10.0.0.1/tcp/5001").is_ok());
    let denied = pending(&mut b, "/ip4/10.0.0.1/tcp/5002").unwrap_err();
    let cause = denied.downcast_ref::<Denial>().map(|d| d.to_string());
    assert_eq!(
        cause.as_deref(),
        Some("too many new connections from 10.0.0.1")
    );
    // Reported once with the reason; the next refusals within a second are only counted.
    assert!(pending(&mut b, "/ip4/10.0.0.1/tcp/5003").is_err());
    let refused: Vec<_> = b
        .queue
        .drain(..)
        .filter_map(|a| match a {
            ToSwarm::GenerateEvent(Event::Refused { addr, reason, node }) => {
                Some((addr, reason, node))
            }
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let (addr, reason, node) = &refused[0];
    assert_eq!(addr.to_string(), "/ip4/10.0.0.1/tcp/5002");
    assert!(node.is_none());
    assert_eq!(reason.code(), "rate_limit");
    assert!(
        matches!(reason, Refusal::RateLimited { ip, unreported: 0 } if ip.to_string() == "10.0.0.1")
    );
    // Other addresses have their own budget; a configured peer's address has none, only the
    // configured peers' pool of pending slots (at least 16) and, past it, the common pool
    // (`max_pending_incoming`, 256) that strangers use, three of whose slots are taken.
    assert!(pending(&mut b, "/ip4/10.0.0.2/tcp/5000").is_ok());
    for port in 0..16 {
        assert!(pending(&mut b, &format!("/ip4/10.0.0.9/tcp/{port}")).is_ok());
    }
    let common = (16..1000)
        .take_while(|port| pending(&mut b, &format!("/ip4/10.0.0.9/tcp/{port}")).is_ok())
        .count();
    assert_eq!(common, 256 - 3);
    let full = pending(&mut b, "/ip4/10.0.0.9/tcp/1000").unwrap_err();
    let cause = full.downcast_ref::<super::LimitExceeded>().copied();
    assert_eq!(
        cause.map(|e| (e.limit, e.kind)),
        Some((16, super::LimitKind::ReservedPendingIncoming))
    );
    let mut b = manager(None);
    for port in 0..20 {
        assert!(pending(&mut b, &format!("/ip4/10.0.0.1/tcp/{port}")).is_ok());
    }
}

#[test]
fn pending_incoming_connections_are_capped_per_address_until_they_end() {
    let key = crate::NodeKey::generate(crate::KeyType::Secp256k1).unwrap();
    let config = Config {
        new_inbound_per_ip: None,
        max_pending_incoming_per_ip: Some(2),
        ..Config::default()
    };
    let (access, book) = (AccessList::default(), NodeIdBook::default());
    let mut b = Behaviour::new(key.node_id().clone(), config, access, book);
    b.add_peer("/ip4/10.0.0.9/tcp/30300".parse().unwrap());
    b.queue.clear();
    let local: Multiaddr = "/ip4/10.0.0.5/tcp/30300".parse().unwrap();
    let remote: Multiaddr = "/ip4/10.0.0.1/tcp/5000".parse().unwrap();
    let id = ConnectionId::new_unchecked;
    let failed = |b: &mut Behaviour, n: usize, error: &ListenError| {
        b.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
            local_addr: &local,
            send_back_addr: &remote,
            error,
            connection_id: id(n),
            peer_id: None,
        }));
    };
    let pending =
        |b: &mut Behaviour, n: usize| b.handle_pending_inbound_connection(id(n), &local, &remote);
    let endpoint = ConnectedPoint::Listener {
        local_addr: local.clone(),
        send_back_addr: remote.clone(),
    };
    let aborted = ListenError::Aborted;
    let start = Instant::now();
    // Every way a pending connection ends, many times over: the count never leaks.
    for round in 0..100 {
        let n = round * 10;
        assert!(pending(&mut b, n).is_ok());
        assert!(pending(&mut b, n + 1).is_ok());
        let denied = pending(&mut b, n + 2).unwrap_err();
        let cause = denied.downcast_ref::<Denial>().map(|d| d.to_string());
        assert_eq!(
            cause.as_deref(),
            Some("too many connections from 10.0.0.1 still handshaking")
        );
        // The swarm reports the denial as a ListenFailure: that id was never counted.
        failed(&mut b, n + 2, &ListenError::Denied { cause: denied });
        assert!(pending(&mut b, n + 3).is_err());
        // A handshake that fails or times out (a transport error), or is aborted.
        failed(&mut b, n, &aborted);
        assert!(pending(&mut b, n + 4).is_ok());
        // One that completes.
        b.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: PeerId::random(),
            connection_id: id(n + 1),
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
        // A later failure of an established id, or a repeated one, changes nothing.
        failed(&mut b, n + 1, &aborted);
        assert!(pending(&mut b, n + 5).is_ok());
        assert!(pending(&mut b, n + 6).is_err());
        failed(&mut b, n + 4, &aborted);
        failed(&mut b, n + 5, &aborted);
        failed(&mut b, n + 5, &aborted);
        let pending = b.ip_pending.as_ref().unwrap();
        assert_eq!(pending.tracked(), (0, 0), "round {round}");
    }
    // One refusal reported (with its code), the rest within the second only counted.
    let refused: Vec<Refusal> = b
        .queue
        .drain(..)
        .filter_map(|a| match a {
            ToSwarm::GenerateEvent(Event::Refused { reason, .. }) => Some(reason),
            _ => None,
        })
        .collect();
    let most = 1 + start.elapsed().as_secs() as usize;
    assert!(!refused.is_empty() && refused.len() <= most, "{refused:?}");
    assert_eq!(refused[0].code(), "pending_limit");
    assert!(matches!(
        refused[0],
        Refusal::PendingLimited { unreported: 0, .. }
    ));
    // Another address has its own slots; a configured peer's address is not counted.
    let stranger: Multiaddr = "/ip6/2001:db8::1/tcp/1".parse().unwrap();
    for n in 0..2 {
        let id = id(10_000 + n);
        assert!(
            b.handle_pending_inbound_connection(id, &local, &stranger)
                .is_ok()
        );
    }
    let same_64: Multiaddr = "/ip6/2001:db8::2/tcp/1".parse().unwrap();
    let id3 = id(10_002);
    assert!(
        b.handle_pending_inbound_connection(id3, &local, &same_64)
            .is_err()
    );
    for n in 0..16 {
        let peer: Multiaddr = format!("/ip4/10.0.0.9/tcp/{n}").parse().unwrap();
        let id = id(20_000 + n);
        assert!(
            b.handle_pending_inbound_connection(id, &local, &peer)
                .is_ok()
        );
    }
    assert_eq!(b.ip_pending.as_ref().unwrap().tracked(), (1, 2));
}

#[test]
fn p2p_suffix_is_split_off() {
    let peer = PeerId::random();
    let a: Multiaddr = format!("/ip4/1.2.3.4/tcp/5/p2p/{peer}").parse().unwrap();
    assert_eq!(
        split_peer(a),
        ("/ip4/1.2.3.4/tcp/5".parse().unwrap(), Some(peer))
    );
    let b: Multiaddr = "/dns/x/tcp/5".parse().unwrap();
    assert_eq!(split_peer(b.clone()), (b, None));
}
