//! Interop with js-libp2p, a libp2p implementation no one here wrote (issue #8).
//!
//! - `bcos-p2p-interop` and `interop/js/interop.mjs` run the libp2p/test-plans transport-interop
//!   contract against each other in both directions, coordinated by a real `redis-server`;
//!   each dialer must print exactly `{"handshakePlusOneRTTMillis":..,"pingRTTMilllis":..}`.
//! - The js dialer's identify must report our node's protocols.
//! - `interop/js/unicast-client.mjs`, written from `protocols/unicast/SPEC.md` alone, talks
//!   `/bcos/unicast/1.0.0` to `bcos-p2p run --open`: an echoed request, a one-way message and
//!   the error for a module the node does not serve.
//!
//! Needs Node >= 20 with npm, and `redis-server` (`.ci/run` installs them). Without them, or
//! when `npm ci` cannot reach the registry, each test says `SKIPPED: <test>: <why>` on the
//! terminal (past cargo's capture) and passes; with `BCOS_P2P_REQUIRE_ALL=1` it fails.

#[path = "common/skip.rs"]
mod skip;

use std::{
    io::{BufRead as _, BufReader, Read},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
};

use bcos_p2p::NodeId;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p");
const INTEROP_BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p-interop");
/// `test_timeout_seconds` given to both sides; every wait below is bounded by it or less.
const TEST_TIMEOUT_S: u64 = 60;
/// How long `npm ci` may take.
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(300);
const UNICAST: &str = "/bcos/unicast/1.0.0";

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/js")
}

/// Why the js tests cannot run here, if they cannot; checked (and `npm ci` run) once.
fn js_unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| prepare_js().err()).as_deref()
}

fn prepare_js() -> Result<(), String> {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node is not installed ({e})"))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cannot read the node version from {version:?}"))?;
    if major < 20 {
        return Err(format!(
            "node {version} is too old (js-libp2p 3 needs >= 20)"
        ));
    }
    Command::new("redis-server")
        .arg("--version")
        .output()
        .map_err(|e| format!("redis-server is not installed ({e})"))?;
    if installed() {
        return Ok(());
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(js_dir());
    let out = run_bounded(npm, NPM_CI_TIMEOUT)
        .map_err(|e| format!("npm is not installed, and interop/js has no node_modules ({e})"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let offline = [
        "ENOTFOUND",
        "EAI_AGAIN",
        "ECONNREFUSED",
        "ECONNRESET",
        "ETIMEDOUT",
        "ENETUNREACH",
        "network",
    ];
    if let Some(line) = stderr
        .lines()
        .find(|l| offline.iter().any(|s| l.contains(s)))
    {
        return Err(format!("npm ci cannot reach the registry: {}", line.trim()));
    }
    panic!("npm ci failed in {}: {stderr}", js_dir().display());
}

/// Whether `npm ci` has installed interop/js's lockfile (as `.ci/run` decides: npm writes
/// `node_modules/.package-lock.json` after an install).
fn installed() -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(js_dir().join("node_modules/.package-lock.json")),
        modified(js_dir().join("package-lock.json")),
    ) {
        (Some(install), Some(lock)) => install >= lock,
        _ => false,
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
fn run_bounded(cmd: Command, limit: Duration) -> std::io::Result<Output> {
    let mut proc = Proc::try_spawn("npm", cmd)?;
    proc.wait(limit);
    Ok(proc.into_output())
}

/// Reports why a test does not run (see [`skip`]); true if it should return.
fn skipped() -> bool {
    match js_unavailable() {
        Some(why) => {
            skip::skip(
                why,
                "apt-get install -y nodejs npm redis-server (Node >= 20; the test runs npm ci)",
            );
            true
        }
        None => false,
    }
}

/// A child process whose stdout and stderr are collected by threads (stderr also echoed, for
/// failure messages). Killed on drop.
struct Proc {
    name: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    out_lines: Vec<String>,
    err_lines: Vec<String>,
}

impl Proc {
    fn new(name: impl Into<String>, mut child: Child) -> Proc {
        fn pump(
            name: String,
            from: impl Read + Send + 'static,
            echo: bool,
        ) -> mpsc::Receiver<String> {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[{name}] {line}");
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        }
        let name = name.into();
        let stdout = pump(name.clone(), child.stdout.take().expect("piped"), false);
        let stderr = pump(name.clone(), child.stderr.take().expect("piped"), true);
        Proc {
            name,
            child,
            stdout,
            stderr,
            out_lines: Vec::new(),
            err_lines: Vec::new(),
        }
    }

    /// Spawns `cmd` with its output collected and no input.
    fn try_spawn(name: impl Into<String>, mut cmd: Command) -> std::io::Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Proc::new(name, child))
    }

    fn spawn(name: impl Into<String>, cmd: Command) -> Proc {
        let name = name.into();
        Proc::try_spawn(name.clone(), cmd).unwrap_or_else(|e| panic!("{name} does not start: {e}"))
    }

    /// Waits up to `limit` for the process to exit (killing it then), and for its output.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes close when the process is gone; collect what is left.
        let end = Instant::now() + Duration::from_secs(5);
        for (rx, lines) in [
            (&self.stdout, &mut self.out_lines),
            (&self.stderr, &mut self.err_lines),
        ] {
            while let Ok(line) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                lines.push(line);
            }
        }
        status
    }

    /// The next stdout line within `limit`.
    fn next_line(&mut self, limit: Duration) -> Option<String> {
        let line = self.stdout.recv_timeout(limit).ok()?;
        self.out_lines.push(line.clone());
        Some(line)
    }

    fn into_output(mut self) -> Output {
        let status = self.wait(Duration::ZERO);
        Output {
            status,
            stdout: self.out_lines.join("\n").into_bytes(),
            stderr: self.err_lines.join("\n").into_bytes(),
        }
    }

    /// Fails the test unless the process exited successfully within `limit`.
    fn expect_success(&mut self, limit: Duration) {
        let status = self.wait(limit);
        assert!(
            status.success(),
            "{} exited with {status}; stdout: {:?}",
            self.name,
            self.out_lines
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` on a free loopback port, in memory only, killed on drop.
struct Redis {
    _proc: Proc,
    _dir: tempfile::TempDir,
    addr: String,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path());
            let mut proc = Proc::spawn("redis", cmd);
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(&addr).is_ok() {
                    return Redis {
                        _proc: proc,
                        _dir: dir,
                        addr,
                    };
                }
                if proc.child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            proc.wait(Duration::ZERO);
        }
        panic!("redis-server did not start");
    }
}

/// Which implementation runs a transport-interop role.
#[derive(Clone, Copy)]
enum Peer {
    /// `bcos-p2p-interop`.
    Ours,
    /// `interop/js/interop.mjs` (js-libp2p).
    Js,
}

/// A transport-interop peer with the test-plans environment, running as dialer or listener.
fn interop(peer: Peer, is_dialer: bool, redis: &Redis) -> Proc {
    let role = if is_dialer { "dialer" } else { "listener" };
    let (name, mut cmd) = match peer {
        Peer::Ours => (
            format!("bcos-p2p-interop {role}"),
            Command::new(INTEROP_BIN),
        ),
        Peer::Js => {
            let mut c = Command::new("node");
            c.args(["--import", "./polyfill.mjs", "interop.mjs"])
                .current_dir(js_dir());
            (format!("js {role}"), c)
        }
    };
    cmd.env("transport", "tcp")
        .env("security", "tls")
        .env("muxer", "yamux")
        .env("is_dialer", is_dialer.to_string())
        .env("ip", "127.0.0.1")
        .env("redis_addr", &redis.addr)
        .env("test_timeout_seconds", TEST_TIMEOUT_S.to_string());
    Proc::spawn(name, cmd)
}

/// Checks a dialer's stdout: exactly one line, the contract's JSON object; returns its figures.
fn interop_result(dialer: &Proc) -> (f64, f64) {
    let [line] = dialer.out_lines.as_slice() else {
        panic!(
            "{}: want one line on stdout, got {:?}",
            dialer.name, dialer.out_lines
        )
    };
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["handshakePlusOneRTTMillis", "pingRTTMilllis"],
        "{line}"
    );
    let figure = |k: &str| {
        let n = obj[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number: {line}"));
        assert!(n.is_finite() && n >= 0.0, "{k} = {n}: {line}");
        n
    };
    let (handshake, ping) = (
        figure("handshakePlusOneRTTMillis"),
        figure("pingRTTMilllis"),
    );
    assert!(
        ping <= handshake,
        "one ping RTT is part of handshake+RTT: {line}"
    );
    (handshake, ping)
}

/// The `identify {...}` line a js peer logged on stderr.
fn identify_line(js: &Proc) -> Value {
    let line = js
        .err_lines
        .iter()
        .find_map(|l| l.split_once(" identify ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("{} logged no identify result", js.name));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("identify line not JSON: {line}: {e}"))
}

fn protocols(identify: &Value) -> Vec<&str> {
    identify["protocols"]
        .as_array()
        .expect("protocols")
        .iter()
        .map(|p| p.as_str().expect("a protocol is a string"))
        .collect()
}

/// How long a dialer may take: the contract's timeout, and a margin for process start.
fn dialer_limit() -> Duration {
    Duration::from_secs(TEST_TIMEOUT_S + 15)
}

/// One transport-interop run, started as the test-plans harness does (both peers at once):
/// checks the dialer's line, prints its figures, and returns the finished dialer.
fn run_interop(listener: Peer, dialer: Peer) -> Proc {
    let redis = Redis::start();
    let listener = interop(listener, false, &redis);
    let mut dialer = interop(dialer, true, &redis);
    dialer.expect_success(dialer_limit());
    let (handshake, ping) = interop_result(&dialer);
    eprintln!(
        "FIGURES {} -> {}: handshakePlusOneRTTMillis {handshake}, pingRTTMilllis {ping}",
        dialer.name, listener.name
    );
    dialer
}

/// Our interop listener, a js dialer: the dialer prints the contract's line, and its identify
/// sees our node's protocols.
#[test]
fn js_dialer_to_our_listener() {
    if skipped() {
        return;
    }
    let dialer = run_interop(Peer::Ours, Peer::Js);
    let identify = identify_line(&dialer);
    let protocols = protocols(&identify);
    eprintln!("js identify of our listener: {identify}");
    for p in ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", UNICAST] {
        assert!(protocols.contains(&p), "{p} not in {protocols:?}");
    }
}

/// A js listener, our interop dialer: ours prints the contract's line.
#[test]
fn our_dialer_to_js_listener() {
    if skipped() {
        return;
    }
    run_interop(Peer::Js, Peer::Ours);
}

/// The js client's frame codec (interop/js/unicast.mjs) against the spec's byte layout and the
/// frames a receiver must refuse: its own unit tests, `node --test`.
#[test]
fn js_unicast_codec_unit_tests() {
    if skipped() {
        return;
    }
    let mut cmd = Command::new("node");
    cmd.args(["--test", "test/"]).current_dir(js_dir());
    Proc::spawn("node --test", cmd).expect_success(Duration::from_secs(60));
}

/// `bcos-p2p run --open --json` on a fresh key, listening on a loopback port; returns it with
/// its NodeId and a multiaddr to dial it at (ending in `/p2p/<PeerId>`).
fn open_node(dir: &Path) -> (Proc, String, String) {
    let out = Command::new(BIN)
        .args(["gen-certs", "--nodes", "1", "--out"])
        .arg(dir.join("chain"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "--json",
        "--open",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--key",
    ])
    .arg(dir.join("chain/node0/node.key"));
    let mut node = Proc::spawn("bcos-p2p run --open", cmd);
    let line = node
        .next_line(Duration::from_secs(TEST_TIMEOUT_S))
        .expect("a ready event");
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["event"], "ready", "{line}");
    let node_id = ready["node_id"].as_str().unwrap().to_string();
    let peer = node_id.parse::<NodeId>().unwrap().to_peer_id();
    let listen = ready["listen"][0].as_str().unwrap();
    (node, node_id, format!("{listen}/p2p/{peer}"))
}

/// Reads the node's events until, for each `(event, data)` of `wanted`, one such event for
/// module 1 from `from` came, in any order, for at most `limit`.
fn expect_from(node: &mut Proc, limit: Duration, from: &str, wanted: &[(&str, &str)]) {
    let mut missing = wanted.to_vec();
    let deadline = Instant::now() + limit;
    while !missing.is_empty() {
        let Some(line) = node.next_line(deadline.saturating_duration_since(Instant::now())) else {
            panic!(
                "no {missing:?} from the client within {limit:?}; the node printed {:?}",
                node.out_lines
            );
        };
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        missing.retain(|(event, data)| {
            !(v["event"] == *event && v["from"] == from && v["module"] == 1 && v["data"] == *data)
        });
    }
}

/// The js unicast client (written from SPEC.md) against `bcos-p2p run --open`: a one-way
/// message and a request to module 1 arrive with the client's NodeId, the request is answered
/// `echo:<data>`, and a request to a module the node does not serve gets the spec's error.
#[test]
fn js_unicast_client_to_run_open() {
    if skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut node, node_id, target) = open_node(dir.path());

    let mut cmd = Command::new("node");
    cmd.args([
        "--import",
        "./polyfill.mjs",
        "unicast-client.mjs",
        "--timeout",
        "30",
    ])
    .arg(&target)
    .args([
        "oneway:1:note from js",
        "request:1:hello: from js",
        "request:4242:anyone?",
    ])
    .current_dir(js_dir());
    let mut client = Proc::spawn("js unicast client", cmd);
    client.expect_success(Duration::from_secs(45));

    let lines: Vec<Value> = client
        .out_lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let [ready, answers @ ..] = lines.as_slice() else {
        panic!("no output from the client")
    };
    assert_eq!(ready["event"], "ready");
    let client_id = ready["node_id"].as_str().unwrap().to_string();
    let by_id = |id: u64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer to request {id}: {answers:?}"))
    };
    assert_eq!(answers.len(), 2, "{answers:?}");
    let echo = by_id(1);
    assert_eq!(echo["event"], "response", "{echo}");
    assert_eq!(echo["module"], 1, "{echo}");
    assert_eq!(echo["data"], "echo:hello: from js", "{echo}");
    let error = by_id(2);
    assert_eq!(error["event"], "error", "{error}");
    assert_eq!(error["reason"], "no handler for module 4242", "{error}");
    eprintln!(
        "FIGURES js unicast client -> bcos-p2p run --open: request RTT {} ms, error RTT {} ms",
        echo["rtt_ms"], error["rtt_ms"]
    );

    let identify = identify_line(&client);
    eprintln!("js identify of `bcos-p2p run --open` {node_id}: {identify}");
    let protocols = protocols(&identify);
    assert!(
        protocols.contains(&UNICAST),
        "{UNICAST} not in {protocols:?}"
    );

    expect_from(
        &mut node,
        Duration::from_secs(10),
        &client_id,
        &[("oneway", "note from js"), ("request", "hello: from js")],
    );
}
