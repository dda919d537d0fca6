//! `bcos-p2p run`: one node, driven by stdin commands, reporting events on stdout (the CLI
//! contract in docs/ARCHITECTURE.md). Everything network-side is [`bcos_p2p::node::Node`]; this file
//! only parses commands and prints events.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use anyhow::Context as _;
use bcos_p2p::{
    NodeId, NodeKey, ca_tls,
    config::{Certificates, Config, DEFAULT_MODULE, PeerAddr, Security},
    connection, flood,
    metrics::{MetricsServer, Registry},
    node::{Node, NodeEvent},
    open,
    security::SecurityMode,
    status,
};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt as _;
use tokio::sync::mpsc;

use super::{
    events::{Event, MessageKind, PeerInfo},
    reload::{ReloadSignals, Reloader},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file: TOML (as gen-certs writes), or a FISCO BCOS config.ini (by extension).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (multiaddr or host:port); replaces the config's.
    #[arg(long)]
    listen: Vec<PeerAddr>,
    /// A peer to connect to (multiaddr or host:port); added to the config's.
    #[arg(long)]
    peer: Vec<PeerAddr>,
    /// The chain CA certificate(s).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This node's certificate chain.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This node's private key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The encryption key of a 国密 node (FISCO's sm_enssl.key, 2.x gmennode.key); with
    /// --enc-cert. Checked at start; TLS 1.3 does not use it.
    #[arg(long, requires = "enc_cert")]
    enc_key: Option<PathBuf>,
    /// The encryption certificate of a 国密 node (FISCO's sm_enssl.crt, 2.x gmennode.crt); with
    /// --enc-key.
    #[arg(long, requires = "enc_key")]
    enc_cert: Option<PathBuf>,
    /// Refuse this NodeId.
    #[arg(long)]
    deny: Vec<NodeId>,
    /// Accept only listed NodeIds (when any is given).
    #[arg(long)]
    allow: Vec<NodeId>,
    /// A certificate revocation list (PEM or DER); added to the config's `[certificate] crl`.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// Print one JSON object per line on stdout.
    #[arg(long)]
    json: bool,
    /// Open mode: stock libp2p TLS with the node key as identity, no certificates (sets
    /// `[network] security = "libp2p-tls"`). Open and CA nodes refuse each other.
    #[arg(long)]
    open: bool,
    /// Serve Prometheus metrics on http://IP:PORT/metrics, and the network view on /network
    /// (/peers, /network.json) (port 0: any free port; the `ready` event names the bound
    /// address); replaces the config's `[metrics] listen`.
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<SocketAddr>,
}

impl RunArgs {
    /// The settings, whether to print JSON, and where a reload reads them again.
    fn into_config(self) -> anyhow::Result<(Config, bool, Reloader)> {
        let reloader = Reloader {
            file: self.config.clone(),
            peers: self.peer.clone(),
            deny: self.deny.clone(),
            allow: self.allow.clone(),
            crl: self.crl.clone(),
        };
        let mut config = reloader.load_file()?;
        if !self.listen.is_empty() {
            config.network.listen = self.listen;
        }
        if let Some(p) = self.ca {
            config.certificate.ca = p;
        }
        if let Some(p) = self.cert {
            config.certificate.cert = p;
        }
        if let Some(p) = self.key {
            config.certificate.key = p;
        }
        if let Some(p) = self.enc_key {
            config.certificate.enc_key = Some(p);
        }
        if let Some(p) = self.enc_cert {
            config.certificate.enc_cert = Some(p);
        }
        reloader.add_flags(&mut config);
        if let Some(addr) = self.metrics {
            config.metrics.listen = addr.to_string();
        }
        if self.open {
            config.network.security = Security::Libp2pTls;
        }
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        Ok((config, self.json, reloader))
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Logging first: loading the config may warn (unknown keys).
    super::init_logging(if args.json {
        "warn"
    } else {
        "warn,bcos_p2p=info"
    });
    let (config, json, reloader) = args.into_config()?;
    let c = &config.certificate;
    let (mut node, server) = match config.network.security {
        Security::CaTls => {
            let (key, tls) = ca_tls::Config::load(&c.key, &c.cert, &c.ca).with_context(|| {
                format!(
                    "cannot load key {} / certificate {} / CA {}",
                    c.key.display(),
                    c.cert.display(),
                    c.ca.display()
                )
            })?;
            check_encryption_pair(c, &key, &tls)?;
            let crls = config.read_crls()?;
            tls.set_crls(crls)
                .context("[certificate] crl: a CRL is not usable")?;
            start(key, tls, config).await?
        }
        Security::Libp2pTls => {
            anyhow::ensure!(
                config.certificate.crl.is_empty(),
                "[certificate] crl: CRLs apply to CA-TLS only, not to open mode"
            );
            anyhow::ensure!(
                c.enc_pair().is_none(),
                "[certificate] enc_key / enc_cert: an encryption pair belongs to 国密 nodes in \
                 CA mode, not to open mode"
            );
            let key = NodeKey::from_file(&c.key)
                .with_context(|| format!("cannot load key {}", c.key.display()))?;
            let open = open::Config::new(&key).context("[network] security = \"libp2p-tls\"")?;
            start(key, open, config).await?
        }
    };
    let events = node.events().expect("first call");
    let out = Output { json };
    out.print(&Event::Ready {
        node_id: node.node_id().clone(),
        listen: node.listen_addrs().iter().map(|a| a.to_string()).collect(),
        metrics: server.as_ref().map(|s| s.local_addr().to_string()),
    });
    let mut session = Session {
        node,
        out,
        next_id: 0,
        results: mpsc::unbounded_channel(),
        reloader,
    };
    let outcome = session.drive(events).await;
    session.node.shutdown().await.ok();
    outcome
}

/// Reads and checks the encryption pair of `[certificate]` (`enc_key`, `enc_cert`), if one is
/// given: only a 国密 node (SM2 node key) may have one, and it must be an SM2 key, certified by
/// `enc_cert`, which chains to `ca` and allows key agreement or encipherment. TLS 1.3 (RFC 8998)
/// does not use it; a FISCO node's files are checked so that a broken pair is seen here.
fn check_encryption_pair(
    c: &Certificates,
    key: &NodeKey,
    tls: &ca_tls::Config,
) -> anyhow::Result<()> {
    let Some((enc_key, enc_cert)) = c.enc_pair() else {
        return Ok(());
    };
    let what = || {
        format!(
            "[certificate] enc_key {} / enc_cert {}",
            enc_key.display(),
            enc_cert.display()
        )
    };
    anyhow::ensure!(
        tls.is_sm(),
        "{}: an encryption pair belongs to 国密 nodes (SM2 node key), and this node's key {} is \
         {}: remove enc_key and enc_cert",
        what(),
        c.key.display(),
        key.key_type().label()
    );
    let enc = NodeKey::from_file(enc_key)
        .with_context(|| format!("cannot load the encryption key {}", enc_key.display()))?;
    let chain = ca_tls::read_pem_certs(enc_cert).with_context(|| {
        format!(
            "cannot load the encryption certificate {}",
            enc_cert.display()
        )
    })?;
    let anchors = ca_tls::read_pem_certs(&c.ca)
        .with_context(|| format!("cannot load the CA {}", c.ca.display()))?;
    // The agency of the signing chain (FISCO 2.x's gmnode.crt carries it) may sign it too.
    let agency = &tls.local_chain()[1..];
    ca_tls::pki::check_encryption_pair(&enc, &chain, &anchors, agency).with_context(what)?;
    tracing::info!(enc_cert = %enc_cert.display(), "国密 encryption pair checked (not used by TLS 1.3)");
    Ok(())
}

/// Starts the node, and its metrics server when the config asks for one (it stops when
/// dropped).
async fn start(
    key: NodeKey,
    security: impl SecurityMode,
    config: Config,
) -> anyhow::Result<(Node, Option<MetricsServer>)> {
    Ok(match config.metrics.listen_addr() {
        Some(addr) => {
            let mut registry = Registry::default();
            let node = Node::start_with_metrics(key, security, config, &mut registry).await?;
            let server = MetricsServer::bind_with_node(addr, Arc::new(registry), node.clone())
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            (node, Some(server))
        }
        None => (Node::start_secured(key, security, config).await?, None),
    })
}

/// Prints events: one JSON object per line, or a line for people.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn print(&self, event: &Event) {
        use std::io::Write as _;
        let line = if self.json {
            event.to_json()
        } else {
            event.to_human()
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn error(&self, message: impl std::fmt::Display) {
        self.print(&Event::Error {
            message: message.to_string(),
        });
    }
}

struct Session {
    node: Node,
    out: Output,
    /// Ids of `request` and `topic-request` commands, counted from 1.
    next_id: u64,
    /// Events finished by spawned tasks (responses), printed by the main loop.
    results: (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
    /// Reads the settings again on SIGHUP or SIGUSR1.
    reloader: Reloader,
}

fn text(data: &Bytes) -> String {
    String::from_utf8_lossy(data).into_owned()
}

impl Session {
    async fn drive(
        &mut self,
        mut events: impl futures::Stream<Item = NodeEvent> + Unpin,
    ) -> anyhow::Result<()> {
        let mut stdin = stdin_lines();
        let mut stdin_open = true;
        let mut terminate = terminate_signal()?;
        let mut reloads = ReloadSignals::new()?;
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(event) => self.on_event(event).await,
                    None => anyhow::bail!("the node stopped"),
                },
                Some(event) = self.results.1.recv() => self.out.print(&event),
                line = stdin.recv(), if stdin_open => match line {
                    // The data is the rest of the line, trailing spaces included.
                    Some(line) => {
                        if !self.on_command(line.trim_start()).await {
                            return Ok(());
                        }
                    }
                    // EOF (or an unreadable stdin) does not stop the node: only `quit` or a signal.
                    None => stdin_open = false,
                },
                _ = &mut interrupt => return Ok(()),
                _ = terminate.recv() => return Ok(()),
                () = reloads.recv() => {
                    let event = self.reloader.reload(&self.node).await;
                    self.out.print(&event);
                }
            }
        }
    }

    async fn on_event(&mut self, event: NodeEvent) {
        let printed = match event {
            NodeEvent::Connected { node, addr } => Event::Connected {
                node_id: Some(node),
                addr: addr.to_string(),
            },
            NodeEvent::Disconnected { node, reason } => Event::Disconnected {
                node_id: Some(node),
                reason,
            },
            NodeEvent::Refused { addr, reason, node } => Event::Refused {
                addr: addr.to_string(),
                reason: reason.to_string(),
                code: reason.code().to_string(),
                node_id: node,
            },
            NodeEvent::Connection(connection::Event::Banned {
                node,
                duration,
                offence,
                ..
            }) => Event::Banned {
                node_id: node,
                for_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                reason: offence.as_str().to_string(),
            },
            NodeEvent::Connection(e) => {
                // Not part of the JSON contract; people get the manager's decisions in the log.
                match e {
                    connection::Event::Ping { .. } | connection::Event::Dialing { .. } => {
                        tracing::debug!(?e, "connection manager")
                    }
                    e => tracing::info!(event = ?e, "connection manager"),
                }
                return;
            }
            NodeEvent::Request {
                from,
                module,
                payload,
                responder,
            } => {
                let data = text(&payload);
                let mut echo = b"echo:".to_vec();
                echo.extend_from_slice(&payload);
                if let Err(e) = responder.respond(echo.into()).await {
                    self.out.error(format!("cannot answer a request: {e}"));
                }
                Event::Request { from, module, data }
            }
            NodeEvent::Oneway {
                from,
                module,
                payload,
            } => Event::Oneway {
                from,
                module,
                data: text(&payload),
            },
            NodeEvent::Flood(flood::Event::Message {
                origin,
                topic,
                payload,
                hops,
                ..
            }) => Event::Message {
                kind: if topic.is_some() {
                    MessageKind::Multicast
                } else {
                    MessageKind::Broadcast
                },
                topic: topic.map(|t| t.to_string()),
                from: origin,
                data: text(&payload),
                hops,
            },
            NodeEvent::Status(status::Event::StatusUpdated {
                node, seq, payload, ..
            }) => Event::Status {
                node_id: node,
                seq,
                data: text(&payload),
            },
            NodeEvent::Flood(_) | NodeEvent::Status(_) => return,
        };
        self.out.print(&printed);
    }

    /// Handles one stdin command; returns false to stop.
    async fn on_command(&mut self, line: &str) -> bool {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (arg, data) = rest.split_once(' ').unwrap_or((rest, ""));
        let node = &self.node;
        let result: Result<(), String> = match command {
            "" => Ok(()),
            "quit" => return false,
            "peers" => match node.peers().await {
                Ok(peers) => {
                    let peers = peers
                        .into_iter()
                        .map(|p| PeerInfo {
                            node_id: Some(p.node),
                            addr: p.addr.to_string(),
                            status_seq: p.status_seq,
                            routed: p.relays.is_some(),
                            relays: p.relays.unwrap_or_default(),
                        })
                        .collect();
                    self.out.print(&Event::Peers { peers });
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            "request" | "oneway" | "deny" | "allow" => match arg.parse::<NodeId>() {
                Err(e) => Err(format!("{command}: {e}")),
                Ok(id) => match command {
                    "request" => {
                        self.spawn_request(id, DEFAULT_MODULE, rest_after(rest));
                        Ok(())
                    }
                    "oneway" => node
                        .oneway(&id, DEFAULT_MODULE, Bytes::from(rest_after(rest)))
                        .await
                        .map_err(|e| e.to_string()),
                    "deny" => node.deny(&id).await.map(drop).map_err(|e| e.to_string()),
                    _ => node.allow(&id).await.map(drop).map_err(|e| e.to_string()),
                },
            },
            "request-to" | "oneway-to" => match module_and_node(rest) {
                Err(e) => Err(format!("{command}: {e}")),
                Ok((module, id, data)) if command == "request-to" => {
                    self.spawn_request(id, module, data.to_string());
                    Ok(())
                }
                Ok((module, id, data)) => node
                    .oneway(&id, module, Bytes::from(data.to_string()))
                    .await
                    .map_err(|e| e.to_string()),
            },
            "subscribe" => node
                .subscribe(arg)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            "unsubscribe" => node
                .unsubscribe(arg)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            "multicast" => node
                .multicast(arg, Bytes::from(data.to_string()))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            "broadcast" => node
                .broadcast(Bytes::from(rest.to_string()))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            "topic-request" => {
                self.spawn_topic_request(arg.to_string(), data.to_string());
                Ok(())
            }
            "status" => node
                .set_status(Bytes::from(rest.to_string()))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "unknown command `{other}` (request, oneway, request-to, oneway-to, subscribe, unsubscribe, multicast, broadcast, topic-request, status, peers, deny, allow, quit)"
            )),
        };
        if let Err(message) = result {
            self.out.error(message);
        }
        true
    }

    fn spawn_request(&mut self, to: NodeId, module: u16, data: String) {
        self.next_id += 1;
        let (id, node, done) = (self.next_id, self.node.clone(), self.results.0.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let result = node.request(&to, module, Bytes::from(data)).await;
            let _ = done.send(response(id, start, result.map(|r| (None, r))));
        });
    }

    fn spawn_topic_request(&mut self, topic: String, data: String) {
        self.next_id += 1;
        let (id, node, done) = (self.next_id, self.node.clone(), self.results.0.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let result = node
                .topic_request(&topic, DEFAULT_MODULE, Bytes::from(data))
                .await;
            let _ = done.send(response(id, start, result.map(|(n, r)| (Some(n), r))));
        });
    }
}

/// Stdin's lines (without the line end), read on a thread of their own: tokio's stdin reads on
/// its blocking pool, and a read in progress there cannot be cancelled, so a signal would leave
/// the runtime's shutdown waiting for the next line. The channel closes at EOF or a read error.
fn stdin_lines() -> mpsc::Receiver<String> {
    use std::io::BufRead as _;
    // Bounded: a flood of commands waits in the pipe, not in memory.
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What follows the first word of `rest` (the data of `request`/`oneway`).
/// `<module> <node_id> <data>` of `request-to` / `oneway-to`.
fn module_and_node(rest: &str) -> Result<(u16, NodeId, &str), String> {
    let (module, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (node, data) = rest.split_once(' ').unwrap_or((rest, ""));
    let module = module
        .parse::<u16>()
        .map_err(|_| format!("module `{module}` is not a number from 0 to 65535"))?;
    let node = node.parse::<NodeId>().map_err(|e| e.to_string())?;
    Ok((module, node, data))
}

fn rest_after(rest: &str) -> String {
    rest.split_once(' ').map_or("", |(_, d)| d).to_string()
}

fn response(
    id: u64,
    start: Instant,
    result: Result<(Option<NodeId>, Bytes), bcos_p2p::node::NodeError>,
) -> Event {
    match result {
        Ok((node_id, reply)) => Event::Response {
            id,
            ok: true,
            data: Some(text(&reply)),
            error: None,
            rtt_ms: Some(start.elapsed().as_secs_f64() * 1e3),
            node_id,
        },
        Err(e) => Event::Response {
            id,
            ok: false,
            data: None,
            error: Some(e.to_string()),
            rtt_ms: None,
            node_id: None,
        },
    }
}

#[cfg(unix)]
fn terminate_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")
}
