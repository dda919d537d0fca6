//! The manager's settings, with their defaults, and the delays derived from them (redial
//! backoff, the silent deadline). Its own type, so that the manager needs nothing from the
//! config-file layer above it; the file maps onto it (see `crate::config`).

use std::time::Duration;

use libp2p::{connection_limits::ConnectionLimits, ping};

use super::RateLimit;
#[cfg(doc)]
use super::weight;

/// The shortest redial delay and ping period honoured, whatever the configuration says (a zero
/// delay would redial in a busy loop).
pub(super) const MIN_DELAY: Duration = Duration::from_millis(10);
/// The longest delay or period honoured (timers past it could overflow).
pub(super) const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// How long a connection must stay up to reset the redial backoff, by default.
const STABLE_AFTER: Duration = Duration::ZERO;

/// How the manager dials, redials, checks liveness and bounds connections.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// First redial delay after a failed dial or a disconnect; doubles per failure. Default 1 s.
    /// (FISCO BCOS waits a fixed 10 s: set both bounds to 10 s.)
    pub redial_min: Duration,
    /// Longest redial delay. Default 30 s.
    pub redial_max: Duration,
    /// A connection that stayed up this long resets the backoff: the next redial waits
    /// `redial_min` again; a shorter one counts as a failed attempt. Default 0: any connection
    /// that came up (the peer authenticated and accepted us) resets it, so a restarted node is
    /// redialled within `redial_min`. Raise it to slow down redials of a peer whose
    /// connections keep dropping at once.
    pub stable_after: Duration,
    /// Ping period per connection. Default 5 s.
    pub ping_interval: Duration,
    /// How long a ping may take. Default 5 s.
    pub ping_timeout: Duration,
    /// Consecutive failed pings after which a connection is closed as dead. Default 3. libp2p's
    /// ping forgives the first failure silently, so values below 2 act as 2; a failure with a
    /// frame of the protocols arriving within the ping timeout does not count (the peer is
    /// alive, only slow to answer). A connection is also closed as dead when for
    /// [`Config::dead_after`] neither a ping was answered nor a frame came (over a cut link
    /// libp2p opens each new ping stream with a fixed 10 s negotiation timeout, so counting
    /// failures alone takes 30 s and more).
    pub ping_max_failures: u32,
    /// Most incoming connections still handshaking from strangers (`None`: no limit).
    /// Default 256. Addresses of configured peers have a pool of their own (4 slots per
    /// configured peer, at least 16), so strangers holding every slot here lock none of them
    /// out.
    pub max_pending_incoming: Option<u32>,
    /// Most incoming connections still handshaking from one IP address (IPv6: per /48;
    /// `None`: no limit). Default 16. A silent connection lasts until libp2p's connection
    /// timeout (handshake timeout + 5 s), so without it two addresses could hold every slot of
    /// `max_pending_incoming` within the rate limit. Addresses of configured peers are exempt,
    /// as from [`Self::new_inbound_per_ip`].
    pub max_pending_incoming_per_ip: Option<u32>,
    /// Most outgoing dials in progress (`None`: no limit). Default 256.
    pub max_pending_outgoing: Option<u32>,
    /// Most established connections (`None`: no limit). Default 1024. Strangers get at most
    /// this less one per configured peer not connected now, so a configured peer always finds
    /// a slot.
    pub max_established: Option<u32>,
    /// New incoming connections per IP address (IPv6: per /64) before their handshake
    /// (`None`: no limit). Default 20 at once, then 10 per second. Addresses of configured
    /// peers are exempt: a node this one is told to keep connected is never locked out by
    /// someone else on its host; peers configured by name are dialled by this node anyway.
    pub new_inbound_per_ip: Option<RateLimit>,
    /// How far a peer's score may fall before the peer is banned: its connections are closed
    /// and new ones refused (code `banned`) for a while. Offences reported by the protocols
    /// lower the score (see [`weight`]). Default 100; 0 bans nobody.
    pub ban_threshold: u32,
    /// How fast a score returns to neutral: it halves in this time. Default 60 s.
    pub score_half_life: Duration,
    /// How long a first ban lasts; each further ban of the same node doubles it. Default 60 s.
    pub ban_min: Duration,
    /// The longest ban. Default 24 h.
    pub ban_max: Duration,
    /// The longest ban of a configured peer (one this node keeps connected), so that it is
    /// never banned for good: it is dialled again when its ban ends. Default 5 min.
    pub ban_max_configured: Duration,
    /// Most nodes whose scores are kept (neutral ones are forgotten first). Default 4096.
    pub max_scored: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redial_min: Duration::from_secs(1),
            redial_max: Duration::from_secs(30),
            stable_after: STABLE_AFTER,
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(5),
            ping_max_failures: 3,
            max_pending_incoming: Some(256),
            max_pending_incoming_per_ip: Some(16),
            max_pending_outgoing: Some(256),
            max_established: Some(1024),
            new_inbound_per_ip: Some(RateLimit {
                per_second: 10,
                burst: 20,
            }),
            ban_threshold: 100,
            score_half_life: Duration::from_secs(60),
            ban_min: Duration::from_secs(60),
            ban_max: Duration::from_secs(24 * 3600),
            ban_max_configured: Duration::from_secs(300),
            max_scored: 4096,
        }
    }
}

impl Config {
    /// The redial delay after `failures` consecutive failures, before jitter:
    /// `redial_min * 2^failures`, at most `redial_max`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let min = self.redial_min.clamp(MIN_DELAY, MAX_DELAY);
        let max = self.redial_max.clamp(min, MAX_DELAY);
        min.saturating_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
            .min(max)
    }

    /// How long a connection may go without an answered ping or a frame before it is closed
    /// as dead: `ping_max_failures` periods plus one timeout (20 s by default).
    pub fn dead_after(&self) -> Duration {
        self.ping_interval()
            .saturating_mul(self.ping_max_failures.max(2))
            + self.ping_timeout()
    }

    /// How often a connection is pinged, clamped as the redial delays are.
    fn ping_interval(&self) -> Duration {
        self.ping_interval.clamp(MIN_DELAY, MAX_DELAY)
    }

    /// How long a ping may take, clamped as the redial delays are.
    pub(super) fn ping_timeout(&self) -> Duration {
        self.ping_timeout.clamp(MIN_DELAY, MAX_DELAY)
    }

    /// libp2p's ping settings, the periods clamped as the redial delays are.
    pub(super) fn ping(&self) -> ping::Config {
        ping::Config::new()
            .with_interval(self.ping_interval())
            .with_timeout(self.ping_timeout())
    }

    /// libp2p's connection limits.
    pub(super) fn limits(&self) -> ConnectionLimits {
        ConnectionLimits::default().with_max_pending_outgoing(self.max_pending_outgoing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_overflows() {
        let c = Config {
            redial_min: Duration::from_millis(100),
            redial_max: Duration::from_millis(1000),
            ..Config::default()
        };
        let got: Vec<u64> = (0..6).map(|n| c.backoff(n).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_millis(1000));
        let silly = Config {
            redial_min: Duration::ZERO,
            redial_max: Duration::from_millis(u64::MAX),
            ..Config::default()
        };
        assert_eq!(silly.backoff(0), MIN_DELAY);
        assert_eq!(silly.backoff(1000), MAX_DELAY);
        let inverted = Config {
            redial_min: Duration::from_secs(5),
            redial_max: Duration::from_secs(1),
            ..Config::default()
        };
        assert_eq!(inverted.backoff(3), Duration::from_secs(5));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.redial_min, Duration::from_secs(1));
        assert_eq!(c.redial_max, Duration::from_secs(30));
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.ping_max_failures, 3);
        assert_eq!(c.max_established, Some(1024));
        assert_eq!(c.max_pending_incoming_per_ip, Some(16));
        assert_eq!(
            c.new_inbound_per_ip,
            Some(RateLimit {
                per_second: 10,
                burst: 20
            })
        );
    }
}
