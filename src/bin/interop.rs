//! `bcos-p2p-interop`: the ping test of libp2p/test-plans `transport-interop`, so bcos-p2p can be
//! checked against any libp2p implementation in that harness (and against itself).
//!
//! Configured by environment variables, as the harness passes them:
//!
//! | variable | values |
//! | --- | --- |
//! | `transport` | `tcp` |
//! | `security` | `tls` (stock libp2p TLS, open mode) or `bcos-tls` (our CA-TLS) |
//! | `muxer` | `yamux` |
//! | `is_dialer` | `true` / `false` |
//! | `ip` | listen IP (default `0.0.0.0`) |
//! | `redis_addr` | `host:port` of the coordinating Redis (default `redis:6379`) |
//! | `test_timeout_seconds` | the whole test's limit (default 180) |
//! | `bcos_key`, `bcos_cert`, `bcos_ca` | `bcos-tls`: node.key, node.crt, ca.crt (`gen-certs` output); `bcos_key` alone may set the key for `tls` |
//!
//! The listener `RPUSH`es its address (`.../p2p/<PeerId>`) to the Redis list `listenerAddr` and
//! serves until the timeout (or until it is stopped). The dialer `BLPOP`s the address, dials,
//! waits for the first ping and prints only
//! `{"handshakePlusOneRTTMillis":..,"pingRTTMilllis":..}` on stdout (the harness's names). Logs
//! go to stderr; any failure or timeout exits non-zero with the reason.
//!
//! The swarm runs identify, ping and bcos-p2p's unicast, flood and status protocols (so a
//! stock peer sees them in identify); the listener answers unicast requests with
//! `echo:<data>`, as `bcos-p2p run` does. There is no connection manager: stock peers usually
//! have Ed25519 keys, which have no NodeId.

use std::{
    net::IpAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use bcos_p2p::{
    KeyType, NodeIdBook, NodeKey,
    behaviour::{PROTOCOL_VERSION, build_swarm_with},
    ca_tls,
    config::{Config, flood_config, status_config, unicast_config},
    connection, flood, open, status, unicast,
};
use bytes::Bytes;
use futures::StreamExt as _;
use libp2p::{
    Multiaddr, PeerId, Swarm, identify,
    multiaddr::Protocol,
    ping,
    swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle},
};

/// The Redis list the listener's address goes to (the harness's name).
const LISTENER_ADDR_KEY: &str = "listenerAddr";
/// How long the listener collects the addresses of a `0.0.0.0` listener before picking one.
const LISTEN_SETTLE: Duration = Duration::from_millis(200);
/// How long the dialer waits for the listener's identify after the ping, to log its protocols.
const IDENTIFY_WAIT: Duration = Duration::from_secs(1);
/// Pause between attempts to reach Redis (it may start after us in a harness).
const REDIS_RETRY: Duration = Duration::from_millis(100);
/// How long one attempt to connect to Redis may take.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(NetworkBehaviour)]
struct Interop {
    ping: ping::Behaviour,
    identify: Toggle<identify::Behaviour>,
    unicast: unicast::Behaviour,
    flood: flood::Behaviour,
    status: status::Behaviour,
}

impl Interop {
    fn new(key: &NodeKey, book: &NodeIdBook) -> Interop {
        let config = Config::default();
        Interop {
            ping: ping::Behaviour::default(),
            // The harness's keys are secp256k1; an SM2 key (no libp2p key) runs without identify.
            identify: Toggle::from(key.keypair().map(|keypair| {
                identify::Behaviour::new(
                    identify::Config::new(PROTOCOL_VERSION.into(), keypair.public())
                        .with_agent_version(format!(
                            "bcos-p2p-interop/{}",
                            env!("CARGO_PKG_VERSION")
                        )),
                )
            })),
            unicast: unicast::Behaviour::new(unicast_config(&config), book.clone()),
            flood: flood::Behaviour::new(key, flood_config(&config), book.clone()),
            status: status::Behaviour::new(status_config(&config), book.clone()),
        }
    }
}

/// The security the harness asked for (`security`).
enum Security {
    /// `tls`: stock libp2p TLS (bcos-p2p's open mode).
    Open(open::Config),
    /// `bcos-tls`: CA-TLS with the given certificates.
    CaTls(ca_tls::Config),
}

/// The test's settings, from the environment.
struct Settings {
    security: Security,
    key: NodeKey,
    is_dialer: bool,
    ip: IpAddr,
    redis_addr: String,
    timeout: Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> anyhow::Result<String> {
    var(name).ok_or_else(|| anyhow!("environment variable `{name}` is not set"))
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let transport = required("transport")?;
        if transport != "tcp" {
            bail!("transport `{transport}` is not supported (only `tcp`)");
        }
        let muxer = required("muxer")?;
        if muxer != "yamux" {
            bail!("muxer `{muxer}` is not supported (only `yamux`)");
        }
        let is_dialer = match required("is_dialer")?.as_str() {
            "true" => true,
            "false" => false,
            other => bail!("is_dialer `{other}` is not `true` or `false`"),
        };
        let ip = var("ip").unwrap_or_else(|| "0.0.0.0".into());
        let ip: IpAddr = ip
            .parse()
            .with_context(|| format!("ip `{ip}` is not an IP address"))?;
        let redis_addr = var("redis_addr").unwrap_or_else(|| "redis:6379".into());
        let timeout = match var("test_timeout_seconds") {
            None => 180,
            Some(s) => s
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=86_400).contains(s))
                .ok_or_else(|| anyhow!("test_timeout_seconds `{s}` is not 1 to 86400"))?,
        };
        let (key, security) = match required("security")?.as_str() {
            "tls" => {
                let key = match var("bcos_key") {
                    Some(path) => NodeKey::from_file(&path)
                        .with_context(|| format!("cannot load bcos_key {path}"))?,
                    None => NodeKey::generate(KeyType::Secp256k1)?,
                };
                // Stock peers usually have Ed25519 keys: accept them without a NodeId.
                let open = open::Config::new(&key)?.require_node_id(false);
                (key, Security::Open(open))
            }
            "bcos-tls" => {
                let (k, c, a) = (
                    required("bcos_key")?,
                    required("bcos_cert")?,
                    required("bcos_ca")?,
                );
                let (key, tls) = ca_tls::Config::load(&k, &c, &a).with_context(|| {
                    format!("cannot load bcos_key {k} / bcos_cert {c} / bcos_ca {a}")
                })?;
                (key, Security::CaTls(tls))
            }
            other => bail!("security `{other}` is not supported (`tls` or `bcos-tls`)"),
        };
        Ok(Settings {
            security,
            key,
            is_dialer,
            ip,
            redis_addr,
            timeout: Duration::from_secs(timeout),
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let outcome = Settings::from_env().and_then(|settings| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(run(settings))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bcos-p2p-interop: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let timeout = settings.timeout;
    let key = &settings.key;
    let swarm = match &settings.security {
        Security::Open(open) => {
            build_swarm_with(key, open, |_| Interop::new(key, open.node_ids()))?
        }
        Security::CaTls(tls) => build_swarm_with(key, tls, |_| Interop::new(key, tls.node_ids()))?,
    };
    tracing::info!(
        peer = %swarm.local_peer_id(),
        node_id = %key.node_id(),
        dialer = settings.is_dialer,
        "bcos-p2p-interop starting"
    );
    let redis = redis::Client::open(format!("redis://{}/", settings.redis_addr))
        .with_context(|| format!("redis_addr `{}`", settings.redis_addr))?;
    let test = async {
        if settings.is_dialer {
            dial(swarm, &redis, timeout).await
        } else {
            listen(swarm, &redis, settings.ip, timeout).await
        }
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, test) => match r {
            Ok(r) => r,
            Err(_) if !settings.is_dialer => {
                tracing::info!("test timeout reached: the listener stops");
                Ok(())
            }
            Err(_) => bail!("the test did not finish within test_timeout_seconds = {}", timeout.as_secs()),
        },
        () = stop_signal() => {
            tracing::info!("stopped by a signal");
            Ok(())
        }
    }
}

/// SIGINT or SIGTERM (the harness stops the listener once the dialer is done).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A connection to Redis, retried until it answers or `deadline` (it may start after us).
async fn connect_redis(
    redis: &redis::Client,
    deadline: Instant,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    // BLPOP blocks until the listener publishes: no response timeout (redis-rs defaults to
    // 500 ms); the caller's deadline bounds the wait instead.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT));
    let mut logged = false;
    loop {
        match redis
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() + REDIS_RETRY >= deadline => {
                bail!("cannot reach Redis: {e}")
            }
            Err(e) => {
                if !logged {
                    tracing::info!(error = %e, "Redis not reachable yet; retrying");
                    logged = true;
                }
            }
        }
        tokio::time::sleep(REDIS_RETRY).await;
    }
}

async fn listen(
    mut swarm: Swarm<Interop>,
    redis: &redis::Client,
    ip: IpAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let addr = Multiaddr::from(ip).with(Protocol::Tcp(0));
    swarm
        .listen_on(addr.clone())
        .with_context(|| format!("cannot listen on {addr}"))?;
    // A 0.0.0.0 listener reports one address per interface: prefer one that is not loopback.
    let mut addrs = Vec::new();
    let mut settle = None;
    loop {
        let until = settle.unwrap_or_else(|| tokio::time::Instant::now() + timeout);
        match tokio::time::timeout_at(until, swarm.select_next_some()).await {
            Err(_) => break,
            Ok(SwarmEvent::NewListenAddr { address, .. }) => {
                addrs.push(address);
                settle.get_or_insert_with(|| tokio::time::Instant::now() + LISTEN_SETTLE);
            }
            Ok(SwarmEvent::ListenerClosed { reason, .. }) => {
                bail!("the listener on {addr} closed: {reason:?}")
            }
            Ok(SwarmEvent::ListenerError { error, .. }) => {
                bail!("the listener on {addr} failed: {error}")
            }
            Ok(other) => tracing::debug!(?other, "event while starting to listen"),
        }
    }
    let chosen = addrs
        .iter()
        .find(|a| !is_loopback(a))
        .or(addrs.first())
        .ok_or_else(|| anyhow!("no listen address on {addr}"))?
        .clone()
        .with(Protocol::P2p(*swarm.local_peer_id()));
    let mut conn = connect_redis(redis, Instant::now() + timeout).await?;
    let _: i64 = redis::cmd("RPUSH")
        .arg(LISTENER_ADDR_KEY)
        .arg(chosen.to_string())
        .query_async(&mut conn)
        .await
        .context("RPUSH listenerAddr")?;
    tracing::info!(addr = %chosen, "listening; address published in Redis");
    loop {
        let event = swarm.select_next_some().await;
        on_event(&mut swarm, event);
    }
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// Logs what happens on a swarm (the listener's life, and the dialer's apart from the ping);
/// answers unicast requests with `echo:<data>`.
fn on_event(swarm: &mut Swarm<Interop>, event: SwarmEvent<InteropEvent>) {
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } => {
            tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected")
        }
        SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
            tracing::info!(peer = %peer_id, cause = ?cause, "connection closed")
        }
        SwarmEvent::IncomingConnectionError {
            send_back_addr,
            error,
            ..
        } => {
            tracing::warn!(from = %send_back_addr, reason = %refusal_text(&error), "incoming connection failed")
        }
        SwarmEvent::Behaviour(InteropEvent::Ping(ping::Event { peer, result, .. })) => match result
        {
            Ok(rtt) => tracing::info!(%peer, ?rtt, "ping"),
            Err(e) => tracing::warn!(%peer, error = %e, "ping failed"),
        },
        SwarmEvent::Behaviour(InteropEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => log_identify(peer_id, &info),
        SwarmEvent::Behaviour(InteropEvent::Unicast(unicast::Event::Request {
            from,
            module,
            payload,
            channel,
        })) => {
            tracing::info!(from = %from.short(), module, bytes = payload.len(), "unicast request");
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&payload);
            if let Err(e) = swarm
                .behaviour_mut()
                .unicast
                .respond(channel, Bytes::from(reply))
            {
                tracing::warn!(error = %e, "unicast reply not sent");
            }
        }
        other => tracing::debug!(?other, "swarm event"),
    }
}

fn log_identify(peer: PeerId, info: &identify::Info) {
    let protocols: Vec<String> = info.protocols.iter().map(|p| p.to_string()).collect();
    tracing::info!(
        %peer,
        agent = %info.agent_version,
        protocols = %protocols.join(" "),
        "identify"
    );
}

/// A failed connection's reason: the security refusal when there is one (it names a mode
/// mismatch), else libp2p's error chain.
fn refusal_text(error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(u) = ca_tls::UpgradeError::find(error) {
        return u.to_string();
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn dial(
    mut swarm: Swarm<Interop>,
    redis: &redis::Client,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut conn = connect_redis(redis, Instant::now() + timeout).await?;
    let popped: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(LISTENER_ADDR_KEY)
        .arg(timeout.as_secs_f64())
        .query_async(&mut conn)
        .await
        .context("BLPOP listenerAddr")?;
    let (_, text) = popped.ok_or_else(|| {
        anyhow!(
            "no listener address in Redis within {} s",
            timeout.as_secs()
        )
    })?;
    let addr: Multiaddr = text
        .parse()
        .with_context(|| format!("listener address `{text}` is not a multiaddr"))?;
    tracing::info!(%addr, "dialling the listener");
    let start = Instant::now();
    swarm
        .dial(addr.clone())
        .with_context(|| format!("cannot dial {addr}"))?;
    let mut identified = false;
    let (handshake_plus_rtt, rtt, listener) = loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(InteropEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => break (start.elapsed(), rtt, peer),
            SwarmEvent::Behaviour(InteropEvent::Ping(ping::Event { result: Err(e), .. })) => {
                bail!("ping failed: {e}")
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                let reason = match connection::dial_refusal(&error) {
                    Some((_, refusal)) => refusal.to_string(),
                    None => refusal_text(&error),
                };
                bail!("cannot connect to {addr}: {reason}")
            }
            SwarmEvent::ConnectionClosed { cause, .. } => {
                bail!("the connection closed before the first ping: {cause:?}")
            }
            SwarmEvent::Behaviour(InteropEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                identified = true;
                log_identify(peer_id, &info);
            }
            other => on_event(&mut swarm, other),
        }
    };
    tracing::info!(peer = %listener, ?handshake_plus_rtt, ?rtt, "ping done");
    if !identified {
        let wait =
            tokio::time::timeout(IDENTIFY_WAIT, async {
                loop {
                    match swarm.select_next_some().await {
                        SwarmEvent::Behaviour(InteropEvent::Identify(
                            identify::Event::Received { peer_id, info, .. },
                        )) => break log_identify(peer_id, &info),
                        other => on_event(&mut swarm, other),
                    }
                }
            });
        if wait.await.is_err() {
            tracing::warn!("no identify from the listener within {IDENTIFY_WAIT:?}");
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "handshakePlusOneRTTMillis": millis(handshake_plus_rtt),
            "pingRTTMilllis": millis(rtt),
        })
    );
    Ok(())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
