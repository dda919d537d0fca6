//! What the manager reports: its [`Event`]s, why it refused a connection ([`Refusal`]), and
//! where a failed dial hides a CA-TLS refusal ([`dial_refusal`]), which the manager and the
//! layers above it (the CLI's JSON events, the interop binary) read alike.

use std::{net::IpAddr, time::Duration};

use libp2p::{Multiaddr, swarm::DialError};

use super::LimitExceeded;

#[cfg(doc)]
use super::{Behaviour, Config};
use crate::{
    NodeId, Offence,
    ca_tls::{self, UpgradeError},
};

/// The CA-TLS refusal inside a failed dial, and the address that was refused. A dial tries
/// several addresses; libp2p keeps each one's error in a list rather than a source chain.
pub fn dial_refusal(error: &DialError) -> Option<(Option<&Multiaddr>, &UpgradeError)> {
    match error {
        DialError::Transport(errors) => errors
            .iter()
            .find_map(|(addr, e)| UpgradeError::find(e).map(|u| (Some(addr), u))),
        other => UpgradeError::find(other).map(|u| (None, u)),
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The CA-TLS handshake refused it (either side: see [`ca_tls::Refusal`]), or the access
    /// lists refuse the node it authenticated as.
    Tls(ca_tls::Refusal),
    /// A connection limit of [`Config`] was reached.
    Limit(LimitExceeded),
    /// The address opened new connections faster than [`Config::new_inbound_per_ip`] allows.
    RateLimited {
        /// The address (IPv6: its /64).
        ip: IpAddr,
        /// Refusals of the address not reported since the last report (at most one a second
        /// is reported).
        unreported: u32,
    },
    /// The address already had [`Config::max_pending_incoming_per_ip`] connections
    /// handshaking.
    PendingLimited {
        /// The address (IPv6: its /48).
        ip: IpAddr,
        /// Refusals of the address not reported since the last report (at most one a second
        /// is reported).
        unreported: u32,
    },
    /// The peer's NodeId is unknown: it did not authenticate with CA-TLS.
    UnknownNode,
    /// The node is banned: its score fell to [`Config::ban_threshold`] (see
    /// [`Event::Banned`]).
    Banned {
        /// How long the ban still lasts.
        remaining: Duration,
    },
}

impl Refusal {
    /// A short, stable code for machine consumers (`run --json`'s `refused` event): the CA-TLS
    /// code, `limit`, `rate_limit`, `pending_limit`, `unknown_node` or `banned`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Tls(r) => r.code(),
            Refusal::Limit(_) => "limit",
            Refusal::RateLimited { .. } => "rate_limit",
            Refusal::PendingLimited { .. } => "pending_limit",
            Refusal::UnknownNode => "unknown_node",
            Refusal::Banned { .. } => "banned",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Tls(r) => r.fmt(f),
            Refusal::Limit(e) => e.fmt(f),
            Refusal::RateLimited { ip, unreported } => write!(
                f,
                "too many new connections from {ip} ({unreported} more refused since the last \
                 report)"
            ),
            Refusal::PendingLimited { ip, unreported } => write!(
                f,
                "too many connections from {ip} still handshaking ({unreported} more refused \
                 since the last report)"
            ),
            Refusal::UnknownNode => f.write_str("the peer's NodeId is unknown (no CA-TLS)"),
            Refusal::Banned { remaining } => write!(
                f,
                "the node is banned for misbehaving ({:.1} s left)",
                remaining.as_secs_f64()
            ),
        }
    }
}

/// What the manager did or saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// Dialling a configured address.
    Dialing {
        /// The address.
        addr: Multiaddr,
        /// 1 for the first attempt after a connection that stayed up (or after start, `add_peer`
        /// or `allow`), then 2, 3, ...; a connection that soon dropped counts as an attempt.
        attempt: u32,
    },
    /// A peer got its first connection.
    Connected {
        /// The peer.
        node: NodeId,
        /// The remote address of the connection.
        addr: Multiaddr,
        /// Whether this node dialled it (a duplicate dialled by the other side may replace it).
        outbound: bool,
    },
    /// A peer's last connection closed.
    Disconnected {
        /// The peer.
        node: NodeId,
        /// Why, for people.
        reason: String,
        /// When a configured address of the peer will be dialled again (`None`: not redialled).
        retry_in: Option<Duration>,
    },
    /// A dial to a configured address failed.
    DialFailed {
        /// The address.
        addr: Multiaddr,
        /// The node there, when known.
        node: Option<NodeId>,
        /// Why, for people.
        error: String,
        /// When it will be dialled again (`None`: not redialled, e.g. the node is denied).
        retry_in: Option<Duration>,
    },
    /// A connection was refused: by either side's CA-TLS handshake or access lists, or by a
    /// connection limit.
    Refused {
        /// The remote address.
        addr: Multiaddr,
        /// Why.
        reason: Refusal,
        /// The peer, when known.
        node: Option<NodeId>,
    },
    /// A second connection to a connected peer was closed, by either side, or refused before
    /// use: one connection per peer is kept, the one dialled by the smaller NodeId.
    DuplicateClosed {
        /// The peer.
        node: NodeId,
    },
    /// A configured address turned out to be this node; it is not dialled again.
    SelfRefused {
        /// The address.
        addr: Multiaddr,
    },
    /// A connection was closed as dead: [`Config::ping_max_failures`] pings in a row failed
    /// with no frame coming meanwhile, or for [`Config::dead_after`] neither a ping was answered
    /// nor a frame came.
    Dead {
        /// The peer.
        node: NodeId,
        /// Consecutive failed pings reported.
        failures: u32,
        /// How long since a ping was last answered or a frame came (or the connection came up).
        silent: Duration,
    },
    /// A peer's connections were closed because [`Behaviour::deny`] (or a change of the access
    /// lists, see [`Behaviour::enforce_access`]) now refuses it.
    Dropped {
        /// The peer.
        node: NodeId,
    },
    /// A peer's connections were closed because a CRL now in force revokes a certificate of
    /// the chain it authenticated with (see [`Behaviour::enforce_revocation`]).
    Revoked {
        /// The peer.
        node: NodeId,
    },
    /// A node was banned: the offences the protocols reported brought its score down to
    /// [`Config::ban_threshold`]. Its connections are closed, and new ones either way are
    /// refused ([`Refusal::Banned`]) until the ban ends; a configured peer is dialled again
    /// then.
    Banned {
        /// The node.
        node: NodeId,
        /// How long the ban lasts.
        duration: Duration,
        /// The kind of offence that brought the score down (the heaviest in the last reports).
        offence: Offence,
        /// Which ban of the node this is: 1 for the first, and each one lasts twice as long as
        /// the one before (up to [`Config::ban_max`]).
        repeat: u32,
    },
    /// A ping to a peer was answered.
    Ping {
        /// The peer.
        node: NodeId,
        /// The round-trip time.
        rtt: Duration,
    },
}
