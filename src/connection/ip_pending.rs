//! Incoming connections still handshaking per IP address: a cap per address.
//!
//! A connection that never sends a byte is closed only by libp2p's connection timeout (the
//! handshake timeout plus a margin: 15 s by default). The rate limit ([`super::ip_rate`]) lets
//! one address open its burst plus its rate times that timeout in the meantime (about 170 with
//! the defaults), so two addresses could hold every slot of the node's `max_pending_incoming`
//! and lock every stranger out until their connections time out. With at most `max` pending
//! connections per address, filling the slots takes `max_pending_incoming / max` addresses.
//!
//! A connection counts from [`PendingPerIp::admit`] (the connection manager's
//! `handle_pending_inbound_connection`) until [`PendingPerIp::release`], which the manager
//! calls on the swarm's end of the pending connection. libp2p-swarm (0.48) ends every incoming
//! connection it asked behaviours about with exactly one of two events for its
//! `ConnectionId`:
//!
//! - `FromSwarm::ListenFailure`: a behaviour (this one or any other) denied it in
//!   `handle_pending_inbound_connection`; the upgrade failed (TCP error, a refused or broken
//!   CA-TLS handshake, the handshake or connection timeout, a failed muxer negotiation); the
//!   pool aborted it; it was this node itself (`LocalPeerId`); or a behaviour denied it in
//!   `handle_established_inbound_connection`;
//! - `FromSwarm::ConnectionEstablished`: it is up (no longer pending).
//!
//! Releasing an id that was never counted (denied by an earlier behaviour, exempt, or released
//! already) does nothing, so the count cannot leak or go negative. The table holds one entry
//! per counted connection and one per address with a count above zero (removed at zero), so
//! it is bounded by the pending connections the swarm holds (`max_pending_incoming`).
//!
//! Addresses group as in [`super::ip_rate::pending_group`]: IPv6 per /48, IPv4-mapped as IPv4.
//! Refusals are reported at most once per [`REPORT_EVERY`] per address; the refusals in between
//! are counted in the next report. That record outlives the address's pending connections (an
//! attacker cycles through filling and emptying its slots) in a table of at most
//! [`MAX_TRACKED`] addresses: when it is full, addresses not reported within [`REPORT_EVERY`]
//! are forgotten (with their count of unreported refusals), and if none is, the whole table
//! (each address then gets at most one more report).

use std::{collections::HashMap, net::IpAddr, time::Instant};

use libp2p::swarm::ConnectionId;

use super::ip_rate::{MAX_TRACKED, REPORT_EVERY, Reports, Verdict, pending_group as group};

/// Pending incoming connections per address (see the module docs).
#[derive(Debug)]
pub struct PendingPerIp {
    max: u32,
    /// Pending connections per address with any.
    per_ip: HashMap<IpAddr, u32>,
    conns: HashMap<ConnectionId, IpAddr>,
    /// Refusal reports per address refused lately.
    reports: HashMap<IpAddr, Reports>,
}

impl PendingPerIp {
    /// An empty table allowing `max` pending connections per address (at least 1 is honoured).
    pub fn new(max: u32) -> Self {
        PendingPerIp {
            max: max.max(1),
            per_ip: HashMap::new(),
            conns: HashMap::new(),
            reports: HashMap::new(),
        }
    }

    /// Counts the new connection `id` from `ip` as pending, unless its address already has
    /// the most allowed. Admitting a counted id again changes nothing.
    pub fn admit(&mut self, id: ConnectionId, ip: IpAddr, now: Instant) -> Verdict {
        if self.conns.contains_key(&id) {
            return Verdict::Admit;
        }
        let key = group(ip);
        let pending = self.per_ip.entry(key).or_default();
        if *pending >= self.max {
            // `pending >= max >= 1`: the entry existed before, nothing is left at zero.
            return self.refuse(key, now);
        }
        *pending += 1;
        self.conns.insert(id, key);
        Verdict::Admit
    }

    /// A refusal of `key` at `now`, reported or counted (see the module docs).
    fn refuse(&mut self, key: IpAddr, now: Instant) -> Verdict {
        if !self.reports.contains_key(&key) && self.reports.len() >= MAX_TRACKED {
            self.reports.retain(|_, r| {
                r.last()
                    .is_some_and(|at| now.saturating_duration_since(at) < REPORT_EVERY)
            });
            if self.reports.len() >= MAX_TRACKED {
                self.reports.clear();
            }
        }
        self.reports.entry(key).or_default().refuse(now)
    }

    /// Ends connection `id`'s pending state (established or failed); an id not counted is
    /// ignored.
    pub fn release(&mut self, id: ConnectionId) {
        let Some(key) = self.conns.remove(&id) else {
            return;
        };
        if let Some(pending) = self.per_ip.get_mut(&key) {
            *pending = pending.saturating_sub(1);
            if *pending == 0 {
                self.per_ip.remove(&key);
            }
        }
    }

    /// Pending connections counted for `ip`'s address.
    #[cfg(test)]
    pub fn pending(&self, ip: IpAddr) -> u32 {
        self.per_ip.get(&group(ip)).copied().unwrap_or(0)
    }

    /// Entries held: (addresses, connections).
    #[cfg(test)]
    pub fn tracked(&self) -> (usize, usize) {
        (self.per_ip.len(), self.conns.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn at_most_max_pending_per_address_and_a_slot_frees_on_release() {
        let mut p = PendingPerIp::new(3);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for n in 0..3 {
            assert_eq!(p.admit(id(n), a, t0), Verdict::Admit);
        }
        assert_eq!(p.admit(id(3), a, t0), Verdict::Refuse { report: Some(0) });
        assert_eq!(p.pending(a), 3);
        // Other addresses are not affected.
        assert_eq!(p.admit(id(4), ip("10.0.0.2"), t0), Verdict::Admit);
        // Admitting a counted id again takes no second slot.
        assert_eq!(p.admit(id(0), a, t0), Verdict::Admit);
        assert_eq!(p.pending(a), 3);
        // One ends (established or failed): one more may start.
        p.release(id(1));
        assert_eq!(p.admit(id(5), a, t0), Verdict::Admit);
        assert!(matches!(p.admit(id(6), a, t0), Verdict::Refuse { .. }));
    }

    #[test]
    fn failures_and_stray_releases_never_leak_or_go_below_zero() {
        let mut p = PendingPerIp::new(2);
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        // Many rounds of: fill, be refused, all end (some twice, as a failure reported after
        // an id was already released must change nothing).
        for round in 0..1000 {
            let base = round * 10;
            assert_eq!(p.admit(id(base), a, t0), Verdict::Admit);
            assert_eq!(p.admit(id(base + 1), a, t0), Verdict::Admit);
            assert!(matches!(
                p.admit(id(base + 2), a, t0),
                Verdict::Refuse { .. }
            ));
            // The refused id was never counted: its ListenFailure is ignored.
            p.release(id(base + 2));
            assert_eq!(p.pending(a), 2);
            p.release(id(base));
            p.release(id(base));
            p.release(id(base + 1));
            assert_eq!(p.tracked(), (0, 0), "round {round}");
        }
        // Ids never seen (denied by another behaviour first) are ignored too.
        p.release(id(999_999));
        assert_eq!(p.tracked(), (0, 0));
        assert_eq!(p.admit(id(1_000_000), a, t0), Verdict::Admit);
        assert_eq!(p.pending(a), 1);
    }

    #[test]
    fn refusals_are_reported_once_per_interval_with_a_count() {
        let mut p = PendingPerIp::new(1);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(p.admit(id(0), a, t0), Verdict::Admit);
        assert_eq!(p.admit(id(1), a, t0), Verdict::Refuse { report: Some(0) });
        for n in 2..6 {
            let t = t0 + Duration::from_millis(100 * n as u64);
            assert_eq!(p.admit(id(n), a, t), Verdict::Refuse { report: None });
        }
        // The slot empties and fills again within the second: still only counted.
        p.release(id(0));
        let t = t0 + Duration::from_millis(700);
        assert_eq!(p.admit(id(6), a, t), Verdict::Admit);
        assert_eq!(p.admit(id(7), a, t), Verdict::Refuse { report: None });
        let t = t0 + Duration::from_secs(1);
        assert_eq!(p.admit(id(8), a, t), Verdict::Refuse { report: Some(5) });
    }

    #[test]
    fn the_report_table_stays_bounded() {
        let mut p = PendingPerIp::new(1);
        let t0 = Instant::now();
        for n in 0..(MAX_TRACKED as u32 * 2) {
            let a = IpAddr::V4((0x0a00_0000 + n).into());
            let n = n as usize;
            assert_eq!(p.admit(id(2 * n), a, t0), Verdict::Admit);
            assert_eq!(
                p.admit(id(2 * n + 1), a, t0),
                Verdict::Refuse { report: Some(0) }
            );
            assert!(p.reports.len() <= MAX_TRACKED);
            p.release(id(2 * n));
        }
        assert_eq!(p.tracked(), (0, 0));
        // Stale records go first once the table is full.
        let later = t0 + REPORT_EVERY;
        let a = ip("192.0.2.1");
        assert_eq!(p.admit(id(usize::MAX - 1), a, later), Verdict::Admit);
        assert_eq!(
            p.admit(id(usize::MAX), a, later),
            Verdict::Refuse { report: Some(0) }
        );
        assert!(p.reports.len() < MAX_TRACKED);
    }

    #[test]
    fn ipv6_counts_per_48_and_mapped_ipv4_as_ipv4() {
        let mut p = PendingPerIp::new(2);
        let t0 = Instant::now();
        assert_eq!(p.admit(id(0), ip("2001:db8::1"), t0), Verdict::Admit);
        assert_eq!(p.admit(id(1), ip("2001:db8::2"), t0), Verdict::Admit);
        assert!(matches!(
            p.admit(id(2), ip("2001:db8::ffff:1"), t0),
            Verdict::Refuse { .. }
        ));
        // Another /64 of the same /48 counts with it; another /48 has its own slots.
        assert!(matches!(
            p.admit(id(5), ip("2001:db8:0:1::1"), t0),
            Verdict::Refuse { .. }
        ));
        assert_eq!(p.admit(id(3), ip("2001:db8:1::1"), t0), Verdict::Admit);
        assert_eq!(p.admit(id(4), ip("::ffff:10.1.2.3"), t0), Verdict::Admit);
        assert_eq!(p.pending(ip("10.1.2.3")), 1);
        for n in 0..5 {
            p.release(id(n));
        }
        assert_eq!(p.tracked(), (0, 0));
    }
}
