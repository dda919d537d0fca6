//! Bans, the manager's side of peer scores: it reads the offences the protocols report
//! ([`Offences`]), scores them (`scores`), and bans a node whose score falls to
//! [`Config::ban_threshold`]: closes its connections at once, refuses new ones either way with
//! the code `banned`, and dials a configured peer again only when its ban ends.

use std::{task::Context, time::Instant};

use libp2p::{
    PeerId,
    swarm::{CloseConnection, ToSwarm},
};

#[cfg(doc)]
use super::Config;
use super::{Behaviour, Event, peers::Closing, redial::State, scores::Ban};
use crate::{NodeId, Offence, Offences};

/// The kinds in the order they are weighed, heaviest first: a ban names the heaviest kind of
/// the reports that tipped the score.
const BY_WEIGHT: [Offence; 5] = [
    Offence::BadSignature,
    Offence::Malformed,
    Offence::OverBudget,
    Offence::Unsolicited,
    Offence::TooOld,
];

impl Behaviour {
    /// The handle the protocols report offences into; give a clone to each of them (the
    /// composed [`crate::behaviour::Behaviour`] does).
    pub fn offences(&self) -> Offences {
        self.offences.clone()
    }

    /// When `node`'s ban ends, if it is banned now.
    pub fn banned_until(&self, node: &NodeId) -> Option<Instant> {
        self.scores.banned_until(node, Instant::now())
    }

    /// Whether `node` (at `peer`) is one of the configured peers.
    pub(super) fn configured(&self, node: &NodeId, peer: PeerId) -> bool {
        self.targets
            .iter()
            .any(|t| t.node.as_ref() == Some(node) || t.peer == Some(peer))
    }

    /// Scores the offences reported since the last call, banning whom they push over the
    /// threshold; registers `cx` for the next report.
    pub(super) fn take_offences(&mut self, cx: &mut Context<'_>) {
        let reports = self.offences.take(cx);
        if reports.is_empty() {
            return;
        }
        let now = Instant::now();
        for (peer, counts) in reports {
            let Some(node) = self.node_ids.resolve(&peer) else {
                continue;
            };
            let configured = self.configured(&node, peer);
            for offence in BY_WEIGHT {
                let count = counts[offence.index()];
                let ban =
                    self.scores
                        .penalise(&self.config, &node, (offence, count), configured, now);
                if let Some(ban) = ban {
                    self.ban(peer, node, ban, offence);
                    break;
                }
            }
        }
    }

    /// Closes `node`'s connections and holds back its configured addresses until the ban ends.
    fn ban(&mut self, peer: PeerId, node: NodeId, ban: Ban, offence: Offence) {
        tracing::warn!(
            %node,
            %offence,
            seconds = ban.duration.as_secs_f64(),
            repeat = ban.repeat,
            "banning a peer"
        );
        if let Some(p) = self.peers.get(&peer) {
            for id in &p.conns {
                if let Some(c) = self.conns.get_mut(id) {
                    c.closing = Some(Closing::Banned(offence));
                }
            }
            self.queue.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::All,
            });
        }
        for t in &mut self.targets {
            if t.node.as_ref() == Some(&node) && matches!(t.state, State::Waiting(_)) {
                t.state = State::Waiting(ban.until);
            }
        }
        self.emit(Event::Banned {
            node,
            duration: ban.duration,
            offence,
            repeat: ban.repeat,
        });
        self.wake();
    }
}
