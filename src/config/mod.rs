//! Node configuration: a TOML file, or a FISCO BCOS `config.ini`, checked before use.
//!
//! [`Config::load`] picks the format by the file's extension, maps it, checks every value
//! ([`Config::validate`]) and returns the unknown keys as warnings. The reference below is also
//! `docs/config.md` (the same text, included), and a test holds its TOML example equal to
//! [`Config::default`].
//!
//! The parts: the file's tables (`sections`), address parsing and checks ([`PeerAddr`]), the
//! rules of [`Config::validate`], the FISCO `config.ini` import, and the mapping of the file
//! onto each part of bcos-p2p ([`unicast_config`], `connection::Config::from`, ...).
//!
#![doc = include_str!("../../docs/config.md")]

mod addr;
mod fisco;
mod fisco_cert;
mod fisco_flow;
mod map;
mod sections;
mod traffic;
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use addr::PeerAddr;
pub use map::{flood_config, route_config, status_config, unicast_config};
pub use sections::{
    Access, Certificates, Connection, Flood, Metrics, Network, Route, Security, Status, Unicast,
};
pub use traffic::{ALL_MODULES, Traffic};
pub use validate::{MAX_MESSAGE_SIZE, MAX_MS, MIN_MESSAGE_SIZE};

/// Default TCP port of the first node (FISCO BCOS's P2P port).
pub const DEFAULT_PORT: u16 = 30300;

/// The unicast module id the CLI's `request` and `oneway` use, and `run` serves by default.
pub const DEFAULT_MODULE: u16 = 1;

/// A whole node configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Addresses.
    pub network: Network,
    /// Key and certificates.
    pub certificate: Certificates,
    /// Deny/allow lists.
    pub access: Access,
    /// Dialling, redialling, liveness and limits.
    pub connection: Connection,
    /// Request/response.
    pub unicast: Unicast,
    /// Multicast and broadcast.
    pub flood: Flood,
    /// Status sync.
    pub status: Status,
    /// Routed connections and relaying.
    pub route: Route,
    /// Priorities, chunks, compression and limits of unicast traffic.
    pub traffic: Traffic,
    /// The Prometheus endpoint of `bcos-p2p run`.
    pub metrics: Metrics,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Which key and why.
        message: String,
    },
}

impl Config {
    /// Loads a configuration file: a FISCO BCOS `config.ini` when the name ends in `.ini` (any
    /// case), TOML otherwise. Relative paths become relative to the file's directory, and the
    /// result is validated. Returns the config and the warnings (unknown keys, FISCO settings
    /// bcos-p2p does not use), to be shown to the operator.
    pub fn load(path: impl AsRef<Path>) -> Result<(Config, Vec<String>), ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let is_ini = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ini"));
        let parsed = if is_ini {
            Config::from_fisco_ini(&text, base)
        } else {
            Config::parse(&text).map(|(mut config, warnings)| {
                config.certificate.resolve_relative_to(base);
                (config, warnings)
            })
        };
        parsed.map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates TOML text; returns the config and the unknown keys (as dotted
    /// paths, e.g. `network.lisen`). Certificate paths are left as written.
    pub fn parse(text: &str) -> Result<(Config, Vec<String>), String> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        let config: Config = serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
            .map_err(|e| e.to_string())?;
        config.validate()?;
        Ok((config, unknown))
    }

    /// Maps and validates the text of a FISCO BCOS 2.x or 3.x `config.ini` whose directory is
    /// `base_dir`: paths in it are relative to `base_dir`, and `nodes_file` is read from there.
    /// Returns the config and the warnings. The mapping is described in the module docs.
    pub fn from_fisco_ini(
        text: &str,
        base_dir: impl AsRef<Path>,
    ) -> Result<(Config, Vec<String>), String> {
        fisco::import(text, base_dir.as_ref())
    }

    /// The TOML text of this config.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The reference text (module docs and `docs/config.md` alike).
    const REFERENCE: &str = include_str!("../../docs/config.md");

    /// The fenced blocks of `lang` in the reference, in order.
    fn blocks(lang: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current: Option<String> = None;
        for line in REFERENCE.lines() {
            match &mut current {
                None if line.trim() == format!("```{lang}") => current = Some(String::new()),
                Some(text) if line.trim() == "```" => {
                    out.push(std::mem::take(text));
                    current = None;
                }
                Some(text) => {
                    text.push_str(line);
                    text.push('\n');
                }
                None => {}
            }
        }
        out
    }

    #[test]
    fn documented_example_lists_every_key_with_its_default() {
        let example = &blocks("toml")[0];
        let (config, unknown) = Config::parse(example).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(config, Config::default());
        // Every key is written out: the example's table is the default's, key for key.
        let documented: toml::Table = example.parse().unwrap();
        let default: toml::Table = Config::default().to_toml().parse().unwrap();
        assert_eq!(documented, default);
    }

    #[test]
    fn documented_fisco_examples_map_as_documented() {
        let ini = blocks("ini");
        let (config, warnings) = Config::from_fisco_ini(&ini[0], "node0").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (expected, _) = Config::parse(&blocks("toml")[1]).unwrap();
        assert_eq!(config, expected);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nodes.json"),
            r#"{"nodes":["127.0.0.1:30300","127.0.0.1:30301"]}"#,
        )
        .unwrap();
        let (config, warnings) = Config::from_fisco_ini(&ini[1], dir.path()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.network.peers, expected.network.peers);
        assert_eq!(config.certificate.key, dir.path().join("conf/ssl.key"));
        let (flow, _) = Config::parse(&blocks("toml")[2]).unwrap();
        assert_eq!(config.traffic, flow.traffic);
        assert_ne!(
            flow.traffic,
            Traffic::default(),
            "the example changes [traffic]"
        );

        // 国密.
        let (config, warnings) = Config::from_fisco_ini(&ini[2], "node0").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (expected, _) = Config::parse(&blocks("toml")[3]).unwrap();
        assert_eq!(config.certificate, expected.certificate);
        assert!(config.certificate.enc_pair().is_some());
    }

    #[test]
    fn unknown_keys_are_reported_and_bad_values_name_the_key() {
        let (c, unknown) = Config::parse(
            "[network]\nlisten = [\"127.0.0.1:1\"]\nlisen = 3\n[certificate]\nkey = \"k.pem\"\n",
        )
        .unwrap();
        assert_eq!(unknown, vec!["network.lisen".to_string()]);
        assert_eq!(c.certificate.key, PathBuf::from("k.pem"));
        assert_eq!(c.certificate.cert, PathBuf::from("node.crt"));
        let err = Config::parse("[access]\ndeny = [\"zz\"]\n").unwrap_err();
        assert!(err.contains("deny") && err.contains("not hex"), "{err}");
    }

    #[test]
    fn round_trip_through_toml() {
        let mut c = Config::default();
        c.network.peers.push("127.0.0.1:30301".parse().unwrap());
        let (back, unknown) = Config::parse(&c.to_toml()).unwrap();
        assert!(unknown.is_empty());
        assert_eq!(back, c);
    }
}
