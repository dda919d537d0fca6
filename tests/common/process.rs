//! A `bcos-p2p run --json` child process: its events, its memory (RSS from /proc) and its exit,
//! apart from the test process that attacks or drives it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The `bcos-p2p` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p");

/// A running `bcos-p2p run --json --config FILE`; stderr goes to a file. Killed on drop.
pub struct RunProcess {
    child: Child,
    stdin: ChildStdin,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: PathBuf,
    /// The `ready` event's `node_id`.
    pub node_id: String,
    /// The `ready` event's first listen address.
    pub listen: libp2p::Multiaddr,
}

impl RunProcess {
    /// Starts the node and waits (at most `wait`) for its `ready` event.
    pub async fn start(config: &Path, stderr: &Path, wait: Duration) -> RunProcess {
        let mut child = Command::new(BIN)
            .args(["run", "--json", "--config"])
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).expect("stderr file"))
            .spawn()
            .expect("bcos-p2p runs");
        let stdout = child.stdout.take().expect("piped");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Value::String(format!("not JSON ({e}): {line}")));
                sink.lock().unwrap().push(v);
            }
        });
        let stdin = child.stdin.take().expect("piped");
        let mut p = RunProcess {
            child,
            stdin,
            events,
            stderr: stderr.to_path_buf(),
            node_id: String::new(),
            listen: libp2p::Multiaddr::empty(),
        };
        let ready = p.wait_for("ready", wait, |v| v["event"] == "ready").await;
        p.node_id = ready["node_id"].as_str().expect("node_id").to_string();
        p.listen = ready["listen"][0]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("a listen address");
        p
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident set size in KiB (`VmRSS` of /proc/PID/status), while the process lives.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How many events printed so far match `pred`.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| pred(v))
            .count()
    }

    /// The first event matching `pred`, waiting at most `wait` for it; panics naming `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(v) = self.events.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no `{what}` event within {wait:?}; stderr:\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the node logged so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends a stdin command.
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("stdin open");
        self.stdin.flush().expect("stdin open");
    }

    /// Sends `quit` and waits (at most `wait`) for the exit; returns its status and stderr.
    pub async fn quit(mut self, wait: Duration) -> (ExitStatus, String) {
        self.send("quit");
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return (status, self.stderr_text());
            }
            assert!(Instant::now() < deadline, "the node did not quit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident set size of process `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
