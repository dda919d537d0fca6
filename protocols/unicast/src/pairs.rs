//! The two stream pairs of a connection (main and urgent) and which one a command goes to.

use either::Either;
use libp2p_identity::PeerId;
use libp2p_swarm::{ConnectionHandler as _, ConnectionId, NotifyHandler, ToSwarm};
use std::sync::Arc;

use crate::{
    Behaviour, PairHandlers, Priority,
    codec::Frame,
    handler::{self, Command, Handler, Requests},
};

impl Behaviour {
    /// The handler of a new connection: the main stream pair and the urgent one.
    pub(crate) fn new_handler(&mut self, connection: ConnectionId) -> PairHandlers {
        let backlog = self.backlogs.entry(connection).or_default().clone();
        let bucket = self
            .settings
            .traffic
            .limits
            .connection_bucket()
            .map(Arc::new);
        let heard = self.heard.as_ref().map(|h| h.cell(connection));
        let pair = |urgent| {
            Handler::new(Requests::new(
                self.settings.clone(),
                backlog.clone(),
                urgent,
                bucket.clone(),
            ))
            .hearing(heard.clone())
        };
        pair(false).select(pair(true))
    }

    /// `command` for the pair of `connection` it belongs to: requests and one-way messages of
    /// high-priority modules go on the urgent pair (unless the peer does not speak it), answers
    /// to the pair their request came on.
    /// One-way messages are counted in the connection's backlog here, whatever sends them (the
    /// handler counts them out when written or dropped).
    pub(crate) fn notify(&mut self, peer: PeerId, connection: ConnectionId, command: Command) {
        if let Command::Send(Frame::Oneway { payload, .. }) = &command {
            self.backlogs
                .entry(connection)
                .or_default()
                .add(payload.len());
        }
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
