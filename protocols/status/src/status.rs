//! The status record: what a node tells its peers about itself.
//!
//! Two parts, for two kinds of user. The application's payload is opaque bytes (FISCO puts block
//! height and the like there). The built-in fields are what the other protocols of this
//! workspace need to know about a peer: the topics it subscribes to (flood, AMOP), the unicast
//! modules it serves, and its software version. Keeping them typed here, rather than inside the
//! payload, lets flood and unicast read them without knowing the application's format.

use bytes::Bytes;

/// Most topics in one status.
pub const MAX_TOPICS: usize = 1024;
/// Longest topic, in bytes of UTF-8.
pub const MAX_TOPIC_LEN: usize = 256;
/// Most unicast modules in one status.
pub const MAX_MODULES: usize = 1024;
/// Longest version string, in bytes of UTF-8.
pub const MAX_VERSION_LEN: usize = 256;

/// Why a status cannot be set (locally) or accepted (from a peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// The payload exceeds the configured limit.
    #[error("status payload of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit ([`Config::max_payload`](crate::Config::max_payload)).
        limit: usize,
    },
    /// A built-in field exceeds its protocol limit ([`MAX_TOPICS`] and the like).
    #[error("{what} is {size}, over the limit of {limit}")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// The offending count or length.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// One node's status: who (incarnation) and which version of it (seq), and the content.
///
/// `(incarnation, seq)` names a status exactly: a node never sends two different records under
/// the same pair. The incarnation changes when the node restarts, so a restarted node counting
/// from seq 1 again is not mistaken for an old one. Topics and modules are kept sorted and
/// without duplicates, so two statuses with the same content compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub(crate) incarnation: u64,
    pub(crate) seq: u64,
    pub(crate) payload: Bytes,
    pub(crate) topics: Vec<String>,
    pub(crate) modules: Vec<u16>,
    pub(crate) version: String,
}

impl Status {
    /// An empty status (no payload, topics or modules, empty version).
    pub fn new(incarnation: u64, seq: u64) -> Status {
        Status {
            incarnation,
            seq,
            payload: Bytes::new(),
            topics: Vec::new(),
            modules: Vec::new(),
            version: String::new(),
        }
    }

    /// With this application payload.
    pub fn with_payload(mut self, payload: Bytes) -> Status {
        self.payload = payload;
        self
    }

    /// With these topics (sorted, duplicates removed).
    pub fn with_topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Status {
        self.topics = topics.into_iter().map(Into::into).collect();
        self.topics.sort_unstable();
        self.topics.dedup();
        self
    }

    /// With these unicast modules (sorted, duplicates removed).
    pub fn with_modules(mut self, modules: impl IntoIterator<Item = u16>) -> Status {
        self.modules = modules.into_iter().collect();
        self.modules.sort_unstable();
        self.modules.dedup();
        self
    }

    /// With this version string.
    pub fn with_version(mut self, version: impl Into<String>) -> Status {
        self.version = version.into();
        self
    }

    /// The node's incarnation: fixed for the life of its status behaviour, new after a restart.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The status's sequence number within its incarnation; 1 for a fresh node, +1 per change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The application's payload (opaque to the protocol).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The topics the node subscribes to, sorted.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Whether the node subscribes to `topic`.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics
            .binary_search_by(|t| t.as_str().cmp(topic))
            .is_ok()
    }

    /// The unicast modules the node serves, sorted.
    pub fn modules(&self) -> &[u16] {
        &self.modules
    }

    /// Whether the node serves unicast `module`.
    pub fn serves_module(&self, module: u16) -> bool {
        self.modules.binary_search(&module).is_ok()
    }

    /// The node's software / protocol version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the content (everything but incarnation and seq) equals `other`'s.
    pub(crate) fn same_content(&self, other: &Status) -> bool {
        self.payload == other.payload
            && self.topics == other.topics
            && self.modules == other.modules
            && self.version == other.version
    }

    /// Checks every limit: the payload against `max_payload`, the built-in fields against the
    /// protocol's constants.
    pub fn check(&self, max_payload: usize) -> Result<(), StatusError> {
        if self.payload.len() > max_payload {
            return Err(StatusError::TooLarge {
                size: self.payload.len(),
                limit: max_payload,
            });
        }
        self.check_fields()
    }

    /// Checks the built-in fields against the protocol's constants.
    pub(crate) fn check_fields(&self) -> Result<(), StatusError> {
        let limit = |what, size, limit| {
            if size > limit {
                Err(StatusError::Limit { what, size, limit })
            } else {
                Ok(())
            }
        };
        limit("the number of topics", self.topics.len(), MAX_TOPICS)?;
        let longest = self.topics.iter().map(String::len).max().unwrap_or(0);
        limit("the length of a topic", longest, MAX_TOPIC_LEN)?;
        limit("the number of modules", self.modules.len(), MAX_MODULES)?;
        limit(
            "the length of the version",
            self.version.len(),
            MAX_VERSION_LEN,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_normalised_and_checked() {
        let s = Status::new(7, 1)
            .with_topics(["b", "a", "b"])
            .with_modules([3, 1, 3])
            .with_version("v1");
        assert_eq!(s.topics(), ["a", "b"]);
        assert_eq!(s.modules(), [1, 3]);
        assert!(s.has_topic("a") && !s.has_topic("c"));
        assert!(s.serves_module(3) && !s.serves_module(2));
        assert_eq!(s.check(0), Ok(()));
        let big = s.clone().with_payload(Bytes::from(vec![0; 10]));
        assert_eq!(
            big.check(9),
            Err(StatusError::TooLarge { size: 10, limit: 9 })
        );
        let long = s.clone().with_topics(["x".repeat(MAX_TOPIC_LEN + 1)]);
        assert!(matches!(long.check(0), Err(StatusError::Limit { .. })));
        let many = s.with_modules(0..=MAX_MODULES as u16);
        assert!(matches!(many.check(0), Err(StatusError::Limit { .. })));
    }
}
