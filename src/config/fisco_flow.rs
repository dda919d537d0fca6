//! FISCO BCOS `[flow_control]` of `config.ini`, mapped onto `[traffic]` (see `docs/config.md`,
//! "FISCO BCOS `config.ini`").
//!
//! FISCO 3.x reads its limits in the gateway (`GatewayConfig::initFlowControlConfig`) and, from
//! 3.4 on, applies them only with `enable=true` (default false): the keys are still checked,
//! as FISCO checks them, but without `enable=true` none is applied and one warning says so.
//! FISCO 2.x has `outgoing_bandwidth_limit` (applied whenever given) and `limit_req` (its RPC's).

use std::collections::BTreeSet;

use super::{
    ALL_MODULES, Traffic,
    fisco::{Entry, Section},
    traffic::{BLOCK_SYNC, CONS_TXS_SYNC, PBFT, RAFT, TXS_SYNC},
};

/// FISCO's module names (`stringToModuleID`, case-insensitive). `light_node` names the first
/// light-node module only, 4000, as in FISCO.
const MODULE_NAMES: [(&str, u16); 7] = [
    ("raft", RAFT),
    ("pbft", PBFT),
    ("amop", 3000),
    ("block_sync", BLOCK_SYNC),
    ("txs_sync", TXS_SYNC),
    ("cons_txs_sync", CONS_TXS_SYNC),
    ("light_node", 4000),
];

/// FISCO's unit for bandwidth, "Mb": `value * 1024 * 1024 / 8` bytes per second.
const BYTES_PER_MB: f64 = (1024 * 1024 / 8) as f64;

/// Prefix of FISCO 3.x's per-module incoming limit, `incoming_module_qps_limit_<module id>`.
const MODULE_QPS: &str = "incoming_module_qps_limit_";

/// FISCO settings that have no counterpart, each with the reason given in its warning.
const UNMAPPED: [(&str, &str); 11] = [
    (
        "time_window_sec",
        "FISCO counts its limits in windows of this many seconds; bcos-p2p's limits are token \
         buckets (bursts of one second of requests, or one chunk of bytes)",
    ),
    (
        "enable_distributed_ratelimit",
        "limits shared between gateways through Redis; bcos-p2p's limits are the node's own",
    ),
    (
        "enable_distributed_ratelimit_cache",
        "a cache of FISCO's Redis-shared limits, which bcos-p2p does not have",
    ),
    (
        "distributed_ratelimit_cache_percent",
        "a cache of FISCO's Redis-shared limits, which bcos-p2p does not have",
    ),
    (
        "stat_reporter_interval",
        "FISCO logs its rate statistics at this interval; bcos-p2p exports them as Prometheus \
         metrics (bcos_p2p_module_*)",
    ),
    (
        "enable_connect_debug_info",
        "FISCO's connection debug log; bcos-p2p logs by RUST_LOG",
    ),
    (
        "outgoing_allow_exceed_max_permit",
        "bcos-p2p neither refuses nor lets through for free a message larger than a limit's \
         burst: it is sent, and the limit waits for it to be paid back",
    ),
    (
        "group_outgoing_bw_limit",
        "limits per group: bcos-p2p has no groups (use [traffic] module_bytes_per_s)",
    ),
    (
        "incoming_p2p_basic_msg_type_list",
        "FISCO's own P2P messages (handshake, heartbeat, ...) are libp2p protocols here, bounded \
         by [connection]",
    ),
    (
        "incoming_p2p_basic_msg_type_qps_limit",
        "FISCO's own P2P messages (handshake, heartbeat, ...) are libp2p protocols here, bounded \
         by [connection]",
    ),
    (
        "limit_req",
        "FISCO 2.x limits its RPC and SDK channel requests with it, not P2P traffic",
    ),
];

/// The 3.x settings `enable` switches on, as read.
#[derive(Default)]
struct Limits3 {
    exempt: Option<Vec<u16>>,
    total: Option<u64>,
    connection: Option<u64>,
    /// Per module, and [`ALL_MODULES`] for the default.
    requests: Vec<(String, u32)>,
    /// The keys that set them, for the warning when they are off.
    keys: Vec<String>,
}

/// Maps `[flow_control]` onto `traffic`, pushing a warning for each key that does not map.
pub(super) fn flow_control(
    s: &Section,
    traffic: &mut Traffic,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let mut enabled = None;
    let mut limits = Limits3::default();
    let mut outgoing_2x = None;
    for e in &s.entries {
        let key = e.key.as_str();
        let mapped = match key {
            "enable" => {
                enabled = Some(boolean(s, e)?);
                false
            }
            "modules_without_bw_limit" => {
                limits.exempt = Some(modules(s, e)?);
                true
            }
            "total_outgoing_bw_limit" => {
                limits.total = Some(bandwidth(s, e)?);
                true
            }
            "conn_outgoing_bw_limit" => {
                limits.connection = Some(bandwidth(s, e)?);
                true
            }
            "incoming_module_msg_type_qps_limit" => {
                let qps = integer(s, e, -1)?;
                if qps > 0 {
                    limits.requests.push((ALL_MODULES.to_string(), qps));
                }
                true
            }
            "outgoing_bandwidth_limit" => {
                outgoing_2x = Some(bandwidth_2x(s, e)?);
                false
            }
            _ if key.starts_with(MODULE_QPS) => {
                let module: u16 = key[MODULE_QPS.len()..].parse().map_err(|_| {
                    s.bad(
                        e,
                        format!("`{}` is not a module id 0-65535", &key[MODULE_QPS.len()..]),
                    )
                })?;
                let qps = integer(s, e, 1)?;
                limits.requests.push((module.to_string(), qps));
                true
            }
            _ if key.starts_with("conn_outgoing_bw_limit_") => {
                warnings.push(s.ignored(
                    e,
                    "limits per peer IP address are not supported; conn_outgoing_bw_limit \
                     applies to every connection",
                ));
                false
            }
            _ if key.starts_with("group_outgoing_bw_limit_") => {
                warnings.push(s.ignored(
                    e,
                    "limits per group: bcos-p2p has no groups (use [traffic] module_bytes_per_s)",
                ));
                false
            }
            _ => {
                match UNMAPPED.iter().find(|(k, _)| *k == key) {
                    Some((_, why)) => warnings.push(s.ignored(e, why)),
                    None => warnings.push(s.unused(e, &[])),
                }
                false
            }
        };
        if mapped {
            limits.keys.push(key.to_string());
        }
    }
    if let (Some(total), Some(connection)) = (limits.total, limits.connection)
        && total > 0
        && connection > total
    {
        // FISCO refuses this too.
        return Err("[flow_control] conn_outgoing_bw_limit is greater than \
                    total_outgoing_bw_limit"
            .into());
    }
    if let Some(bytes) = outgoing_2x {
        traffic.total_bytes_per_s = bytes;
    }
    if !enabled.unwrap_or(false) {
        if !limits.keys.is_empty() {
            warnings.push(format!(
                "[flow_control] {}: not applied, as in FISCO BCOS 3.4 and later: enable is {} \
                 (set enable=true to apply them)",
                limits.keys.join(", "),
                if enabled.is_some() {
                    "false"
                } else {
                    "not set (default false)"
                },
            ));
        }
        return Ok(());
    }
    if limits.total.is_some() && outgoing_2x.is_some() {
        return Err("[flow_control] outgoing_bandwidth_limit (FISCO 2.x) and \
                    total_outgoing_bw_limit (3.x) both limit the node's outgoing bandwidth; \
                    keep one"
            .into());
    }
    if let Some(exempt) = limits.exempt {
        traffic.exempt_modules = exempt;
    }
    if let Some(total) = limits.total {
        traffic.total_bytes_per_s = total;
    }
    if let Some(connection) = limits.connection {
        traffic.connection_bytes_per_s = connection;
    }
    traffic.incoming_requests_per_s.extend(limits.requests);
    Ok(())
}

/// FISCO's booleans (boost's `get<bool>`): `true`/`false`, `1`/`0`.
fn boolean(s: &Section, e: &Entry) -> Result<bool, String> {
    match e.value.as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        v => Err(s.bad(e, format!("`{v}` is not true or false"))),
    }
}

/// `modules_without_bw_limit`: module names or ids, comma-separated; empty: none.
fn modules(s: &Section, e: &Entry) -> Result<Vec<u16>, String> {
    let mut ids = BTreeSet::new();
    for name in e.value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let id = if name.bytes().all(|b| b.is_ascii_digit()) {
            name.parse()
                .map_err(|_| s.bad(e, format!("`{name}` is not a module id 0-65535")))?
        } else {
            let known = MODULE_NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name));
            let names: Vec<_> = MODULE_NAMES.iter().map(|(n, _)| *n).collect();
            known.map(|(_, id)| *id).ok_or_else(|| {
                s.bad(
                    e,
                    format!(
                        "unknown module `{name}`: give a module id or one of {}",
                        names.join(", ")
                    ),
                )
            })?
        };
        ids.insert(id);
    }
    Ok(ids.into_iter().collect())
}

/// A decimal number of FISCO's "Mb".
fn megabits(s: &Section, e: &Entry) -> Result<f64, String> {
    let mb: f64 = e
        .value
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| s.bad(e, format!("`{}` is not a number (unit Mb)", e.value)))?;
    if mb * BYTES_PER_MB >= i64::MAX as f64 {
        return Err(s.bad(e, format!("`{}` is too large", e.value)));
    }
    Ok(mb)
}

/// A 3.x bandwidth in bytes per second, truncated as FISCO does; 0 or less: no limit.
fn bandwidth(s: &Section, e: &Entry) -> Result<u64, String> {
    Ok((megabits(s, e)? * BYTES_PER_MB).max(0.0) as u64)
}

/// FISCO 2.x's `outgoing_bandwidth_limit`, which must be more than 0.
fn bandwidth_2x(s: &Section, e: &Entry) -> Result<u64, String> {
    let mb = megabits(s, e)?;
    if mb <= 0.0 {
        return Err(s.bad(e, "must be more than 0"));
    }
    Ok(((mb * BYTES_PER_MB) as u64).max(1))
}

/// A whole number of at least `min` (FISCO's checks); 0 and less are returned as 0.
fn integer(s: &Section, e: &Entry, min: i64) -> Result<u32, String> {
    let v: i64 = e
        .value
        .parse()
        .map_err(|_| s.bad(e, format!("`{}` is not a whole number", e.value)))?;
    if v < min {
        return Err(s.bad(e, format!("{v} is less than {min}")));
    }
    u32::try_from(v.max(0)).map_err(|_| s.bad(e, format!("{v} is too large")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    fn import(flow: &str) -> Result<(Config, Vec<String>), String> {
        Config::from_fisco_ini(&format!("[flow_control]\n{flow}"), Path::new("/n"))
    }

    #[test]
    fn enabled_3x_limits_map_onto_traffic() {
        let (c, w) = import(
            "enable=true\nmodules_without_bw_limit=PBFT, raft,5000,,amop\n\
             total_outgoing_bw_limit=10\nconn_outgoing_bw_limit=0.5\n\
             incoming_module_msg_type_qps_limit=300\nincoming_module_qps_limit_2001=40\n",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let t = &c.traffic;
        assert_eq!(t.exempt_modules, [1000, 1001, 3000, 5000]);
        assert_eq!(t.total_bytes_per_s, 10 * 131072);
        assert_eq!(t.connection_bytes_per_s, 65536);
        assert_eq!(t.request_rates(&[1, 2001]), [(1, 300), (2001, 40)].into());
        // The rest of [traffic] keeps its defaults.
        let d = super::super::Traffic::default();
        assert_eq!((t.chunk_size, &t.priorities), (d.chunk_size, &d.priorities));
    }

    #[test]
    fn fisco_defaults_are_ours() {
        let (c, w) =
            import("enable=true\nmodules_without_bw_limit=raft,pbft,cons_txs_sync,txs_sync\n")
                .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.traffic, super::super::Traffic::default());
        let (c, _) = import("enable=1\nmodules_without_bw_limit=\n").unwrap();
        assert!(c.traffic.exempt_modules.is_empty());
        let (c, _) = import("enable=true\nmodules_without_bw_limit=Light_Node\n").unwrap();
        assert_eq!(c.traffic.exempt_modules, [4000]);
        // Negative and zero bandwidths are no limit in FISCO 3.x.
        let (c, _) = import("enable=true\ntotal_outgoing_bw_limit=-1\n").unwrap();
        assert_eq!(c.traffic.total_bytes_per_s, 0);
    }

    #[test]
    fn without_enable_nothing_applies_and_a_warning_says_so() {
        for flow in ["", "enable=false\n"] {
            let (c, w) = import(&format!(
                "{flow}total_outgoing_bw_limit=10\nincoming_module_qps_limit_1=5\n"
            ))
            .unwrap();
            assert_eq!(c.traffic, super::super::Traffic::default());
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(
                w[0].contains("total_outgoing_bw_limit, incoming_module_qps_limit_1: not applied")
                    && w[0].contains("enable=true"),
                "{w:?}"
            );
        }
        // Bad values are refused even so, as FISCO refuses them.
        assert!(import("total_outgoing_bw_limit=ten\n").is_err());
        assert!(import("enable=yes\n").unwrap_err().contains("enable"));
    }

    #[test]
    fn fisco_2x_bandwidth_applies_without_enable() {
        let (c, w) = import("outgoing_bandwidth_limit=2\nlimit_req=1000\n").unwrap();
        assert_eq!(c.traffic.total_bytes_per_s, 2 * 131072);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("[flow_control] limit_req (line 3): FISCO 2.x"),
            "{w:?}"
        );
        let err = import("outgoing_bandwidth_limit=0\n").unwrap_err();
        assert_eq!(
            err,
            "[flow_control] outgoing_bandwidth_limit: must be more than 0 (line 2)"
        );
        let err = import("enable=true\noutgoing_bandwidth_limit=2\ntotal_outgoing_bw_limit=3\n")
            .unwrap_err();
        assert!(err.contains("keep one"), "{err}");
    }

    #[test]
    fn keys_that_do_not_map_warn_each_with_the_reason() {
        let (c, w) = import(
            "enable=true\ntime_window_sec=3\nenable_distributed_ratelimit=false\n\
             conn_outgoing_bw_limit_192.168.0.1=3\ngroup_outgoing_bw_limit=2\n\
             group_outgoing_bw_limit_group0=2\nstat_reporter_interval=60000\n\
             outgoing_allow_exceed_max_permit=true\nincoming_p2p_basic_msg_type_qps_limit=9\n\
             enable_connect_debug_info=true\ntotal_outgoing_bw_limt=3\n",
        )
        .unwrap();
        assert_eq!(c.traffic, super::super::Traffic::default());
        let keys: Vec<_> = w
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "time_window_sec",
                "enable_distributed_ratelimit",
                "conn_outgoing_bw_limit_192.168.0.1",
                "group_outgoing_bw_limit",
                "group_outgoing_bw_limit_group0",
                "stat_reporter_interval",
                "outgoing_allow_exceed_max_permit",
                "incoming_p2p_basic_msg_type_qps_limit",
                "enable_connect_debug_info",
                "total_outgoing_bw_limt",
            ]
        );
        assert!(w.iter().all(|l| l.ends_with("; ignored")), "{w:#?}");
        assert!(w[2].contains("per peer IP address"), "{}", w[2]);
        assert!(w[9].contains("unknown key"), "{}", w[9]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = |flow: &str| import(flow).unwrap_err();
        assert_eq!(
            err("modules_without_bw_limit=pbft,consensus\n"),
            "[flow_control] modules_without_bw_limit: unknown module `consensus`: give a module \
             id or one of raft, pbft, amop, block_sync, txs_sync, cons_txs_sync, light_node \
             (line 2)"
        );
        assert!(err("modules_without_bw_limit=70000\n").contains("`70000` is not a module id"));
        assert!(err("incoming_module_qps_limit_x=5\n").contains("`x` is not a module id"));
        assert!(err("incoming_module_qps_limit_5=0\n").contains("0 is less than 1"));
        assert!(err("incoming_module_msg_type_qps_limit=-2\n").contains("-2 is less than -1"));
        assert!(err("total_outgoing_bw_limit=inf\n").contains("not a number"));
        assert!(err("total_outgoing_bw_limit=1e300\n").contains("too large"));
        let e = err("enable=true\ntotal_outgoing_bw_limit=1\nconn_outgoing_bw_limit=2\n");
        assert!(e.contains("greater than total_outgoing_bw_limit"), "{e}");
    }
}
