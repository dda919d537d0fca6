//! `bcos-p2p-traffic`: a node that loads its links with a chain's traffic mix and measures how
//! long each kind of request waits for its answer, so that one class's traffic holding up
//! another's (a consensus answer queued behind a block) shows as a number.
//!
//! ```text
//! bcos-p2p-traffic --config node0/config.toml     # one per host, configs from gen-certs
//! ```
//!
//! The classes, each a unicast module this node serves and sends to every connected peer:
//!
//! | class | module | requests | answer |
//! | --- | --- | --- | --- |
//! | consensus | 1000 | `--consensus-bytes` (200), `--consensus-per-s` (20) per peer | the request, at once |
//! | tx | 2001 | `--tx-bytes` (1024), `--tx-per-s` (200) per peer | its first 8 bytes |
//! | block | 2000 | 8 bytes, `--blocks-outstanding` (1) waiting per peer at all times | `--block-bytes` (32 MiB less the frame header: the largest answer the default `max_message_size` lets through) |
//!
//! The config must serve the three modules (`[unicast] modules = [1000, 2000, 2001]`); a 32 MiB
//! answer shared three ways on a 100 Mbit/s link takes about 8 s, so `request_timeout_ms`
//! wants more than its default 10 s.
//!
//! Driven on stdin, one command a line: `start` sends traffic to the peers connected then, for
//! `--warmup-ms` (3000) and then `--measure-ms` (20000); `quit` (or end of input) stops. Prints
//! one JSON object a line on stdout: `ready` (with `node_id`), `connected` / `disconnected`
//! (with the peer's `node_id`), and once every request sent has ended (or could not end in the
//! request timeout and 5 s more), `report`:
//!
//! - per class (`consensus`, `tx`, `block`), over the requests sent during the measured time:
//!   `sent`, `ok`, `failed` (explicit errors, by reason in `errors`), `wrong` (answers that do
//!   not match their request), `unanswered` (neither, by the deadline: lost silently), and
//!   `p50_ms`, `p99_ms`, `max_ms` from send to answer with `ms` the times themselves; a failed
//!   request counts with its time to failure, so timeouts raise the percentiles rather than
//!   leave them;
//! - for block sync also: `ok_by_peer` (answers from each peer, over the whole run), `bytes`
//!   (answer bytes received over the whole run), `mb_per_s` (those bytes over the time from
//!   the first block request to the last answer, in 10^6 bytes/s: nothing was in flight before
//!   the first, nor after the last, so this is what the links carried on average), and
//!   `window_mb_per_s` (answers completed in the measured time, over its length);
//! - `ping`: the connections' ping round trips in the measured time (`count`, `p50_ms`,
//!   `max_ms`, `ms`): ping has a stream of its own, so this is the wait that the links, TCP and
//!   the muxer add, below any one unicast stream's queue;
//! - `served` (requests answered per class), `cpu_s` (this process's CPU time), `window_ms`.
//!
//! Peers keep being answered after the report, until `quit`: others may still be waiting.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bcos_p2p::{
    NodeId, NodeKey, ca_tls,
    config::{Config, Security},
    connection,
    node::{Node, NodeEvent},
    open,
    unicast::codec::HEADER_LEN,
};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    sync::mpsc,
};

/// Consensus messages: small, and every one holds up a round until answered.
const CONSENSUS: u16 = 1000;
/// Block sync: the largest answers.
const BLOCK: u16 = 2000;
/// Transactions: a steady stream of small ones.
const TX: u16 = 2001;
/// How long past the request timeout the report waits for requests still running.
const GRACE: Duration = Duration::from_secs(5);
/// A block request that failed at once (say, no connection) is retried after this long.
const RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
#[command(
    name = "bcos-p2p-traffic",
    version,
    about = "Loads a node's links with consensus, transaction and block-sync traffic and reports each class's latency"
)]
struct Args {
    /// Node config (TOML as gen-certs writes it) serving modules 1000, 2000 and 2001.
    #[arg(long)]
    config: PathBuf,
    /// Traffic before the measured time, not counted.
    #[arg(long, default_value_t = 3000)]
    warmup_ms: u64,
    /// The measured time: requests sent in it are reported.
    #[arg(long, default_value_t = 20000)]
    measure_ms: u64,
    /// Consensus requests per second to each peer.
    #[arg(long, default_value_t = 20.0)]
    consensus_per_s: f64,
    /// Size of a consensus request (and of its answer).
    #[arg(long, default_value_t = 200)]
    consensus_bytes: usize,
    /// Transaction requests per second to each peer.
    #[arg(long, default_value_t = 200.0)]
    tx_per_s: f64,
    /// Size of a transaction request.
    #[arg(long, default_value_t = 1024)]
    tx_bytes: usize,
    /// Size of a block answer.
    #[arg(long, default_value_t = (32 << 20) - HEADER_LEN)]
    block_bytes: usize,
    /// Block requests kept waiting for an answer to each peer.
    #[arg(long, default_value_t = 1)]
    blocks_outstanding: usize,
}

/// The request classes, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Consensus,
    Tx,
    Block,
}

impl Class {
    const ALL: [Class; 3] = [Class::Consensus, Class::Tx, Class::Block];

    fn name(self) -> &'static str {
        match self {
            Class::Consensus => "consensus",
            Class::Tx => "tx",
            Class::Block => "block",
        }
    }

    fn module(self) -> u16 {
        match self {
            Class::Consensus => CONSENSUS,
            Class::Tx => TX,
            Class::Block => BLOCK,
        }
    }
}

/// How a request ended.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// An answer that does not match the request.
    Wrong,
    Failed(String),
}

/// One request that ended.
#[derive(Debug)]
struct Record {
    class: Class,
    peer: usize,
    /// Sent during the measured time.
    measured: bool,
    sent: Instant,
    ended: Instant,
    outcome: Outcome,
}

/// What the traffic tasks share: the node, the answer size, where records go, and how many
/// measured requests of each class were sent.
struct Traffic {
    node: Node,
    peers: Vec<NodeId>,
    block_bytes: usize,
    records: mpsc::UnboundedSender<Record>,
    sent: [AtomicUsize; 3],
}

impl Traffic {
    /// Sends one request and records how it ended (the node ends every request: an answer, an
    /// error, or a timeout). A measured request is counted as sent before this returns its
    /// future, so the count never lags the requests.
    fn request(
        self: Arc<Self>,
        class: Class,
        peer: usize,
        payload: Bytes,
        measured: bool,
    ) -> impl Future<Output = ()> + Send + 'static {
        if measured {
            self.sent[class as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.send(class, peer, payload, measured)
    }

    async fn send(self: Arc<Self>, class: Class, peer: usize, payload: Bytes, measured: bool) {
        let sent = Instant::now();
        let result = self
            .node
            .request(&self.peers[peer], class.module(), payload.clone())
            .await;
        let ended = Instant::now();
        let outcome = match result {
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(answer) if matches(class, &payload, &answer, self.block_bytes) => Outcome::Ok,
            Ok(_) => Outcome::Wrong,
        };
        let _ = self.records.send(Record {
            class,
            peer,
            measured,
            sent,
            ended,
            outcome,
        });
    }
}

/// Whether `answer` is the one a request of `class` with `payload` must get (block answers:
/// checked by length).
fn matches(class: Class, payload: &[u8], answer: &[u8], block_bytes: usize) -> bool {
    match class {
        Class::Consensus => answer == payload,
        Class::Tx => answer == &payload[..8],
        Class::Block => answer.len() == block_bytes,
    }
}

/// `n` incompressible bytes (random).
fn noise(n: usize) -> Bytes {
    use rand::{Rng as _, SeedableRng as _};
    let mut bytes = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(0).fill_bytes(&mut bytes);
    bytes.into()
}

/// A request payload of `size` bytes (at least 8) starting with `seq`.
fn payload(seq: u64, size: usize) -> Bytes {
    let mut p = vec![0u8; size.max(8)];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    Bytes::from(p)
}

/// `per_s` requests a second of `size` bytes to every peer, on a fixed schedule from `start`
/// for `warmup + measure`; those of the ticks in `measure` count.
async fn periodic(
    traffic: Arc<Traffic>,
    class: Class,
    per_s: f64,
    size: usize,
    start: tokio::time::Instant,
    (warmup, measure): (Duration, Duration),
) {
    if per_s <= 0.0 {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / per_s);
    let warmup_ticks = (warmup.as_secs_f64() * per_s).round() as u64;
    let ticks = warmup_ticks + (measure.as_secs_f64() * per_s).round() as u64;
    let mut seq = 0u64;
    for tick in 0..ticks {
        tokio::time::sleep_until(start + period.mul_f64(tick as f64)).await;
        for peer in 0..traffic.peers.len() {
            seq += 1;
            let request =
                traffic
                    .clone()
                    .request(class, peer, payload(seq, size), tick >= warmup_ticks);
            tokio::spawn(request);
        }
    }
}

/// Keeps one block request waiting at `peer` until `end`: the next is sent when the last ends.
async fn blocks(traffic: Arc<Traffic>, peer: usize, window: (Instant, Instant)) {
    let mut seq = 0u64;
    // Bounded by time: each pass takes at least until its request ends, or RETRY.
    while Instant::now() < window.1 {
        seq += 1;
        let measured = Instant::now() >= window.0;
        let started = Instant::now();
        traffic
            .clone()
            .request(Class::Block, peer, payload(seq, 8), measured)
            .await;
        if started.elapsed() < RETRY {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Runs the traffic to `peers` and returns the report, with the measured time's bounds, once
/// every request has ended, or the request timeout and `GRACE` have passed since the end of the
/// measured time (no request is sent after it).
async fn run_traffic(
    node: Node,
    peers: Vec<NodeId>,
    args: Arc<Args>,
    timeout: Duration,
) -> (Value, (Instant, Instant)) {
    let (records, mut ended) = mpsc::unbounded_channel();
    let traffic = Arc::new(Traffic {
        node,
        peers,
        block_bytes: args.block_bytes,
        records,
        sent: Default::default(),
    });
    let warmup = Duration::from_millis(args.warmup_ms);
    let measure = Duration::from_millis(args.measure_ms);
    let start = Instant::now();
    let window = (start + warmup, start + warmup + measure);
    let spans = (warmup, measure);
    let tokio_start = tokio::time::Instant::from_std(start);
    let mut tasks = tokio::task::JoinSet::new();
    for (class, per_s, size) in [
        (Class::Consensus, args.consensus_per_s, args.consensus_bytes),
        (Class::Tx, args.tx_per_s, args.tx_bytes),
    ] {
        tasks.spawn(periodic(
            traffic.clone(),
            class,
            per_s,
            size,
            tokio_start,
            spans,
        ));
    }
    for peer in 0..traffic.peers.len() {
        for _ in 0..args.blocks_outstanding {
            tasks.spawn(blocks(traffic.clone(), peer, window));
        }
    }
    // Every request ends within the timeout of its sending, or is lost.
    let deadline = tokio::time::Instant::from_std(window.1) + timeout + GRACE;
    // Block loops end with their last request; a lost one would hold them forever.
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {}
    tasks.abort_all();
    let peers = traffic.peers.clone();
    let sent: Vec<usize> = traffic
        .sent
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .collect();
    // Each request task holds the traffic (and so the records' sender) until it has recorded
    // its end: the channel closes when the last one has.
    drop(traffic);
    drop(tasks);
    let mut all = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, ended.recv()).await {
        all.push(r);
    }
    let report = report(&all, &sent, &peers, window, start, args.block_bytes);
    (report, window)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * p).round() as usize])
}

/// The `ping` entry of the report: the round trips `pings` (when, how long) in `window`.
fn ping_report(pings: &[(Instant, Duration)], window: (Instant, Instant)) -> Value {
    let mut times: Vec<f64> = pings
        .iter()
        .filter(|(at, _)| *at >= window.0 && *at < window.1)
        .map(|(_, rtt)| ms(*rtt))
        .collect();
    times.sort_by(f64::total_cmp);
    json!({
        "count": times.len(),
        "p50_ms": percentile(&times, 0.5),
        "max_ms": percentile(&times, 1.0),
        "ms": times,
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn report(
    all: &[Record],
    sent: &[usize],
    peers: &[NodeId],
    window: (Instant, Instant),
    first_block: Instant,
    block_bytes: usize,
) -> Value {
    let mut classes = serde_json::Map::new();
    for class in Class::ALL {
        let mine = || all.iter().filter(move |r| r.class == class);
        let measured: Vec<&Record> = mine().filter(|r| r.measured).collect();
        let mut times: Vec<f64> = measured.iter().map(|r| ms(r.ended - r.sent)).collect();
        times.sort_by(f64::total_cmp);
        let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut ok, mut wrong) = (0, 0);
        for r in &measured {
            match &r.outcome {
                Outcome::Ok => ok += 1,
                Outcome::Wrong => wrong += 1,
                Outcome::Failed(e) => *errors.entry(e).or_default() += 1,
            }
        }
        let failed: usize = errors.values().sum();
        let sent = sent[class as usize];
        let mut entry = json!({
            "module": class.module(),
            "sent": sent,
            "ok": ok,
            "failed": failed,
            "wrong": wrong,
            "unanswered": sent.saturating_sub(measured.len()),
            "errors": errors,
            "p50_ms": percentile(&times, 0.5),
            "p99_ms": percentile(&times, 0.99),
            "max_ms": percentile(&times, 1.0),
            "ms": times,
        });
        if class == Class::Block {
            let answered: Vec<&Record> = mine()
                .filter(|r| matches!(r.outcome, Outcome::Ok))
                .collect();
            let mut by_peer: HashMap<String, usize> =
                peers.iter().map(|p| (p.to_string(), 0)).collect();
            for r in &answered {
                *by_peer.entry(peers[r.peer].to_string()).or_default() += 1;
            }
            let bytes = (answered.len() * block_bytes) as f64;
            let last = answered.iter().map(|r| r.ended).max();
            let span = last.map_or(0.0, |l| (l - first_block).as_secs_f64());
            let in_window = answered
                .iter()
                .filter(|r| r.ended >= window.0 && r.ended < window.1)
                .count();
            let window_s = (window.1 - window.0).as_secs_f64();
            entry["ok_by_peer"] = json!(by_peer);
            entry["bytes"] = json!(bytes);
            entry["mb_per_s"] = json!(if span > 0.0 { bytes / span / 1e6 } else { 0.0 });
            entry["window_mb_per_s"] =
                json!((in_window * block_bytes) as f64 / window_s.max(1e-3) / 1e6);
        }
        classes.insert(class.name().into(), entry);
    }
    json!({
        "event": "report",
        "window_ms": ms(window.1 - window.0),
        "classes": classes,
    })
}

/// This process's CPU time (user and system), from /proc (Linux's USER_HZ is 100).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends at the last ')': state is the first, utime
    // and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn print(v: &Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

async fn start(config: Config) -> anyhow::Result<Node> {
    let c = &config.certificate;
    Ok(match config.network.security {
        Security::CaTls => {
            let (key, tls) = ca_tls::Config::load(&c.key, &c.cert, &c.ca)
                .with_context(|| format!("cannot load key {}", c.key.display()))?;
            tls.set_crls(config.read_crls()?)
                .context("[certificate] crl")?;
            Node::start(key, tls, config).await?
        }
        Security::Libp2pTls => {
            let key = NodeKey::from_file(&c.key)
                .with_context(|| format!("cannot load key {}", c.key.display()))?;
            let open = open::Config::new(&key).context("open mode")?;
            Node::start_secured(key, open, config).await?
        }
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (config, warnings) = Config::load(&args.config)?;
    for w in warnings {
        tracing::warn!("{}: unknown key `{w}`", args.config.display());
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
    let timeout = Duration::from_millis(config.unicast.request_timeout_ms);
    // Incompressible, as the bytes on the wire (which the links cap) must be the payload's.
    let block = noise(args.block_bytes);
    let args = Arc::new(args);
    let mut node = start(config).await?;
    let mut events = node.events().expect("first call");
    print(&json!({"event": "ready", "node_id": node.node_id().to_string()}));
    let mut connected: Vec<NodeId> = Vec::new();
    let mut served = [0u64; 3];
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let (report_tx, mut report_rx) = mpsc::channel::<(Value, (Instant, Instant))>(1);
    let mut started = false;
    // Ping round trips since the start, and when they came; a bounded record.
    let mut pings: Vec<(Instant, Duration)> = Vec::new();
    const MAX_PINGS: usize = 100_000;
    loop {
        tokio::select! {
            line = stdin.next_line() => match line?.as_deref().map(str::trim) {
                Some("start") if started => {
                    print(&json!({"event": "error", "message": "already started"}));
                }
                Some("start") => {
                    started = true;
                    pings.clear();
                    let (node, peers, args) = (node.clone(), connected.clone(), args.clone());
                    let done = report_tx.clone();
                    tokio::spawn(async move {
                        let _ = done.send(run_traffic(node, peers, args, timeout).await).await;
                    });
                }
                Some("quit") | None => break,
                Some("") => {}
                Some(other) => print(&json!({"event": "error", "message": format!("unknown command `{other}` (start, quit)")})),
            },
            Some((mut report, window)) = report_rx.recv() => {
                report["ping"] = ping_report(&pings, window);
                report["node_id"] = json!(node.node_id().to_string());
                report["served"] = json!(Class::ALL.iter().map(|c| (c.name(), served[*c as usize])).collect::<BTreeMap<_, _>>());
                report["cpu_s"] = json!(cpu_seconds());
                print(&report);
            }
            event = events.next() => match event {
                Some(NodeEvent::Request { module, payload, responder, .. }) => {
                    let answer = match module {
                        CONSENSUS => Some((Class::Consensus, payload)),
                        TX if payload.len() >= 8 => Some((Class::Tx, payload.slice(..8))),
                        BLOCK => Some((Class::Block, block.clone())),
                        _ => None,
                    };
                    match answer {
                        Some((class, answer)) => {
                            served[class as usize] += 1;
                            responder.respond(answer).await?;
                        }
                        None => responder.respond_error(format!("module {module}: not this traffic")).await?,
                    }
                }
                Some(NodeEvent::Connected { node: peer, .. }) => {
                    print(&json!({"event": "connected", "node_id": peer.to_string()}));
                    if !connected.contains(&peer) {
                        connected.push(peer);
                    }
                }
                Some(NodeEvent::Disconnected { node: peer, reason }) => {
                    print(&json!({"event": "disconnected", "node_id": peer.to_string(), "reason": reason}));
                    connected.retain(|p| *p != peer);
                }
                Some(NodeEvent::Connection(connection::Event::Ping { rtt, .. })) => {
                    if started && pings.len() < MAX_PINGS {
                        pings.push((Instant::now(), rtt));
                    }
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    node.shutdown().await.ok();
    Ok(())
}

fn main() -> ExitCode {
    bcos_p2p::malloc::tune();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bcos-p2p-traffic: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
