//! `[traffic]`: how unicast shares a link between modules (priority classes, chunks), what it
//! compresses, and the node's bandwidth and request-rate limits; and its mapping onto the
//! unicast crate's [`unicast::Traffic`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{
    bandwidth::{Limits, Rates, RequestLimits},
    unicast::{self, Priority},
};

/// FISCO BCOS's module ids: PBFT and Raft (consensus), block sync, and the transaction sync
/// modules FISCO exempts from its bandwidth limits by default.
pub const PBFT: u16 = 1000;
/// Raft consensus.
pub const RAFT: u16 = 1001;
/// Block sync.
pub const BLOCK_SYNC: u16 = 2000;
/// Transaction sync.
pub const TXS_SYNC: u16 = 2001;
/// Consensus transaction sync.
pub const CONS_TXS_SYNC: u16 = 2002;

/// `[traffic]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Traffic {
    /// Messages larger than this are cut into parts of it, interleaved with other modules'
    /// messages: a message waits behind at most one part of each other module's traffic.
    /// 4096–1048576. Default 65536.
    pub chunk_size: usize,
    /// Priority class per module id: `"high"`, `"normal"` or `"low"`; modules not listed are
    /// normal. Default FISCO's: 1000 and 1001 (consensus) high, 2000 (block sync) low.
    pub priorities: BTreeMap<String, String>,
    /// While a higher class is busy, a lower class with messages waiting still gets this
    /// percentage of the bytes sent (1–50). Default 10.
    pub min_share_percent: u8,
    /// Compress messages with zstd (on connections whose peer speaks unicast 1.1). Default
    /// true.
    pub compression: bool,
    /// Smallest payload compressed, in bytes. Default 1024 (FISCO's).
    pub compression_threshold: usize,
    /// zstd level, 1–19. Default 1 (FISCO 3.x's).
    pub compression_level: i32,
    /// Everything this node sends by unicast, bytes per second; exempt modules
    /// aside. 0: no limit. Default 0.
    pub total_bytes_per_s: u64,
    /// What this node sends on one connection, bytes per second; exempt modules aside. 0: no
    /// limit. Default 0.
    pub connection_bytes_per_s: u64,
    /// What this node sends for one module (by id), bytes per second. Default none.
    pub module_bytes_per_s: BTreeMap<String, u64>,
    /// Modules no bandwidth limit applies to. Default FISCO's: 1000, 1001, 2001, 2002.
    pub exempt_modules: Vec<u16>,
    /// Requests (and one-way messages) per second a module takes from all peers together;
    /// beyond it requests are answered `rate limited` and one-way messages dropped, both
    /// counted. The key [`ALL_MODULES`] (`"*"`) gives the rate of every served module not
    /// listed (FISCO's `incoming_module_msg_type_qps_limit`). Default none.
    pub incoming_requests_per_s: BTreeMap<String, u32>,
    /// How far the receive windows of a connection's yamux streams may grow together beyond
    /// their first 256 KiB each, in bytes (0–1073741824). What one stream can have in flight
    /// is at most 256 KiB plus this: enough for window ÷ round trip of throughput on one
    /// stream, and the most of it another stream's next frame can wait behind at a busy
    /// receiver. Default 8 MiB (1 Gbit/s at a 60 ms round trip); raise it for long fast links.
    /// A connection whose TCP handshake took a shorter round trip than 60 ms gets that share
    /// of it, at least 1 MiB ([`crate::mux::Config::fit_to_round_trip`]).
    pub stream_window_growth: usize,
    /// Queuing delay on the network path, in milliseconds, above which a connection paces
    /// what it sends at the rate the path delivers, so that the path's queue (a router's or
    /// a shaper's buffer) stays short and a consensus message does not wait in it behind
    /// block data (see [`crate::paced`]). 0: never paced (plain TCP); at most 1000.
    /// Default 5.
    pub queue_delay_target_ms: u32,
    /// The kernel's congestion control for node connections (Linux `TCP_CONGESTION`: a name
    /// from `/proc/sys/net/ipv4/tcp_available_congestion_control`, at most 15 characters);
    /// empty: the system's default. Default `cubic`: the path pacing above is delay-based and
    /// runs on a TCP that sends what it is given, which BBR's own pacing does not (see
    /// [`crate::paced::DEFAULT_TCP_CONGESTION`]). A name the kernel refuses leaves the
    /// system's default, with a warning.
    pub tcp_congestion: String,
}

/// The longest `tcp_congestion` name (Linux's `TCP_CA_NAME_MAX` less its terminating zero).
pub const MAX_TCP_CONGESTION_LEN: usize = 15;

/// The largest `queue_delay_target_ms`.
pub const MAX_QUEUE_DELAY_TARGET_MS: u32 = 1000;

/// The largest `stream_window_growth`: yamux's own connection window.
pub const MAX_STREAM_WINDOW_GROWTH: usize = 1 << 30;

impl Default for Traffic {
    fn default() -> Self {
        let t = unicast::Traffic::default();
        Traffic {
            chunk_size: t.chunk_size,
            priorities: [
                (PBFT, Priority::High),
                (RAFT, Priority::High),
                (BLOCK_SYNC, Priority::Low),
            ]
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.name().to_string()))
            .collect(),
            min_share_percent: t.min_share_percent,
            compression: t.compression.enabled,
            compression_threshold: t.compression.threshold,
            compression_level: t.compression.level,
            total_bytes_per_s: 0,
            connection_bytes_per_s: 0,
            module_bytes_per_s: BTreeMap::new(),
            exempt_modules: vec![PBFT, RAFT, TXS_SYNC, CONS_TXS_SYNC],
            incoming_requests_per_s: BTreeMap::new(),
            stream_window_growth: crate::mux::DEFAULT_WINDOW_GROWTH,
            queue_delay_target_ms: crate::paced::DEFAULT_QUEUE_DELAY_TARGET.as_millis() as u32,
            tcp_congestion: crate::paced::DEFAULT_TCP_CONGESTION.to_string(),
        }
    }
}

/// The key of `incoming_requests_per_s` that stands for every served module not listed.
pub const ALL_MODULES: &str = "*";

/// A module id written as a TOML key.
pub(super) fn module_key(section: &str, key: &str) -> Result<u16, String> {
    key.trim()
        .parse()
        .map_err(|_| format!("[traffic] {section}: `{key}` is not a module id (0–65535)"))
}

impl Traffic {
    /// Every problem with the section, one line each.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(unicast::traffic::MIN_CHUNK_SIZE..=unicast::traffic::MAX_CHUNK_SIZE)
            .contains(&self.chunk_size)
        {
            out.push(format!(
                "[traffic] chunk_size: {} is not within {}..={}",
                self.chunk_size,
                unicast::traffic::MIN_CHUNK_SIZE,
                unicast::traffic::MAX_CHUNK_SIZE
            ));
        }
        if self.stream_window_growth > MAX_STREAM_WINDOW_GROWTH {
            out.push(format!(
                "[traffic] stream_window_growth: {} is not within 0..={MAX_STREAM_WINDOW_GROWTH}",
                self.stream_window_growth
            ));
        }
        if self.queue_delay_target_ms > MAX_QUEUE_DELAY_TARGET_MS {
            out.push(format!(
                "[traffic] queue_delay_target_ms: {} is not within 0..={MAX_QUEUE_DELAY_TARGET_MS}",
                self.queue_delay_target_ms
            ));
        }
        if self.tcp_congestion.len() > MAX_TCP_CONGESTION_LEN
            || !self
                .tcp_congestion
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            out.push(format!(
                "[traffic] tcp_congestion: {:?} is not a congestion control name (at most {MAX_TCP_CONGESTION_LEN} letters, digits, `_` or `-`)",
                self.tcp_congestion
            ));
        }
        if !(1..=50).contains(&self.min_share_percent) {
            out.push(format!(
                "[traffic] min_share_percent: {} is not within 1..=50",
                self.min_share_percent
            ));
        }
        if !(1..=19).contains(&self.compression_level) {
            out.push(format!(
                "[traffic] compression_level: {} is not within 1..=19",
                self.compression_level
            ));
        }
        for (key, class) in &self.priorities {
            if let Err(e) = module_key("priorities", key) {
                out.push(e);
            }
            if let Err(e) = class.parse::<Priority>() {
                out.push(format!("[traffic] priorities: {key}: {e}"));
            }
        }
        for key in self.module_bytes_per_s.keys() {
            if let Err(e) = module_key("module_bytes_per_s", key) {
                out.push(e);
            }
        }
        for key in self.incoming_requests_per_s.keys() {
            if key == ALL_MODULES {
                continue;
            }
            if let Err(e) = module_key("incoming_requests_per_s", key) {
                out.push(e);
            }
        }
        out
    }

    /// The node's outgoing limits (shared by unicast and flood).
    pub fn limits(&self) -> std::sync::Arc<Limits> {
        let rates = Rates {
            total: self.total_bytes_per_s,
            per_connection: self.connection_bytes_per_s,
            per_module: parsed(&self.module_bytes_per_s),
            exempt: self.exempt_modules.iter().copied().collect(),
        };
        Limits::new(rates, self.chunk_size as u64)
    }

    /// Incoming requests per second per module: the modules listed, and every module of
    /// `served` not listed at the rate of [`ALL_MODULES`], when given.
    pub fn request_rates(&self, served: &[u16]) -> HashMap<u16, u32> {
        let mut rates = parsed(&self.incoming_requests_per_s);
        if let Some(all) = self.incoming_requests_per_s.get(ALL_MODULES) {
            for module in served {
                rates.entry(*module).or_insert(*all);
            }
        }
        rates
    }

    /// The unicast crate's settings for a node serving `served`, with `limits` (from
    /// [`Traffic::limits`]).
    pub fn unicast(&self, limits: std::sync::Arc<Limits>, served: &[u16]) -> unicast::Traffic {
        unicast::Traffic {
            chunk_size: self.chunk_size,
            priorities: self
                .priorities
                .iter()
                .filter_map(|(k, v)| Some((k.trim().parse().ok()?, v.parse().ok()?)))
                .collect(),
            min_share_percent: self.min_share_percent,
            compression: unicast::Compression {
                enabled: self.compression,
                threshold: self.compression_threshold,
                level: self.compression_level,
            },
            limits,
            request_limits: RequestLimits::new(&self.request_rates(served)),
        }
    }
}

/// The entries of a module-keyed table whose keys are module ids (validation reports the
/// others).
fn parsed<V: Copy>(table: &BTreeMap<String, V>) -> HashMap<u16, V> {
    table
        .iter()
        .filter_map(|(k, v)| Some((k.trim().parse().ok()?, *v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_fisco_and_map_onto_unicast() {
        let t = Traffic::default();
        assert!(t.problems().is_empty());
        assert_eq!(t.stream_window_growth, crate::mux::DEFAULT_WINDOW_GROWTH);
        assert_eq!(t.queue_delay_target_ms, 5);
        assert_eq!(t.tcp_congestion, "cubic");
        let u = t.unicast(t.limits(), &[1]);
        assert_eq!(u.priority(PBFT), Priority::High);
        assert_eq!(u.priority(BLOCK_SYNC), Priority::Low);
        assert_eq!(u.priority(7), Priority::Normal);
        assert!(!u.limits.rates().any());
    }

    #[test]
    fn bad_entries_are_each_reported() {
        let t: Traffic = toml::from_str(
            r#"
            chunk_size = 100
            min_share_percent = 0
            priorities = { "1000" = "urgent", "x" = "low" }
            module_bytes_per_s = { "70000" = 5 }
            incoming_requests_per_s = { "2001" = 10 }
            stream_window_growth = 1073741825
            queue_delay_target_ms = 1001
            tcp_congestion = "cubic; rm"
            "#,
        )
        .unwrap();
        let p = t.problems();
        assert_eq!(p.len(), 8, "{p:#?}");
        assert!(p.iter().any(|l| l.contains("tcp_congestion")));
        assert!(p.iter().any(|l| l.contains("stream_window_growth")));
        assert!(p.iter().any(|l| l.contains("queue_delay_target_ms")));
        assert!(p.iter().any(|l| l.contains("urgent")));
        assert!(p.iter().any(|l| l.contains("`70000`")));
    }

    #[test]
    fn the_rate_for_all_modules_covers_each_served_module_not_listed() {
        let t: Traffic =
            toml::from_str(r#"incoming_requests_per_s = { "*" = 50, "2001" = 10, "7" = 3 }"#)
                .unwrap();
        assert!(t.problems().is_empty(), "{:?}", t.problems());
        let rates = t.request_rates(&[1, 2001]);
        let expected: HashMap<u16, u32> = [(1, 50), (2001, 10), (7, 3)].into();
        assert_eq!(rates, expected);
        let none = Traffic::default().request_rates(&[1, 2001]);
        assert!(none.is_empty());
    }
}
