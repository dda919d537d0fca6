//! Where the routed transport (in the swarm's transport stack) and the route behaviour (among
//! the swarm's behaviours) meet: [`RouteLink`].
//!
//! A libp2p transport and a behaviour cannot see each other, yet a routed connection needs
//! both: the transport is asked to dial `/p2p-circuit/p2p/<peer>` and must get a stream from the
//! behaviour, which opens it hop by hop; a stream the behaviour accepts as a circuit's
//! destination must come out of the transport as an incoming connection. Both hold clones of
//! one `RouteLink` (the security config carries it, so that a swarm built with a config and a
//! behaviour built with the same config are linked without either knowing the other).

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Waker},
};

use futures::channel::oneshot;
use libp2p_core::multiaddr::{Multiaddr, Protocol};
use libp2p_identity::PeerId;
use libp2p_swarm::Stream;

/// The address a node listens on for routed connections, and the start of the address of a
/// routed dial (`/p2p-circuit/p2p/<peer>`).
pub fn circuit_address() -> Multiaddr {
    Multiaddr::empty().with(Protocol::P2pCircuit)
}

/// Whether `addr` is a routed connection's address (it holds `/p2p-circuit`).
pub fn is_routed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// A dial of a routed connection, from the transport to the behaviour.
pub struct RoutedDial {
    /// The node to reach.
    pub peer: PeerId,
    /// Where the behaviour sends the circuit's stream (to the first hop), or why there is none.
    pub reply: oneshot::Sender<Result<Stream, String>>,
}

/// A circuit this node is the destination of, from the behaviour to the transport.
pub struct RoutedIncoming {
    /// The circuit's stream (from the last relay).
    pub stream: Stream,
    /// The last relay.
    pub via: PeerId,
}

/// Most circuits waiting for the transport to take them; the behaviour refuses more (`Busy`).
pub const MAX_WAITING_INCOMING: usize = 64;

#[derive(Default)]
struct Inner {
    dials: VecDeque<RoutedDial>,
    incoming: VecDeque<RoutedIncoming>,
    behaviour: Option<Waker>,
    transport: Option<Waker>,
    /// Whether the transport has a listener for routed connections.
    listening: bool,
    /// Whether a behaviour takes the dials (it took them at least once).
    served: bool,
}

/// Most dials waiting for the behaviour; more fail at once.
const MAX_WAITING_DIALS: usize = 1024;

/// The shared meeting point (see the module documentation). Clones share it.
#[derive(Clone, Default)]
pub struct RouteLink(Arc<Mutex<Inner>>);

impl fmt::Debug for RouteLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLink").finish_non_exhaustive()
    }
}

impl RouteLink {
    /// A new meeting point.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing here can be left half-done by a panic: take the data as it is.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport asks for a circuit to `dial.peer`. Fails it at once when no behaviour
    /// takes dials (a swarm without the route behaviour) or too many wait.
    pub fn dial(&self, dial: RoutedDial) {
        let mut inner = self.lock();
        if !inner.served {
            let _ = dial
                .reply
                .send(Err("routing is not running in this swarm".into()));
            return;
        }
        if inner.dials.len() >= MAX_WAITING_DIALS {
            let _ = dial.reply.send(Err("too many routed dials waiting".into()));
            return;
        }
        inner.dials.push_back(dial);
        if let Some(w) = inner.behaviour.take() {
            w.wake();
        }
    }

    /// The behaviour takes the dials asked for (and is woken when more come).
    pub fn take_dials(&self, cx: &mut Context<'_>) -> Vec<RoutedDial> {
        let mut inner = self.lock();
        inner.served = true;
        inner.behaviour = Some(cx.waker().clone());
        inner.dials.drain(..).collect()
    }

    /// The behaviour hands a circuit it is the destination of to the transport; false (the
    /// circuit dropped, which closes it) when the transport does not listen or too many wait.
    pub fn push_incoming(&self, incoming: RoutedIncoming) -> bool {
        let mut inner = self.lock();
        if !inner.listening || inner.incoming.len() >= MAX_WAITING_INCOMING {
            return false;
        }
        inner.incoming.push_back(incoming);
        if let Some(w) = inner.transport.take() {
            w.wake();
        }
        true
    }

    /// The transport takes the next circuit (and is woken when one comes).
    pub fn poll_incoming(&self, cx: &mut Context<'_>) -> Option<RoutedIncoming> {
        let mut inner = self.lock();
        match inner.incoming.pop_front() {
            Some(i) => Some(i),
            None => {
                inner.transport = Some(cx.waker().clone());
                None
            }
        }
    }

    /// The transport starts or stops listening for routed connections.
    pub fn set_listening(&self, listening: bool) {
        let mut inner = self.lock();
        inner.listening = listening;
        if !listening {
            inner.incoming.clear();
        }
    }

    /// Whether the transport listens for routed connections.
    pub fn is_listening(&self) -> bool {
        self.lock().listening
    }

    /// Whether the transport would take one more circuit now (it listens, and fewer than
    /// [`MAX_WAITING_INCOMING`] wait): checked before a destination answers `Ok`.
    pub fn can_take(&self) -> bool {
        let inner = self.lock();
        inner.listening && inner.incoming.len() < MAX_WAITING_INCOMING
    }
}
