//! Errors: why a handshake was refused ([`UpgradeError`]), and why a configuration cannot start
//! ([`ConfigError`]). Every refusal names its reason, so operators and tests can tell an expired
//! certificate from a denied node without reading logs.

use std::{fmt, time::SystemTime};

use bcos_p2p_core::{KeyError, NodeId};

/// Why a connection was refused during the security handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The peer's chain does not lead to any certificate in `ca.crt`.
    UnknownIssuer,
    /// A certificate in the peer's chain has expired.
    Expired {
        /// notAfter, seconds since the Unix epoch.
        not_after: u64,
        /// The time of the check, seconds since the Unix epoch.
        now: u64,
    },
    /// A certificate in the peer's chain is not valid yet.
    NotYetValid {
        /// notBefore, seconds since the Unix epoch.
        not_before: u64,
        /// The time of the check, seconds since the Unix epoch.
        now: u64,
    },
    /// The peer's certificate is malformed or otherwise unacceptable.
    BadCertificate(String),
    /// The peer's certificate key is of a kind nodes do not use.
    UnsupportedKey(String),
    /// The peer's handshake signature does not verify with its certificate's key: its `node.crt`
    /// does not belong to the key it holds.
    KeyMismatch,
    /// A certificate in the peer's chain (its own, or its agency's) is listed in a CRL in force.
    Revoked,
    /// The peer's NodeId is on the deny list.
    Denied,
    /// The allow list is not empty and the peer's NodeId is not on it.
    NotAllowed,
    /// The peer does not speak CA-authenticated TLS: it offered stock libp2p `/tls/1.0.0`, or (when
    /// we dial) declined `/bcos-tls/1.0.0`. Typically an open-mode node.
    StockLibp2pTls,
    /// The peer requires CA-authenticated TLS: it answered stock libp2p `/tls/1.0.0` with the
    /// `insufficient_security` alert CA nodes send to open nodes (see [`crate::STOCK_TLS_PROTOCOL`]).
    /// Reported by an open-mode node that met a CA-mode node.
    CaTlsRequired,
    /// This node runs 国密 TLS (an SM2 node key: SM2, SM3, SM4 per RFC 8998) and the peer runs
    /// the standard suites (a secp256k1, P-256 or RSA node): the two never connect.
    SmRequired,
    /// The peer runs 国密 TLS (an SM2 node) and this node runs the standard suites.
    SmUnsupported,
    /// The peer aborted the handshake with this TLS alert (it refused us).
    RejectedByPeer(String),
    /// Any other handshake failure (I/O, protocol violation).
    Handshake(String),
}

impl Refusal {
    /// A short, stable code for machine consumers (the CLI's `refused` event).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownIssuer => "unknown_issuer",
            Refusal::Expired { .. } => "expired",
            Refusal::NotYetValid { .. } => "not_yet_valid",
            Refusal::BadCertificate(_) => "bad_certificate",
            Refusal::UnsupportedKey(_) => "unsupported_key",
            Refusal::KeyMismatch => "key_mismatch",
            Refusal::Revoked => "revoked",
            Refusal::Denied => "denied",
            Refusal::NotAllowed => "not_allowed",
            Refusal::StockLibp2pTls => "stock_libp2p_tls",
            Refusal::CaTlsRequired => "ca_tls_required",
            Refusal::SmRequired => "sm_required",
            Refusal::SmUnsupported => "sm_unsupported",
            Refusal::RejectedByPeer(_) => "rejected_by_peer",
            Refusal::Handshake(_) => "handshake",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownIssuer => f.write_str("certificate is not issued by a trusted CA (unknown issuer)"),
            Refusal::Expired { not_after, now } => write!(
                f,
                "certificate expired: not after {} (now {})",
                fmt_time(*not_after),
                fmt_time(*now)
            ),
            Refusal::NotYetValid { not_before, now } => write!(
                f,
                "certificate not yet valid: not before {} (now {})",
                fmt_time(*not_before),
                fmt_time(*now)
            ),
            Refusal::BadCertificate(why) => write!(f, "bad certificate: {why}"),
            Refusal::UnsupportedKey(why) => write!(f, "unsupported certificate key: {why}"),
            Refusal::KeyMismatch => f.write_str(
                "handshake signature does not match the certificate key (node.crt does not belong to the peer's key)",
            ),
            Refusal::Revoked => f.write_str(
                "certificate revoked: a certificate of the chain is listed in a CRL in force",
            ),
            Refusal::Denied => f.write_str("NodeId is on the deny list"),
            Refusal::NotAllowed => f.write_str("NodeId is not on the allow list"),
            Refusal::StockLibp2pTls => f.write_str(
                "peer does not speak CA-authenticated /bcos-tls/1.0.0 (stock libp2p /tls/1.0.0 or another security protocol: an open-mode node?)",
            ),
            Refusal::CaTlsRequired => f.write_str(
                "peer requires CA-authenticated /bcos-tls/1.0.0 (a CA-mode node) but this node is in open mode (stock libp2p /tls/1.0.0)",
            ),
            Refusal::SmRequired => f.write_str(
                "this node runs 国密 TLS (SM2 key: TLS_SM4_GCM_SM3, curveSM2, sm2sig_sm3) and the peer runs the standard suites (a non-SM node)",
            ),
            Refusal::SmUnsupported => f.write_str(
                "the peer runs 国密 TLS (an SM2 node: TLS_SM4_GCM_SM3) and this node runs the standard suites (its key is not SM2)",
            ),
            Refusal::RejectedByPeer(alert) => write!(f, "peer refused the handshake (TLS alert: {alert})"),
            Refusal::Handshake(why) => write!(f, "TLS handshake failed: {why}"),
        }
    }
}

/// Seconds since the epoch as an RFC 3339-like UTC string, for messages.
fn fmt_time(secs: u64) -> String {
    let t = der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs));
    match t {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minutes(),
            t.seconds()
        ),
        Err(_) => format!("{secs}s after the epoch"),
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A refused security handshake: the reason, and the peer's NodeId when its certificate got that far.
#[derive(Debug, Clone, thiserror::Error)]
pub struct UpgradeError {
    refusal: Refusal,
    node_id: Option<NodeId>,
}

impl UpgradeError {
    /// A refusal, with the peer's NodeId when it is known. Public so that other security
    /// upgrades (open mode) report refusals in the same form.
    pub fn new(refusal: Refusal, node_id: Option<NodeId>) -> Self {
        UpgradeError { refusal, node_id }
    }

    /// Why the handshake was refused.
    pub fn refusal(&self) -> &Refusal {
        &self.refusal
    }

    /// The NodeId named by the peer's certificate, when its chain was valid. For
    /// [`Refusal::KeyMismatch`] the peer claimed this identity but could not prove it.
    pub fn node_id(&self) -> Option<&NodeId> {
        self.node_id.as_ref()
    }

    /// Finds an `UpgradeError` in an error's source chain (libp2p wraps transport errors several
    /// times; swarm events carry them as `dyn Error`).
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a UpgradeError> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<UpgradeError>() {
                return Some(found);
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(found) = io.get_ref().and_then(|inner| Self::find(inner))
            {
                return Some(found);
            }
            cur = e.source();
        }
        None
    }
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node_id {
            Some(id) => write!(f, "refused node {}: {}", id.short(), self.refusal),
            None => write!(f, "refused: {}", self.refusal),
        }
    }
}

/// Why a CA-TLS configuration could not be built (checked at start-up).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The node key is unusable.
    #[error("node key: {0}")]
    Key(#[from] KeyError),
    /// A certificate file holds no certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(String),
    /// A certificate is malformed or unusable.
    #[error("{what}: {reason}")]
    BadCertificate {
        /// Which certificate.
        what: String,
        /// Why.
        reason: String,
    },
    /// `node.crt` certifies a different key than `node.key` (or the swarm's keypair).
    #[error(
        "node.crt certifies NodeId {cert} but the node key is NodeId {key}: the certificate does not belong to this key"
    )]
    KeyMismatch {
        /// NodeId in the certificate.
        cert: String,
        /// NodeId of the key.
        key: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}
