//! A `bcos-p2p run --json` child process driven line by line from a test (synchronously):
//! stdout events arrive on a channel and are matched in any order; stdin takes commands.
//! Shared by tests/cli.rs and tests/metrics.rs (tests/common/process.rs is the async driver the
//! attack tests use, which reads RSS and keeps stderr).

use std::{
    collections::VecDeque,
    ffi::OsStr,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::Path,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The `bcos-p2p` binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p");
/// Longest wait for one event or for the exit.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A running `bcos-p2p run --json`, its stdout lines arriving on a channel. Killed on drop.
pub struct Node {
    /// The process (tests kill it, or check it ran on).
    pub child: Child,
    /// Run on every event (a contract check), or nothing.
    check: fn(&Value),
    /// Its stdin (`None` once a test closed it).
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every event printed so far, for failure messages.
    seen: Vec<Value>,
    /// Events printed but not yet matched by an `expect`: events may come in any order.
    pub pending: VecDeque<Value>,
}

impl Node {
    /// `bcos-p2p run --json` with `args`; `check` sees every event printed.
    pub fn spawn<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I, check: fn(&Value)) -> Node {
        let mut child = Command::new(BIN)
            .args(["run", "--json"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bcos-p2p runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Node {
            child,
            check,
            stdin,
            lines,
            seen: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// The next line printed within `wait`, checked against the contract (every line is a JSON
    /// object with a known `event` and that event's fields).
    pub fn next_event(&mut self, wait: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(wait).ok()?;
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        (self.check)(&v);
        self.seen.push(v.clone());
        Some(v)
    }

    /// Waits for an event matching `pred` (already printed and not yet matched, or to come).
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).expect("found");
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(v) = self.next_event(left) else {
                panic!("no `{what}` event within {TIMEOUT:?}; saw {:?}", self.seen)
            };
            if pred(&v) {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// Waits for `event` about each of `ids` (its `node_id`), in any order.
    pub fn expect_each(&mut self, event: &str, ids: &[impl AsRef<str>]) -> Vec<Value> {
        ids.iter()
            .map(|id| {
                let id = id.as_ref();
                self.expect(&format!("{event} {}", short(id)), |v| {
                    v["event"] == event && v["node_id"] == id
                })
            })
            .collect()
    }

    /// Keeps what is printed within `window` for later `expect`s.
    pub fn drain(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while let Some(v) = self.next_event(deadline.saturating_duration_since(Instant::now())) {
            self.pending.push_back(v);
        }
    }

    /// Fails if an event matching `pred` was printed and not matched, or is printed within
    /// `window`.
    pub fn expect_none(&mut self, what: &str, window: Duration, pred: impl Fn(&Value) -> bool) {
        self.drain(window);
        if let Some(v) = self.pending.iter().find(|v| pred(v)) {
            panic!("unexpected {what}: {v}");
        }
    }

    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends `peers` and waits for the answer: also a barrier, as commands run in order.
    pub fn peers(&mut self) -> Vec<Value> {
        self.send("peers");
        let peers = self.expect("peers", |v| v["event"] == "peers");
        peers["peers"].as_array().unwrap().clone()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `quit` and waits for a clean exit.
    pub fn quit(mut self) {
        self.send("quit");
        let status = self.wait_exit();
        assert!(status.success(), "exit status {status}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first 8 characters of a NodeId, for messages.
pub fn short(id: &str) -> &str {
    &id[..8.min(id.len())]
}

/// A port p such that p..p+n are free now.
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p.checked_add(n).is_some()
            && (1..n).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        {
            return p;
        }
    }
    panic!("no {n} free ports in a row");
}

/// `bcos-p2p gen-certs` for `nodes` nodes listening from `base_port` up, into `out`.
pub fn gen_certs(out: &Path, nodes: usize, base_port: u16) {
    gen_certs_of(out, nodes, base_port, "secp256k1");
}

/// `bcos-p2p gen-certs` with keys of `key_type` (a `--key-type` name).
pub fn gen_certs_of(out: &Path, nodes: usize, base_port: u16, key_type: &str) {
    let st = Command::new(BIN)
        .args([
            "gen-certs",
            "--nodes",
            &nodes.to_string(),
            "--base-port",
            &base_port.to_string(),
            "--key-type",
            key_type,
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}
