//! From the file's settings to the settings of each part of bcos-p2p that uses them: the
//! connection manager and the protocol crates know nothing of the file, so the mapping lives
//! here, on the config side. Settings the file does not have keep the part's own defaults.

use std::time::Duration;

use super::{Config, Connection};
use crate::{ca_tls, connection, flood, route, status, unicast};

impl Config {
    /// Reads the CRL files of `[certificate] crl` (PEM or DER); the error names the file.
    pub fn read_crls(&self) -> Result<Vec<ca_tls::Crl>, ca_tls::ConfigError> {
        let mut crls = Vec::new();
        for path in &self.certificate.crl {
            crls.extend(ca_tls::Crl::read(path)?);
        }
        Ok(crls)
    }

    /// The settings a reload replaces ([`crate::node::Node::reload`]): `[network] peers`,
    /// `[access]` and the CRLs (read from their files).
    pub fn reload_settings(&self) -> Result<connection::Reload, ca_tls::ConfigError> {
        Ok(connection::Reload {
            peers: self.network.peers.iter().map(|p| p.0.clone()).collect(),
            deny: self.access.deny.clone(),
            allow: self.access.allow.clone(),
            crls: self.read_crls()?,
        })
    }
}

impl From<&Connection> for connection::Config {
    fn from(c: &Connection) -> Self {
        connection::Config {
            redial_min: Duration::from_millis(c.redial_min_ms),
            redial_max: Duration::from_millis(c.redial_max_ms),
            ping_interval: Duration::from_millis(c.ping_interval_ms),
            ping_timeout: Duration::from_millis(c.ping_timeout_ms),
            ping_max_failures: c.ping_max_failures,
            max_pending_incoming: Some(c.max_pending_incoming),
            max_pending_incoming_per_ip: Some(c.max_pending_incoming_per_ip),
            max_pending_outgoing: Some(c.max_pending_outgoing),
            max_established: Some(c.max_established),
            new_inbound_per_ip: Some(connection::RateLimit {
                per_second: c.new_inbound_per_ip_per_s,
                burst: c.new_inbound_per_ip_burst,
            }),
            ban_threshold: c.ban_threshold,
            score_half_life: Duration::from_millis(c.score_half_life_ms),
            ban_min: Duration::from_millis(c.ban_min_ms),
            ban_max: Duration::from_millis(c.ban_max_ms),
            ban_max_configured: Duration::from_millis(c.ban_max_configured_ms),
            // `stable_after` and `max_scored` are not in the file: the manager's own defaults.
            ..connection::Config::default()
        }
    }
}

/// The unicast settings of a node config.
pub fn unicast_config(config: &Config) -> unicast::Config {
    let u = &config.unicast;
    unicast::Config {
        request_timeout: Duration::from_millis(u.request_timeout_ms),
        max_frame_size: u.max_message_size,
        max_in_flight: u.max_in_flight,
        max_pending_bytes: u.max_pending_bytes,
        modules: u.modules.iter().copied().collect(),
        dial_routed: config.route.dial,
        routed_idle_timeout: Duration::from_millis(config.route.idle_timeout_ms),
        traffic: config.traffic.unicast(config.traffic.limits(), &u.modules),
    }
}

/// The route settings of a node config.
pub fn route_config(config: &Config) -> route::Config {
    let r = &config.route;
    route::Config {
        relay: r.relay,
        accept: r.accept,
        max_hops: r.max_hops,
        max_circuits: r.max_circuits,
        max_circuits_per_peer: r.max_circuits_per_peer,
        relay_bytes_per_s: r.relay_bytes_per_s,
        ..route::Config::default()
    }
}

/// The flood settings of a node config.
pub fn flood_config(config: &Config) -> flood::Config {
    flood::Config {
        ttl: config.flood.ttl,
        max_frame: config.unicast.max_message_size,
        max_queue_bytes: config.flood.max_queue_bytes,
        budget_frames_per_s: config.flood.budget_frames_per_s,
        budget_bytes_per_s: config.flood.budget_bytes_per_s,
        control_budget_frames_per_s: config.flood.control_budget_frames_per_s,
        control_budget_bytes_per_s: config.flood.control_budget_bytes_per_s,
        ..flood::Config::default()
    }
}

/// The status settings of a node config.
pub fn status_config(config: &Config) -> status::Config {
    status::Config {
        announce_interval: Duration::from_millis(config.status.announce_interval_ms),
        max_payload: config.status.max_payload,
        ..status::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_MODULE;

    #[test]
    fn the_file_defaults_map_to_the_defaults_of_each_part() {
        let c = Config::default();
        assert_eq!(
            connection::Config::from(&c.connection),
            connection::Config::default()
        );
        let (u, default) = (unicast_config(&c), unicast::Config::default());
        assert_eq!(u.request_timeout, default.request_timeout);
        assert_eq!(u.max_frame_size, default.max_frame_size);
        assert_eq!(u.max_in_flight, default.max_in_flight);
        assert_eq!(u.max_pending_bytes, default.max_pending_bytes);
        assert_eq!(u.modules, [DEFAULT_MODULE].into());
        let (f, default) = (flood_config(&c), flood::Config::default());
        assert_eq!(f.ttl, default.ttl);
        assert_eq!(f.max_frame, default.max_frame);
        assert_eq!(f.max_queue_bytes, default.max_queue_bytes);
        assert_eq!(f.budget_frames_per_s, default.budget_frames_per_s);
        assert_eq!(f.budget_bytes_per_s, default.budget_bytes_per_s);
        assert_eq!(
            f.control_budget_frames_per_s,
            default.control_budget_frames_per_s
        );
        assert_eq!(
            f.control_budget_bytes_per_s,
            default.control_budget_bytes_per_s
        );
        let (s, default) = (status_config(&c), status::Config::default());
        assert_eq!(s.announce_interval, default.announce_interval);
        assert_eq!(s.max_payload, default.max_payload);
    }
}
