//! The `bcos-p2p` binary as operators and harnesses use it: gen-certs, node-id, run --json, demo.

use std::{
    ffi::OsStr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;

use common::run_json::{Node, free_ports, gen_certs};

const BIN: &str = env!("CARGO_BIN_EXE_bcos-p2p");
const TIMEOUT: Duration = Duration::from_secs(30);

/// `bcos-p2p run --json`, every event checked against the contract.
impl Node {
    fn start(config: &Path) -> Node {
        Node::run([OsStr::new("--config"), config.as_os_str()])
    }

    fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Node {
        Node::spawn(args, check_contract)
    }
}

/// Checks one `run --json` line against the CLI contract: a known event with its fields, of
/// their types, and no others (`oneway`, and `node_id` of a topic request's `response`, are
/// this implementation's extensions).
fn check_contract(v: &Value) {
    fn is_id(f: &Value) -> bool {
        f.as_str()
            .is_some_and(|s| s.len() == 128 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    }
    fn is_strings(f: &Value) -> bool {
        f.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    }
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let event = v["event"]
        .as_str()
        .unwrap_or_else(|| panic!("no event field: {v}"));
    let ok = v["ok"] == true;
    let fields: Vec<(&str, bool)> = match event {
        "ready" => vec![
            ("node_id", is_id(&v["node_id"])),
            (
                "listen",
                v["listen"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string)),
            ),
        ],
        "connected" => vec![
            ("node_id", is_id(&v["node_id"])),
            ("addr", v["addr"].is_string()),
        ],
        "disconnected" => vec![
            ("node_id", is_id(&v["node_id"])),
            ("reason", v["reason"].is_string()),
        ],
        "refused" => vec![
            ("addr", v["addr"].is_string()),
            ("reason", v["reason"].is_string()),
            ("code", v["code"].is_string()),
            ("node_id", v["node_id"].is_null() || is_id(&v["node_id"])),
        ],
        "banned" => vec![
            ("node_id", is_id(&v["node_id"])),
            ("for_ms", v["for_ms"].is_u64()),
            ("reason", v["reason"].is_string()),
        ],
        "request" | "oneway" => vec![
            ("from", is_id(&v["from"])),
            ("module", v["module"].is_u64()),
            ("data", v["data"].is_string()),
        ],
        "response" if ok => {
            let mut f = vec![
                ("id", v["id"].is_u64()),
                ("ok", true),
                ("data", v["data"].is_string()),
                ("rtt_ms", v["rtt_ms"].as_f64().is_some_and(|ms| ms >= 0.0)),
            ];
            if obj.contains_key("node_id") {
                f.push(("node_id", is_id(&v["node_id"])));
            }
            f
        }
        "response" => vec![
            ("id", v["id"].is_u64()),
            ("ok", v["ok"] == false),
            ("error", v["error"].is_string()),
        ],
        "message" => vec![
            ("kind", v["kind"] == "multicast" || v["kind"] == "broadcast"),
            // A multicast names its topic, a broadcast has none.
            (
                "topic",
                if v["kind"] == "multicast" {
                    v["topic"].is_string()
                } else {
                    v["topic"].is_null()
                },
            ),
            ("from", is_id(&v["from"])),
            ("data", v["data"].is_string()),
            ("hops", v["hops"].is_u64()),
        ],
        "status" => vec![
            ("node_id", is_id(&v["node_id"])),
            ("seq", v["seq"].is_u64()),
            ("data", v["data"].is_string()),
        ],
        "peers" => vec![(
            "peers",
            v["peers"].as_array().is_some_and(|peers| {
                peers.iter().all(|p| {
                    p.as_object().is_some_and(|o| o.len() == 3)
                        && is_id(&p["node_id"])
                        && p["addr"].is_string()
                        && (p["status_seq"].is_null() || p["status_seq"].is_u64())
                })
            }),
        )],
        "reloaded" => vec![
            ("added", is_strings(&v["added"])),
            ("removed", is_strings(&v["removed"])),
            (
                "closed",
                v["closed"].as_array().is_some_and(|a| a.iter().all(is_id)),
            ),
            ("crls", v["crls"].is_u64()),
        ],
        "error" => vec![(
            "message",
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
        )],
        other => panic!("unknown event `{other}`: {v}"),
    };
    for (name, good) in &fields {
        assert!(obj.contains_key(*name), "`{event}` without `{name}`: {v}");
        assert!(good, "`{event}` has a bad `{name}`: {v}");
    }
    assert_eq!(
        obj.len(),
        fields.len() + 1,
        "`{event}` has other fields: {v}"
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
    let port = free_ports(2);
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
    let port = free_ports(2);
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
    // A CRL that does not parse stops the node too.
    std::fs::write(p("bad.crl"), "not a CRL").unwrap();
    let crt0 = p("node0/node.crt");
    let err = run(&[
        "--key",
        &key0,
        "--cert",
        &crt0,
        "--ca",
        &ca,
        "--crl",
        &p("bad.crl"),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("bad.crl"), "{err}");
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

/// `demo --sm` runs the same network with SM2 keys and CA, and says what it speaks.
#[test]
fn demo_sm_shows_a_guomi_network() {
    let out = Command::new(BIN)
        .args(["demo", "--sm", "--nodes", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for text in [
        "an SM2 chain CA",
        "encryption pair, checked",
        "TLS_SM4_GCM_SM3",
        "sm2sig_sm3",
        "full mesh: 3 connections",
        "NodeId is on the deny list",
        "not issued by a trusted CA",
        "3 国密 nodes",
    ] {
        assert!(stdout.contains(text), "{text:?} not in {stdout}");
    }
}

/// A new chain of `n` nodes on free ports: its directory, the first port, the NodeIds.
fn chain(n: usize) -> (tempfile::TempDir, u16, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(n as u16);
    gen_certs(dir.path(), n, port);
    let ids = (0..n)
        .map(|i| read_id(&dir.path().join(format!("node{i}"))))
        .collect();
    (dir, port, ids)
}

/// `n` `run --json` processes from one `gen-certs`, each `ready` and connected to all others.
struct Mesh {
    dir: tempfile::TempDir,
    port: u16,
    ids: Vec<String>,
    nodes: Vec<Node>,
}

impl Mesh {
    /// Starts the nodes one after the other, each once the previous ones are connected, so no
    /// two nodes dial each other at once: no duplicate connection closes under a test's
    /// requests (see [`request_right_after_a_simultaneous_start_is_answered`]).
    fn start(n: usize) -> Mesh {
        Mesh::new(n, false)
    }

    /// Starts all nodes at once: every pair dials both ways, and duplicates close.
    fn start_at_once(n: usize) -> Mesh {
        Mesh::new(n, true)
    }

    fn new(n: usize, at_once: bool) -> Mesh {
        let (dir, port, ids) = chain(n);
        let mut mesh = Mesh {
            nodes: Vec::new(),
            dir,
            port,
            ids,
        };
        for i in 0..n {
            mesh.nodes.push(Node::start(&Mesh::config(&mesh.dir, i)));
            if !at_once {
                mesh.await_ready(i);
                let earlier = mesh.ids[..i].to_vec();
                mesh.nodes[i].expect_each("connected", &earlier);
            }
        }
        for i in 0..n {
            if at_once {
                mesh.await_ready(i);
            }
            // Started one by one, each already saw the earlier ones.
            let from = if at_once { 0 } else { i + 1 };
            let others: Vec<String> = mesh
                .others(i)
                .into_iter()
                .filter(|id| !mesh.ids[..from].contains(id))
                .collect();
            mesh.nodes[i].expect_each("connected", &others);
        }
        mesh
    }

    fn config(dir: &tempfile::TempDir, i: usize) -> std::path::PathBuf {
        dir.path().join(format!("node{i}/config.toml"))
    }

    /// Checks node `i`'s `ready`: its NodeId and the listen address gen-certs gave it.
    fn await_ready(&mut self, i: usize) {
        let ready = self.nodes[i].expect("ready", |v| v["event"] == "ready");
        assert_eq!(ready["node_id"], self.ids[i].as_str(), "{ready}");
        let listen = format!("/ip4/127.0.0.1/tcp/{}", self.port as usize + i);
        assert_eq!(ready["listen"], serde_json::json!([listen]), "{ready}");
    }

    /// The NodeIds of every node but `i`.
    fn others(&self, i: usize) -> Vec<String> {
        (0..self.ids.len())
            .filter(|&j| j != i)
            .map(|j| self.ids[j].clone())
            .collect()
    }

    fn id(&self, i: usize) -> String {
        self.ids[i].clone()
    }
}

fn response(id: u64) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == "response" && v["id"] == id
}

fn message(kind: &'static str, data: String) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == "message" && v["kind"] == kind && v["data"] == data.as_str()
}

fn error_containing(text: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == "error" && v["message"].as_str().unwrap().contains(text)
}

/// Multicasts `topic` from node `from` until each of `to` printed one of the messages (the
/// origin learns a new subscription from the subscriber's flooded record, a moment after the
/// `subscribe`).
fn multicast_until_received(mesh: &mut Mesh, from: usize, topic: &str, to: &[usize]) {
    let deadline = Instant::now() + TIMEOUT;
    let mut sent = Vec::new();
    let mut got = vec![false; to.len()];
    while !got.iter().all(|g| *g) {
        assert!(
            Instant::now() < deadline,
            "multicasts on {topic} never arrived at {to:?}"
        );
        let data = format!("{topic} news {}", sent.len());
        mesh.nodes[from].send(&format!("multicast {topic} {data}"));
        sent.push(data);
        for (k, &j) in to.iter().enumerate() {
            let node = &mut mesh.nodes[j];
            let arrived = |v: &Value| {
                v["event"] == "message"
                    && v["kind"] == "multicast"
                    && v["topic"] == topic
                    && sent.iter().any(|d| v["data"] == d.as_str())
            };
            node.drain(Duration::from_millis(if got[k] { 0 } else { 200 }));
            while let Some(i) = node.pending.iter().position(arrived) {
                let v = node.pending.remove(i).unwrap();
                assert_eq!(v["from"], mesh.ids[from].as_str(), "{v}");
                assert!(v["hops"].as_u64().unwrap() >= 1, "{v}");
                got[k] = true;
            }
        }
    }
}

/// Four `run --json` processes from one `gen-certs`: every stdin command, and the JSON events it
/// causes on the sender and on the other nodes.
#[test]
fn four_run_processes_drive_every_command() {
    let mut mesh = Mesh::start(4);
    let (id0, id1, id2, id3) = (mesh.id(0), mesh.id(1), mesh.id(2), mesh.id(3));
    let quiet = Duration::from_millis(300);

    // request: the target prints it and echoes; the sender prints the response, id 1.
    mesh.nodes[0].send(&format!("request {id1} hello,  world "));
    let req = mesh.nodes[1].expect("request", |v| v["event"] == "request");
    assert_eq!(req["from"], id0.as_str(), "{req}");
    assert_eq!(req["module"], 1, "{req}");
    assert_eq!(req["data"], "hello,  world ", "{req}");
    let resp = mesh.nodes[0].expect("response 1", response(1));
    assert_eq!(resp["ok"], true, "{resp}");
    assert_eq!(resp["data"], "echo:hello,  world ", "{resp}");

    // A request to a node that is not connected fails: id 2.
    let stranger = tempfile::tempdir().unwrap();
    gen_certs(stranger.path(), 1, 30300);
    let stranger_id = read_id(&stranger.path().join("node0"));
    mesh.nodes[0].send(&format!("request {stranger_id} anyone?"));
    let resp = mesh.nodes[0].expect("response 2", response(2));
    assert_eq!(resp["ok"], false, "{resp}");

    // Bad NodeIds and unknown commands are errors (and take no request id).
    mesh.nodes[0].send("request 12ab hello");
    mesh.nodes[0].expect("error for a bad NodeId", error_containing("request"));
    for command in ["oneway", "deny", "allow"] {
        mesh.nodes[0].send(&format!("{command} not-a-node-id x"));
        mesh.nodes[0].expect("error for a bad NodeId", error_containing(command));
    }
    mesh.nodes[0].send("frobnicate now");
    mesh.nodes[0].expect(
        "error for an unknown command",
        error_containing("frobnicate"),
    );
    mesh.nodes[0].send(&format!("request {id2} third"));
    let resp = mesh.nodes[0].expect("response 3", response(3));
    assert_eq!(resp["data"], "echo:third", "{resp}");
    mesh.nodes[2].expect("request", |v| {
        v["event"] == "request" && v["data"] == "third"
    });

    // oneway: the target prints it; nothing comes back.
    mesh.nodes[1].send(&format!("oneway {id2} one way only"));
    let oneway = mesh.nodes[2].expect("oneway", |v| v["event"] == "oneway");
    assert_eq!(oneway["from"], id1.as_str(), "{oneway}");
    assert_eq!(oneway["module"], 1, "{oneway}");
    assert_eq!(oneway["data"], "one way only", "{oneway}");

    // request-to / oneway-to: any module. Node 2 serves module 1 only: a request for module 7
    // reaches it and is refused by module (id 4); module 1 is echoed (id 5).
    mesh.nodes[0].send(&format!("request-to 7 {id2} seven"));
    let resp = mesh.nodes[0].expect("response 4", response(4));
    assert_eq!(resp["ok"], false, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("no handler for module 7"),
        "{resp}"
    );
    mesh.nodes[0].send(&format!("request-to 1 {id2} to module one"));
    let resp = mesh.nodes[0].expect("response 5", response(5));
    assert_eq!(resp["data"], "echo:to module one", "{resp}");
    let req = mesh.nodes[2].expect("request-to at its target", |v| {
        v["event"] == "request" && v["data"] == "to module one"
    });
    assert_eq!(req["module"], 1, "{req}");
    mesh.nodes[1].send(&format!("oneway-to 1 {id2} one way, module one"));
    let oneway = mesh.nodes[2].expect("oneway-to", |v| {
        v["event"] == "oneway" && v["data"] == "one way, module one"
    });
    assert_eq!(oneway["module"], 1, "{oneway}");
    for bad in [
        format!("request-to x {id2} y"),
        "oneway-to 1 12ab y".to_string(),
    ] {
        mesh.nodes[0].send(&bad);
        let command = if bad.starts_with("request") {
            "request-to"
        } else {
            "oneway-to"
        };
        mesh.nodes[0].expect(
            "error for a bad module or NodeId",
            error_containing(command),
        );
    }

    // broadcast: every other node prints it, the origin does not.
    mesh.nodes[0].send("broadcast to all nodes");
    for j in 1..4 {
        let m = mesh.nodes[j].expect("broadcast", message("broadcast", "to all nodes".into()));
        assert_eq!(m["from"], id0.as_str(), "{m}");
        // One hop once every view has the full mesh; more while the views still spread.
        assert!((1..=3).contains(&m["hops"].as_u64().unwrap()), "{m}");
    }
    mesh.nodes[0].expect_none("broadcast at its origin", quiet, |v| {
        v["event"] == "message"
    });

    // subscribe on 1 and 2; a multicast from 3 reaches exactly them.
    for j in [1, 2] {
        mesh.nodes[j].send("subscribe blocks");
        mesh.nodes[j].peers();
    }
    multicast_until_received(&mut mesh, 3, "blocks", &[1, 2]);
    for j in [0, 3] {
        mesh.nodes[j].expect_none("multicast at a non-subscriber", quiet, |v| {
            v["event"] == "message"
        });
    }

    // topic-request: answered by a subscriber (id 1 of node 3); a topic nobody subscribes fails.
    mesh.nodes[3].send("topic-request blocks which block?");
    let resp = mesh.nodes[3].expect("response 1", response(1));
    assert_eq!(resp["ok"], true, "{resp}");
    assert_eq!(resp["data"], "echo:which block?", "{resp}");
    let answerer = [1, 2]
        .into_iter()
        .find(|&j| resp["node_id"] == mesh.ids[j].as_str())
        .unwrap_or_else(|| panic!("not answered by a subscriber: {resp}"));
    let req = mesh.nodes[answerer].expect("topic request", |v| v["event"] == "request");
    assert_eq!(req["from"], id3.as_str(), "{req}");
    assert_eq!(req["data"], "which block?", "{req}");
    mesh.nodes[3].send("topic-request nobody-listens hello?");
    let resp = mesh.nodes[3].expect("response 2", response(2));
    assert_eq!(resp["ok"], false, "{resp}");
    assert!(
        resp["error"].as_str().unwrap().contains("nobody-listens"),
        "{resp}"
    );

    // unsubscribe: 2 no longer gets the topic, 1 still does.
    mesh.nodes[2].send("unsubscribe blocks");
    mesh.nodes[2].peers();
    multicast_until_received(&mut mesh, 3, "blocks", &[1]);
    mesh.nodes[2].expect_none("multicast after unsubscribe", quiet, |v| {
        v["event"] == "message"
    });

    // status: every node sets one; the others print it; `peers` then lists its seq.
    for (i, node) in mesh.nodes.iter_mut().enumerate() {
        node.send(&format!("status height {i}"));
    }
    let ids = mesh.ids.clone();
    for (i, node) in mesh.nodes.iter_mut().enumerate() {
        let others = (0..4).filter(|&j| j != i);
        let seqs: Vec<(usize, Option<u64>)> = others
            .map(|j| {
                let data = format!("height {j}");
                let s = node.expect("status", |v| {
                    v["event"] == "status"
                        && v["node_id"] == ids[j].as_str()
                        && v["data"] == data.as_str()
                });
                (j, s["seq"].as_u64())
            })
            .collect();
        let peers = node.peers();
        assert_eq!(peers.len(), 3, "{peers:?}");
        for (j, seq) in seqs {
            let p = peers
                .iter()
                .find(|p| p["node_id"] == ids[j].as_str())
                .unwrap_or_else(|| panic!("node {j} missing in {peers:?}"));
            assert_eq!(p["status_seq"].as_u64(), seq, "{p}");
            let addr = p["addr"].as_str().unwrap();
            assert!(addr.starts_with("/ip4/127.0.0.1/tcp/"), "{p}");
        }
    }

    // deny: both ends disconnect; the denied node keeps redialling and is refused; allow: back.
    mesh.nodes[0].send(&format!("deny {id1}"));
    let d = mesh.nodes[0].expect_each("disconnected", &[&id1]);
    assert!(!d[0]["reason"].as_str().unwrap().is_empty(), "{d:?}");
    mesh.nodes[1].expect_each("disconnected", &[&id0]);
    let refused = mesh.nodes[1].expect("refused", |v| v["event"] == "refused");
    assert!(
        ["rejected_by_peer", "denied"].contains(&refused["code"].as_str().unwrap()),
        "{refused}"
    );
    // The address dialled (with its `/p2p/` suffix when the dial named the peer).
    let addr = refused["addr"].as_str().unwrap();
    assert!(
        addr.starts_with(&format!("/ip4/127.0.0.1/tcp/{}", mesh.port)),
        "{refused}"
    );
    assert_eq!(refused["node_id"], id0.as_str(), "{refused}");
    // The denying side reports the refusal too, naming the denied node.
    let refused = mesh.nodes[0].expect("refused", |v| v["event"] == "refused");
    assert_eq!(refused["code"], "denied", "{refused}");
    assert_eq!(refused["node_id"], id1.as_str(), "{refused}");
    assert_eq!(mesh.nodes[0].peers().len(), 2);
    mesh.nodes[0].send(&format!("allow {id1}"));
    mesh.nodes[0].expect_each("connected", &[&id1]);
    mesh.nodes[1].expect_each("connected", &[&id0]);
    assert_eq!(mesh.nodes[0].peers().len(), 3);

    // quit: exits 0; the others see it leave.
    let last = mesh.nodes.pop().unwrap();
    last.quit();
    for node in &mut mesh.nodes {
        node.expect_each("disconnected", &[&id3]);
    }
    for node in mesh.nodes.drain(..) {
        node.quit();
    }
}

/// `kill -9` one of four nodes and restart it from the same config: the others see it leave,
/// then come back (it dials them). Killed again and restarted without peers to dial, it comes
/// back by the others' redials alone.
#[test]
fn killed_node_restarts_and_rejoins() {
    let mut mesh = Mesh::start(4);
    let victim = mesh.id(3);
    let kill = |mesh: &mut Mesh| {
        let killed = Instant::now();
        mesh.nodes[3].child.kill().unwrap();
        mesh.nodes[3].child.wait().unwrap();
        for i in 0..3 {
            let d = mesh.nodes[i].expect_each("disconnected", &[&victim]);
            eprintln!(
                "node {i}: disconnected {:?} after kill -9",
                killed.elapsed()
            );
            assert!(!d[0]["reason"].as_str().unwrap().is_empty(), "{d:?}");
        }
    };
    let rejoin = |mesh: &mut Mesh, how: &str| {
        let restarted = Instant::now();
        mesh.await_ready(3);
        let others = mesh.others(3);
        mesh.nodes[3].expect_each("connected", &others);
        for i in 0..3 {
            mesh.nodes[i].expect_each("connected", &[&victim]);
            let t = restarted.elapsed();
            eprintln!("node {i}: connected again {t:?} after the restart {how}");
            assert!(t < Duration::from_secs(15), "rejoined after {t:?}");
        }
        // One connection per pair: no churn from both sides dialling at once.
        for node in &mut mesh.nodes {
            node.expect_none("churn after the rejoin", Duration::from_millis(500), |v| {
                v["event"] == "disconnected"
            });
        }
    };

    kill(&mut mesh);
    mesh.nodes[3] = Node::start(&Mesh::config(&mesh.dir, 3));
    rejoin(&mut mesh, "from its config");
    mesh.nodes[0].send(&format!("request {victim} still there?"));
    let resp = mesh.nodes[0].expect("response", response(1));
    assert_eq!(resp["data"], "echo:still there?", "{resp}");

    kill(&mut mesh);
    let d3 = mesh.dir.path().join("node3");
    let file = |f: &str| d3.join(f).into_os_string();
    let listen = format!("127.0.0.1:{}", mesh.port + 3);
    mesh.nodes[3] = Node::run([
        "--key".into(),
        file("node.key"),
        "--cert".into(),
        file("node.crt"),
        "--ca".into(),
        file("ca.crt"),
        "--listen".into(),
        listen.into(),
    ]);
    rejoin(&mut mesh, "without peers (the others redial)");
}

/// A FISCO BCOS 2.x `config.ini` over gen-certs material runs, and connects to a TOML node.
#[test]
fn fisco_config_ini_is_accepted() {
    let (tmp, port, ids) = chain(2);
    let (d0, d1) = (tmp.path().join("node0"), tmp.path().join("node1"));
    let (id0, id1) = (&ids[0], &ids[1]);
    // A FISCO node directory: config.ini, and the certificates in conf/.
    let fisco = tmp.path().join("fisco-node1");
    std::fs::create_dir_all(fisco.join("conf")).unwrap();
    for f in ["node.key", "node.crt", "ca.crt"] {
        std::fs::copy(d1.join(f), fisco.join("conf").join(f)).unwrap();
    }
    let ini = format!(
        "[rpc]\n    channel_listen_port=20200\n    jsonrpc_listen_port=8545\n\
         [p2p]\n    listen_ip=127.0.0.1\n    listen_port={p1}\n    ; nodes to connect to, this one too\n\
         \x20   node.0=127.0.0.1:{port}\n    node.1=127.0.0.1:{p1}\n\
         [certificate_blacklist]\n    ; crl.0 should be nodeid, nodeid's length is 128\n\
         [network_security]\n    ; directory the certificates located in\n    data_path=conf/\n\
         \x20   key=${{data_path}}/node.key\n    cert=${{data_path}}/node.crt\n    ca_cert=${{data_path}}/ca.crt\n",
        p1 = port + 1
    );
    let ini_path = fisco.join("config.ini");
    std::fs::write(&ini_path, ini).unwrap();

    let mut n0 = Node::start(&d0.join("config.toml"));
    n0.expect("ready", |v| v["event"] == "ready");
    let mut n1 = Node::start(&ini_path);
    let ready = n1.expect("ready", |v| v["event"] == "ready");
    assert_eq!(ready["node_id"], id1.as_str(), "{ready}");
    assert_eq!(
        ready["listen"],
        serde_json::json!([format!("/ip4/127.0.0.1/tcp/{}", port + 1)])
    );
    n1.expect_each("connected", &[&id0]);
    n0.expect_each("connected", &[&id1]);
    // Its own address in the list is skipped, not refused.
    n1.expect_none("refusal", Duration::from_millis(300), |v| {
        v["event"] == "refused"
    });
    n1.quit();
    n0.quit();
}

/// EOF on stdin does not stop a node: it keeps answering requests and reporting events.
#[test]
fn stdin_eof_does_not_stop_the_node() {
    let mut mesh = Mesh::start(2);
    let (id0, id1) = (mesh.id(0), mesh.id(1));
    mesh.nodes[1].stdin = None;
    mesh.nodes[0].send(&format!("request {id1} after eof"));
    let resp = mesh.nodes[0].expect("response", response(1));
    assert_eq!(resp["data"], "echo:after eof", "{resp}");
    mesh.nodes[1].expect("request", |v| {
        v["event"] == "request" && v["data"] == "after eof" && v["from"] == id0.as_str()
    });
    assert!(
        mesh.nodes[1].child.try_wait().unwrap().is_none(),
        "exited on EOF"
    );
    mesh.nodes.remove(0).quit();
    mesh.nodes[0].expect_each("disconnected", &[&id0]);
}

/// SIGTERM stops a node cleanly (exit 0) even while its stdin is open and idle.
#[cfg(unix)]
#[test]
fn sigterm_stops_the_node_with_stdin_open() {
    let mut mesh = Mesh::start(2);
    let id1 = mesh.id(1);
    let pid = mesh.nodes[1].child.id().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let status = mesh.nodes[1].wait_exit();
    assert!(status.success(), "exit status {status}");
    mesh.nodes[0].expect_each("disconnected", &[&id1]);
}

/// Two nodes started at once dial each other, and one of the two connections is closed as a
/// duplicate: a request sent as soon as both report `connected` must still be answered.
#[test]
fn request_right_after_a_simultaneous_start_is_answered() {
    for round in 0..20 {
        let mut mesh = Mesh::start_at_once(2);
        let id1 = mesh.id(1);
        mesh.nodes[0].send(&format!("request {id1} round {round}"));
        let resp = mesh.nodes[0].expect("response", response(1));
        assert_eq!(resp["ok"], true, "round {round}: {resp}");
    }
}

/// Node `i`'s reloadable config in `dir` (a gen-certs chain listening from `port`): its peers
/// (by index), its deny list, quick redials. Returns the file.
fn write_config(
    dir: &Path,
    port: u16,
    i: usize,
    peers: &[usize],
    deny: &[&str],
) -> std::path::PathBuf {
    let addr = |j: usize| format!("\"127.0.0.1:{}\"", port as usize + j);
    let peers: Vec<String> = peers.iter().map(|&j| addr(j)).collect();
    let deny: Vec<String> = deny.iter().map(|d| format!("\"{d}\"")).collect();
    let text = format!(
        "[network]\nlisten = [{}]\npeers = [{}]\n[access]\ndeny = [{}]\n\
         [connection]\nredial_min_ms = 100\nredial_max_ms = 300\n",
        addr(i),
        peers.join(", "),
        deny.join(", ")
    );
    let file = dir.join(format!("node{i}/reload.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

fn signal(node: &Node, signal: &str) {
    let pid = node.child.id().to_string();
    let st = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(st.success());
}

/// SIGHUP and SIGUSR1 make `run --config FILE` read FILE again: a new peer is dialled and
/// connects, a removed peer is no longer redialled, a newly denied connected peer's session
/// closes at once; a broken file is reported (`error`) and the node runs on with its settings,
/// still answering requests.
#[test]
fn sighup_and_sigusr1_reload_peers_and_access_lists() {
    let (dir, port, ids) = chain(4);
    let dir = dir.path();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, peers) in [(1, &[][..]), (2, &[]), (0, &[1]), (3, &[0])] {
        let file = write_config(dir, port, i, peers, &[]);
        let mut n = Node::start(&file);
        n.expect("ready", |v| v["event"] == "ready");
        nodes.push(n);
    }
    let [mut n1, mut n2, mut n0, mut n3]: [Node; 4] = nodes.try_into().ok().unwrap();
    n0.expect_each("connected", &[&ids[1], &ids[3]]);

    // node1 out, node2 in, node3 denied.
    let file0 = write_config(dir, port, 0, &[2], &[&ids[3]]);
    signal(&n0, "-HUP");
    let done = n0.expect("reloaded", |v| v["event"] == "reloaded");
    let maddr = |j: usize| format!("/ip4/127.0.0.1/tcp/{}", port as usize + j);
    assert_eq!(done["added"], serde_json::json!([maddr(2)]), "{done}");
    assert_eq!(done["removed"], serde_json::json!([maddr(1)]), "{done}");
    assert_eq!(done["closed"], serde_json::json!([ids[3]]), "{done}");
    assert_eq!(done["crls"], 0, "{done}");
    n0.expect_each("connected", &[&ids[2]]);
    n0.expect_each("disconnected", &[&ids[3]]);
    n3.expect_each("disconnected", &[&ids[0]]);
    n0.expect("refused denied", |v| {
        v["event"] == "refused" && v["code"] == "denied" && v["node_id"] == ids[3].as_str()
    });

    // node1's connection stayed (as an ordinary peer's); once node1 restarts, nobody dials it.
    let file1 = write_config(dir, port, 1, &[], &[]);
    drop(n1);
    n0.expect_each("disconnected", &[&ids[1]]);
    n1 = Node::start(&file1);
    n1.expect("ready", |v| v["event"] == "ready");
    n0.expect_none(
        "connected to the removed peer",
        Duration::from_secs(3),
        |v| v["event"] == "connected" && v["node_id"] == ids[1].as_str(),
    );

    // A broken file: an error, and the node runs on with what it had.
    std::fs::write(&file0, "[network\npeers = 3\n").unwrap();
    signal(&n0, "-USR1");
    let error = n0.expect("reload error", |v| v["event"] == "error");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("reload: "), "{error}");
    assert!(message.contains("reload.toml"), "{error}");
    n2.send(&format!("request {} still here", ids[0]));
    let reply = n2.expect("response", response(1));
    assert_eq!(reply["data"], "echo:still here", "{reply}");
    n0.drain(Duration::from_millis(500));
    n0.pending.clear();
    n0.expect("refused denied", |v| {
        v["event"] == "refused" && v["code"] == "denied" && v["node_id"] == ids[3].as_str()
    });

    // SIGUSR1 with a good file: node3 allowed again, and it comes back by its own redials.
    write_config(dir, port, 0, &[2], &[]);
    signal(&n0, "-USR1");
    let done = n0.expect("reloaded", |v| v["event"] == "reloaded");
    assert_eq!(done["added"], serde_json::json!([]), "{done}");
    assert_eq!(done["closed"], serde_json::json!([]), "{done}");
    n0.expect_each("connected", &[&ids[3]]);
    n0.quit();
    n1.quit();
    n2.quit();
    n3.quit();
}
