//! The routed transport: dials `/p2p-circuit/p2p/<peer>` through the route behaviour, and
//! yields the circuits this node is the destination of as incoming connections. Put it beside
//! TCP in the swarm's transport, under the same security upgrade and muxer: a routed
//! connection is then authenticated and encrypted end to end by the same CA-TLS handshake as a
//! direct one, and every relay sees only TLS records.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bcos_p2p_core::route_link::{RouteLink, RoutedDial};
pub use bcos_p2p_core::route_link::{circuit_address, is_routed};
use futures::{
    FutureExt,
    channel::oneshot,
    future::{BoxFuture, Ready, ready},
};
use libp2p_core::{
    multiaddr::{Multiaddr, Protocol},
    transport::{DialOpts, ListenerId, TransportError, TransportEvent},
};
use libp2p_identity::PeerId;
use libp2p_swarm::Stream;

/// Why a routed dial failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No circuit could be opened (no path, a relay refused, ...).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No route behaviour serves this transport.
    #[error("routing is not running in this swarm")]
    NotRunning,
}

/// The routed transport (see the module documentation).
pub struct Transport {
    link: RouteLink,
    listener: Option<ListenerId>,
    /// A listener removed, whose `ListenerClosed` is still to be reported.
    closed: Option<ListenerId>,
}

impl Transport {
    /// The transport served by the route behaviour holding a clone of `link`.
    pub fn new(link: RouteLink) -> Self {
        Transport {
            link,
            listener: None,
            closed: None,
        }
    }
}

/// The peer a routed dial address names: exactly `/p2p-circuit/p2p/<peer>`.
fn dial_target(addr: &Multiaddr) -> Option<PeerId> {
    let mut it = addr.iter();
    match (it.next(), it.next(), it.next()) {
        (Some(Protocol::P2pCircuit), Some(Protocol::P2p(peer)), None) => Some(peer),
        _ => None,
    }
}

impl libp2p_core::Transport for Transport {
    type Output = Stream;
    type Error = RouteError;
    type ListenerUpgrade = Ready<Result<Stream, RouteError>>;
    type Dial = BoxFuture<'static, Result<Stream, RouteError>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        if addr != circuit_address() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.listener = Some(id);
        self.link.set_listening(true);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listener != Some(id) {
            return false;
        }
        self.listener = None;
        self.closed = Some(id);
        self.link.set_listening(false);
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(peer) = dial_target(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let (reply, answer) = oneshot::channel();
        let link = self.link.clone();
        // Only once polled (the transport contract): the swarm may race several dials.
        Ok(async move {
            link.dial(RoutedDial { peer, reply });
            match answer.await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(reason)) => Err(RouteError::Unreachable(reason)),
                Err(_) => Err(RouteError::NotRunning),
            }
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        if let Some(listener_id) = self.closed.take() {
            return Poll::Ready(TransportEvent::ListenerClosed {
                listener_id,
                reason: Ok(()),
            });
        }
        let Some(listener_id) = self.listener else {
            return Poll::Pending;
        };
        match self.link.poll_incoming(cx) {
            Some(incoming) => Poll::Ready(TransportEvent::Incoming {
                listener_id,
                upgrade: ready(Ok(incoming.stream)),
                local_addr: circuit_address(),
                send_back_addr: Multiaddr::empty()
                    .with(Protocol::P2p(incoming.via))
                    .with(Protocol::P2pCircuit),
            }),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_circuit_addresses_are_dialled() {
        let peer = bcos_p2p_core::NodeKey::generate(bcos_p2p_core::KeyType::Secp256k1)
            .unwrap()
            .node_id()
            .to_peer_id();
        let ok: Multiaddr = format!("/p2p-circuit/p2p/{peer}").parse().unwrap();
        assert_eq!(dial_target(&ok), Some(peer));
        assert!(is_routed(&ok));
        for bad in [
            "/ip4/127.0.0.1/tcp/1".to_string(),
            "/p2p-circuit".to_string(),
            format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}/p2p-circuit/p2p/{peer}"),
        ] {
            let bad: Multiaddr = bad.parse().unwrap();
            assert_eq!(dial_target(&bad), None, "{bad}");
        }
        assert!(!is_routed(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()));
    }
}
