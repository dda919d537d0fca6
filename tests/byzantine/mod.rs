//! A member that drops what it should relay, for `tests/flood.rs` and `benches/flood.rs`: a real
//! flood node (it keeps its links and publishes its records, so it stays in everyone's trees)
//! whose behaviour never sees the DATA, IHAVE and IWANT frames it receives, so it forwards,
//! announces and serves nothing. The library has no switch for this: the wrapper drops the
//! frames before they reach it. Also the random regular graphs the drops are tested on.

#![allow(dead_code)]

use std::{
    collections::HashSet,
    task::{Context, Poll},
};

use bcos_p2p::flood::{self, wire::Frame};
use bcos_p2p_core::link::LinkEvent;
use either::Either;
use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
};

/// A flood node that drops every message frame it receives while `dropping` is set, and the
/// DATA frames of one peer (`drop_data_from`: a lost link's copies, the others pass).
pub struct Dropper {
    /// The node's real flood behaviour.
    pub inner: flood::Behaviour,
    /// Whether it drops (false: it is an honest node).
    pub dropping: bool,
    /// A peer whose DATA frames it drops, as if the link lost them.
    pub drop_data_from: Option<PeerId>,
}

impl NetworkBehaviour for Dropper {
    type ConnectionHandler = THandler<flood::Behaviour>;
    type ToSwarm = flood::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(connection, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(connection, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(connection, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let message = matches!(
            event,
            Either::Left(LinkEvent::Received(
                Frame::Data(_) | Frame::Ihave(_) | Frame::Iwant(_)
            ))
        );
        let lost = self.drop_data_from == Some(peer)
            && matches!(event, Either::Left(LinkEvent::Received(Frame::Data(_))));
        if !(lost || self.dropping && message) {
            self.inner
                .on_connection_handler_event(peer, connection, event)
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<flood::Event, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

/// A random connected `degree`-regular graph on `n` nodes (`n × degree` even), from a fixed
/// seed so failures reproduce: stubs paired at random (the configuration model), retried until
/// there is no loop, no double edge and the graph is connected.
pub fn regular(n: usize, degree: usize, mut seed: u64) -> Vec<(usize, usize)> {
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for _ in 0..100_000 {
        let mut stubs: Vec<usize> = (0..n)
            .flat_map(|i| std::iter::repeat_n(i, degree))
            .collect();
        for i in (1..stubs.len()).rev() {
            stubs.swap(i, next() % (i + 1));
        }
        let mut edges: Vec<(usize, usize)> = stubs
            .chunks(2)
            .map(|c| (c[0].min(c[1]), c[0].max(c[1])))
            .collect();
        edges.sort_unstable();
        let simple = edges.iter().all(|(a, b)| a != b) && edges.windows(2).all(|w| w[0] != w[1]);
        if simple && connected(n, &edges, &[]) {
            return edges;
        }
    }
    panic!("no {degree}-regular graph on {n} nodes found");
}

/// A random `d`-regular graph on `n` nodes: a ring lattice (each node linked to the `d / 2`
/// next), then random degree-preserving double-edge swaps; redone until connected. Edges as
/// (later, earlier), so the later node dials. For degrees where [`regular`]'s pairing is almost
/// never simple (8 on 256 nodes: about one pairing in 10^7).
pub fn regular_by_swaps(n: usize, d: usize, mut seed: u64) -> Vec<(usize, usize)> {
    let mut next = move |bound: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % bound
    };
    loop {
        let mut edges: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (1..=d / 2).map(move |k| (a, (a + k) % n)))
            .collect();
        let mut set: HashSet<(usize, usize)> =
            edges.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
        for _ in 0..edges.len() * 10 {
            let (i, j) = (next(edges.len()), next(edges.len()));
            let ((a, b), (c, e)) = (edges[i], edges[j]);
            // a-b, c-e  →  a-e, c-b
            if a == e || c == b || a == c || b == e {
                continue;
            }
            let (x, y) = ((a.min(e), a.max(e)), (c.min(b), c.max(b)));
            if set.contains(&x) || set.contains(&y) {
                continue;
            }
            set.remove(&(a.min(b), a.max(b)));
            set.remove(&(c.min(e), c.max(e)));
            set.insert(x);
            set.insert(y);
            edges[i] = (a, e);
            edges[j] = (c, b);
        }
        if connected(n, &edges, &[]) {
            return edges
                .into_iter()
                .map(|(a, b)| (a.max(b), a.min(b)))
                .collect();
        }
    }
}

/// Whether the nodes of `0..n` not in `without` are connected by `edges` that avoid `without`.
pub fn connected(n: usize, edges: &[(usize, usize)], without: &[usize]) -> bool {
    let Some(start) = (0..n).find(|i| !without.contains(i)) else {
        return true;
    };
    let mut seen = vec![false; n];
    seen[start] = true;
    let mut stack = vec![start];
    while let Some(a) = stack.pop() {
        for &(x, y) in edges {
            let b = match (x == a, y == a) {
                (true, _) => y,
                (_, true) => x,
                _ => continue,
            };
            if !seen[b] && !without.contains(&b) {
                seen[b] = true;
                stack.push(b);
            }
        }
    }
    (0..n).all(|i| seen[i] || without.contains(&i))
}

/// The parents of every node in the breadth-first tree of `edges` from `root` that flood
/// computes (SPEC.md §4): neighbours visited in ascending `short` id order.
pub fn tree(short: &[u64], edges: &[(usize, usize)], root: usize) -> Vec<Option<usize>> {
    let n = short.len();
    let mut neighbours: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        neighbours[a].push(b);
        neighbours[b].push(a);
    }
    for list in &mut neighbours {
        list.sort_by_key(|i| short[*i]);
    }
    let mut parent = vec![None; n];
    let mut seen = vec![false; n];
    seen[root] = true;
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(a) = queue.pop_front() {
        for &b in &neighbours[a] {
            if !seen[b] {
                seen[b] = true;
                parent[b] = Some(a);
                queue.push_back(b);
            }
        }
    }
    parent
}

/// How many (origin, receiver) pairs of nodes outside `droppers` lose a message in the trees
/// of `edges` when `droppers` relay nothing: the receivers with a dropper on their tree path.
pub fn cut_off(short: &[u64], edges: &[(usize, usize)], droppers: &[usize]) -> usize {
    let n = short.len();
    let mut lost = 0;
    for origin in (0..n).filter(|o| !droppers.contains(o)) {
        let parent = tree(short, edges, origin);
        for node in (0..n).filter(|i| *i != origin && !droppers.contains(i)) {
            let mut at = parent[node];
            while let Some(p) = at {
                if droppers.contains(&p) {
                    lost += 1;
                    break;
                }
                at = parent[p];
            }
        }
    }
    lost
}
