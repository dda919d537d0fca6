//! The traffic scenario of tests/netns.rs: block sync, transactions and consensus between the
//! four hosts on links capped at 100 Mbit/s each way (no delay, no loss), one
//! `bcos-p2p-traffic` per host (src/bin/traffic.rs: the classes, their sizes and rates).
//!
//! Every host keeps one block request (answered with 32 MiB) waiting at each other host, and
//! sends each other host 200 transaction requests (1 KiB) and 20 consensus requests (200 B) a
//! second, for 3 s of warm-up and then 20 s measured. It prints, on stderr, a line per class
//! with the requests sent in the measured time, how they ended, and their latency (send to
//! answer) p50, p99 and max over all hosts, then the figures as one JSON line, the last it
//! prints. A failed request counts with its time to failure.
//!
//! It checks behaviour only, not latency targets: every request ends (answered, or failed with
//! a reason: none is lost silently), no answer is wrong, each host gets consensus and
//! transaction answers and block answers from every other host, and no host receives block
//! data faster than its link's cap (so the cap is real).
//!
//! Settings, from the environment: `BCOS_NETNS_BACKEND` (as for the fault test),
//! `BCOS_NETNS_TRAFFIC_RATE_MBIT` (100), `BCOS_NETNS_TRAFFIC_S` (the measured time, 20),
//! `BCOS_NETNS_TRAFFIC_TOML` (appended to every node's config, after [`EXTRA_TOML`]),
//! `BCOS_NETNS_TRAFFIC_TOTAL_BYTES_PER_S` (the nodes' `[traffic] total_bytes_per_s`, an
//! operator's outgoing limit below the link rate; 0, the default, is none),
//! `BCOS_NETNS_KEEP_LOGS`.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{HOSTS, Harness, Logs, Processes, configure, env_number, percentile, secs, skip};

const TRAFFIC_BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p-traffic");

/// Extra TOML for each host's node config (index: host number − 1), appended after the
/// scenario's settings. The place for what changes how unicast treats the classes, e.g. a
/// `[traffic]` section giving module 1000 (consensus) a high priority and module 2000 (block
/// sync) a low one; `BCOS_NETNS_TRAFFIC_TOML`, when set, is appended to every config after it.
const EXTRA_TOML: [&str; HOSTS] = ["", "", "", ""];

/// The links' one-way delay. None: a cap alone is what the kernel's tbf does, so kernels with
/// sch_tbf but without sch_netem shape the links themselves (run.sh's `auto` takes the bridge
/// backend) instead of the userspace switch, a Python process on the same two cores as the
/// nodes it serves.
const DELAY_MS: u64 = 0;
/// Traffic before the measured time, not counted.
const WARMUP_MS: u64 = 3000;
/// The nodes' `[unicast] request_timeout_ms`: a 32 MiB answer on a 100 Mbit/s link shared
/// three ways takes about 8 s, too close to the default 10 s.
const REQUEST_TIMEOUT_MS: u64 = 20_000;
/// The nodes' `[connection] ping_interval_ms` (timeout: the default 5000), for more samples of
/// the round trip below unicast.
const PING_MS: u64 = 1000;
/// What bcos-p2p-traffic sends to each peer per second (its defaults).
const CONSENSUS_PER_S: u64 = 20;
const TX_PER_S: u64 = 200;
/// How long past the request timeout a host may take to report (bcos-p2p-traffic waits 5 s).
const REPORT_SLACK: Duration = Duration::from_secs(15);
/// Longest wait for the hosts to start and connect.
const MESH_WAIT: Duration = Duration::from_secs(30);

pub fn run() {
    let rate_mbit = env_number("BCOS_NETNS_TRAFFIC_RATE_MBIT", 100);
    let measure_ms = env_number("BCOS_NETNS_TRAFFIC_S", 20) * 1000;
    assert!(
        rate_mbit > 0,
        "BCOS_NETNS_TRAFFIC_RATE_MBIT must be above 0"
    );
    assert!(measure_ms > 0, "BCOS_NETNS_TRAFFIC_S must be above 0");
    let started = Instant::now();
    let (rate, delay) = (rate_mbit.to_string(), DELAY_MS.to_string());
    let harness = match Harness::start(&["--delay-ms", &delay, "--loss", "0", "--rate-mbit", &rate])
    {
        Ok(h) => h,
        Err(why) => {
            skip::skip(
                &why,
                "run as root with iproute2 and python3 (apt-get install -y iproute2 python3)",
            );
            return;
        }
    };
    assert_eq!(harness.rate_mbit, rate_mbit, "run.sh's link cap");
    assert_eq!(harness.loss_pct, 0.0, "run.sh's loss");
    eprintln!(
        "netns_traffic: {HOSTS} hosts, backend {}, links capped at {rate_mbit} Mbit/s each way, delay {} ms, no loss; {} s warm-up, {} s measured",
        harness.backend,
        harness.delay_ms,
        WARMUP_MS as f64 / 1000.0,
        measure_ms as f64 / 1000.0
    );
    let chain = tempfile::tempdir().expect("tempdir");
    let logs = Logs(Some(tempfile::tempdir().expect("tempdir")));
    // gen-certs' defaults for redial and ping timeout; the scenario's own settings after.
    configure(chain.path(), &harness.addrs, 30_000, 5000);
    let extra = std::env::var("BCOS_NETNS_TRAFFIC_TOML").unwrap_or_default();
    for i in 0..HOSTS {
        write_config(
            &chain.path().join(format!("node{i}/config.toml")),
            i,
            &extra,
        );
    }
    let log_dir = logs.0.as_ref().expect("logs").path();
    let mut hosts = Hosts::start(&harness, chain.path(), log_dir, measure_ms);
    let meshed = hosts.until("every host connected to every other", MESH_WAIT, |h| {
        h.ids.iter().all(Option::is_some) && h.connected.iter().all(|c| c.len() == HOSTS - 1)
    });
    eprintln!("netns_traffic: full mesh {} after start", secs(meshed));

    let cpu_before = machine_cpu();
    for i in 0..HOSTS {
        hosts.send(i, "start");
    }
    let wait = Duration::from_millis(WARMUP_MS + measure_ms + REQUEST_TIMEOUT_MS) + REPORT_SLACK;
    let took = hosts.until("every host's report", wait, |h| {
        h.reports.iter().all(Option::is_some)
    });
    let cpu_busy = cpu_before.zip(machine_cpu()).map(|(a, b)| b.busy_since(&a));
    hosts.quit();
    let reports: Vec<Value> = hosts.reports.iter().flatten().cloned().collect();
    eprintln!(
        "netns_traffic: every host reported {} after starting the traffic; test took {} so far",
        secs(took),
        secs(started.elapsed())
    );
    summarize(&harness, &reports, measure_ms, cpu_busy);
}

/// Host `i`'s config: gen-certs' (moved to the host's address by `configure`), serving the
/// three modules with the scenario's timeout and ping period, then `EXTRA_TOML[i]` and `extra`.
fn write_config(path: &Path, i: usize, extra: &str) {
    let mut text = std::fs::read_to_string(path).expect("config");
    for (from, to) in [
        (
            "modules = [1]\n",
            "modules = [1000, 2000, 2001]\n".to_string(),
        ),
        (
            "request_timeout_ms = 10000\n",
            format!("request_timeout_ms = {REQUEST_TIMEOUT_MS}\n"),
        ),
        (
            "ping_interval_ms = 5000\n",
            format!("ping_interval_ms = {PING_MS}\n"),
        ),
    ] {
        assert!(
            text.contains(from),
            "gen-certs' config changed shape: {text}"
        );
        text = text.replace(from, &to);
    }
    let total = env_number("BCOS_NETNS_TRAFFIC_TOTAL_BYTES_PER_S", 0);
    if total > 0 {
        assert!(
            text.contains("total_bytes_per_s = 0\n"),
            "gen-certs' config changed shape"
        );
        text = text.replace(
            "total_bytes_per_s = 0\n",
            &format!("total_bytes_per_s = {total}\n"),
        );
    }
    for more in [EXTRA_TOML[i], extra] {
        if !more.is_empty() {
            text.push('\n');
            text.push_str(more);
            text.push('\n');
        }
    }
    std::fs::write(path, text).expect("write config");
}

/// The four bcos-p2p-traffic processes and what they printed.
struct Hosts {
    processes: Processes,
    ids: Vec<Option<String>>,
    connected: Vec<HashSet<String>>,
    reports: Vec<Option<Value>>,
}

impl Hosts {
    fn start(harness: &Harness, chain: &Path, logs: &Path, measure_ms: u64) -> Hosts {
        let commands = harness.namespaces.iter().enumerate().map(|(i, ns)| {
            let log = std::fs::File::create(logs.join(format!("node{i}.log"))).expect("log");
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", ns, TRAFFIC_BIN, "--config"])
                .arg(chain.join(format!("node{i}/config.toml")))
                .args(["--warmup-ms", &WARMUP_MS.to_string()])
                .args(["--measure-ms", &measure_ms.to_string()])
                .args(["--consensus-per-s", &CONSENSUS_PER_S.to_string()])
                .args(["--tx-per-s", &TX_PER_S.to_string()])
                .stderr(log);
            command
        });
        Hosts {
            processes: Processes::spawn(commands),
            ids: vec![None; HOSTS],
            connected: vec![HashSet::new(); HOSTS],
            reports: vec![None; HOSTS],
        }
    }

    fn send(&mut self, i: usize, command: &str) {
        self.processes.send(i, command);
    }

    /// Takes in what the hosts print until `done` holds (returns how long it took); panics
    /// after `wait`.
    fn until(&mut self, what: &str, wait: Duration, done: impl Fn(&Hosts) -> bool) -> Duration {
        let start = Instant::now();
        let deadline = start + wait;
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within {wait:?}");
            let Some((i, _, line)) = self.processes.next(deadline) else {
                continue;
            };
            let Some(line) = line else {
                panic!(
                    "host {} closed its stdout ({}); see its log",
                    i + 1,
                    self.processes.exit_of(i)
                );
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("host {} printed non-JSON `{line}`: {e}", i + 1));
            let node = || v["node_id"].as_str().unwrap_or_default().to_string();
            match v["event"].as_str().unwrap_or_default() {
                "ready" => self.ids[i] = Some(node()),
                "connected" => {
                    self.connected[i].insert(node());
                }
                "disconnected" => {
                    self.connected[i].remove(&node());
                }
                "report" => self.reports[i] = Some(v),
                _ => panic!("host {}: {v}", i + 1),
            }
        }
        start.elapsed()
    }

    fn quit(&mut self) {
        self.processes.quit(|i| format!("host {}", i + 1));
    }
}

/// The machine's CPU time counters (/proc/stat, all CPUs): busy and idle ticks.
struct CpuTimes {
    busy: u64,
    idle: u64,
}

impl CpuTimes {
    /// The share of CPU time spent busy between `before` and now, in %.
    fn busy_since(&self, before: &CpuTimes) -> f64 {
        let busy = self.busy.saturating_sub(before.busy) as f64;
        let idle = self.idle.saturating_sub(before.idle) as f64;
        100.0 * busy / (busy + idle).max(1.0)
    }
}

fn machine_cpu() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let idle = ticks.get(3)? + ticks.get(4)?;
    let busy = ticks.iter().take(8).sum::<u64>() - idle;
    Some(CpuTimes { busy, idle })
}

/// One class's figures over all hosts.
#[derive(Default)]
struct ClassSum {
    sent: u64,
    ok: u64,
    failed: u64,
    wrong: u64,
    unanswered: u64,
    errors: BTreeMap<String, u64>,
    ms: Vec<f64>,
}

fn class_sum(reports: &[Value], class: &str) -> ClassSum {
    let mut sum = ClassSum::default();
    for r in reports {
        let c = &r["classes"][class];
        let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{class}.{k}: {c}"));
        sum.sent += n("sent");
        sum.ok += n("ok");
        sum.failed += n("failed");
        sum.wrong += n("wrong");
        sum.unanswered += n("unanswered");
        for (e, count) in c["errors"].as_object().expect("errors") {
            *sum.errors.entry(e.clone()).or_default() += count.as_u64().expect("count");
        }
        sum.ms.extend(
            c["ms"]
                .as_array()
                .expect("ms")
                .iter()
                .filter_map(Value::as_f64),
        );
    }
    sum.ms.sort_by(f64::total_cmp);
    sum
}

/// Prints the figures (a line per class, then the JSON line) and checks the behaviour.
fn summarize(harness: &Harness, reports: &[Value], measure_ms: u64, cpu_busy: Option<f64>) {
    let window_s = measure_ms as f64 / 1000.0;
    let cap_mb_per_s = harness.rate_mbit as f64 / 8.0;
    let mut figures = serde_json::Map::new();
    figures.insert("scenario".into(), json!("netns_traffic"));
    figures.insert("backend".into(), json!(harness.backend));
    figures.insert("rate_mbit".into(), json!(harness.rate_mbit));
    figures.insert("delay_ms".into(), json!(harness.delay_ms));
    figures.insert("hosts".into(), json!(HOSTS));
    figures.insert("window_s".into(), json!(window_s));
    // One figure of each host's report, as `[a, b, c, d]` with one decimal.
    let per_host = |f: &dyn Fn(&Value) -> Option<f64>| -> (Vec<f64>, String) {
        let all: Vec<f64> = reports.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect();
        let text: Vec<String> = all.iter().map(|x| format!("{x:.1}")).collect();
        (all, format!("[{}]", text.join(", ")))
    };
    for (class, module) in [("consensus", 1000), ("tx", 2001), ("block", 2000)] {
        let s = class_sum(reports, class);
        let (p50, p99, max) = (
            percentile(&s.ms, 0.5),
            percentile(&s.ms, 0.99),
            percentile(&s.ms, 1.0),
        );
        let (_, host_p99) = per_host(&|r| r["classes"][class]["p99_ms"].as_f64());
        let mut line = format!(
            "netns_traffic: {class} (module {module}): {} requests, {} ok, {} failed {:?}, {} wrong, {} unanswered; latency ms p50 {p50:.1} p99 {p99:.1} max {max:.1}; p99 per host {host_p99}",
            s.sent, s.ok, s.failed, s.errors, s.wrong, s.unanswered
        );
        if class == "block" {
            let (rates, text) = per_host(&|r| r["classes"]["block"]["mb_per_s"].as_f64());
            let mean = rates.iter().sum::<f64>() / HOSTS as f64;
            line +=
                &format!("; received MB/s per host {text} (mean {mean:.2}, cap {cap_mb_per_s:.2})");
            figures.insert("block_mb_per_s".into(), json!(round2(mean)));
        }
        eprintln!("{line}");
        for (k, v) in [
            ("sent", json!(s.sent)),
            ("ok", json!(s.ok)),
            ("failed", json!(s.failed)),
            ("p50_ms", json!(round2(p50))),
            ("p99_ms", json!(round2(p99))),
            ("max_ms", json!(round2(max))),
        ] {
            figures.insert(format!("{class}_{k}"), v);
        }
        // Behaviour: every request ended, answered or with a reason; no answer was wrong.
        assert_eq!(s.unanswered, 0, "{class}: requests lost silently");
        assert_eq!(
            s.wrong, 0,
            "{class}: answers that do not match their request"
        );
        assert_eq!(
            s.ok + s.failed,
            s.sent,
            "{class}: ended requests do not add up"
        );
    }
    let pings: Vec<f64> = {
        let mut all: Vec<f64> = reports
            .iter()
            .flat_map(|r| r["ping"]["ms"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .collect();
        all.sort_by(f64::total_cmp);
        all
    };
    let (_, cpu) = per_host(&|r| r["cpu_s"].as_f64());
    eprintln!(
        "netns_traffic: ping (a stream of its own, below unicast): {} round trips, ms p50 {:.1} p99 {:.1} max {:.1}; CPU s per host {cpu}; machine CPU busy {}",
        pings.len(),
        percentile(&pings, 0.5),
        percentile(&pings, 0.99),
        percentile(&pings, 1.0),
        cpu_busy.map_or("(unknown)".into(), |b| format!("{b:.0} %")),
    );
    figures.insert("ping_p50_ms".into(), json!(round2(percentile(&pings, 0.5))));
    figures.insert(
        "ping_p99_ms".into(),
        json!(round2(percentile(&pings, 0.99))),
    );
    figures.insert("cpu_busy_pct".into(), json!(cpu_busy.map(|b| b.round())));
    eprintln!("{}", Value::Object(figures));

    let peers = HOSTS - 1;
    for (i, r) in reports.iter().enumerate() {
        let host = i + 1;
        // Every periodic request of the measured time was sent, on schedule.
        for (class, per_s) in [("consensus", CONSENSUS_PER_S), ("tx", TX_PER_S)] {
            let c = &r["classes"][class];
            let expected = per_s * measure_ms / 1000 * peers as u64;
            assert_eq!(c["sent"], expected, "host {host}: {class} requests sent");
            assert!(
                c["ok"].as_u64() > Some(0),
                "host {host}: no {class} request answered: {}",
                c["errors"]
            );
        }
        // Block sync made progress along every pair, and no faster than the link allows.
        let block = &r["classes"]["block"];
        let by_peer = block["ok_by_peer"].as_object().expect("ok_by_peer");
        assert_eq!(
            by_peer.len(),
            peers,
            "host {host}: block answers by peer {by_peer:?}"
        );
        assert!(
            by_peer.values().all(|n| n.as_u64() > Some(0)),
            "host {host}: no block answer from some peer: {by_peer:?}"
        );
        let mb_per_s = block["mb_per_s"].as_f64().expect("mb_per_s");
        assert!(
            mb_per_s <= cap_mb_per_s,
            "host {host} received block data at {mb_per_s:.2} MB/s, above its link's cap {cap_mb_per_s:.2} MB/s"
        );
    }
}

fn round2(x: f64) -> Option<f64> {
    x.is_finite().then(|| (x * 100.0).round() / 100.0)
}
