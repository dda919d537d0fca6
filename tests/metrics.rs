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
