//! What unicast did since it started: frames and bytes each way, and how every request ended,
//! ours and the peers'. Kept in atomics shared by the behaviour and all its connection
//! handlers, so counting costs a relaxed add and a metrics scrape can read it at any time.

use std::sync::atomic::{AtomicU64, Ordering};

use bcos_p2p_core::stream_pair::Traffic;
use bytes::Bytes;

use crate::UnicastError;

/// Whose request: ours to a peer, or a peer's to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A peer's request to this node.
    Inbound,
    /// This node's request to a peer.
    Outbound,
}

impl Direction {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered with a payload.
    Ok,
    /// Outbound: no reply within the timeout.
    Timeout,
    /// Outbound: the peer answered with an error.
    Remote,
    /// The connection closed first: outbound, while waiting for the reply; inbound, before
    /// our answer could be sent.
    Closed,
    /// Outbound: not connected to the node.
    NotConnected,
    /// Outbound: the payload exceeds the frame limit.
    TooLarge,
    /// Too many requests in flight: outbound, ours to that node (not sent); inbound, the
    /// peer's (answered `busy`).
    Busy,
    /// Inbound: answered with an error (the application's, "no response" for a dropped
    /// responder, or a reply too large to send).
    Error,
    /// Inbound: for a module this node does not serve (answered with an error).
    UnknownModule,
    /// Outbound: no connection, and no routed connection could be opened.
    Unreachable,
}

impl Outcome {
    /// The outcomes an outbound request can have.
    pub const OUTBOUND: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Timeout,
        Outcome::Remote,
        Outcome::Closed,
        Outcome::NotConnected,
        Outcome::TooLarge,
        Outcome::Busy,
        Outcome::Unreachable,
    ];
    /// The outcomes an inbound request can have.
    pub const INBOUND: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Busy,
        Outcome::UnknownModule,
        Outcome::Closed,
    ];
    const COUNT: usize = 10;

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Remote => "remote",
            Outcome::Closed => "closed",
            Outcome::NotConnected => "not_connected",
            Outcome::TooLarge => "too_large",
            Outcome::Busy => "busy",
            Outcome::Error => "error",
            Outcome::UnknownModule => "unknown_module",
            Outcome::Unreachable => "unreachable",
        }
    }

    /// The outcome of one of our requests.
    pub fn of(result: &Result<Bytes, UnicastError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(UnicastError::Timeout) => Outcome::Timeout,
            Err(UnicastError::Remote(_)) => Outcome::Remote,
            Err(UnicastError::ConnectionClosed) => Outcome::Closed,
            Err(UnicastError::NotConnected) => Outcome::NotConnected,
            Err(UnicastError::TooLarge { .. }) => Outcome::TooLarge,
            Err(UnicastError::Busy) => Outcome::Busy,
            Err(UnicastError::Unreachable(_)) => Outcome::Unreachable,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one unicast behaviour (see [`crate::Behaviour::counters`]).
#[derive(Debug, Default)]
pub struct Counters {
    traffic: Traffic,
    inbound: [AtomicU64; Outcome::COUNT],
    outbound: [AtomicU64; Outcome::COUNT],
}

impl Counters {
    /// Frames (requests, one-way messages, responses, errors) and their bytes, both ways.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Requests in `direction` that ended with `outcome`.
    pub fn requests(&self, direction: Direction, outcome: Outcome) -> u64 {
        self.slot(direction, outcome).load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, direction: Direction, outcome: Outcome) {
        self.slot(direction, outcome)
            .fetch_add(1, Ordering::Relaxed);
    }

    fn slot(&self, direction: Direction, outcome: Outcome) -> &AtomicU64 {
        match direction {
            Direction::Inbound => &self.inbound[outcome.index()],
            Direction::Outbound => &self.outbound[outcome.index()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_count_apart_by_direction() {
        let c = Counters::default();
        c.count(Direction::Outbound, Outcome::of(&Ok(Bytes::new())));
        c.count(
            Direction::Outbound,
            Outcome::of(&Err(UnicastError::Timeout)),
        );
        c.count(
            Direction::Outbound,
            Outcome::of(&Err(UnicastError::Timeout)),
        );
        c.count(Direction::Inbound, Outcome::UnknownModule);
        assert_eq!(c.requests(Direction::Outbound, Outcome::Ok), 1);
        assert_eq!(c.requests(Direction::Outbound, Outcome::Timeout), 2);
        assert_eq!(c.requests(Direction::Inbound, Outcome::Ok), 0);
        assert_eq!(c.requests(Direction::Inbound, Outcome::UnknownModule), 1);
        let labels: std::collections::HashSet<_> = Outcome::OUTBOUND
            .iter()
            .chain(&Outcome::INBOUND)
            .map(|o| o.as_str())
            .collect();
        assert_eq!(
            labels.len(),
            Outcome::COUNT,
            "every outcome has its own label"
        );
    }
}
