//! How a connection's unicast traffic shares the link: priority classes per module, the chunk
//! size messages are cut into, compression, and the node's limits (see SPEC.md, "Traffic").

use std::{collections::HashMap, sync::Arc};

use bcos_p2p_core::bandwidth::{Limits, RequestLimits};

/// The priority class of a module's messages: a higher class is sent first; a lower one still
/// gets [`Traffic::min_share_percent`] of the bytes while it has something to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Consensus: sent before everything else.
    High = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Bulk: block and state sync.
    Low = 2,
}

impl Priority {
    /// The class's name in config files: `high`, `normal`, `low`.
    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!("unknown priority {other:?} (high, normal or low)")),
        }
    }
}

/// Default chunk size: a message waits behind at most this much of each other module's traffic.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;
/// Smallest chunk size.
pub const MIN_CHUNK_SIZE: usize = 4 * 1024;
/// Largest chunk size.
pub const MAX_CHUNK_SIZE: usize = 1024 * 1024;

/// Compression of unicast messages (on connections whose peer speaks `/bcos/unicast/1.1.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Compress at all. Default on.
    pub enabled: bool,
    /// Messages with payloads smaller than this are sent as they are. Default 1 KiB (FISCO's).
    pub threshold: usize,
    /// zstd level. Default 1 (FISCO 3.x's).
    pub level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            threshold: 1024,
            level: 1,
        }
    }
}

/// Traffic settings of the unicast behaviour.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Messages larger than this are cut into chunks of it, interleaved with other modules'.
    /// Default 64 KiB, within [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    pub chunk_size: usize,
    /// Priority class per module; modules not listed are [`Priority::Normal`].
    pub priorities: HashMap<u16, Priority>,
    /// While a higher class is busy, a lower class with something to send still gets this
    /// share of the bytes sent (percent, 1–50). Default 10.
    pub min_share_percent: u8,
    /// Compression.
    pub compression: Compression,
    /// Outgoing byte limits, shared with the other protocols that send module traffic (the
    /// composed node gives flood the same). Default none.
    pub limits: Arc<Limits>,
    /// Incoming requests per second per module; excess requests get the error `rate limited`.
    /// Default none.
    pub request_limits: Arc<RequestLimits>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            chunk_size: DEFAULT_CHUNK_SIZE,
            priorities: HashMap::new(),
            min_share_percent: 10,
            compression: Compression::default(),
            limits: Limits::none(),
            request_limits: Arc::default(),
        }
    }
}

impl Traffic {
    /// The class of `module`.
    pub fn priority(&self, module: u16) -> Priority {
        self.priorities.get(&module).copied().unwrap_or_default()
    }
}

impl crate::Behaviour {
    /// The outgoing limits this behaviour sends under (shared with whoever else was given
    /// them): their rates, and the time each module waited for them
    /// ([`Limits::throttled`]).
    pub fn traffic_limits(&self) -> Arc<Limits> {
        self.settings.traffic.limits.clone()
    }

    /// The incoming request limits this behaviour applies, and the requests each module had
    /// refused by them ([`RequestLimits::refused`]).
    pub fn request_limits(&self) -> Arc<RequestLimits> {
        self.settings.traffic.request_limits.clone()
    }
}
