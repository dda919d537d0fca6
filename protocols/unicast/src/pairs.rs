//! The two stream pairs of a connection (main and urgent) and which one a command goes to.

use either::Either;
use libp2p_core::Multiaddr;
use libp2p_identity::PeerId;
use libp2p_swarm::{ConnectionHandler as _, ConnectionId, NotifyHandler, ToSwarm};
use std::sync::Arc;

use bcos_p2p_core::bandwidth::ConnectionLimits;

use crate::{
    Behaviour, PairHandlers, Priority,
    codec::Frame,
    handler::{self, Command, Handler, Requests},
};

impl Behaviour {
    /// The handler of a new connection to `peer` at `remote`: the main stream pair and the
    /// urgent one.
    pub(crate) fn new_handler(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
    ) -> PairHandlers {
        let backlog = self.backlogs.entry(connection).or_default().clone();
        let limits = ConnectionLimits {
            bucket: self
                .settings
                .traffic
                .limits
                .connection_bucket()
                .map(Arc::new),
            path: self.path_paces.as_ref().and_then(|p| p.take(&peer, remote)),
        };
        let heard = self.heard.as_ref().map(|h| h.cell(connection));
        let pair = |urgent| {
            Handler::new(Requests::new(
                self.settings.clone(),
                backlog.clone(),
                urgent,
                limits.clone(),
            ))
            .hearing(heard.clone())
        };
        pair(false).select(pair(true))
    }

    /// `command` for the pair of `connection` it belongs to ([`Behaviour::send_to_pair`]).
    /// One-way messages are counted in the connection's backlog here, once, whatever sends them
    /// (the handler counts them out when written or dropped).
    pub(crate) fn notify(&mut self, peer: PeerId, connection: ConnectionId, command: Command) {
        if let Command::Send(Frame::Oneway { payload, .. }) = &command {
            self.backlogs
                .entry(connection)
                .or_default()
                .add(payload.len());
        }
        self.send_to_pair(peer, connection, command);
    }

    /// The peer does not speak the urgent protocol: what its pair handed back goes on the main
    /// pair, and so does everything after it.
    pub(crate) fn urgent_refused(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        frames: Vec<Frame>,
    ) {
        tracing::debug!(%peer, "peer does not speak the urgent unicast protocol");
        self.no_urgent.insert(connection);
        for frame in frames {
            // Not `notify`: these one-way messages were counted when first handed to this
            // connection and never counted out (the main pair does that once it writes them);
            // counting them again would hold the connection's backlog up for good.
            self.send_to_pair(peer, connection, Command::Send(frame));
        }
    }

    /// `command` to the pair of `connection` it belongs to: requests and one-way messages of
    /// high-priority modules go on the urgent pair (unless the peer does not speak it), answers
    /// to the pair their request came on.
    fn send_to_pair(&mut self, peer: PeerId, connection: ConnectionId, command: Command) {
        let urgent = match &command {
            Command::Send(Frame::Request { module, .. } | Frame::Oneway { module, .. }) => {
                self.settings.traffic.priority(*module) == Priority::High
                    && !self.no_urgent.contains(&connection)
            }
            Command::Respond { stream, .. } => stream & handler::URGENT_STREAMS != 0,
            Command::Send(_) => false,
            Command::Cancel(id) => {
                // Either pair may hold it.
                self.events.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(connection),
                    event: Either::Right(Command::Cancel(*id)),
                });
                false
            }
        };
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event: if urgent {
                Either::Right(command)
            } else {
                Either::Left(command)
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use bcos_p2p_core::{KeyType, NodeIdBook, NodeKey};
    use bytes::Bytes;

    use super::*;
    use libp2p_swarm::NetworkBehaviour as _;

    use crate::{Config, handler::HandlerEvent};

    /// One-way messages the urgent pair hands back were counted when first sent: going to the
    /// main pair does not count them again.
    #[test]
    fn messages_the_urgent_pair_hands_back_are_not_counted_again() {
        let mut b = Behaviour::new(Config::default(), NodeIdBook::default());
        let peer = NodeKey::generate(KeyType::Secp256k1)
            .unwrap()
            .node_id()
            .to_peer_id();
        let connection = ConnectionId::new_unchecked(1);
        let oneway = || Frame::Oneway {
            module: 1,
            payload: Bytes::from_static(b"abc"),
        };
        b.notify(peer, connection, Command::Send(oneway()));
        assert_eq!(b.backlogs[&connection].get(), (1, 3));
        let handed_back = HandlerEvent::NoUrgent(vec![oneway()]);
        b.on_connection_handler_event(peer, connection, Either::Right(handed_back));
        assert_eq!(b.backlogs[&connection].get(), (1, 3));
        assert!(b.no_urgent.contains(&connection));
    }
}
