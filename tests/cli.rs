//! The `bcos-p2p` binary as operators and harnesses use it: gen-certs, node-id, run --json, demo.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p");
const TIMEOUT: Duration = Duration::from_secs(30);

/// A running `bcos-p2p run --json`, its stdout lines arriving on a channel. Killed on drop.
struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Node {
    fn start(config: &Path) -> Node {
        let mut child = Command::new(BIN)
            .args(["run", "--json", "--config"])
            .arg(config)
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
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an event matching `pred`; every line must be a JSON object with an `event`.
    fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no `{what}` event within {TIMEOUT:?}; saw {:?}", self.seen)
            });
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
            assert!(v["event"].is_string(), "no event field: {line}");
            self.seen.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends `quit` and waits for a clean exit.
    fn quit(mut self) {
        self.send("quit");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(Instant::now() < deadline, "node did not quit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port p such that p and p+1 are free now.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

fn gen_certs(out: &Path, nodes: usize, base_port: u16) {
    let st = Command::new(BIN)
        .args([
            "gen-certs",
            "--nodes",
            &nodes.to_string(),
            "--base-port",
            &base_port.to_string(),
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

fn read_id(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("node.nodeid"))
        .unwrap()
        .trim()
        .to_string()
}

/// Two `run --json` processes from gen-certs output connect and name each other by NodeId.
#[test]
fn two_run_processes_connect_and_report_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    gen_certs(tmp.path(), 2, port);
    let (d0, d1) = (tmp.path().join("node0"), tmp.path().join("node1"));
    let (id0, id1) = (read_id(&d0), read_id(&d1));

    let mut n0 = Node::start(&d0.join("config.toml"));
    let ready = n0.expect("ready", |v| v["event"] == "ready");
    assert_eq!(ready["node_id"], id0.as_str());
    assert_eq!(ready["listen"][0], format!("/ip4/127.0.0.1/tcp/{port}"));

    let mut n1 = Node::start(&d1.join("config.toml"));
    n1.expect("ready", |v| {
        v["event"] == "ready" && v["node_id"] == id1.as_str()
    });
    n1.expect("connected", |v| {
        v["event"] == "connected" && v["node_id"] == id0.as_str()
    });
    n0.expect("connected", |v| {
        v["event"] == "connected" && v["node_id"] == id1.as_str()
    });

    n0.send("peers");
    let peers = n0.expect("peers", |v| v["event"] == "peers");
    assert_eq!(peers["peers"].as_array().unwrap().len(), 1, "{peers}");
    assert_eq!(peers["peers"][0]["node_id"], id1.as_str());
    n0.send("no-such-command");
    n0.expect("error", |v| {
        v["event"] == "error" && v["message"].as_str().unwrap().contains("no-such-command")
    });

    n1.quit();
    n0.expect("disconnected", |v| {
        v["event"] == "disconnected" && v["node_id"] == id1.as_str()
    });
    n0.quit();
}

/// A node from another chain is refused, and both the JSON event and its reason say so.
#[test]
fn run_reports_refused_connections_with_reason() {
    let (chain, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_port_pair();
    gen_certs(chain.path(), 1, port);
    gen_certs(other.path(), 1, port + 1);
    let mut ours = Node::start(&chain.path().join("node0/config.toml"));
    ours.expect("ready", |v| v["event"] == "ready");
    let stranger_dir = other.path().join("node0");
    let mut stranger = Command::new(BIN)
        .args(["run", "--json", "--config"])
        .arg(stranger_dir.join("config.toml"))
        .args(["--peer", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let refused = ours.expect("refused", |v| v["event"] == "refused");
    let _ = stranger.kill();
    let _ = stranger.wait();
    // The stranger's client side checks our certificate first and aborts: we see its alert.
    assert!(
        refused["reason"].as_str().unwrap().contains("refused"),
        "{refused}"
    );
    assert!(
        refused["addr"]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/tcp/"),
        "{refused}"
    );
    ours.quit();
}

/// `node-id` prints what gen-certs wrote to node.nodeid.
#[test]
fn node_id_command_matches_node_nodeid_file() {
    let tmp = tempfile::tempdir().unwrap();
    gen_certs(tmp.path(), 1, 30300);
    let out = Command::new(BIN)
        .arg("node-id")
        .arg(tmp.path().join("node0/node.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        read_id(&tmp.path().join("node0"))
    );
    // gen-certs never overwrites a chain (its keys would be lost).
    let again = Command::new(BIN)
        .args(["gen-certs", "--nodes", "1", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a chain"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for secret in ["ca.key", "node0/node.key"] {
            let mode = std::fs::metadata(tmp.path().join(secret))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{secret} is readable by others: {mode:o}");
        }
    }
}

/// `run` fails fast, with a message naming the problem, for bad key material.
#[test]
fn run_fails_fast_on_bad_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    gen_certs(tmp.path(), 2, 30300);
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "run should fail for {args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let p = |s: &str| tmp.path().join(s).display().to_string();
    let (key0, crt1, ca) = (p("node0/node.key"), p("node1/node.crt"), p("ca.crt"));
    let err = run(&[
        "--key",
        &key0,
        "--cert",
        &crt1,
        "--ca",
        &ca,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("does not belong to this key"), "{err}");
    let err = run(&["--key", &p("missing.key"), "--cert", &crt1, "--ca", &ca]);
    assert!(err.contains("missing.key"), "{err}");
    let err = run(&["--key", &ca, "--cert", &crt1, "--ca", &ca]);
    assert!(err.contains("no private key"), "{err}");
    let err = run(&["--key", &key0, "--cert", &key0, "--ca", &ca]);
    assert!(err.contains("no PEM certificate"), "{err}");
}

/// The demo runs a small network and exits 0, showing connections and refusals.
#[test]
fn demo_shows_a_mesh_and_refusals() {
    let out = Command::new(BIN)
        .args(["demo", "--nodes", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("full mesh: 3 connections"), "{stdout}");
    assert!(stdout.contains("NodeId is on the deny list"), "{stdout}");
    assert!(stdout.contains("not issued by a trusted CA"), "{stdout}");
}
