//! New incoming connections per second per IP address: a token bucket per address.
//!
//! A TLS handshake costs the listener a signature and a certificate chain check, so a host that
//! opens connections as fast as it can (valid certificate or not) buys the node's CPU for the
//! price of a SYN. FISCO BCOS saw handshake churn stall consensus. The connection manager asks
//! [`IpRate::admit`] before a pending connection gets a handshake; one address can then open
//! `burst` connections at once and `per_second` after that, whatever other addresses do.
//!
//! IPv6 addresses count per /64 (a host usually owns a whole /64), IPv4-mapped IPv6 addresses
//! as the IPv4 address. The table holds at most [`MAX_TRACKED`] addresses: a full bucket equals
//! no entry, so those go first; past that the least limited entries are forgotten, so many
//! attacking addresses cost memory bounded by the table, never more.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 4096;
/// When the table is full and no bucket is, the fullest 1/`EVICT_SHARE` of it is forgotten.
const EVICT_SHARE: usize = 16;
/// How often refusals of one address are reported at most; the rest are counted.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The limit: `burst` connections at once, then `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained rate, connections per second (at least 1 is honoured).
    pub per_second: u32,
    /// Bucket size: connections an idle address may open at once (at least 1 is honoured).
    pub burst: u32,
}

/// What [`IpRate::admit`] (or [`super::ip_pending::PendingPerIp::admit`]) decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Within the limit.
    Admit,
    /// Over the limit. `report` is `Some(n)` when the refusal should be reported, `n` being the
    /// refusals of this address left unreported since the last report; `None` when it is only
    /// counted (at most one report per [`REPORT_EVERY`] per address).
    Refuse {
        /// See above.
        report: Option<u32>,
    },
}

/// When refusals of one address were last reported, and how many were only counted since.
#[derive(Debug, Default)]
pub struct Reports {
    last: Option<Instant>,
    unreported: u32,
}

impl Reports {
    /// When a refusal was last reported.
    pub fn last(&self) -> Option<Instant> {
        self.last
    }

    /// A refusal at `now`: reported (with the refusals counted since the last report) when
    /// none was reported in the last [`REPORT_EVERY`], else only counted.
    pub fn refuse(&mut self, now: Instant) -> Verdict {
        let due = self
            .last
            .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_EVERY);
        if due {
            self.last = Some(now);
            Verdict::Refuse {
                report: Some(std::mem::take(&mut self.unreported)),
            }
        } else {
            self.unreported = self.unreported.saturating_add(1);
            Verdict::Refuse { report: None }
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    reports: Reports,
}

/// Token buckets per address (see the module docs).
#[derive(Debug)]
pub struct IpRate {
    limit: RateLimit,
    buckets: HashMap<IpAddr, Bucket>,
}

impl IpRate {
    /// An empty table for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        IpRate {
            limit,
            buckets: HashMap::new(),
        }
    }

    fn rate(&self) -> f64 {
        f64::from(self.limit.per_second.max(1))
    }

    fn burst(&self) -> f64 {
        f64::from(self.limit.burst.max(1))
    }

    /// The tokens of `b` at `now`.
    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.rate()).min(self.burst())
    }

    /// Takes a token for a new connection from `ip` at `now`.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        let key = group(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_TRACKED {
            self.make_room(now);
        }
        let (rate, burst) = (self.rate(), self.burst());
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
            reports: Reports::default(),
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Admit;
        }
        b.reports.refuse(now)
    }

    /// Drops every full bucket (the same as no entry); if none is full, the fullest
    /// [`EVICT_SHARE`] of the table, so the scan is paid once per many new addresses.
    fn make_room(&mut self, now: Instant) {
        let burst = self.burst();
        let mut levels: Vec<(f64, IpAddr)> = self
            .buckets
            .iter()
            .map(|(ip, b)| (self.refilled(b, now), *ip))
            .collect();
        let full = levels.iter().filter(|(tokens, _)| *tokens >= burst).count();
        let evict = full
            .max((levels.len() / EVICT_SHARE).max(1))
            .min(levels.len());
        if evict < levels.len() {
            levels.select_nth_unstable_by(evict, |a, b| b.0.total_cmp(&a.0));
        }
        for (_, ip) in &levels[..evict] {
            self.buckets.remove(ip);
        }
    }

    /// How many addresses are tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The address a connection from `ip` counts against: IPv6 per /64, IPv4-mapped as IPv4.
pub fn group(ip: IpAddr) -> IpAddr {
    group_by(ip, 64)
}

/// The address a pending connection from `ip` counts against for the per-address cap of
/// connections still handshaking: IPv6 per /48 (one site: whoever holds a /64 can usually
/// take more of its /48, and a silent connection costs the attacker nothing but an address),
/// IPv4-mapped as IPv4.
pub fn pending_group(ip: IpAddr) -> IpAddr {
    group_by(ip, 48)
}

/// `ip` with its IPv6 address cut to the first `bits` bits (IPv4 and IPv4-mapped as IPv4).
fn group_by(ip: IpAddr, bits: u32) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !(u128::MAX >> bits.min(127));
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LIMIT: RateLimit = RateLimit {
        per_second: 10,
        burst: 3,
    };

    #[test]
    fn burst_then_rate_per_address() {
        let mut r = IpRate::new(LIMIT);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(r.admit(a, t0), Verdict::Admit);
        }
        assert_eq!(r.admit(a, t0), Verdict::Refuse { report: Some(0) });
        // Another address has its own bucket.
        assert_eq!(r.admit(ip("10.0.0.2"), t0), Verdict::Admit);
        // 10 per second: one token back after 100 ms, not before.
        assert!(matches!(
            r.admit(a, t0 + Duration::from_millis(90)),
            Verdict::Refuse { .. }
        ));
        assert_eq!(r.admit(a, t0 + Duration::from_millis(200)), Verdict::Admit);
        // Never more than the burst, however long the address was idle.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(r.admit(a, later), Verdict::Admit);
        }
        assert!(matches!(r.admit(a, later), Verdict::Refuse { .. }));
    }

    #[test]
    fn refusals_are_reported_once_per_interval_with_a_count() {
        let mut r = IpRate::new(RateLimit {
            per_second: 1,
            burst: 1,
        });
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(r.admit(a, t0), Verdict::Admit);
        assert_eq!(r.admit(a, t0), Verdict::Refuse { report: Some(0) });
        for i in 1..=5 {
            let t = t0 + Duration::from_millis(i * 100);
            assert_eq!(r.admit(a, t), Verdict::Refuse { report: None });
        }
        // 1.0 s later a token is back, then the next refusal is reported with the 5 before.
        let t = t0 + Duration::from_millis(1000);
        assert_eq!(r.admit(a, t), Verdict::Admit);
        assert_eq!(r.admit(a, t), Verdict::Refuse { report: Some(5) });
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(group(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(group(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(group(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(
            pending_group(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1::")
        );
        assert_eq!(pending_group(ip("2001:db8:1:ffff::1")), ip("2001:db8:1::"));
        assert_eq!(pending_group(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        let mut r = IpRate::new(LIMIT);
        let t0 = Instant::now();
        for host in 1..=3 {
            let a = ip(&format!("2001:db8::{host}"));
            assert_eq!(r.admit(a, t0), Verdict::Admit);
        }
        assert!(matches!(
            r.admit(ip("2001:db8::ffff"), t0),
            Verdict::Refuse { .. }
        ));
        assert_eq!(r.admit(ip("2001:db8:0:1::1"), t0), Verdict::Admit);
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_limiting_busy_addresses() {
        let mut r = IpRate::new(LIMIT);
        let t0 = Instant::now();
        let busy = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(r.admit(busy, t0), Verdict::Admit);
        }
        // Far more addresses than the table holds, each opening one connection.
        for n in 0..(MAX_TRACKED as u32 * 2) {
            let a = IpAddr::V4((0x0a00_0000 + n).into());
            assert_eq!(r.admit(a, t0), Verdict::Admit);
            assert!(r.tracked() <= MAX_TRACKED);
        }
        // The busy address had no tokens left: never the fullest, so never forgotten.
        assert!(matches!(r.admit(busy, t0), Verdict::Refuse { .. }));
        // Once buckets refill they are dropped first, and the table is reused.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(r.admit(ip("198.51.100.1"), later), Verdict::Admit);
        assert!(r.tracked() < MAX_TRACKED);
    }
}
