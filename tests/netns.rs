//! Faults across hosts: four `bcos-p2p run --json` processes, each on its own host (a network
//! namespace made by `tests/netns/run.sh`), on links that delay and drop packets (20 ms, 2 %:
//! tc netem, or run.sh's userspace emulator where the kernel has no sch_netem), with one host
//! cut off for 30 s and then reconnected, and then with two hosts unable to reach each other
//! while both still reach the others. Checks that no request is ever left without an answer,
//! that the mesh and the status table heal, that broadcasts after healing reach every node
//! exactly once, and that the two hosts that cannot reach each other still answer each other's
//! requests, over a routed connection through a third host. Prints its figures on stderr.
//!
//! A second test, in tests/netns/traffic.rs, runs block sync, transactions and consensus
//! between the hosts on links capped at 100 Mbit/s and reports each class's latency. The two
//! take turns.
//!
//! Needs root and network namespaces; anywhere else it says `SKIPPED: <test>: <why>` on the
//! terminal (past cargo's capture) and passes; with `BCOS_P2P_REQUIRE_ALL=1` it fails.
//! Settings, from the environment: `BCOS_NETNS_BACKEND` (auto, netem, userspace, bridge: how
//! links are impaired, see run.sh); `BCOS_NETNS_REDIAL_MAX_MS`, the nodes' longest redial delay
//! (2000 here, the library's default is 30000); `BCOS_NETNS_PING_MS`, the nodes' ping period
//! and ping timeout (2000 here, the library's default is 5000: a dead connection is found
//! after 3 periods and a timeout, 8 s rather than 20 s); `BCOS_NETNS_PARTITION_S`, the
//! partition's length (30; at least 12, so that requests across the cut have time to fail);
//! `BCOS_NETNS_KEEP_LOGS`, keep the nodes' logs (they are always kept when the test fails).

#[path = "common/skip.rs"]
mod skip;
#[path = "netns/traffic.rs"]
mod traffic;

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p");
const HOSTS: usize = 4;
const BASE_PORT: u16 = 30300;
/// The host cut off in the partition (an index into the nodes).
const CUT: usize = HOSTS - 1;
/// The two hosts that cannot reach each other in the last phase (indices into the nodes: hosts
/// 1 and 4 of run.sh); each still reaches the two others, which can relay between them.
const BLOCKED: (usize, usize) = (0, HOSTS - 1);
/// The nodes' `[unicast] request_timeout_ms` (the default): a request may stay unanswered
/// this long before it must fail.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for anything the network should do by itself (a mesh, an answer, a resync).
const WAIT: Duration = Duration::from_secs(60);

/// `tests/netns/run.sh session`: the namespaces, alive as long as this is.
struct Harness {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    backend: String,
    delay_ms: u64,
    loss_pct: f64,
    /// Each host's link cap, both ways (0: none).
    rate_mbit: u64,
    namespaces: Vec<String>,
    addrs: Vec<String>,
}

impl Harness {
    /// Sets the hosts up (`args`: run.sh's link options beyond the backend), or says why it
    /// cannot be done here.
    fn start(args: &[&str]) -> Result<Harness, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netns/run.sh");
        let backend = std::env::var("BCOS_NETNS_BACKEND").unwrap_or_else(|_| "auto".into());
        let mut child = Command::new("bash")
            .arg(&script)
            .args([
                "session",
                "--hosts",
                &HOSTS.to_string(),
                "--backend",
                &backend,
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let lines = line_channel(child.stdout.take().expect("piped"));
        let stdin = child.stdin.take();
        let first = lines.recv_timeout(Duration::from_secs(60));
        let mut harness = Harness {
            child,
            stdin,
            lines,
            backend: String::new(),
            delay_ms: 0,
            loss_pct: 0.0,
            rate_mbit: 0,
            namespaces: Vec::new(),
            addrs: Vec::new(),
        };
        let first = first.map_err(|_| "run.sh printed nothing within 60 s".to_string())?;
        if let Some(why) = first.strip_prefix("skip ") {
            return Err(why.to_string());
        }
        let fields: HashMap<&str, &str> = first
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("run.sh: {first}"))
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let field = |k: &str| *fields.get(k).unwrap_or_else(|| panic!("no {k}: {first}"));
        harness.backend = field("backend").to_string();
        harness.delay_ms = field("delay_ms").parse().expect("delay_ms");
        harness.loss_pct = field("loss_pct").parse().expect("loss_pct");
        harness.rate_mbit = field("rate_mbit").parse().expect("rate_mbit");
        harness.namespaces = field("hosts").split(',').map(String::from).collect();
        harness.addrs = field("addrs").split(',').map(String::from).collect();
        assert_eq!(harness.namespaces.len(), HOSTS, "{first}");
        assert_eq!(harness.addrs.len(), HOSTS, "{first}");
        Ok(harness)
    }

    /// Runs one command and checks its `ok` answer.
    fn command(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().expect("open");
        writeln!(stdin, "{command}").expect("run.sh reads commands");
        stdin.flush().expect("flush");
        let answer = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("run.sh did not answer `{command}`"));
        assert!(answer.starts_with("ok "), "run.sh `{command}`: {answer}");
        answer
    }

    /// Hosts `a` and `b` can no longer exchange packets (`block`), or can again; run.sh checks
    /// the routes that do it.
    fn set_block(&mut self, (a, b): (usize, usize), block: bool) {
        let verb = if block { "block" } else { "unblock" };
        self.command(&format!("{verb} {} {}", a + 1, b + 1));
    }

    /// Host `i`'s link (`partition`: down, else up), checked against what the kernel reports.
    fn set_link(&mut self, i: usize, partition: bool) {
        let verb = if partition { "partition" } else { "heal" };
        self.command(&format!("{verb} {}", i + 1));
        let links = self.command("links");
        let state = links["ok links ".len()..].split(',').nth(i);
        assert_eq!(
            state,
            Some(if partition { "down" } else { "up" }),
            "{links}"
        );
    }
}

impl Drop for Harness {
    /// Ends the session: run.sh stops what still runs in its namespaces and removes them.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its EXIT trap still tears everything down on SIGTERM.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn line_channel(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A request made by a node: to whom, with what, when, and in which part of the test.
#[derive(Debug, Clone)]
struct Request {
    from: usize,
    to: usize,
    data: String,
    sent: Instant,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Netem,
    Partition,
    Healed,
    Blocked,
    Unblocked,
}

/// A request's end: its `response` event.
#[derive(Debug)]
struct Answer {
    request: Request,
    at: Instant,
    error: Option<String>,
    rtt_ms: f64,
}

/// The four node processes and everything their events have said so far.
/// One process per host, each inside its host's namespace: their stdins, their stdout lines
/// (with when each came), and their exit; killed when dropped.
struct Processes {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    /// Each process's stdout lines, then `None` when it closes.
    events: Receiver<(usize, Instant, Option<String>)>,
}

impl Processes {
    /// Starts `commands` (their stderr already set) with piped stdin and stdout.
    fn spawn(commands: impl IntoIterator<Item = Command>) -> Processes {
        let (tx, events) = mpsc::channel();
        let mut processes = Processes {
            children: Vec::new(),
            stdins: Vec::new(),
            events,
        };
        for (i, mut command) in commands.into_iter().enumerate() {
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
            processes.stdins.push(child.stdin.take().expect("piped"));
            let tx = tx.clone();
            let out = child.stdout.take().expect("piped");
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send((i, Instant::now(), Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, Instant::now(), None));
            });
            processes.children.push(child);
        }
        processes
    }

    fn send(&mut self, i: usize, command: &str) {
        writeln!(self.stdins[i], "{command}").expect("process reads stdin");
        self.stdins[i].flush().expect("flush");
    }

    /// The next line printed before `deadline`: (process, when, the line or `None` at its end).
    fn next(&self, deadline: Instant) -> Option<(usize, Instant, Option<String>)> {
        self.events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }

    /// Why process `i` closed its stdout: whether it has exited, and how.
    fn exit_of(&mut self, i: usize) -> String {
        format!("exited: {:?}", self.children[i].try_wait())
    }

    /// Sends each process `quit` and waits (15 s at most) for all to exit successfully;
    /// `name` names process i in the assertions.
    fn quit(&mut self, name: impl Fn(usize) -> String) {
        for i in 0..self.children.len() {
            self.send(i, "quit");
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (i, child) in self.children.iter_mut().enumerate() {
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    assert!(status.success(), "{} exit status {status}", name(i));
                    break;
                }
                assert!(Instant::now() < deadline, "{} did not quit", name(i));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Net {
    processes: Processes,
    ids: Vec<String>,
    /// Each node's libp2p PeerId, as the configs name them (routed addresses carry these).
    peer_ids: Vec<String>,
    /// Per node: the next response id (ids count requests from 1) and requests not answered.
    next_id: Vec<u64>,
    open: Vec<HashMap<u64, Request>>,
    answers: Vec<Answer>,
    /// `connected[i][j]`: i's connection to j is up, and since when.
    connected: Vec<Vec<Option<Instant>>>,
    /// Every `connected` (true) and `disconnected` event: (node, peer, up, when).
    link_changes: Vec<(usize, usize, bool, Instant)>,
    /// Status changes node i saw: (from, seq, data, when).
    statuses: Vec<Vec<(usize, u64, String, Instant)>>,
    /// Broadcasts node i received: data -> (times, origin).
    broadcasts: Vec<HashMap<String, (usize, usize)>>,
    peers: Vec<Option<Vec<Value>>>,
    ready: Vec<bool>,
}

impl Net {
    /// Starts one `run --json` per host, inside its namespace.
    fn start(harness: &Harness, chain: &Path, logs: &Path, peer_ids: Vec<String>) -> Net {
        let mut commands = Vec::new();
        let mut ids = Vec::new();
        for (i, ns) in harness.namespaces.iter().enumerate() {
            let dir = chain.join(format!("node{i}"));
            ids.push(
                std::fs::read_to_string(dir.join("node.nodeid"))
                    .expect("node.nodeid")
                    .trim()
                    .to_string(),
            );
            let log = std::fs::File::create(logs.join(format!("node{i}.log"))).expect("log");
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", ns, BIN, "run", "--json", "--config"])
                .arg(dir.join("config.toml"))
                .env("RUST_LOG", "info,bcos_p2p::connection=debug")
                .stderr(log);
            commands.push(command);
        }
        Net {
            processes: Processes::spawn(commands),
            ids,
            peer_ids,
            next_id: vec![1; HOSTS],
            open: vec![HashMap::new(); HOSTS],
            answers: Vec::new(),
            connected: vec![vec![None; HOSTS]; HOSTS],
            link_changes: Vec::new(),
            statuses: vec![Vec::new(); HOSTS],
            broadcasts: vec![HashMap::new(); HOSTS],
            peers: vec![None; HOSTS],
            ready: vec![false; HOSTS],
        }
    }

    fn send(&mut self, i: usize, command: &str) {
        self.processes.send(i, command);
    }

    fn index(&self, id: &Value) -> usize {
        self.ids
            .iter()
            .position(|x| id == x.as_str())
            .unwrap_or_else(|| panic!("unknown node id {id}"))
    }

    /// Takes in every event printed until `until`.
    fn pump(&mut self, until: Instant) {
        while let Some((i, at, line)) = self.processes.next(until) {
            let Some(line) = line else {
                panic!("node {i} closed its stdout ({})", self.processes.exit_of(i));
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("node {i} printed non-JSON `{line}`: {e}"));
            self.take(i, at, v);
            if Instant::now() >= until {
                break;
            }
        }
    }

    fn take(&mut self, i: usize, at: Instant, v: Value) {
        match v["event"].as_str().unwrap_or_default() {
            "ready" => self.ready[i] = true,
            "connected" => {
                let j = self.index(&v["node_id"]);
                self.connected[i][j] = Some(at);
                self.link_changes.push((i, j, true, at));
            }
            "disconnected" => {
                let j = self.index(&v["node_id"]);
                self.connected[i][j] = None;
                self.link_changes.push((i, j, false, at));
            }
            "response" => {
                let id = v["id"].as_u64().unwrap_or_else(|| panic!("no id: {v}"));
                let request = self.open[i]
                    .remove(&id)
                    .unwrap_or_else(|| panic!("node {i}: response to no open request: {v}"));
                let error = if v["ok"] == true {
                    let echo = format!("echo:{}", request.data);
                    assert_eq!(v["data"], echo.as_str(), "node {i}: wrong reply {v}");
                    None
                } else {
                    let e = v["error"].as_str().unwrap_or_default();
                    assert!(!e.is_empty(), "node {i}: an error without a reason: {v}");
                    Some(e.to_string())
                };
                self.answers.push(Answer {
                    request,
                    at,
                    error,
                    rtt_ms: v["rtt_ms"].as_f64().unwrap_or(f64::NAN),
                });
            }
            "status" => {
                let j = self.index(&v["node_id"]);
                let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {v}"));
                let data = v["data"].as_str().unwrap_or_default().to_string();
                self.statuses[i].push((j, seq, data, at));
            }
            "message" if v["kind"] == "broadcast" => {
                let from = self.index(&v["from"]);
                let data = v["data"].as_str().unwrap_or_default().to_string();
                self.broadcasts[i].entry(data).or_insert((0, from)).0 += 1;
            }
            "peers" => self.peers[i] = Some(v["peers"].as_array().cloned().unwrap_or_default()),
            "error" => panic!("node {i} could not do a command: {v}"),
            "request" | "message" | "refused" | "oneway" => {}
            other => panic!("node {i}: unknown event `{other}`: {v}"),
        }
    }

    /// Pumps events until `done` holds (then returns how long it took) or `WAIT` passes.
    fn until(&mut self, what: &str, done: impl Fn(&Net) -> bool) -> Duration {
        let start = Instant::now();
        let deadline = start + WAIT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {WAIT:?}; connected {:?}",
                self.mesh_view()
            );
            self.pump((Instant::now() + Duration::from_millis(20)).min(deadline));
        }
        start.elapsed()
    }

    fn mesh_view(&self) -> Vec<Vec<bool>> {
        self.connected
            .iter()
            .map(|row| row.iter().map(Option::is_some).collect())
            .collect()
    }

    /// Every node is connected to every other.
    fn full_mesh(&self) -> bool {
        (0..HOSTS).all(|i| (0..HOSTS).all(|j| i == j || self.connected[i][j].is_some()))
    }

    fn request(&mut self, from: usize, to: usize, phase: Phase) {
        let id = self.next_id[from];
        self.next_id[from] += 1;
        let data = format!("{phase:?}-{from}-{to}-{id}");
        self.send(from, &format!("request {} {data}", self.ids[to]));
        let request = Request {
            from,
            to,
            data,
            sent: Instant::now(),
            phase,
        };
        self.open[from].insert(id, request);
    }

    /// Every `period` for `length`, a request along each ordered pair that `pick` chooses;
    /// `during` runs once a tick with the time since the start, for scripted faults.
    fn stream(
        &mut self,
        length: Duration,
        period: Duration,
        phase: Phase,
        mut during: impl FnMut(&mut Net, Duration),
    ) {
        let start = Instant::now();
        let ticks = (length.as_millis() / period.as_millis()) as u32;
        for tick in 0..ticks {
            for from in 0..HOSTS {
                for to in (0..HOSTS).filter(|&to| to != from) {
                    self.request(from, to, phase);
                }
            }
            during(self, start.elapsed());
            self.pump(start + period * (tick + 1));
        }
    }

    /// After healing: sends requests along each ordered pair with the cut host, one at a time
    /// per pair, until one sent after `healed_at` succeeds on every pair. Returns the time from
    /// `healed_at` to the last pair's first success.
    fn probe_cut_pairs(&mut self, healed_at: Instant) -> Duration {
        let pairs: Vec<(usize, usize)> = (0..HOSTS)
            .filter(|&i| i != CUT)
            .flat_map(|i| [(i, CUT), (CUT, i)])
            .collect();
        let first_ok = |net: &Net, (from, to): (usize, usize)| {
            net.answers
                .iter()
                .filter(|a| a.request.from == from && a.request.to == to)
                .filter(|a| a.request.sent > healed_at && a.error.is_none())
                .map(|a| a.at)
                .min()
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let done: Vec<Option<Instant>> = pairs.iter().map(|&p| first_ok(self, p)).collect();
            if done.iter().all(Option::is_some) {
                return done.into_iter().flatten().max().expect("pairs") - healed_at;
            }
            assert!(
                Instant::now() < deadline,
                "pairs across the cut not answering within {WAIT:?} of healing: {:?}",
                pairs
                    .iter()
                    .zip(&done)
                    .filter(|(_, d)| d.is_none())
                    .map(|(p, _)| p)
                    .collect::<Vec<_>>()
            );
            for (&(from, to), ok) in pairs.iter().zip(&done) {
                let waiting = self.open[from]
                    .values()
                    .any(|r| r.to == to && r.phase == Phase::Healed);
                if ok.is_none() && !waiting {
                    self.request(from, to, Phase::Healed);
                }
            }
            self.pump(Instant::now() + Duration::from_millis(100));
        }
    }

    /// Waits until every request has its response; panics naming any that has none.
    fn all_answered(&mut self, what: &str) {
        let deadline = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(10);
        while self.open.iter().any(|o| !o.is_empty()) && Instant::now() < deadline {
            self.pump((Instant::now() + Duration::from_millis(50)).min(deadline));
        }
        let silent: Vec<&Request> = self.open.iter().flat_map(|o| o.values()).collect();
        assert!(
            silent.is_empty(),
            "{what}: {} request(s) got no response at all (silent loss), e.g. {:?}",
            silent.len(),
            silent.iter().take(5).collect::<Vec<_>>()
        );
    }

    /// The address of the connection to node `of` in one node's `peers` answer, if it has one.
    fn addr_of<'a>(&self, peers: &'a [Value], of: usize) -> Option<&'a str> {
        peers
            .iter()
            .find(|p| p["node_id"] == self.ids[of].as_str())
            .and_then(|p| p["addr"].as_str())
    }

    /// The node whose PeerId `addr` names first (`/p2p/<PeerId>`), if any.
    fn node_in_addr(&self, addr: &str) -> Option<usize> {
        let (_, rest) = addr.split_once("/p2p/")?;
        let peer = rest.split('/').next()?;
        self.peer_ids.iter().position(|p| p == peer)
    }

    /// Asks every node for its peers every 250 ms until `done` holds for the answers (at most
    /// `WAIT`); returns how long it took.
    fn poll_peers(&mut self, what: &str, done: impl Fn(&Net, &[Vec<Value>]) -> bool) -> Duration {
        let start = Instant::now();
        let period = Duration::from_millis(250);
        let mut peers = Vec::new();
        for _ in 0..=WAIT.as_millis() / period.as_millis() {
            peers = self.peers();
            if done(self, &peers) {
                return start.elapsed();
            }
            if start.elapsed() >= WAIT {
                break;
            }
            self.pump(Instant::now() + period);
        }
        panic!("{what}: not within {WAIT:?}; peers {peers:?}");
    }

    /// Asks every node for its peers; returns their answers.
    fn peers(&mut self) -> Vec<Vec<Value>> {
        self.peers = vec![None; HOSTS];
        for i in 0..HOSTS {
            self.send(i, "peers");
        }
        self.until("peers answers", |net| net.peers.iter().all(Option::is_some));
        self.peers
            .iter()
            .map(|p| p.clone().expect("answered"))
            .collect()
    }

    /// The newest (seq, data, when) node `at` saw from node `of`.
    fn status_seen(&self, at: usize, of: usize) -> Option<(u64, &str, Instant)> {
        self.statuses[at]
            .iter()
            .rfind(|s| s.0 == of)
            .map(|s| (s.1, s.2.as_str(), s.3))
    }

    fn quit(&mut self) {
        self.processes.quit(|i| format!("node {i}"));
    }
}

/// Counts of requests by outcome, with their round-trip times.
struct Tally {
    ok: usize,
    errors: usize,
    reasons: HashMap<String, usize>,
    rtts: Vec<f64>,
}

fn tally<'a>(answers: impl Iterator<Item = &'a Answer>) -> Tally {
    let mut t = Tally {
        ok: 0,
        errors: 0,
        reasons: HashMap::new(),
        rtts: Vec::new(),
    };
    for a in answers {
        match &a.error {
            None => {
                t.ok += 1;
                t.rtts.push(a.rtt_ms);
            }
            Some(e) => {
                t.errors += 1;
                *t.reasons.entry(e.clone()).or_default() += 1;
            }
        }
    }
    t.rtts.sort_by(f64::total_cmp);
    t
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// gen-certs' configs, moved from 127.0.0.1 to the hosts' addresses, with `redial_max_ms` and
/// `ping_ms` as the ping period and timeout. Returns each node's PeerId, as the configs name them.
fn configure(chain: &Path, addrs: &[String], redial_max_ms: u64, ping_ms: u64) -> Vec<String> {
    let st = Command::new(BIN)
        .args(["gen-certs", "--nodes", &HOSTS.to_string()])
        .args(["--base-port", &BASE_PORT.to_string(), "--out"])
        .arg(chain)
        .output()
        .expect("gen-certs runs");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    for i in 0..HOSTS {
        let path = chain.join(format!("node{i}/config.toml"));
        let mut text = std::fs::read_to_string(&path).expect("config");
        for (j, addr) in addrs.iter().enumerate() {
            let port = BASE_PORT as usize + j;
            text = text.replace(
                &format!("/ip4/127.0.0.1/tcp/{port}"),
                &format!("/ip4/{addr}/tcp/{port}"),
            );
        }
        text = text.replace(
            "redial_max_ms = 30000",
            &format!("redial_max_ms = {redial_max_ms}"),
        );
        for key in ["ping_interval_ms", "ping_timeout_ms"] {
            text = text.replace(&format!("{key} = 5000\n"), &format!("{key} = {ping_ms}\n"));
        }
        assert!(
            !text.contains("127.0.0.1"),
            "not every address moved: {text}"
        );
        assert!(
            text.contains(&format!("listen = [\"/ip4/{}/tcp/", addrs[i]))
                && text.contains(&format!("redial_max_ms = {redial_max_ms}\n"))
                && text.contains(&format!("ping_interval_ms = {ping_ms}\n"))
                && text.contains(&format!("ping_timeout_ms = {ping_ms}\n")),
            "gen-certs' config changed shape: {text}"
        );
        std::fs::write(&path, text).expect("write config");
    }
    // Node 0's config names the others' PeerIds, node 1's node 0's.
    (0..HOSTS)
        .map(|j| {
            let at = if j == 0 { 1 } else { 0 };
            let path = chain.join(format!("node{at}/config.toml"));
            let text = std::fs::read_to_string(&path).expect("config");
            let dial = format!("/ip4/{}/tcp/{}/p2p/", addrs[j], BASE_PORT as usize + j);
            let (_, rest) = text
                .split_once(&dial)
                .unwrap_or_else(|| panic!("node {at}'s config does not name node {j}: {text}"));
            rest.split('"').next().expect("quoted").to_string()
        })
        .collect()
}

/// Keeps the node logs when the test fails, and says where they are.
struct Logs(Option<tempfile::TempDir>);

impl Drop for Logs {
    fn drop(&mut self) {
        if (std::thread::panicking() || std::env::var_os("BCOS_NETNS_KEEP_LOGS").is_some())
            && let Some(dir) = self.0.take()
        {
            eprintln!("netns: node logs kept in {}", dir.keep().display());
        }
    }
}

/// The number in environment variable `name`, or `default` when it is not set.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The tests here one at a time: each loads the machine, and the traffic scenario's figures
/// are only worth anything with nothing else running.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn faults_across_hosts_heal_with_nothing_lost() {
    let _alone = one_at_a_time();
    let started = Instant::now();
    let mut harness = match Harness::start(&[]) {
        Ok(h) => h,
        Err(why) => {
            skip::skip(
                &why,
                "run as root with iproute2 and python3 (apt-get install -y iproute2 python3)",
            );
            return;
        }
    };
    let redial_max_ms = env_number("BCOS_NETNS_REDIAL_MAX_MS", 2000);
    let ping_ms = env_number("BCOS_NETNS_PING_MS", 2000);
    let partition_length = Duration::from_secs(env_number("BCOS_NETNS_PARTITION_S", 30));
    assert!(
        partition_length >= REQUEST_TIMEOUT + Duration::from_secs(2),
        "BCOS_NETNS_PARTITION_S must be at least 12"
    );
    eprintln!(
        "netns: {HOSTS} hosts, backend {} (delay {} ms, loss {} %), redial_max_ms {redial_max_ms}, ping_interval_ms and ping_timeout_ms {ping_ms}, partition {}",
        harness.backend,
        harness.delay_ms,
        harness.loss_pct,
        secs(partition_length)
    );
    let chain = tempfile::tempdir().expect("tempdir");
    let logs = Logs(Some(tempfile::tempdir().expect("tempdir")));
    let peer_ids = configure(chain.path(), &harness.addrs, redial_max_ms, ping_ms);
    let mut net = Net::start(
        &harness,
        chain.path(),
        logs.0.as_ref().expect("logs").path(),
        peer_ids,
    );
    let mesh = net.until("a full mesh at start", |n| {
        n.ready.iter().all(|r| *r) && n.full_mesh()
    });
    eprintln!("netns: full mesh {} after start", secs(mesh));

    requests_under_netem(&mut net, 2.0 * harness.delay_ms as f64);
    let seq_before = change_statuses(&mut net, "before");
    let cut = partition(&mut net, &mut harness, partition_length);
    statuses_resync(&mut net, &cut, &seq_before);
    broadcasts_reach_all_once(&mut net);
    one_host_through_another(&mut net, &mut harness);

    net.quit();
    drop(net);
    drop(harness);
    eprintln!("netns: test took {}", secs(started.elapsed()));
}

/// Block sync, transactions and consensus between the hosts on links capped at 100 Mbit/s:
/// each class's latency under the others' load (see tests/netns/traffic.rs).
#[test]
fn traffic_classes_on_capped_links() {
    let _alone = one_at_a_time();
    traffic::run();
}

/// (a) Under delay and loss, a steady stream along all 12 ordered pairs for 15 s: every
/// request ends in a response, matched by id, and none fails.
fn requests_under_netem(net: &mut Net, round_trip_ms: f64) {
    let (length, period) = (Duration::from_secs(15), Duration::from_millis(100));
    net.stream(length, period, Phase::Netem, |_, _| {});
    net.all_answered("under netem");
    let a = tally(
        net.answers
            .iter()
            .filter(|a| a.request.phase == Phase::Netem),
    );
    eprintln!(
        "netns: (a) {} requests under netem: {} ok, {} errors {:?}; rtt ms min {:.1} median {:.1} p99 {:.1} max {:.1}, {} below the links' round trip ({round_trip_ms} ms)",
        a.ok + a.errors,
        a.ok,
        a.errors,
        a.reasons,
        percentile(&a.rtts, 0.0),
        percentile(&a.rtts, 0.5),
        percentile(&a.rtts, 0.99),
        percentile(&a.rtts, 1.0),
        a.rtts.iter().filter(|&&ms| ms < round_trip_ms).count(),
    );
    let ticks = (length.as_millis() / period.as_millis()) as usize;
    assert_eq!(a.ok + a.errors, ticks * HOSTS * (HOSTS - 1));
    assert_eq!(
        a.errors, 0,
        "requests between connected hosts failed: {:?}",
        a.reasons
    );
    // The links really are impaired: most requests take at least the links' round trip.
    assert!(
        percentile(&a.rtts, 0.5) >= round_trip_ms,
        "the median request took less than the links' round trip {round_trip_ms} ms"
    );
}

/// Every node sets its status to `<tag>-<i>`. Waits until every node has seen every other's
/// change; returns each node's new seq.
fn change_statuses(net: &mut Net, tag: &str) -> Vec<u64> {
    for i in 0..HOSTS {
        net.send(i, &format!("status {tag}-{i}"));
    }
    net.until("status changes", |n| {
        (0..HOSTS).all(|i| {
            (0..HOSTS).all(|j| {
                i == j
                    || n.status_seen(i, j)
                        .is_some_and(|s| s.1 == format!("{tag}-{j}"))
            })
        })
    });
    (0..HOSTS)
        .map(|j| net.status_seen((j + 1) % HOSTS, j).expect("seen").0)
        .collect()
}

/// When the cut host was cut off, when every node changed its status, when it was healed.
struct Cut {
    cut_at: Instant,
    changed_at: Instant,
    healed_at: Instant,
    /// From healing to the last new connection, if any connection was renewed.
    reconnected: Option<Duration>,
}

/// (b) The cut host's link goes down for `length` while requests keep flowing along every pair
/// (a third of the way in, every node changes its status: `during-<i>`), then comes back.
/// Requests across the cut fail explicitly, others succeed, none goes unanswered; afterwards
/// every pair across the cut answers requests again and the mesh is full.
fn partition(net: &mut Net, harness: &mut Harness, length: Duration) -> Cut {
    harness.set_link(CUT, true);
    let cut_at = Instant::now();
    let mut changed_at = None;
    net.stream(
        length,
        Duration::from_millis(250),
        Phase::Partition,
        |net, elapsed| {
            if changed_at.is_none() && elapsed >= length / 3 {
                for i in 0..HOSTS {
                    net.send(i, &format!("status during-{i}"));
                }
                changed_at = Some(Instant::now());
            }
        },
    );
    net.pump(cut_at + length);
    let changed_at = changed_at.expect("statuses changed");
    harness.set_link(CUT, false);
    let healed_at = Instant::now();

    let answering = net.probe_cut_pairs(healed_at);
    net.until("a full mesh after healing", Net::full_mesh);
    let since_cut = |&&(.., at): &&(usize, usize, bool, Instant)| at > cut_at;
    let changes: Vec<String> = net
        .link_changes
        .iter()
        .filter(since_cut)
        .map(|&(a, b, up, at)| {
            let (after, t) = if at >= healed_at {
                ("heal", at - healed_at)
            } else {
                ("cut", at - cut_at)
            };
            let what = if up { "connected" } else { "disconnected" };
            format!("{a}->{b} {what} at {after}+{:.1}s", t.as_secs_f64())
        })
        .collect();
    eprintln!("netns: (b) connection events since the cut: {changes:?}");
    let closed = net.link_changes.iter().filter(since_cut).filter(|c| !c.2);
    let closed = closed.map(|c| c.3 - cut_at).max();
    let reconnected = net.link_changes.iter().filter(|c| c.2 && c.3 > healed_at);
    let reconnected = reconnected.map(|c| c.3 - healed_at).max();
    eprintln!(
        "netns: (b) connections to the cut host closed as dead by {} after the cut; reconnected {} after healing; every pair across the cut answering again {} after healing",
        closed.map_or("(none closed)".into(), secs),
        reconnected.map_or("(no new connection)".into(), secs),
        secs(answering)
    );
    for (i, p) in net.peers().iter().enumerate() {
        assert_eq!(p.len(), HOSTS - 1, "node {i} peers after healing: {p:?}");
    }

    net.all_answered("through the partition");
    let across = |a: &&Answer| {
        a.request.phase == Phase::Partition && (a.request.from == CUT || a.request.to == CUT)
    };
    // A request sent this long before healing cannot have been answered in time.
    let must_fail = REQUEST_TIMEOUT + Duration::from_secs(1);
    let early_ok: Vec<&Request> = net
        .answers
        .iter()
        .filter(across)
        .filter(|a| a.request.sent + must_fail < healed_at && a.error.is_none())
        .map(|a| &a.request)
        .collect();
    let cut = tally(net.answers.iter().filter(across));
    let others = tally(
        net.answers
            .iter()
            .filter(|a| a.request.phase == Phase::Partition && !across(a)),
    );
    eprintln!(
        "netns: (b) during the partition, across the cut: {} requests, {} ok (sent in its last {} s), {} errors {:?}; among the others: {} ok, {} errors {:?}",
        cut.ok + cut.errors,
        cut.ok,
        must_fail.as_secs(),
        cut.errors,
        cut.reasons,
        others.ok,
        others.errors,
        others.reasons
    );
    assert!(
        early_ok.is_empty(),
        "requests across the cut succeeded: {early_ok:?}"
    );
    assert!(cut.errors > 0, "no request across the cut failed");
    assert_eq!(
        others.errors, 0,
        "among connected hosts: {:?}",
        others.reasons
    );
    Cut {
        cut_at,
        changed_at,
        healed_at,
        reconnected,
    }
}

/// (c) The status changes made during the partition: the others saw each other's at once and
/// the cut host's only after healing, and it saw theirs only after healing; every `peers`
/// entry then carries the peer's new seq.
fn statuses_resync(net: &mut Net, cut: &Cut, seq_before: &[u64]) {
    net.until("status resync after healing", |n| {
        (0..HOSTS).all(|i| {
            (0..HOSTS).all(|j| {
                i == j
                    || n.status_seen(i, j)
                        .is_some_and(|s| s.1 == format!("during-{j}") && s.0 > seq_before[j])
            })
        })
    });
    let mut resync = Duration::ZERO;
    for a in 0..HOSTS {
        for b in (0..HOSTS).filter(|&b| b != a) {
            let (_, _, at) = net.status_seen(a, b).expect("seen");
            if a == CUT || b == CUT {
                assert!(
                    at > cut.healed_at,
                    "node {a} saw node {b}'s change while cut off, {} after the change",
                    secs(at - cut.changed_at)
                );
                resync = resync.max(at - cut.healed_at);
            } else {
                assert!(
                    at < cut.healed_at,
                    "node {a} saw node {b}'s change only after healing"
                );
            }
        }
    }
    eprintln!(
        "netns: (c) statuses changed during the partition resynced both ways {} after healing ({} after the last reconnection)",
        secs(resync),
        secs(resync.saturating_sub(cut.reconnected.unwrap_or_default()))
    );
    assert!(cut.changed_at > cut.cut_at);
    for (i, p) in net.peers().iter().enumerate() {
        for peer in p {
            let j = net.index(&peer["node_id"]);
            let seq = net.status_seen(i, j).expect("seen").0;
            assert_eq!(
                peer["status_seq"], seq,
                "node {i}'s peers entry for {j}: {peer}"
            );
        }
    }
}

/// (d) After healing, 5 broadcasts from every node reach every other node exactly once, and
/// not their origin.
fn broadcasts_reach_all_once(net: &mut Net) {
    const EACH: usize = 5;
    for i in 0..HOSTS {
        for k in 0..EACH {
            net.send(i, &format!("broadcast after-{i}-{k}"));
        }
    }
    let delivered = net.until("broadcasts after healing", |n| {
        (0..HOSTS).all(|i| n.broadcasts[i].len() == EACH * (HOSTS - 1))
    });
    // Time for duplicates to show.
    net.pump(Instant::now() + Duration::from_secs(2));
    for (i, got) in net.broadcasts.iter().enumerate() {
        assert_eq!(got.len(), EACH * (HOSTS - 1), "node {i}: {got:?}");
        for (data, &(times, from)) in got {
            let origin = data.split('-').nth(1).and_then(|o| o.parse::<usize>().ok());
            assert_eq!(times, 1, "node {i} got `{data}` {times} times");
            assert_eq!(Some(from), origin, "node {i} got `{data}` from node {from}");
            assert_ne!(from, i, "node {i} got its own broadcast `{data}`");
        }
    }
    eprintln!(
        "netns: (d) {} broadcasts after healing, each at all {} other nodes exactly once, within {}",
        EACH * HOSTS,
        HOSTS - 1,
        secs(delivered)
    );
}

/// (e) Hosts 1 and 4 stop reaching each other (run.sh `block`: no packet passes between them)
/// while both still reach hosts 2 and 3. Once each end has found the direct connection dead,
/// a request between them opens a routed connection through host 2 or 3; then a steady stream
/// along all 12 ordered pairs is answered with no error, and `peers` at both ends shows the
/// other at a `/p2p-circuit` address. After unblocking, requests are still all answered, and
/// the direct connection comes back (the connection manager keeps dialling the configured
/// address while a routed connection is up, and a direct connection replaces a routed one).
fn one_host_through_another(net: &mut Net, harness: &mut Harness) {
    let (a, b) = BLOCKED;
    let pair = [(a, b), (b, a)];
    let routed = |addr: Option<&str>| addr.is_some_and(|x| x.contains("/p2p-circuit"));
    let direct = |addr: Option<&str>| addr.is_some_and(|x| !x.contains("/p2p-circuit"));
    harness.set_block(BLOCKED, true);
    let blocked_at = Instant::now();
    let gone = net.poll_peers("the blocked pair's direct connection closed", |n, p| {
        pair.iter().all(|&(x, y)| !direct(n.addr_of(&p[x], y)))
    });

    // The first request dials the routed connection.
    net.request(a, b, Phase::Blocked);
    net.all_answered("the first request between the blocked hosts");
    let first = net.answers.last().expect("answered");
    assert!(
        first.error.is_none(),
        "the first request from node {a} to node {b} after the block failed: {:?}",
        first.error
    );
    let first_rtt = first.rtt_ms;
    let peers = net.peers();
    let (at_a, at_b) = (net.addr_of(&peers[a], b), net.addr_of(&peers[b], a));
    assert!(
        routed(at_a) && routed(at_b),
        "after a request through the block: node {a} has node {b} at {at_a:?}, node {b} has node {a} at {at_b:?}"
    );
    // The far end names the last relay: `/p2p/<relay>/p2p-circuit`.
    let relay = at_b.and_then(|x| net.node_in_addr(x));
    assert!(
        relay.is_some_and(|r| r != a && r != b),
        "node {b}'s address for node {a} names no relay: {at_b:?}"
    );
    let relay = relay.expect("relay");
    let (at_a, at_b) = (
        at_a.expect("routed").to_string(),
        at_b.expect("routed").to_string(),
    );

    let (length, period) = (Duration::from_secs(4), Duration::from_millis(250));
    let ticks = (length.as_millis() / period.as_millis()) as usize;
    net.stream(length, period, Phase::Blocked, |_, _| {});
    net.all_answered("while hosts are blocked");
    let in_pair = |x: &Answer| pair.contains(&(x.request.from, x.request.to));
    let phase = |p: Phase| move |x: &&Answer| x.request.phase == p;
    let through = tally(
        net.answers
            .iter()
            .filter(phase(Phase::Blocked))
            .filter(|x| in_pair(x)),
    );
    let others = tally(
        net.answers
            .iter()
            .filter(phase(Phase::Blocked))
            .filter(|x| !in_pair(x)),
    );
    let peers = net.peers();
    let still = pair.iter().all(|&(x, y)| routed(net.addr_of(&peers[x], y)));

    harness.set_block(BLOCKED, false);
    let unblocked_at = Instant::now();
    // Each tick also asks both ends for their peers, to see when the direct connection is back.
    let mut back = None;
    net.peers = vec![None; HOSTS];
    net.stream(length, period, Phase::Unblocked, |net, elapsed| {
        let both = pair.iter().all(|&(x, y)| {
            let list = net.peers[x].as_deref();
            direct(list.and_then(|l| net.addr_of(l, y)))
        });
        if back.is_none() && both {
            back = Some(elapsed);
        } else if back.is_none() {
            net.send(a, "peers");
            net.send(b, "peers");
        }
    });
    net.all_answered("after unblocking");
    let after = tally(net.answers.iter().filter(phase(Phase::Unblocked)));
    let back = back.unwrap_or_else(|| {
        net.poll_peers("the blocked pair's direct connection back", |n, p| {
            pair.iter().all(|&(x, y)| direct(n.addr_of(&p[x], y)))
        });
        unblocked_at.elapsed()
    });

    let changes: Vec<String> = net
        .link_changes
        .iter()
        .filter(|c| c.3 > blocked_at && pair.contains(&(c.0, c.1)))
        .map(|&(x, y, up, at)| {
            let (after, t) = if at >= unblocked_at {
                ("unblock", at - unblocked_at)
            } else {
                ("block", at - blocked_at)
            };
            let what = if up { "connected" } else { "disconnected" };
            format!("{x}->{y} {what} at {after}+{:.1}s", t.as_secs_f64())
        })
        .collect();
    eprintln!(
        "netns: (e) connection events between nodes {a} and {b} since the block: {changes:?}"
    );
    eprintln!(
        "netns: (e) hosts {} and {} blocked: their direct connection gone at both ends {} after the block; first request {a}->{b} answered in {first_rtt:.1} ms over a routed connection through node {relay} (host {}; node {a} has node {b} at {at_a}, node {b} has node {a} at {at_b})",
        a + 1,
        b + 1,
        secs(gone),
        relay + 1,
    );
    eprintln!(
        "netns: (e) while blocked, between them: {} requests, {} ok, {} errors {:?}, rtt ms median {:.1} p99 {:.1}; among the others: {} ok, {} errors {:?}, rtt ms median {:.1}; still routed after: {still}",
        through.ok + through.errors,
        through.ok,
        through.errors,
        through.reasons,
        percentile(&through.rtts, 0.5),
        percentile(&through.rtts, 0.99),
        others.ok,
        others.errors,
        others.reasons,
        percentile(&others.rtts, 0.5),
    );
    eprintln!(
        "netns: (e) after unblocking: {} requests, {} ok, {} errors {:?}; direct connection back at both ends by {} after unblocking",
        after.ok + after.errors,
        after.ok,
        after.errors,
        after.reasons,
        secs(back),
    );
    // The first request, then the stream.
    assert_eq!(through.ok + through.errors, 1 + 2 * ticks);
    assert_eq!(others.ok + others.errors, ticks * (HOSTS * (HOSTS - 1) - 2));
    assert_eq!(
        through.errors, 0,
        "requests between the blocked hosts failed: {:?}",
        through.reasons
    );
    assert_eq!(
        others.errors, 0,
        "other requests failed: {:?}",
        others.reasons
    );
    assert!(
        still,
        "the routed connection did not last the block: {peers:?}"
    );
    assert_eq!(after.ok + after.errors, ticks * HOSTS * (HOSTS - 1));
    assert_eq!(
        after.errors, 0,
        "requests after unblocking failed: {:?}",
        after.reasons
    );
}
