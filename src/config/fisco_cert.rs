//! The certificate files of a FISCO BCOS `config.ini`, mapped onto `[certificate]` (see
//! `docs/config.md`, "FISCO BCOS `config.ini`"): the four layouts FISCO reads, and which one a
//! file means.
//!
//! FISCO 2.x reads `[network_security]` (`SecureInitializer`): `data_path` and `key`, `cert`,
//! `ca_cert`; with `[chain] sm_crypto=true` (2.5 and later) the defaults become the 国密 set
//! `gmnode.key`, `gmnode.crt`, `gmca.crt`, and `en_key`, `en_cert` (`gmennode.key`,
//! `gmennode.crt`) name the encryption pair. FISCO 3.x reads `[cert]` (`GatewayConfig`):
//! `ca_path` and `node_key`, `node_cert`, `ca_cert`, or with `[p2p] sm_ssl=true` `sm_node_key`,
//! `sm_node_cert`, `sm_ca_cert`, `sm_ennode_key`, `sm_ennode_cert` (defaults `sm_ssl.key`,
//! `sm_ssl.crt`, `sm_ca.crt`, `sm_enssl.key`, `sm_enssl.crt`). In 3.x, `[chain] sm_crypto` is
//! about transactions and does not choose the TLS files.

use std::path::{Path, PathBuf};

use super::{
    Certificates,
    fisco::{Entry, Section, tidy},
};

/// A FISCO switch for 国密 TLS: `[p2p] sm_ssl` (3.x) or `[chain] sm_crypto` (2.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SmSwitch {
    /// Its value.
    pub on: bool,
    /// Its line in the file.
    pub line: usize,
}

impl SmSwitch {
    /// Reads a FISCO boolean (`true`, `false`, `1`, `0`, as boost's `get<bool>`).
    pub(super) fn read(s: &Section, e: &Entry) -> Result<SmSwitch, String> {
        let on = match e.value.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => return Err(s.bad(e, format!("`{other}` is not true or false"))),
        };
        Ok(SmSwitch { on, line: e.line })
    }

    fn is_on(switch: Option<SmSwitch>) -> bool {
        switch.is_some_and(|s| s.on)
    }
}

/// Where one FISCO layout keeps its files: the section, its directory key and default, the keys
/// and defaults of the node key, node certificate and CA, of the encryption pair (国密 only),
/// the keys it does not use, and the keys only the layout's other mode reads (with why).
struct Layout {
    dir: (&'static str, &'static str),
    files: [(&'static str, &'static str); 3],
    enc: Option<[(&'static str, &'static str); 2]>,
    unused: &'static [&'static str],
    other_mode: (&'static [&'static str], &'static str),
}

/// FISCO 2.x keys of `[network_security]` bcos-p2p does not use (HSM keys and extra CAs).
const SECURITY_UNUSED: &[&str] = &["ca_path", "crypto_provider", "key_id", "enckey_id"];
/// FISCO 3.x keys of `[cert]` bcos-p2p does not use (extra CAs).
const CERT_UNUSED: &[&str] = &["multi_ca_path"];
const SM_3X: &[&str] = &[
    "sm_ca_cert",
    "sm_node_key",
    "sm_node_cert",
    "sm_ennode_key",
    "sm_ennode_cert",
];
const STANDARD_3X: &[&str] = &["ca_cert", "node_key", "node_cert"];

const FISCO_2X: Layout = Layout {
    dir: ("data_path", "conf/"),
    files: [
        ("key", "node.key"),
        ("cert", "node.crt"),
        ("ca_cert", "ca.crt"),
    ],
    enc: None,
    unused: SECURITY_UNUSED,
    other_mode: (
        &["en_key", "en_cert"],
        "read only with [chain] sm_crypto=true (国密)",
    ),
};
const FISCO_2X_SM: Layout = Layout {
    dir: ("data_path", "conf/"),
    files: [
        ("key", "gmnode.key"),
        ("cert", "gmnode.crt"),
        ("ca_cert", "gmca.crt"),
    ],
    enc: Some([("en_key", "gmennode.key"), ("en_cert", "gmennode.crt")]),
    unused: SECURITY_UNUSED,
    other_mode: (&[], ""),
};
const FISCO_3X: Layout = Layout {
    dir: ("ca_path", "./conf"),
    files: [
        ("node_key", "ssl.key"),
        ("node_cert", "ssl.crt"),
        ("ca_cert", "ca.crt"),
    ],
    enc: None,
    unused: CERT_UNUSED,
    other_mode: (SM_3X, "read only with [p2p] sm_ssl=true (国密)"),
};
const FISCO_3X_SM: Layout = Layout {
    dir: ("ca_path", "./conf"),
    files: [
        ("sm_node_key", "sm_ssl.key"),
        ("sm_node_cert", "sm_ssl.crt"),
        ("sm_ca_cert", "sm_ca.crt"),
    ],
    enc: Some([
        ("sm_ennode_key", "sm_enssl.key"),
        ("sm_ennode_cert", "sm_enssl.crt"),
    ]),
    unused: CERT_UNUSED,
    other_mode: (STANDARD_3X, "read only with [p2p] sm_ssl=false"),
};

/// The `[certificate]` a file's `[network_security]` (2.x) or `[cert]` (3.x) gives, 国密 when
/// the version's switch says so (`sm_ssl` for 3.x, `sm_crypto` for 2.x). A file with neither
/// section takes the layout its switch names, or the TOML defaults next to `config.ini`.
pub(super) fn certificates(
    security: Option<&Section>,
    cert: Option<&Section>,
    sm_ssl: Option<SmSwitch>,
    sm_crypto: Option<SmSwitch>,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Certificates, String> {
    match (security, cert) {
        (Some(_), Some(_)) => Err(
            "[network_security] (FISCO 2.x) and [cert] (FISCO 3.x) both give the certificates; \
             keep one"
                .into(),
        ),
        (Some(s), None) => {
            if let Some(switch) = sm_ssl.filter(|s| s.on) {
                warnings.push(format!(
                    "[p2p] sm_ssl (line {}): FISCO 3.x's switch, and this file's certificates \
                     are FISCO 2.x's [network_security], where [chain] sm_crypto selects 国密; \
                     ignored",
                    switch.line
                ));
            }
            let layout = if SmSwitch::is_on(sm_crypto) {
                &FISCO_2X_SM
            } else {
                &FISCO_2X
            };
            files(Some(s), layout, base_dir, warnings)
        }
        (None, Some(s)) => {
            let layout = if SmSwitch::is_on(sm_ssl) {
                &FISCO_3X_SM
            } else {
                &FISCO_3X
            };
            files(Some(s), layout, base_dir, warnings)
        }
        (None, None) if SmSwitch::is_on(sm_ssl) => files(None, &FISCO_3X_SM, base_dir, warnings),
        (None, None) if sm_ssl.is_none() && SmSwitch::is_on(sm_crypto) => {
            files(None, &FISCO_2X_SM, base_dir, warnings)
        }
        (None, None) => {
            let mut c = Certificates::default();
            c.resolve_relative_to(base_dir);
            Ok(c)
        }
    }
}

/// The files of `layout`, read from section `s` (its keys, or their defaults when `s` is
/// `None` or lacks them).
fn files(
    s: Option<&Section>,
    layout: &Layout,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Certificates, String> {
    let enc = layout.enc.unwrap_or_default();
    let ours = |k: &str| {
        k == layout.dir.0
            || layout.files.iter().any(|(f, _)| *f == k)
            || enc.iter().any(|(f, _)| *f == k)
    };
    if let Some(s) = s {
        for e in s.entries.iter().filter(|e| !ours(&e.key)) {
            if layout.other_mode.0.contains(&e.key.as_str()) {
                warnings.push(s.ignored(e, layout.other_mode.1));
            } else {
                warnings.push(s.unused(e, layout.unused));
            }
        }
    }
    let value = |s: &Section, e: &Entry| -> Result<String, String> {
        let v = s.substituted(e)?;
        if v.is_empty() {
            return Err(s.bad(e, "is empty; give a path"));
        }
        Ok(v)
    };
    let get = |key: &str| s.and_then(|s| s.get(key).map(|e| (s, e)));
    let dir = match get(layout.dir.0) {
        Some((s, e)) => base_dir.join(value(s, e)?),
        None => base_dir.join(layout.dir.1),
    };
    let path = |(key, default): (&str, &str)| -> Result<PathBuf, String> {
        Ok(tidy(match get(key) {
            None => dir.join(default),
            // `${data_path}/node.key` says where it is; a bare name is in the directory.
            Some((s, e)) if e.value.contains("${") => base_dir.join(value(s, e)?),
            Some((s, e)) => dir.join(value(s, e)?),
        }))
    };
    let [key, cert, ca] = layout.files.map(&path);
    let (enc_key, enc_cert) = match layout.enc {
        Some([k, c]) => (Some(path(k)?), Some(path(c)?)),
        None => (None, None),
    };
    Ok(Certificates {
        key: key?,
        cert: cert?,
        ca: ca?,
        crl: Vec::new(),
        enc_key,
        enc_cert,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    /// The `[certificate]` and warnings of `ini`, read in `/n`.
    fn load(ini: &str) -> (Certificates, Vec<String>) {
        let (c, w) = Config::from_fisco_ini(ini, "/n").unwrap();
        (c.certificate, w)
    }

    fn paths(c: &Certificates) -> [Option<&Path>; 5] {
        [
            Some(c.key.as_path()),
            Some(c.cert.as_path()),
            Some(c.ca.as_path()),
            c.enc_key.as_deref(),
            c.enc_cert.as_deref(),
        ]
    }

    fn at(files: [&str; 5]) -> [Option<&Path>; 5] {
        files.map(|f| (!f.is_empty()).then(|| Path::new(f)))
    }

    #[test]
    fn fisco_3x_sm_ssl_reads_the_sm_files() {
        // As build_chain.sh -s writes it.
        let (c, w) = load(
            "[p2p]\n    listen_port=30300\n    ; ssl or sm ssl\n    sm_ssl=true\n\
             [cert]\n    ca_path=./conf\n    sm_ca_cert=sm_ca.crt\n    sm_node_key=sm_ssl.key\n    \
             sm_node_cert=sm_ssl.crt\n    sm_ennode_key=sm_enssl.key\n    \
             sm_ennode_cert=sm_enssl.crt\n",
        );
        assert!(w.is_empty(), "{w:?}");
        let expected = [
            "/n/conf/sm_ssl.key",
            "/n/conf/sm_ssl.crt",
            "/n/conf/sm_ca.crt",
            "/n/conf/sm_enssl.key",
            "/n/conf/sm_enssl.crt",
        ];
        assert_eq!(paths(&c), at(expected));
        // FISCO's defaults are the same names; with no [cert] at all too.
        let (c, _) = load("[p2p]\nsm_ssl=true\n[cert]\n");
        assert_eq!(paths(&c), at(expected));
        let (c, _) = load("[p2p]\nsm_ssl=1\n");
        assert_eq!(paths(&c), at(expected));
        // Other names and directories, and the standard files' keys, which FISCO ignores too.
        let (c, w) = load(
            "[p2p]\nsm_ssl=true\n[cert]\nca_path=keys\nsm_node_key=a.key\nsm_ennode_cert=/abs/e.crt\n\
             node_key=ssl.key\nmulti_ca_path=more\n",
        );
        assert_eq!(
            paths(&c),
            at([
                "/n/keys/a.key",
                "/n/keys/sm_ssl.crt",
                "/n/keys/sm_ca.crt",
                "/n/keys/sm_enssl.key",
                "/abs/e.crt",
            ])
        );
        assert_eq!(
            w,
            [
                "[cert] node_key (line 7): read only with [p2p] sm_ssl=false; ignored",
                "[cert] multi_ca_path (line 8): a FISCO BCOS setting bcos-p2p does not use; ignored",
            ]
        );
    }

    #[test]
    fn fisco_3x_without_sm_ssl_keeps_the_standard_files() {
        let ini = "[p2p]\nsm_ssl=false\n[cert]\nca_path=./conf\nca_cert=ca.crt\nnode_key=ssl.key\n\
                   node_cert=ssl.crt\nsm_ca_cert=sm_ca.crt\nsm_ennode_key=sm_enssl.key\n\
                   [chain]\nsm_crypto=true\n";
        let (c, w) = load(ini);
        assert_eq!(
            paths(&c),
            at([
                "/n/conf/ssl.key",
                "/n/conf/ssl.crt",
                "/n/conf/ca.crt",
                "",
                ""
            ])
        );
        // In 3.x, [chain] sm_crypto is about transactions: no word on it.
        assert_eq!(
            w,
            [
                "[cert] sm_ca_cert (line 8): read only with [p2p] sm_ssl=true (国密); ignored",
                "[cert] sm_ennode_key (line 9): read only with [p2p] sm_ssl=true (国密); ignored",
            ]
        );
        let err = Config::from_fisco_ini("[p2p]\nsm_ssl=yes\n", "/n").unwrap_err();
        assert_eq!(err, "[p2p] sm_ssl: `yes` is not true or false (line 2)");
    }

    #[test]
    fn fisco_2x_sm_crypto_reads_the_gm_files() {
        // As FISCO 2.x's chain builders write it (no en_key/en_cert lines: their defaults).
        let ini = "[network_security]\n    data_path=conf/\n    key=gmnode.key\n    \
                   cert=gmnode.crt\n    ca_cert=gmca.crt\n\
                   [chain]\n    id=1\n    sm_crypto=true\n    sm_crypto_channel=false\n";
        let (c, w) = load(ini);
        assert!(w.is_empty(), "{w:?}");
        let expected = at([
            "/n/conf/gmnode.key",
            "/n/conf/gmnode.crt",
            "/n/conf/gmca.crt",
            "/n/conf/gmennode.key",
            "/n/conf/gmennode.crt",
        ]);
        assert_eq!(paths(&c), expected);
        // The defaults are the gm names; `${data_path}` and en_* keys are read too.
        let (c, _) = load("[network_security]\n[chain]\nsm_crypto=true\n");
        assert_eq!(paths(&c), expected);
        let (c, _) = load("[chain]\nsm_crypto=true\n");
        assert_eq!(paths(&c), expected);
        let (c, w) = load(
            "[network_security]\ndata_path=d/\nen_key=${data_path}/e.key\nen_cert=e.crt\n\
             crypto_provider=hsm\n[chain]\nsm_crypto=true\n",
        );
        assert_eq!(c.enc_key.as_deref(), Some(Path::new("/n/d/e.key")));
        assert_eq!(c.enc_cert.as_deref(), Some(Path::new("/n/d/e.crt")));
        assert_eq!(
            w,
            [
                "[network_security] crypto_provider (line 5): a FISCO BCOS setting bcos-p2p does not use; ignored"
            ]
        );
    }

    #[test]
    fn fisco_2x_without_sm_crypto_keeps_the_standard_files() {
        let (c, w) = load(
            "[p2p]\nsm_ssl=true\n[network_security]\ndata_path=conf/\nen_key=gmennode.key\n\
             [chain]\nsm_crypto=false\n",
        );
        assert_eq!(
            paths(&c),
            at([
                "/n/conf/node.key",
                "/n/conf/node.crt",
                "/n/conf/ca.crt",
                "",
                ""
            ])
        );
        assert_eq!(
            w,
            [
                "[p2p] sm_ssl (line 2): FISCO 3.x's switch, and this file's certificates are \
                 FISCO 2.x's [network_security], where [chain] sm_crypto selects 国密; ignored",
                "[network_security] en_key (line 5): read only with [chain] sm_crypto=true (国密); ignored",
            ]
        );
        let err = Config::from_fisco_ini("[chain]\nsm_crypto=on\n", "/n").unwrap_err();
        assert_eq!(err, "[chain] sm_crypto: `on` is not true or false (line 2)");
        // Neither switch nor section: the TOML defaults next to config.ini.
        let (c, _) = load("[p2p]\nlisten_port=1\n");
        assert_eq!(
            paths(&c),
            at(["/n/node.key", "/n/node.crt", "/n/ca.crt", "", ""])
        );
    }
}
