//! What unicast did since it started: frames and bytes each way, and how every request ended,
//! ours and the peers'. Kept in atomics shared by the behaviour and all its connection
//! handlers, so counting costs a relaxed add and a metrics scrape can read it at any time.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

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
    /// Inbound: over the module's request rate limit (answered `rate limited`).
    RateLimited,
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
    pub const INBOUND: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Busy,
        Outcome::UnknownModule,
        Outcome::Closed,
        Outcome::RateLimited,
    ];
    const COUNT: usize = 11;

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
            Outcome::RateLimited => "rate_limited",
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

/// One module's unicast traffic on all connections: messages and payload bytes each way (as
/// on the wire, so compressed when they were), what waits to be sent, and compression.
#[derive(Debug, Default)]
pub struct ModuleTraffic {
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    queued_bytes: AtomicI64,
    raw_bytes: AtomicU64,
    compressed_bytes: AtomicU64,
}

/// A reading of [`ModuleTraffic`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModuleStats {
    /// Messages (requests, one-way messages, answers) sent.
    pub messages_out: u64,
    /// Their payload bytes as sent.
    pub bytes_out: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Their payload bytes as received.
    pub bytes_in: u64,
    /// Payload bytes queued for sending on all connections now.
    pub queued_bytes: u64,
    /// Payload bytes that went compressed, before compression.
    pub raw_bytes: u64,
    /// The same payloads after compression.
    pub compressed_bytes: u64,
}

impl ModuleStats {
    /// Compressed bytes over raw bytes of what was compressed (1 when nothing was).
    pub fn compression_ratio(&self) -> f64 {
        if self.raw_bytes == 0 {
            1.0
        } else {
            self.compressed_bytes as f64 / self.raw_bytes as f64
        }
    }
}

impl ModuleTraffic {
    pub(crate) fn sent(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn queue(&self, bytes: usize, added: bool) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.queued_bytes
            .fetch_add(if added { bytes } else { -bytes }, Ordering::Relaxed);
    }

    pub(crate) fn compressed(&self, raw: usize, compressed: usize) {
        self.raw_bytes.fetch_add(raw as u64, Ordering::Relaxed);
        self.compressed_bytes
            .fetch_add(compressed as u64, Ordering::Relaxed);
    }

    /// A reading.
    pub fn stats(&self) -> ModuleStats {
        ModuleStats {
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed).max(0) as u64,
            raw_bytes: self.raw_bytes.load(Ordering::Relaxed),
            compressed_bytes: self.compressed_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One-way messages handed to a connection and not yet written (or dropped) by it, and their
/// payload bytes: the behaviour refuses more ([`crate::UnicastError::Busy`]) past its bounds,
/// so a sender learns that the peer or a limit holds it back instead of losing messages.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Backlog {
    pub(crate) fn add(&self, bytes: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn done(&self, bytes: usize) {
        self.messages.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    /// Messages and bytes waiting.
    pub(crate) fn get(&self) -> (usize, usize) {
        (
            self.messages.load(Ordering::Relaxed) as usize,
            self.bytes.load(Ordering::Relaxed) as usize,
        )
    }
}

/// Counters of one unicast behaviour (see [`crate::Behaviour::counters`]).
#[derive(Debug, Default)]
pub struct Counters {
    traffic: Traffic,
    inbound: [AtomicU64; Outcome::COUNT],
    outbound: [AtomicU64; Outcome::COUNT],
    /// Per module: only modules this node sends to or serves get an entry (a peer's made-up
    /// module ids are refused before they are counted), so the map stays small.
    modules: Mutex<HashMap<u16, Arc<ModuleTraffic>>>,
}

impl Counters {
    /// The traffic of `module`, made on first use.
    pub(crate) fn module(&self, module: u16) -> Arc<ModuleTraffic> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        modules.entry(module).or_default().clone()
    }

    /// Every module's traffic so far, sorted by module.
    pub fn modules(&self) -> Vec<(u16, ModuleStats)> {
        let modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = modules.iter().map(|(m, t)| (*m, t.stats())).collect();
        all.sort_unstable_by_key(|(m, _)| *m);
        all
    }

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
