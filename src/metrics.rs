//! Prometheus metrics of a node, and a small HTTP endpoint that serves them.
//!
//! An operator of a consortium chain wants to see, without reading logs, whether a node keeps
//! its peers, who is being refused and why, how much each protocol moves and whether requests
//! succeed. [`Metrics`] puts that into a [`prometheus_client`] [`Registry`]; `libp2p-metrics`
//! adds libp2p's own swarm and identify metrics (prefix `libp2p_`). Every series of ours has the
//! prefix `bcos_p2p_`:
//!
//! | series | labels | what |
//! | --- | --- | --- |
//! | `connections_open` | `direction` (`inbound`/`outbound`) | connections open now |
//! | `connections_established_total`, `connections_closed_total` | `direction` | connections opened, closed |
//! | `handshake_failures_total` | `code` (as the `refused` event's) | connections refused, by us or by the peer |
//! | `ping_rtt_seconds` | | ping round trips (histogram) |
//! | `frames_total`, `transferred_bytes_total` | `protocol` (`unicast`/`flood`/`status`), `direction` (`in`/`out`) | frames and their body bytes |
//! | `unicast_requests_total` | `direction`, `outcome` | how requests ended (see [`unicast::Outcome`]) |
//! | `module_messages_total`, `module_payload_bytes_total` | `module` (id), `direction` (`in`/`out`) | unicast messages of each module, and their payload bytes as on the wire (compressed when they were) |
//! | `module_queued_bytes` | `module` | payload bytes waiting to be sent now, all connections |
//! | `module_throttled_seconds_total` | `module` | time the module's messages waited for `[traffic]` bandwidth limits and path pacing |
//! | `path_pacing_started_total`, `path_paced_connections` | | times a connection started pacing because a queue formed on its path (`[traffic] queue_delay_target_ms`), and the connections pacing now |
//! | `module_rate_limited_total` | `module` | peers' requests and one-way messages refused by `[traffic] incoming_requests_per_s` |
//! | `module_compression_raw_bytes_total`, `module_compression_compressed_bytes_total` | `module` | payloads sent compressed: bytes before and after |
//! | `module_compression_ratio` | `module` | compressed over raw bytes of those payloads (1: none compressed) |
//! | `flood_{published,delivered,duplicates,too_old,bad_signatures,non_members,bad_certificates,dropped,malformed,over_budget,control_over_budget,records_over_pace}_total` | | multicasts and broadcasts |
//! | `peer_offences_total` | `kind` (as [`crate::Offence::as_str`]) | offences the protocols reported |
//! | `peers_banned_total` | `reason` (the offence kind) | bans |
//! | `flood_{ihave_sent,ihave_ids,iwant_sent,repair_served,repaired}_total` | | lazy repair: announcements (frames, ids) and pulls sent, pulls answered, messages repaired |
//! | `status_{queries_sent,queries_received,queries_answered,responses_accepted,query_timeouts}_total` | | status queries |
//! | `status_announces_total` | `direction` (`in`/`out`) | status announcements |
//! | `route_{opened,failed,relayed_circuits,refused}_total`, `route_relayed_bytes_total` | | routed connections opened and failed; circuits relayed for others, refused, and their bytes |
//! | `route_circuits_relayed_now` | | circuits relayed now |
//!
//! Frame, request and per-module counters are live (atomics shared with the connection
//! handlers; a module has series once it sent, received, waited or was refused); the flood
//! and status counters live inside their behaviours and are copied by [`Metrics::sample`], which
//! [`crate::node::Node`] calls every [`SAMPLE_INTERVAL`].
//!
//! With a [`Node`](crate::node::Node), pass a registry to
//! [`Node::start_with_metrics`](crate::node::Node::start_with_metrics); with a swarm of your own,
//! create [`Metrics`] over your [`Behaviour`], give it every swarm event ([`Metrics::record`])
//! and every event of [`Behaviour`] ([`Metrics::record_behaviour`]). [`MetricsServer`]
//! serves a registry on `GET /metrics` (what `bcos-p2p run --metrics ADDR` does) and, given
//! the node, the operator's network view on the same listener (`/peers`, `/network`).

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use bcos_p2p_core::{
    bandwidth::{Limits, PathPaces, RequestLimits},
    stream_pair::Traffic,
};
use libp2p::swarm::SwarmEvent;
use libp2p_metrics::Recorder as _;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Unit,
};

/// The registry type metrics are registered in (the `prometheus-client` version this crate uses).
pub use prometheus_client::registry::Registry;

pub use crate::http::MetricsServer;

use crate::{
    Offence, Offences,
    behaviour::{Behaviour, Event as BehaviourEvent},
    connection, flood, route, status,
    unicast::{self, Direction, Outcome},
};

/// How often [`crate::node::Node`] copies the flood and status counters into the registry.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

type Labels = [(&'static str, &'static str); 1];

/// The metrics of one node, registered in a [`Registry`].
pub struct Metrics {
    libp2p: libp2p_metrics::Metrics,
    connections_open: Family<Labels, Gauge>,
    connections_established: Family<Labels, Counter>,
    connections_closed: Family<Labels, Counter>,
    handshake_failures: Family<Labels, Counter>,
    ping_rtt: Histogram,
    banned: Family<Labels, Counter>,
    sampled: Arc<Mutex<Sampled>>,
}

impl Metrics {
    /// Registers a node's metrics in `registry` (ours with the prefix `bcos_p2p`, libp2p's
    /// with `libp2p`). Frame and request counters are read live from `behaviour`'s protocols;
    /// the rest move as [`Metrics::record`] sees swarm events and [`Metrics::sample`] runs.
    pub fn new(registry: &mut Registry, behaviour: &Behaviour) -> Metrics {
        let libp2p = libp2p_metrics::Metrics::new(registry);
        let r = registry.sub_registry_with_prefix("bcos_p2p");
        let connections_open = Family::default();
        r.register(
            "connections_open",
            "Connections open now, by direction",
            connections_open.clone(),
        );
        let connections_established = Family::default();
        r.register(
            "connections_established",
            "Connections established, by direction",
            connections_established.clone(),
        );
        let connections_closed = Family::default();
        r.register(
            "connections_closed",
            "Connections closed, by direction",
            connections_closed.clone(),
        );
        let handshake_failures = Family::default();
        r.register(
            "handshake_failures",
            "Connections refused by either side's CA-TLS handshake, access lists or a \
             connection limit, by refusal code",
            handshake_failures.clone(),
        );
        // 100 µs to ~3.3 s.
        let ping_rtt = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register_with_unit(
            "ping_rtt",
            "Ping round trips",
            Unit::Seconds,
            ping_rtt.clone(),
        );
        let banned = Family::default();
        r.register(
            "peers_banned",
            "Nodes banned for misbehaving, by the kind of offence that brought their score down",
            banned.clone(),
        );
        let sampled = Arc::new(Mutex::new(Sampled::default()));
        r.register_collector(Box::new(ProtocolCollector {
            offences: behaviour.connection.offences(),
            unicast: behaviour.unicast.counters(),
            limits: behaviour.unicast.traffic_limits(),
            request_limits: behaviour.unicast.request_limits(),
            paces: behaviour.unicast.path_paces(),
            flood: behaviour.flood.traffic(),
            status: behaviour.status.traffic(),
            route: behaviour.route.stats(),
            sampled: sampled.clone(),
        }));
        let metrics = Metrics {
            libp2p,
            connections_open,
            connections_established,
            connections_closed,
            handshake_failures,
            ping_rtt,
            banned,
            sampled,
        };
        metrics.sample(behaviour);
        metrics
    }

    /// Records what a swarm event says about connections. Call it with every event of the
    /// swarm, and [`Metrics::record_behaviour`] with [`Behaviour`]'s.
    pub fn record<E>(&self, event: &SwarmEvent<E>) {
        self.libp2p.record(event);
        match event {
            SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                let labels = direction(endpoint.is_dialer());
                self.connections_open.get_or_create(&labels).inc();
                self.connections_established.get_or_create(&labels).inc();
            }
            SwarmEvent::ConnectionClosed { endpoint, .. } => {
                let labels = direction(endpoint.is_dialer());
                self.connections_open.get_or_create(&labels).dec();
                self.connections_closed.get_or_create(&labels).inc();
            }
            _ => {}
        }
    }

    /// Records what an event of [`Behaviour`] says (refusals, pings, identify).
    pub fn record_behaviour(&self, event: &BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(e) => self.libp2p.record(&**e),
            BehaviourEvent::Connection(e) => match e {
                connection::Event::Refused { reason, .. } => {
                    // A rate-limit report also stands for the refusals not reported before it.
                    let refusals = match reason {
                        connection::Refusal::RateLimited { unreported, .. } => {
                            1 + u64::from(*unreported)
                        }
                        _ => 1,
                    };
                    self.handshake_failures
                        .get_or_create(&[("code", reason.code())])
                        .inc_by(refusals);
                }
                connection::Event::Ping { rtt, .. } => self.ping_rtt.observe(rtt.as_secs_f64()),
                connection::Event::Banned { offence, .. } => {
                    self.banned
                        .get_or_create(&[("reason", offence.as_str())])
                        .inc();
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// Copies the counters flood and status keep inside their behaviours.
    pub fn sample(&self, behaviour: &Behaviour) {
        *self.sampled.lock().unwrap_or_else(|p| p.into_inner()) = Sampled {
            flood: behaviour.flood.stats(),
            status: behaviour.status.stats(),
        };
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn direction(dialer: bool) -> Labels {
    [("direction", if dialer { "outbound" } else { "inbound" })]
}

#[derive(Debug, Default)]
struct Sampled {
    flood: flood::Stats,
    status: status::Stats,
}

/// Encodes the protocols' counters at each scrape.
#[derive(Debug)]
struct ProtocolCollector {
    offences: Offences,
    unicast: Arc<unicast::Counters>,
    limits: Arc<Limits>,
    request_limits: Arc<RequestLimits>,
    /// Path pacing, when the swarm paces (`crate::paced`).
    paces: Option<Arc<PathPaces>>,
    flood: Arc<Traffic>,
    status: Arc<Traffic>,
    route: Arc<route::Stats>,
    sampled: Arc<Mutex<Sampled>>,
}

impl Collector for ProtocolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let traffic = [
            ("unicast", self.unicast.traffic()),
            ("flood", &*self.flood),
            ("status", &*self.status),
        ];
        let per_protocol = |frames: bool| {
            traffic.iter().flat_map(move |(protocol, t)| {
                let (r#in, out) = if frames {
                    (t.frames_in(), t.frames_out())
                } else {
                    (t.bytes_in(), t.bytes_out())
                };
                [
                    ([("protocol", *protocol), ("direction", "in")], r#in),
                    ([("protocol", *protocol), ("direction", "out")], out),
                ]
            })
        };
        counters(
            &mut encoder,
            "frames",
            "Protocol frames, by protocol and direction",
            None,
            per_protocol(true),
        )?;
        counters(
            &mut encoder,
            "transferred",
            "Protocol frame bodies (without length prefixes and the layers below), by protocol \
             and direction",
            Some(&Unit::Bytes),
            per_protocol(false),
        )?;
        let requests = [Direction::Outbound, Direction::Inbound]
            .into_iter()
            .flat_map(|d| {
                let outcomes: &[Outcome] = match d {
                    Direction::Outbound => &Outcome::OUTBOUND,
                    Direction::Inbound => &Outcome::INBOUND,
                };
                outcomes.iter().map(move |o| {
                    (
                        [("direction", d.as_str()), ("outcome", o.as_str())],
                        self.unicast.requests(d, *o),
                    )
                })
            });
        counters(
            &mut encoder,
            "unicast_requests",
            "Unicast requests by direction (ours: outbound) and how they ended",
            None,
            requests,
        )?;
        self.encode_modules(&mut encoder)?;
        let paces = self.paces.as_deref();
        let metric = encoder.encode_descriptor(
            "path_paced_connections",
            "Connections pacing their unicast traffic now",
            None,
            MetricType::Gauge,
        )?;
        let now = paces.map_or(0, PathPaces::pacing_now);
        ConstGauge::new(i64::try_from(now).unwrap_or(i64::MAX)).encode(metric)?;

        let totals = self.offences.totals();
        counters(
            &mut encoder,
            "peer_offences",
            "Offences of peers the protocols reported (bad signatures, malformed frames, \
             too-old copies, frames over budget, unsolicited answers), by kind",
            None,
            Offence::ALL.map(|o| ([("kind", o.as_str())], totals[o.index()])),
        )?;

        let Sampled { flood, status } = *self.sampled.lock().unwrap_or_else(|p| p.into_inner());
        let single: [(&str, &str, u64); 25] = [
            (
                "path_pacing_started",
                "Times a connection started pacing its unicast traffic because a queue formed on \
                 its network path ([traffic] queue_delay_target_ms)",
                paces.map_or(0, PathPaces::started),
            ),
            (
                "flood_published",
                "Multicasts and broadcasts this node sent",
                flood.published,
            ),
            (
                "flood_delivered",
                "Multicasts and broadcasts delivered to this node's application",
                flood.delivered,
            ),
            (
                "flood_duplicates",
                "Copies received of messages already seen (dropped)",
                flood.duplicates,
            ),
            (
                "flood_too_old",
                "Data frames refused as below their origin's replay window (replays, or copies too late)",
                flood.too_old,
            ),
            (
                "flood_bad_signatures",
                "Data frames and records whose signature did not verify (the sender's stream closed)",
                flood.bad_signatures,
            ),
            (
                "flood_non_members",
                "Data frames and records dropped because their origin could not be shown to be a member (CA mode)",
                flood.non_members,
            ),
            (
                "flood_bad_certificates",
                "Certificate chains received for flood origins that did not pass (the sender's stream closed)",
                flood.bad_certificates,
            ),
            (
                "flood_dropped",
                "Data frames not sent because a peer's queue was full",
                flood.dropped,
            ),
            (
                "flood_malformed",
                "Flood streams closed over malformed input",
                flood.malformed,
            ),
            (
                "flood_over_budget",
                "Data frames dropped unread because their sender was past its per-peer budget",
                flood.over_budget,
            ),
            (
                "flood_control_over_budget",
                "Control frames dropped unread because their sender was past its per-peer control budget",
                flood.control_over_budget,
            ),
            (
                "flood_records_over_pace",
                "Newer records of a node dropped unchecked: its records came faster than the pacing honest nodes keep (flood SPEC section 3)",
                flood.records_over_pace,
            ),
            (
                "flood_ihave_sent",
                "IHAVE frames sent: ids of forwarded messages announced to neighbours (lazy repair)",
                flood.ihave_sent,
            ),
            (
                "flood_ihave_ids",
                "Message ids announced in IHAVE frames, one per neighbour told",
                flood.ihave_ids,
            ),
            (
                "flood_iwant_sent",
                "IWANT frames sent: announced messages this node lacked, pulled",
                flood.iwant_sent,
            ),
            (
                "flood_repair_served",
                "Data frames sent in answer to a neighbour's pull",
                flood.repair_served,
            ),
            (
                "flood_repaired",
                "Messages accepted from a pulled copy: what a failed or dropping relay did not pass on",
                flood.repaired,
            ),
            (
                "status_queries_sent",
                "Status queries sent to peers",
                status.queries_sent,
            ),
            (
                "status_queries_received",
                "Status queries received from peers",
                status.queries_received,
            ),
            (
                "status_queries_answered",
                "Status responses sent to peers",
                status.responses_sent,
            ),
            (
                "status_responses_accepted",
                "Status responses from peers taken into the table",
                status.responses_accepted,
            ),
            (
                "status_query_timeouts",
                "Status queries that got no answer in time",
                status.query_timeouts,
            ),
            (
                "status_malformed",
                "Status streams closed over malformed input",
                status.malformed,
            ),
            (
                "status_queue_full",
                "Status frames not sent because a peer's queue was full",
                status.queue_full,
            ),
        ];
        for (name, help, value) in single {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        counters(
            &mut encoder,
            "status_announces",
            "Status announcements, by direction",
            None,
            [
                ([("direction", "in")], status.announces_received),
                ([("direction", "out")], status.announces_sent),
            ],
        )?;
        let r = &*self.route;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let route: [(&str, &str, Option<&Unit>, u64); 5] = [
            (
                "route_opened",
                "Routed connections this node opened: circuits through relays that came up",
                None,
                load(&r.opened),
            ),
            (
                "route_failed",
                "Routed dials that found no circuit (no path, relays refused or timed out)",
                None,
                load(&r.failed),
            ),
            (
                "route_relayed_circuits",
                "Circuits this node relayed for others",
                None,
                load(&r.relayed_circuits),
            ),
            (
                "route_refused",
                "Circuits this node refused to relay or take (relaying off, budget spent, no link, malformed)",
                None,
                load(&r.refused),
            ),
            (
                "route_relayed",
                "Bytes this node relayed for others, both ways",
                Some(&Unit::Bytes),
                load(&r.relayed_bytes),
            ),
        ];
        for (name, help, unit, value) in route {
            let metric = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let metric = encoder.encode_descriptor(
            "route_circuits_relayed_now",
            "Circuits this node relays now",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(load(&r.active)).unwrap_or(i64::MAX)).encode(metric)
    }
}

/// What one module did, gathered from the unicast counters and the limits.
#[derive(Debug, Default)]
struct ModuleRow {
    stats: unicast::ModuleStats,
    throttled: Duration,
    rate_limited: u64,
}

impl ProtocolCollector {
    /// The per-module series: unicast traffic, queues, bandwidth waits, refusals, compression.
    fn encode_modules(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut rows: BTreeMap<u16, ModuleRow> = BTreeMap::new();
        for (module, stats) in self.unicast.modules() {
            rows.entry(module).or_default().stats = stats;
        }
        for (module, waited) in self.limits.throttled().per_module() {
            rows.entry(module).or_default().throttled = waited;
        }
        for (module, refused) in self.request_limits.refused() {
            rows.entry(module).or_default().rate_limited = refused;
        }
        let each_way = |of: fn(&unicast::ModuleStats) -> (u64, u64)| {
            rows.iter().flat_map(move |(module, row)| {
                let (r#in, out) = of(&row.stats);
                [
                    (([("module", *module)], [("direction", "in")]), r#in),
                    (([("module", *module)], [("direction", "out")]), out),
                ]
            })
        };
        counters(
            encoder,
            "module_messages",
            "Unicast messages (requests, one-way messages, answers) per module and direction",
            None,
            each_way(|s| (s.messages_in, s.messages_out)),
        )?;
        counters(
            encoder,
            "module_payload",
            "Payload bytes of unicast messages as on the wire (compressed when they were), per \
             module and direction",
            Some(&Unit::Bytes),
            each_way(|s| (s.bytes_in, s.bytes_out)),
        )?;
        family(
            encoder,
            (
                "module_queued",
                "Payload bytes of unicast messages waiting to be sent now, all connections, per \
                 module",
                Some(&Unit::Bytes),
            ),
            MetricType::Gauge,
            per_module(&rows, |row| ConstGauge::new(row.stats.queued_bytes)),
        )?;
        counters(
            encoder,
            "module_throttled",
            "Time a module's messages waited for the outgoing bandwidth limits and path pacing \
             ([traffic])",
            Some(&Unit::Seconds),
            per_module(&rows, |row| row.throttled.as_secs_f64()),
        )?;
        counters(
            encoder,
            "module_rate_limited",
            "Peers' requests and one-way messages refused by the module's incoming rate limit",
            None,
            per_module(&rows, |row| row.rate_limited),
        )?;
        counters(
            encoder,
            "module_compression_raw",
            "Payload bytes of the unicast messages sent compressed, before compression",
            Some(&Unit::Bytes),
            per_module(&rows, |row| row.stats.raw_bytes),
        )?;
        counters(
            encoder,
            "module_compression_compressed",
            "Payload bytes of the unicast messages sent compressed, after compression",
            Some(&Unit::Bytes),
            per_module(&rows, |row| row.stats.compressed_bytes),
        )?;
        family(
            encoder,
            (
                "module_compression_ratio",
                "Compressed over raw bytes of the module's messages sent compressed (1: none was)",
                None,
            ),
            MetricType::Gauge,
            per_module(&rows, |row| ConstGauge::new(row.stats.compression_ratio())),
        )
    }
}

/// One value of each module's row, labelled with the module.
fn per_module<N>(
    rows: &BTreeMap<u16, ModuleRow>,
    of: impl Fn(&ModuleRow) -> N,
) -> impl Iterator<Item = ([(&'static str, u16); 1], N)> {
    rows.iter()
        .map(move |(module, row)| ([("module", *module)], of(row)))
}

/// Encodes one counter family.
fn counters<L: EncodeLabelSet, N: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (L, N)>,
) -> fmt::Result {
    let values = values.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
    family(encoder, (name, help, unit), MetricType::Counter, values)
}

/// Encodes one family of `kind` described by its name, help and unit.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&Unit>),
    kind: MetricType,
    values: impl Iterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in values {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The content type of the OpenMetrics text that [`prometheus_client::encoding::text`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_encode_with_prefix_labels_and_unit() {
        let mut registry = Registry::default();
        #[derive(Debug)]
        struct Fixed;
        impl Collector for Fixed {
            fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
                counters(
                    &mut encoder,
                    "transferred",
                    "help",
                    Some(&Unit::Bytes),
                    [([("protocol", "flood")], 7u64)],
                )
            }
        }
        registry
            .sub_registry_with_prefix("bcos_p2p")
            .register_collector(Box::new(Fixed));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("bcos_p2p_transferred_bytes_total{protocol=\"flood\"} 7\n"),
            "{text}"
        );
    }
}
