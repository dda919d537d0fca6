//! `run`'s reload on SIGHUP or SIGUSR1: the config file is read again and its peers, access
//! lists and CRLs (with the command line's `--peer`, `--deny`, `--allow` and `--crl` added, as
//! at start) replace the running ones through [`Node::reload`]. A file that cannot be read or
//! is invalid changes nothing and is reported as an `error` event.

use std::path::PathBuf;

use anyhow::Context as _;
use bcos_p2p::{
    NodeId,
    config::{Config, PeerAddr},
    connection::Reloaded,
    node::Node,
};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::events::Event;

/// Where the settings come from: the file given at start and the command line's additions.
#[derive(Debug, Clone, Default)]
pub struct Reloader {
    pub file: Option<PathBuf>,
    pub peers: Vec<PeerAddr>,
    pub deny: Vec<NodeId>,
    pub allow: Vec<NodeId>,
    pub crl: Vec<PathBuf>,
}

impl Reloader {
    /// Adds the command line's settings to a config read from the file.
    pub fn add_flags(&self, config: &mut Config) {
        config.network.peers.extend(self.peers.iter().cloned());
        config.access.deny.extend(self.deny.iter().cloned());
        config.access.allow.extend(self.allow.iter().cloned());
        config.certificate.crl.extend(self.crl.iter().cloned());
    }

    /// Reads the settings again and hands them to the node; the event to print.
    pub async fn reload(&self, node: &Node) -> Event {
        match self.apply(node).await {
            Ok(done) => {
                tracing::info!(?done, "reloaded");
                Event::Reloaded {
                    added: done.added.iter().map(|a| a.to_string()).collect(),
                    removed: done.removed.iter().map(|a| a.to_string()).collect(),
                    closed: done.closed,
                    crls: done.crls,
                }
            }
            Err(e) => {
                let message = format!("reload: {e:#}");
                tracing::error!("{message}; the running settings stay");
                Event::Error { message }
            }
        }
    }

    /// The config file's settings (the defaults without one); unknown keys are logged.
    pub fn load_file(&self) -> anyhow::Result<Config> {
        Ok(match &self.file {
            Some(path) => {
                let (config, unknown) = Config::load(path)?;
                for warning in unknown {
                    tracing::warn!(file = %path.display(), "{warning}");
                }
                config
            }
            None => Config::default(),
        })
    }

    async fn apply(&self, node: &Node) -> anyhow::Result<Reloaded> {
        let mut config = self.load_file()?;
        self.add_flags(&mut config);
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        let settings = config.reload_settings()?;
        Ok(node.reload(settings).await?)
    }
}

/// SIGHUP and SIGUSR1, either of which asks for a reload.
pub struct ReloadSignals {
    hangup: Signal,
    user1: Signal,
}

impl ReloadSignals {
    pub fn new() -> anyhow::Result<Self> {
        Ok(ReloadSignals {
            hangup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
            user1: signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?,
        })
    }

    /// The next reload signal.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.hangup.recv() => {}
            _ = self.user1.recv() => {}
        }
    }
}
