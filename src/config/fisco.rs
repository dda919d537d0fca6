//! Import of a FISCO BCOS `config.ini` (2.x and 3.x): the P2P sections only, mapped as the
//! reference in the module docs of [`crate::config`] describes. Kept apart from the TOML
//! schema: it reads another format, with its own syntax, substitutions and file layout.

use std::{
    collections::HashSet,
    hash::Hash,
    net::IpAddr,
    path::{Component, Path, PathBuf},
    str::FromStr,
};

use libp2p::{Multiaddr, multiaddr::Protocol};
use serde::Deserialize;

use super::{
    Config, DEFAULT_PORT, Network, PeerAddr, Security,
    addr::check_peer_addr,
    fisco_cert::{self, SmSwitch},
};
use crate::NodeId;

/// One `key=value` line.
pub(super) struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A section: every `[name]` block of that name, merged.
pub(super) struct Section {
    pub name: String,
    pub entries: Vec<Entry>,
}

impl Section {
    pub(super) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// `[section] key: reason (line N)`.
    pub(super) fn bad(&self, e: &Entry, reason: impl std::fmt::Display) -> String {
        format!("[{}] {}: {reason} (line {})", self.name, e.key, e.line)
    }

    /// The warning for a key this section does not have: a FISCO setting bcos-p2p does
    /// not use (`known`), or a typo.
    pub(super) fn unused(&self, e: &Entry, known: &[&str]) -> String {
        let what = if known.contains(&e.key.as_str()) {
            "a FISCO BCOS setting bcos-p2p does not use; ignored"
        } else {
            "unknown key; ignored"
        };
        format!("[{}] {} (line {}): {what}", self.name, e.key, e.line)
    }

    /// The warning for a FISCO setting bcos-p2p leaves aside, and `why`.
    pub(super) fn ignored(&self, e: &Entry, why: &str) -> String {
        format!(
            "[{}] {} (line {}): {why}; ignored",
            self.name, e.key, e.line
        )
    }

    /// The value of `e` with every `${name}` replaced by the value of key `name` of this
    /// section.
    pub(super) fn substituted(&self, e: &Entry) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = e.value.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| self.bad(e, format!("`{}`: `${{` without `}}`", e.value)))?;
            let name = &after[..end];
            if name == e.key {
                return Err(self.bad(e, format!("`${{{name}}}` refers to itself")));
            }
            let value = self.get(name).ok_or_else(|| {
                self.bad(
                    e,
                    format!("`${{{name}}}`: [{}] has no key `{name}`", self.name),
                )
            })?;
            if value.value.contains("${") {
                return Err(self.bad(
                    e,
                    format!(
                        "`${{{name}}}` is itself `{}`; nesting is not supported",
                        value.value
                    ),
                ));
            }
            out.push_str(&value.value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Cuts a comment (`;` or `#` at the start, or after whitespace) off a line.
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if (c == ';' || c == '#') && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Splits ini text into sections (repeated headers merged, in order of first appearance).
/// Keys before any section are warned about and dropped.
pub(super) fn parse(text: &str) -> Result<(Vec<Section>, Vec<String>), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<Section> = Vec::new();
    let mut current: Option<usize> = None;
    let mut warnings = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = strip_comment(raw).trim();
        if l.is_empty() {
            continue;
        }
        if let Some(header) = l.strip_prefix('[') {
            let name = header
                .strip_suffix(']')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("line {line}: `{l}` is not a `[section]` header"))?;
            current = Some(match sections.iter().position(|s| s.name == name) {
                Some(at) => at,
                None => {
                    sections.push(Section {
                        name: name.to_string(),
                        entries: Vec::new(),
                    });
                    sections.len() - 1
                }
            });
            continue;
        }
        let (key, value) = l
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                format!("line {line}: `{l}` is neither a `[section]` nor `key=value`")
            })?;
        let Some(at) = current else {
            warnings.push(format!("{key} (line {line}): outside any section; ignored"));
            continue;
        };
        let section = &mut sections[at];
        if let Some(first) = section.get(key) {
            return Err(format!(
                "[{}] {key}: given twice (lines {} and {line})",
                section.name, first.line
            ));
        }
        section.entries.push(Entry {
            key: key.to_string(),
            value: value.to_string(),
            line,
        });
    }
    Ok((sections, warnings))
}

/// FISCO `[p2p]` keys bcos-p2p does not use (3.x: `enable_ssl_verify`, ...).
const P2P_UNUSED: &[&str] = &[
    "enable_compress",
    "enable_ssl_verify",
    "enable_rip_protocol",
    "uuid",
];

/// The mapping described in the module docs.
pub(super) fn import(text: &str, base_dir: &Path) -> Result<(Config, Vec<String>), String> {
    let (sections, mut warnings) = parse(text)?;
    let mut config = Config::default();
    let mut security = None;
    let mut cert = None;
    let mut flow = None;
    let (mut sm_ssl, mut sm_crypto) = (None, None);
    let mut skipped = Vec::new();
    for s in &sections {
        match s.name.as_str() {
            "p2p" => config.network = p2p(s, base_dir, &mut sm_ssl, &mut warnings)?,
            // FISCO 2.x's 国密 switch; the rest of [chain] is not about P2P.
            "chain" => {
                if let Some(e) = s.get("sm_crypto") {
                    sm_crypto = Some(SmSwitch::read(s, e)?);
                }
            }
            "certificate_blacklist" => config.access.deny = node_ids(s, "crl.", &mut warnings)?,
            "certificate_whitelist" => config.access.allow = node_ids(s, "cal.", &mut warnings)?,
            "network_security" => security = Some(s),
            "cert" => cert = Some(s),
            "flow_control" => flow = Some(s),
            other => skipped.push(other),
        }
    }
    if !skipped.is_empty() {
        tracing::debug!(sections = ?skipped, "config.ini sections not about P2P skipped");
    }
    if let Some(s) = flow {
        super::fisco_flow::flow_control(s, &mut config.traffic, &mut warnings)?;
    }
    config.certificate =
        fisco_cert::certificates(security, cert, sm_ssl, sm_crypto, base_dir, &mut warnings)?;
    config.validate()?;
    Ok((config, warnings))
}

/// `[p2p]`: the listen address and the peers (`node.N`, `nodes_path`/`nodes_file`).
/// `[p2p] sm_ssl` (3.x's 国密 switch) goes to `sm_ssl`.
fn p2p(
    s: &Section,
    base_dir: &Path,
    sm_ssl: &mut Option<SmSwitch>,
    warnings: &mut Vec<String>,
) -> Result<Network, String> {
    let mut ip = IpAddr::from([0, 0, 0, 0]);
    let mut port = DEFAULT_PORT;
    let mut peers = Vec::new();
    let (mut nodes_path, mut nodes_file) = (None, None);
    for e in &s.entries {
        match e.key.as_str() {
            "listen_ip" => {
                let v = e.value.trim_start_matches('[').trim_end_matches(']');
                let reason = || format!("`{}` is not an IPv4 or IPv6 address", e.value);
                ip = v.parse().map_err(|_| s.bad(e, reason()))?;
            }
            "listen_port" => {
                let reason = || format!("`{}` is not a port 0-65535", e.value);
                port = e.value.parse().map_err(|_| s.bad(e, reason()))?;
            }
            "nodes_path" => nodes_path = Some(e),
            "nodes_file" => nodes_file = Some(e),
            "sm_ssl" => *sm_ssl = Some(SmSwitch::read(s, e)?),
            k if k.len() > "node.".len() && k.starts_with("node.") => {
                peers.push(peer(&e.value).map_err(|reason| s.bad(e, reason))?);
            }
            _ => warnings.push(s.unused(e, P2P_UNUSED)),
        }
    }
    if let Some(e) = nodes_file.or(nodes_path) {
        let dir = match nodes_path {
            Some(p) => base_dir.join(&p.value),
            None => base_dir.to_path_buf(),
        };
        let file = tidy(dir.join(nodes_file.map_or("nodes.json", |f| f.value.as_str())));
        for (i, text) in nodes_json(&file)
            .map_err(|reason| s.bad(e, format!("{}: {reason}", file.display())))?
            .into_iter()
            .enumerate()
        {
            let addr = peer(&text)
                .map_err(|reason| s.bad(e, format!("{} entry {i}: {reason}", file.display())))?;
            peers.push(addr);
        }
    }
    dedup(&mut peers);
    Ok(Network {
        listen: vec![PeerAddr(
            Multiaddr::empty()
                .with(match ip {
                    IpAddr::V4(v4) => Protocol::Ip4(v4),
                    IpAddr::V6(v6) => Protocol::Ip6(v6),
                })
                .with(Protocol::Tcp(port)),
        )],
        peers,
        security: Security::CaTls,
    })
}

/// A peer address from FISCO's `host:port` (or a multiaddr), checked to be dialable.
fn peer(text: &str) -> Result<PeerAddr, String> {
    if text.is_empty() {
        return Err("empty; give host:port or remove the line".into());
    }
    let addr: PeerAddr = text.parse()?;
    check_peer_addr(&addr)?;
    Ok(addr)
}

/// The `nodes` of a FISCO 3.x `nodes.json`: `{"nodes":["host:port",...]}`.
fn nodes_json(file: &Path) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Nodes {
        nodes: Vec<String>,
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    serde_json::from_str::<Nodes>(&text)
        .map(|n| n.nodes)
        .map_err(|e| format!("not {{\"nodes\":[\"host:port\",...]}}: {e}"))
}

/// `[certificate_blacklist]` / `[certificate_whitelist]`: the NodeIds under `prefix.N`.
fn node_ids(s: &Section, prefix: &str, warnings: &mut Vec<String>) -> Result<Vec<NodeId>, String> {
    let mut ids = Vec::new();
    for e in &s.entries {
        if e.key.len() > prefix.len() && e.key.starts_with(prefix) {
            ids.push(NodeId::from_str(&e.value).map_err(|err| s.bad(e, err))?);
        } else {
            warnings.push(s.unused(e, &[]));
        }
    }
    dedup(&mut ids);
    Ok(ids)
}

/// Drops duplicates, keeping the first of each.
fn dedup<T: Eq + Hash + Clone>(items: &mut Vec<T>) {
    let mut seen = HashSet::new();
    items.retain(|i| seen.insert(i.clone()));
}

/// Makes `p` tidy for display and comparison: no `.` components, no doubled separators.
pub(super) fn tidy(p: PathBuf) -> PathBuf {
    let tidy: PathBuf = p
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if tidy.as_os_str().is_empty() && !p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        tidy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_syntax() {
        let (sections, warnings) = parse(
            "\u{feff}stray=1\n; comment\n# comment\n[p2p] ; trailing\n  a = 1 ; note\n\tb=x#y\n\
             [other]\nc=\n[p2p]\nd==2\n",
        )
        .unwrap();
        assert_eq!(
            warnings,
            vec!["stray (line 1): outside any section; ignored"]
        );
        let p2p = &sections[0];
        let kv: Vec<_> = p2p
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(kv, [("a", "1", 5), ("b", "x#y", 6), ("d", "=2", 10)]);
        assert_eq!(sections[1].entries[0].value, "");

        let err = parse("[p2p]\nlisten_port=1\nlisten_port=2\n")
            .err()
            .unwrap();
        assert_eq!(err, "[p2p] listen_port: given twice (lines 2 and 3)");
        let err = parse("[p2p\n").err().unwrap();
        assert!(err.starts_with("line 1: `[p2p` is not"), "{err}");
        let err = parse("[]\n").err().unwrap();
        assert!(err.starts_with("line 1:"), "{err}");
        let err = parse("[p2p]\nnode.0\n").err().unwrap();
        assert_eq!(
            err,
            "line 2: `node.0` is neither a `[section]` nor `key=value`"
        );
    }

    #[test]
    fn ini_substitution() {
        let base = Path::new("/n");
        let cert = |body: &str| {
            Config::from_fisco_ini(&format!("[network_security]\n{body}"), base)
                .map(|(c, w)| (c.certificate, w))
        };
        let (c, w) =
            cert("data_path=d\nkey=${data_path}/k\ncert=/abs/c\nca_cert=ca.pem\n").unwrap();
        assert!(w.is_empty());
        assert_eq!(c.key, Path::new("/n/d/k"));
        assert_eq!(c.cert, Path::new("/abs/c"));
        assert_eq!(c.ca, Path::new("/n/d/ca.pem"));
        let (c, _) = cert("").unwrap();
        assert_eq!(c.key, Path::new("/n/conf/node.key"));
        let err = cert("key=${nope}/k\n").unwrap_err();
        assert_eq!(
            err,
            "[network_security] key: `${nope}`: [network_security] has no key `nope` (line 2)"
        );
        assert!(cert("key=${data_path/k\n").unwrap_err().contains("without"));
        assert!(
            cert("key=${key}\n")
                .unwrap_err()
                .contains("refers to itself")
        );
        let err = cert("a=${b}\nb=x\nkey=${a}\n").unwrap_err();
        assert!(err.contains("nesting"), "{err}");
        assert!(
            cert("key=\n")
                .unwrap_err()
                .contains("[network_security] key: is empty")
        );
    }
}
