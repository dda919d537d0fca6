//! `bcos-p2p run --metrics ADDR`: two node processes talk (requests, broadcasts, status, a
//! deny), and their Prometheus endpoints, scraped over plain TCP, show every count moving as it
//! should. Bad scrapes (garbage, a huge head, wrong path or method, an idle client) get an error
//! or a close, and the endpoint keeps serving.

use std::{
    collections::HashMap,
    ffi::OsStr,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;

use common::run_json;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A `bcos-p2p run --json` process serving metrics (killed on drop).
struct Node {
    run: run_json::Node,
    id: String,
    metrics: SocketAddr,
}

impl Node {
    /// `run --json --config FILE` with `args`; metrics must be on (by `args` or the file).
    fn start(config: &Path, args: &[&str]) -> Node {
        let mut all = vec![OsStr::new("--config"), config.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        let mut run = run_json::Node::spawn(all, |_| {});
        let ready = run.expect("ready", |v| v["event"] == "ready");
        let metrics: SocketAddr = ready["metrics"]
            .as_str()
            .unwrap_or_else(|| panic!("`ready` without `metrics`: {ready}"))
            .parse()
            .unwrap();
        assert_eq!(metrics.ip().to_string(), "127.0.0.1");
        assert_ne!(metrics.port(), 0, "the bound port, not the requested 0");
        Node {
            id: ready["node_id"].as_str().unwrap().to_string(),
            run,
            metrics,
        }
    }

    /// Waits for an event matching `pred`.
    fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.run.expect(what, pred)
    }

    fn send(&mut self, command: &str) {
        self.run.send(command);
    }

    /// Scrapes until `check` passes on the parsed series (at most [`TIMEOUT`]): counters
    /// sampled from the node task lag by up to half a second.
    fn scrape_until(&self, what: &str, check: impl Fn(&Series) -> bool) -> Series {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let series = scrape(self.metrics);
            if check(&series) {
                return series;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {TIMEOUT:?}; last scrape:\n{}",
                series.text
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One scrape, parsed: `name{labels}` → value.
struct Series {
    values: HashMap<String, f64>,
    text: String,
}

impl Series {
    /// The value of a series; 0 when absent (as Prometheus treats a counter not yet created).
    fn get(&self, series: &str) -> f64 {
        self.values.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.values.contains_key(series)
    }

    /// The sum over every series of the metric `name` (any labels).
    fn sum(&self, name: &str) -> f64 {
        self.values
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Sends `request` and returns what the server sent back before closing (bounded in time).
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // The server may close before reading all of a too-large request.
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

fn status_line(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn scrape(addr: SocketAddr) -> Series {
    let answer = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let answer = String::from_utf8(answer).expect("UTF-8 answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "an OpenMetrics body ends with # EOF"
    );
    let mut values = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        values.insert(series.to_string(), value);
    }
    Series {
        values,
        text: body.to_string(),
    }
}

fn unicast(direction: &str, outcome: &str) -> String {
    format!("bcos_p2p_unicast_requests_total{{direction=\"{direction}\",outcome=\"{outcome}\"}}")
}

fn traffic(metric: &str, protocol: &str, direction: &str) -> String {
    format!("bcos_p2p_{metric}{{protocol=\"{protocol}\",direction=\"{direction}\"}}")
}

#[test]
fn run_serves_metrics_that_follow_the_traffic() {
    const REQUESTS: usize = 5;
    const BROADCASTS: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    run_json::gen_certs(tmp.path(), 2, run_json::free_ports(2));
    let mut n0 = Node::start(
        &tmp.path().join("node0/config.toml"),
        &["--metrics", "127.0.0.1:0"],
    );
    // An idle client from the start: it must be cut off by the head timeout, and must not
    // hold up anyone else's scrape meanwhile.
    let mut idle = TcpStream::connect(n0.metrics).unwrap();
    let idle_since = Instant::now();
    // n1 from its config file's `[metrics] listen`.
    let config1 = tmp.path().join("node1/config.toml");
    let text = std::fs::read_to_string(&config1).unwrap();
    let off = "[metrics]\nlisten = \"\"\n";
    assert!(
        text.contains(off),
        "gen-certs writes every section:\n{text}"
    );
    let on = off.replace("\"\"", "\"127.0.0.1:0\"");
    std::fs::write(&config1, text.replace(off, &on)).unwrap();
    let mut n1 = Node::start(&config1, &[]);
    let (id0, id1) = (n0.id.clone(), n1.id.clone());
    n0.expect("connected", |v| {
        v["event"] == "connected" && v["node_id"] == id1
    });
    n1.expect("connected", |v| {
        v["event"] == "connected" && v["node_id"] == id0
    });

    // One connection between them, counted on both sides in opposite directions.
    let s0 = n0.scrape_until("an open connection", |s| {
        s.sum("bcos_p2p_connections_open") == 1.0
    });
    let s1 = n1.scrape_until("an open connection", |s| {
        s.sum("bcos_p2p_connections_open") == 1.0
    });
    let open =
        |s: &Series, d: &str| s.get(&format!("bcos_p2p_connections_open{{direction=\"{d}\"}}"));
    assert_eq!(open(&s0, "outbound"), open(&s1, "inbound"));
    assert_eq!(open(&s0, "inbound"), open(&s1, "outbound"));
    assert!(s0.sum("bcos_p2p_connections_established_total") >= 1.0);
    // libp2p-metrics' swarm metrics are there too.
    assert!(
        s0.sum("libp2p_swarm_connections_established_total") >= 1.0,
        "{}",
        s0.text
    );

    // Requests: REQUESTS answered, one to a node that is not connected (this node itself).
    for i in 0..REQUESTS {
        n0.send(&format!("request {id1} hello {i}"));
    }
    n0.send(&format!("request {id0} to myself"));
    for id in 1..=REQUESTS as u64 + 1 {
        let r = n0.expect("response", |v| v["event"] == "response" && v["id"] == id);
        assert_eq!(r["ok"], id <= REQUESTS as u64, "{r}");
    }
    for _ in 0..BROADCASTS {
        n0.send("broadcast news");
    }
    for _ in 0..BROADCASTS {
        n1.expect("broadcast", |v| {
            v["event"] == "message" && v["kind"] == "broadcast"
        });
    }
    // A status change is announced, and the peer asks for it.
    n1.send("status height=7");
    n0.expect("status", |v| v["event"] == "status" && v["node_id"] == id1);

    let s0 = n0.scrape_until("n0's counts", |s| {
        s.get(&unicast("outbound", "ok")) == REQUESTS as f64
            && s.get("bcos_p2p_flood_published_total") == BROADCASTS as f64
            && s.get("bcos_p2p_status_queries_sent_total") >= 1.0
            && s.get("bcos_p2p_status_responses_accepted_total") >= 1.0
    });
    // The request to a node with no connection and no path.
    assert_eq!(s0.get(&unicast("outbound", "unreachable")), 1.0);
    for outcome in [
        "timeout",
        "remote",
        "closed",
        "too_large",
        "busy",
        "not_connected",
    ] {
        assert!(s0.has(&unicast("outbound", outcome)), "{outcome} is listed");
        assert_eq!(s0.get(&unicast("outbound", outcome)), 0.0, "{outcome}");
    }
    // Every request left as a frame (the failed one never did), every reply came back as one.
    let unicast_out = s0.get(&traffic("frames_total", "unicast", "out"));
    assert!(unicast_out >= REQUESTS as f64, "{unicast_out}");
    assert!(s0.get(&traffic("frames_total", "unicast", "in")) >= REQUESTS as f64);
    let payload = "hello 0".len() as f64;
    assert!(
        s0.get(&traffic("transferred_bytes_total", "unicast", "out")) >= payload * REQUESTS as f64
    );
    assert!(s0.get(&traffic("frames_total", "flood", "out")) >= BROADCASTS as f64);
    assert!(s0.get(&traffic("frames_total", "status", "out")) >= 1.0);
    assert!(s0.get(&traffic("frames_total", "status", "in")) >= 1.0);
    assert!(s0.get(&traffic("transferred_bytes_total", "status", "in")) > 0.0);

    let s1 = n1.scrape_until("n1's counts", |s| {
        s.get(&unicast("inbound", "ok")) == REQUESTS as f64
            && s.get("bcos_p2p_flood_delivered_total") == BROADCASTS as f64
            && s.get("bcos_p2p_status_queries_answered_total") >= 1.0
    });
    assert_eq!(s1.get(&unicast("inbound", "error")), 0.0);
    assert_eq!(
        s1.get("bcos_p2p_flood_duplicates_total"),
        0.0,
        "a pair has no duplicates"
    );
    assert_eq!(s1.get("bcos_p2p_flood_dropped_total"), 0.0);
    assert!(s1.has("bcos_p2p_flood_records_over_pace_total"));
    assert_eq!(
        s1.get("bcos_p2p_flood_records_over_pace_total"),
        0.0,
        "honest nodes keep the record pacing"
    );
    assert_eq!(
        s1.get("bcos_p2p_flood_ihave_ids_total"),
        0.0,
        "a pair's broadcasts have nobody else to be announced to"
    );
    assert!(s1.has("bcos_p2p_flood_ihave_ids_total"));
    assert!(s1.has("bcos_p2p_flood_control_over_budget_total"));
    assert_eq!(
        s1.get("bcos_p2p_flood_control_over_budget_total"),
        0.0,
        "honest peers keep within the control budget"
    );
    assert!(s1.get(&traffic("frames_total", "unicast", "in")) >= REQUESTS as f64);
    assert!(s1.get(&traffic("frames_total", "flood", "in")) >= BROADCASTS as f64);
    assert!(s1.get("bcos_p2p_status_queries_received_total") >= 1.0);
    // Path pacing is on by default and loopback has no queue to pace for.
    for series in [
        "bcos_p2p_path_pacing_started_total",
        "bcos_p2p_path_paced_connections",
    ] {
        assert!(s1.has(series), "{series}");
        assert_eq!(s1.get(series), 0.0, "{series}");
    }

    // Bad scrapes: an error or a close each, and the endpoint keeps serving.
    let garbage = exchange(n0.metrics, b"\x16\x03\x01\x00\xffnot http at all\r\n\r\n");
    assert_eq!(status_line(&garbage), "HTTP/1.1 400 Bad Request");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 << 10));
    huge.extend(b"\r\n\r\n");
    let answer = exchange(n0.metrics, &huge);
    assert_eq!(
        status_line(&answer),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let answer = exchange(n0.metrics, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 404"),
        "{}",
        status_line(&answer)
    );
    let answer = exchange(
        n0.metrics,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 405"),
        "{}",
        status_line(&answer)
    );
    assert!(scrape(n0.metrics).has(&unicast("outbound", "ok")));
    // The idle client is closed after the 5 s head timeout (well within 15 s of connecting).
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    let read = idle.read_to_end(&mut rest);
    let idle_for = idle_since.elapsed();
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    assert!(
        idle_for < Duration::from_secs(15),
        "idle client kept for {idle_for:?}"
    );

    // A denied peer: its session closes, and its redials are refused in the handshake, by code.
    n0.send(&format!("deny {id1}"));
    n0.expect("refused", |v| {
        v["event"] == "refused" && v["code"] == "denied"
    });
    let s0 = n0.scrape_until("a denied handshake and a closed connection", |s| {
        s.get("bcos_p2p_handshake_failures_total{code=\"denied\"}") >= 1.0
            && s.sum("bcos_p2p_connections_open") == 0.0
    });
    assert!(s0.sum("bcos_p2p_connections_closed_total") >= 1.0);
    n1.send("quit");
    n0.send("quit");
}

/// Slowloris: many clients hold connections to the endpoint (silent ones, ones sending their
/// head a byte at a time, ones that send a request and never read the answer), more than it
/// keeps per client address. A well-behaved scrape made meanwhile is still answered, and so is
/// each of several in a row.
#[test]
fn a_scrape_is_served_while_many_slow_clients_hold_connections() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use bcos_p2p::metrics::{MetricsServer, Registry};
    use prometheus_client::metrics::counter::Counter;

    const SLOW: usize = 96;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut registry = Registry::default();
    let probe: Counter = Counter::default();
    probe.inc_by(42);
    registry.register("probe", "A counter the test looks for", probe);
    let server = runtime
        .block_on(MetricsServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
        ))
        .unwrap();
    let addr = server.local_addr();

    let mut silent = Vec::new();
    let mut dripping = Vec::new();
    let mut not_reading = Vec::new();
    for i in 0..SLOW {
        let mut s = TcpStream::connect(addr).unwrap();
        match i % 3 {
            0 => silent.push(s),
            1 => {
                s.write_all(b"G").unwrap();
                dripping.push(s);
            }
            _ => {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                not_reading.push(s);
            }
        }
    }
    // The dripping clients send the rest of a head a byte every 100 ms (never finishing it in
    // the test's time), on a thread, until told to stop (at most one pass over `rest`).
    let stop = Arc::new(AtomicBool::new(false));
    let dripper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rest = b"ET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for byte in rest {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for s in &mut dripping {
                    // Closed by the server (evicted or timed out): nothing more to send.
                    let _ = s.write_all(&[*byte]);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            dripping
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    for round in 0..3 {
        let answer = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "scrape {round} with {SLOW} slow clients connected: {text:?}"
        );
        assert!(text.contains("\nprobe_total 42\n"), "{text}");
    }
    stop.store(true, Ordering::Relaxed);
    let dripping = dripper.join().unwrap();
    drop((silent, dripping, not_reading, server));
}

/// Per-module series, scraped from two `run` processes after traffic on two modules: module 1
/// with a payload that compresses to almost nothing and a burst past the peer's request rate
/// limit, module 2000 (FISCO's block sync, not exempt from bandwidth limits) with payloads
/// that compress to about half, under a per-module bandwidth limit. Each end shows each
/// module's messages and bytes each way, the queue while the limit holds it, the time it
/// waited, the requests refused, and what compression did.
#[test]
fn per_module_series_follow_each_module() {
    use bcos_p2p::config::Config;

    const BULK: u16 = 2000;
    const LIMIT: u64 = 16 * 1024;
    const BULK_REQUESTS: usize = 4;
    const SMALL: usize = 8;
    const RATE: u32 = 2;
    let tmp = tempfile::tempdir().unwrap();
    run_json::gen_certs(tmp.path(), 2, run_json::free_ports(2));
    let configure = |node: &str, edit: &dyn Fn(&mut Config)| {
        let path = tmp.path().join(node).join("config.toml");
        let (mut config, _) = Config::load(&path).unwrap();
        config.unicast.modules = vec![1, BULK];
        edit(&mut config);
        std::fs::write(&path, config.to_toml()).unwrap();
        path
    };
    let config0 = configure("node0", &|c| {
        c.traffic.module_bytes_per_s.insert(BULK.to_string(), LIMIT);
        // The last bulk request waits seconds in the queue before it is sent.
        c.unicast.request_timeout_ms = 60_000;
    });
    let config1 = configure("node1", &|c| {
        c.traffic
            .incoming_requests_per_s
            .insert("1".to_string(), RATE);
    });
    let metrics = ["--metrics", "127.0.0.1:0"];
    let mut n0 = Node::start(&config0, &metrics);
    let mut n1 = Node::start(&config1, &metrics);
    let (id0, id1) = (n0.id.clone(), n1.id.clone());
    n0.expect("connected", |v| {
        v["event"] == "connected" && v["node_id"] == id1
    });
    n1.expect("connected", |v| {
        v["event"] == "connected" && v["node_id"] == id0
    });

    // Module 1: one payload that compresses to almost nothing (the first request: within the
    // rate limit), then a burst of small ones past the limit.
    let big = "a".repeat(100_000);
    n0.send(&format!("request-to 1 {id1} {big}"));
    let r = n0.expect("response", |v| v["event"] == "response" && v["id"] == 1);
    assert_eq!(r["ok"], true, "{r}");
    for i in 0..SMALL {
        n0.send(&format!("request-to 1 {id1} small {i}"));
    }
    // Module 2000: hex digits of a pseudo-random sequence (4 bits of 8 carry information).
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = || -> String {
        (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from_digit((x & 15) as u32, 16).unwrap()
            })
            .collect()
    };
    for _ in 0..BULK_REQUESTS {
        n0.send(&format!("request-to {BULK} {id1} {}", noise()));
    }
    let queued = |m: u16| format!("bcos_p2p_module_queued_bytes{{module=\"{m}\"}}");
    // Seconds of traffic over the limit: the queue holds it meanwhile.
    n0.scrape_until("bulk payloads queued behind the bandwidth limit", |s| {
        s.get(&queued(BULK)) > 0.0
    });
    let mut refused = 0;
    for id in 2..=(1 + SMALL + BULK_REQUESTS) as u64 {
        let r = n0.expect("response", |v| v["event"] == "response" && v["id"] == id);
        if id <= 1 + SMALL as u64 {
            if r["ok"] == false {
                assert!(r.to_string().contains("rate limited"), "{r}");
                refused += 1;
            }
        } else {
            assert_eq!(r["ok"], true, "bulk requests are not rate limited: {r}");
        }
    }
    // A burst of SMALL, with one of the RATE tokens spent, cannot all pass.
    assert!(refused >= 1, "none of {SMALL} requests refused at {RATE}/s");

    let each_way = |metric: &str, m: u16, direction: &str| {
        format!("bcos_p2p_module_{metric}{{module=\"{m}\",direction=\"{direction}\"}}")
    };
    let one = |metric: &str, m: u16| format!("bcos_p2p_module_{metric}{{module=\"{m}\"}}");
    let all_one = (1 + SMALL) as f64;
    let s0 = n0.scrape_until("n0's module counts", |s| {
        s.get(&each_way("messages_total", 1, "in")) == all_one
            && s.get(&each_way("messages_total", BULK, "in")) == BULK_REQUESTS as f64
    });
    assert_eq!(s0.get(&each_way("messages_total", 1, "out")), all_one);
    assert_eq!(
        s0.get(&each_way("messages_total", BULK, "out")),
        BULK_REQUESTS as f64
    );
    // Compression: module 1's big payload went as a few bytes, module 2000's as about half.
    let raw = |s: &Series, m| s.get(&one("compression_raw_bytes_total", m));
    let compressed = |s: &Series, m| s.get(&one("compression_compressed_bytes_total", m));
    let ratio = |s: &Series, m| s.get(&one("compression_ratio", m));
    assert_eq!(
        raw(&s0, 1),
        100_000.0,
        "only the big payload reaches the threshold"
    );
    assert!(compressed(&s0, 1) < 1_000.0, "{}", compressed(&s0, 1));
    assert_eq!(raw(&s0, BULK), 100_000.0 * BULK_REQUESTS as f64);
    let r = ratio(&s0, BULK);
    assert!(
        (0.4..0.8).contains(&r),
        "hex digits compress to about half: {r}"
    );
    assert!(
        (r - compressed(&s0, BULK) / raw(&s0, BULK)).abs() < 1e-9,
        "the ratio is compressed over raw"
    );
    // What went out is what compression left, plus the small requests' payloads.
    let out_1 = s0.get(&each_way("payload_bytes_total", 1, "out"));
    let small_bytes = (0..SMALL)
        .map(|i| format!("small {i}").len())
        .sum::<usize>();
    assert_eq!(out_1, compressed(&s0, 1) + small_bytes as f64);
    let out_bulk = s0.get(&each_way("payload_bytes_total", BULK, "out"));
    assert_eq!(out_bulk, compressed(&s0, BULK));
    // The echoes came back compressed too, and bigger ("echo:" in front).
    assert!(s0.get(&each_way("payload_bytes_total", 1, "in")) > 0.0);
    assert!(s0.get(&each_way("payload_bytes_total", BULK, "in")) > out_bulk * 0.9);
    // Bandwidth: module 2000 waited for its bytes at LIMIT beyond the bucket's burst (one
    // chunk) and the last message (a send goes when the bucket is not in debt, then the next
    // waits the debt out); module 1 has no limit and never waited.
    let waited = s0.get(&one("throttled_seconds_total", BULK));
    let chunk = 65536.0;
    let last = out_bulk / BULK_REQUESTS as f64;
    let (least, most) = (
        (out_bulk - chunk - last) / LIMIT as f64,
        (out_bulk - chunk) / LIMIT as f64,
    );
    assert!(
        waited > least * 0.8 && waited < most + 1.0,
        "waited {waited} s for {out_bulk} bytes at {LIMIT} B/s (from {least} to {most} s)"
    );
    assert_eq!(s0.get(&one("throttled_seconds_total", 1)), 0.0);
    assert_eq!(s0.get(&queued(BULK)), 0.0, "everything was sent");
    assert_eq!(s0.get(&queued(1)), 0.0);

    // n1: the requests refused, counted per module and among the inbound outcomes.
    let s1 = n1.scrape_until("n1's module counts", |s| {
        s.get(&each_way("messages_total", BULK, "out")) == BULK_REQUESTS as f64
    });
    assert_eq!(s1.get(&one("rate_limited_total", 1)), refused as f64);
    assert_eq!(s1.get(&unicast("inbound", "rate_limited")), refused as f64);
    assert_eq!(s1.get(&one("rate_limited_total", BULK)), 0.0);
    assert_eq!(s1.get(&each_way("messages_total", 1, "in")), all_one);
    assert_eq!(s1.get(&each_way("messages_total", 1, "out")), all_one);
    assert_eq!(
        s1.get(&each_way("payload_bytes_total", BULK, "in")),
        out_bulk,
        "what n0 sent is what n1 received"
    );
    assert!(raw(&s1, 1) >= 100_000.0, "the big echo went compressed");
    assert!(ratio(&s1, 1) < 0.05, "{}", ratio(&s1, 1));
    n1.send("quit");
    n0.send("quit");
}
