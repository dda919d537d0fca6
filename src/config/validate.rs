//! The rules every value of a config must meet before a node uses it: ranges, units, list
//! sizes, and the settings that must agree with each other. A file breaking them is refused
//! with every bad key named, not only the first.

use std::{collections::HashSet, hash::Hash, net::SocketAddr};

use super::{
    Certificates, Config, Connection, Flood, Metrics, Network, Route, Status, Unicast,
    addr::{check_listen_addr, check_peer_addr},
};
use crate::{flood, route, status};

impl Config {
    /// Checks every value against the rules of the reference in the module docs. The error
    /// names each bad key (`[section] key: reason`), all of them, separated by `; `.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, reason: String| {
            if !ok {
                problems.push(format!("{key}: {reason}"));
            }
        };
        check_network(&self.network, &mut check);
        check_certificates(&self.certificate, &mut check);
        check_connection(&self.connection, &mut check);
        check_unicast(&self.unicast, &mut check);
        check_flood(&self.flood, &self.unicast, &mut check);
        check_route(&self.route, &mut check);
        check_status(&self.status, &self.unicast, &mut check);
        check_metrics(&self.metrics, &mut check);
        problems.extend(self.traffic.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// `[network]`: listen addresses can be bound, peer addresses dialled.
fn check_network(n: &Network, check: &mut impl FnMut(bool, &str, String)) {
    for a in &n.listen {
        if let Err(e) = check_listen_addr(a) {
            check(false, "[network] listen", e);
        }
    }
    for a in &n.peers {
        if let Err(e) = check_peer_addr(a) {
            check(false, "[network] peers", e);
        }
    }
}

/// `[certificate]`: every path given.
fn check_certificates(cert: &Certificates, check: &mut impl FnMut(bool, &str, String)) {
    for (key, p) in [("key", &cert.key), ("cert", &cert.cert), ("ca", &cert.ca)] {
        check(
            !p.as_os_str().is_empty(),
            &format!("[certificate] {key}"),
            "is empty: give a file".into(),
        );
    }
    for p in &cert.crl {
        check(
            !p.as_os_str().is_empty(),
            "[certificate] crl",
            "holds an empty path: give a file".into(),
        );
    }
    for (key, p, other) in [
        ("enc_key", &cert.enc_key, ("enc_cert", &cert.enc_cert)),
        ("enc_cert", &cert.enc_cert, ("enc_key", &cert.enc_key)),
    ] {
        let name = format!("[certificate] {key}");
        if let Some(p) = p {
            check(
                !p.as_os_str().is_empty(),
                &name,
                "is empty: give a file".into(),
            );
            check(
                other.1.is_some(),
                &name,
                format!(
                    "is given without {}: the encryption pair is both or neither",
                    other.0
                ),
            );
        }
    }
}

/// `[connection]`: durations within [`MAX_MS`], redial bounds in order, limits at least 1.
fn check_connection(c: &Connection, check: &mut impl FnMut(bool, &str, String)) {
    for (key, ms) in [
        ("redial_min_ms", c.redial_min_ms),
        ("redial_max_ms", c.redial_max_ms),
        ("ping_interval_ms", c.ping_interval_ms),
        ("ping_timeout_ms", c.ping_timeout_ms),
        ("handshake_timeout_ms", c.handshake_timeout_ms),
        ("score_half_life_ms", c.score_half_life_ms),
        ("ban_min_ms", c.ban_min_ms),
        ("ban_max_ms", c.ban_max_ms),
        ("ban_max_configured_ms", c.ban_max_configured_ms),
    ] {
        check_ms(check, &format!("[connection] {key}"), ms);
    }
    check(
        c.redial_max_ms >= c.redial_min_ms,
        "[connection] redial_max_ms",
        format!(
            "{} is below redial_min_ms ({})",
            c.redial_max_ms, c.redial_min_ms
        ),
    );
    for (key, n) in [
        ("ping_max_failures", c.ping_max_failures),
        ("max_pending_incoming", c.max_pending_incoming),
        ("max_pending_incoming_per_ip", c.max_pending_incoming_per_ip),
        ("max_pending_outgoing", c.max_pending_outgoing),
        ("max_established", c.max_established),
        ("new_inbound_per_ip_per_s", c.new_inbound_per_ip_per_s),
        ("new_inbound_per_ip_burst", c.new_inbound_per_ip_burst),
    ] {
        check(
            n >= 1,
            &format!("[connection] {key}"),
            "0 must be at least 1".into(),
        );
    }
}

/// `[unicast]`: the timeout, message size and module list.
fn check_unicast(u: &Unicast, check: &mut impl FnMut(bool, &str, String)) {
    check_ms(check, "[unicast] request_timeout_ms", u.request_timeout_ms);
    check(
        (MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&u.max_message_size),
        "[unicast] max_message_size",
        format!(
            "{} is not within {MIN_MESSAGE_SIZE} (1 KiB) to {MAX_MESSAGE_SIZE} (1 GiB)",
            u.max_message_size
        ),
    );
    check(
        u.max_in_flight >= 1,
        "[unicast] max_in_flight",
        "0 must be at least 1".into(),
    );
    check(
        u.max_pending_bytes >= 1,
        "[unicast] max_pending_bytes",
        "0 must be at least 1".into(),
    );
    check(
        !u.modules.is_empty(),
        "[unicast] modules",
        "is empty: serve at least one module id".into(),
    );
    check(
        u.modules.len() <= status::MAX_MODULES,
        "[unicast] modules",
        format!(
            "{} ids, more than the {} allowed",
            u.modules.len(),
            status::MAX_MODULES
        ),
    );
    if let Some(m) = first_duplicate(&u.modules) {
        check(false, "[unicast] modules", format!("{m} is listed twice"));
    }
}

/// `[route]`: a path length relays can carry, budgets of at least one circuit.
fn check_route(r: &Route, check: &mut impl FnMut(bool, &str, String)) {
    check(
        (2..=route::wire::MAX_PATH).contains(&r.max_hops),
        "[route] max_hops",
        format!(
            "{} is not within 2 to {}",
            r.max_hops,
            route::wire::MAX_PATH
        ),
    );
    for (key, n) in [
        ("max_circuits", r.max_circuits),
        ("max_circuits_per_peer", r.max_circuits_per_peer),
    ] {
        check(
            n >= 1,
            &format!("[route] {key}"),
            "0 must be at least 1".into(),
        );
    }
    check_ms(check, "[route] idle_timeout_ms", r.idle_timeout_ms);
}

/// `[flood]`: ttl, topics, and a queue that holds the largest message (`u`).
fn check_flood(f: &Flood, u: &Unicast, check: &mut impl FnMut(bool, &str, String)) {
    check(f.ttl >= 1, "[flood] ttl", "0 must be 1 to 255".into());
    for t in &f.topics {
        if let Err(e) = flood::Topic::new(t.as_str()) {
            let shown: String = t.chars().take(32).collect();
            check(false, "[flood] topics", format!("`{shown}`: {e}"));
        }
    }
    check(
        f.topics.len() <= flood::wire::MAX_TOPICS,
        "[flood] topics",
        format!(
            "{} topics, more than the {} allowed",
            f.topics.len(),
            flood::wire::MAX_TOPICS
        ),
    );
    if let Some(t) = first_duplicate(&f.topics) {
        check(false, "[flood] topics", format!("`{t}` is listed twice"));
    }
    check(
        f.max_queue_bytes >= u.max_message_size,
        "[flood] max_queue_bytes",
        format!(
            "{} is below unicast.max_message_size ({}): the largest message could never \
             be queued",
            f.max_queue_bytes, u.max_message_size
        ),
    );
}

/// `[status]`: the announce period, and a payload that fits a message (`u`).
fn check_status(s: &Status, u: &Unicast, check: &mut impl FnMut(bool, &str, String)) {
    check_ms(
        check,
        "[status] announce_interval_ms",
        s.announce_interval_ms,
    );
    check(
        s.max_payload <= u.max_message_size,
        "[status] max_payload",
        format!(
            "{} is above unicast.max_message_size ({})",
            s.max_payload, u.max_message_size
        ),
    );
}

/// `[metrics]`: an `ip:port` or nothing.
fn check_metrics(metrics: &Metrics, check: &mut impl FnMut(bool, &str, String)) {
    let m = &metrics.listen;
    check(
        m.is_empty() || m.parse::<SocketAddr>().is_ok(),
        "[metrics] listen",
        format!("`{m}` is not `<ip>:<port>` (or empty)"),
    );
}

/// Smallest `unicast.max_message_size`: 1 KiB.
pub const MIN_MESSAGE_SIZE: usize = 1024;
/// Largest `unicast.max_message_size`: 1 GiB.
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024 * 1024;
/// Longest duration any `*_ms` key may give: one day. Bounds timer arithmetic.
pub const MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// Checks a millisecond value is 1 to [`MAX_MS`].
fn check_ms(check: &mut impl FnMut(bool, &str, String), key: &str, ms: u64) {
    check(
        (1..=MAX_MS).contains(&ms),
        key,
        format!("{ms} is not within 1 to {MAX_MS} ms (one day)"),
    );
}

/// The first item that occurs twice.
fn first_duplicate<T: Eq + Hash>(items: &[T]) -> Option<&T> {
    let mut seen = HashSet::new();
    items.iter().find(|&i| !seen.insert(i))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn assert_all_in(err: &str, needles: &[&str]) {
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }

    #[test]
    fn validation_names_every_bad_key() {
        let mut c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        c.connection.redial_min_ms = 0;
        c.connection.ping_max_failures = 0;
        c.unicast.modules = vec![];
        c.flood.ttl = 0;
        c.flood.topics = vec![String::new(), "t".repeat(256)];
        assert_all_in(
            &c.validate().unwrap_err(),
            &[
                "[connection] redial_min_ms: 0 is not within 1 to 86400000",
                "[connection] ping_max_failures: 0 must be at least 1",
                "[unicast] modules: is empty",
                "[flood] ttl: 0 must be 1 to 255",
                "[flood] topics: ``: invalid topic: topic of 0 bytes",
                "topic of 256 bytes",
            ],
        );

        let mut c = Config::default();
        c.connection.redial_max_ms = 999;
        c.unicast.max_message_size = 100;
        c.unicast.modules = vec![1, 2, 1];
        c.flood.topics = vec!["a".into(), "a".into()];
        c.certificate.ca = PathBuf::new();
        c.connection.ping_interval_ms = MAX_MS + 1;
        assert_all_in(
            &c.validate().unwrap_err(),
            &[
                "[connection] redial_max_ms: 999 is below redial_min_ms (1000)",
                "[connection] ping_interval_ms: 86400001 is not within",
                "[unicast] max_message_size: 100 is not within 1024 (1 KiB)",
                "[unicast] modules: 1 is listed twice",
                "[flood] topics: `a` is listed twice",
                "[status] max_payload: 1048576 is above unicast.max_message_size (100)",
                "[certificate] ca: is empty",
            ],
        );

        let mut c = Config::default();
        c.flood.max_queue_bytes = c.unicast.max_message_size - 1;
        let err = c.validate().unwrap_err();
        assert!(err.starts_with("[flood] max_queue_bytes: "), "{err}");
    }

    #[test]
    fn metrics_listen_is_an_ip_port_or_empty() {
        let mut c = Config::default();
        assert_eq!(c.metrics.listen_addr(), None);
        c.metrics.listen = "127.0.0.1:0".into();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.metrics.listen_addr(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        c.metrics.listen = "localhost:9100".into();
        assert_all_in(
            &c.validate().unwrap_err(),
            &["[metrics] listen: `localhost:9100` is not `<ip>:<port>` (or empty)"],
        );
    }
}
