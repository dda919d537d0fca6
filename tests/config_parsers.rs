//! Property tests for the configuration parsers: TOML, FISCO BCOS `config.ini`, and the
//! `nodes.json` a 3.x `config.ini` points to. Operators hand-edit these files, so every
//! truncation and random edit of a valid file must give a config or an error, never a panic, and
//! whatever is accepted must write itself out as TOML and read back unchanged.
//!
//! Inputs come from a seeded generator (the root crate has no proptest), so a failure names the
//! case and reproduces exactly.

use std::path::Path;

use bcos_p2p::{KeyType, NodeKey, config::Config};
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

/// Random edits per file.
const EDITS: usize = 300;

/// Characters that matter to the parsers, and some that should not.
const ALPHABET: &[char] = &[
    '[', ']', '=', '#', ';', '$', '{', '}', '"', '\'', '\n', ' ', '\t', ':', '/', '.', ',', '0',
    '9', 'x', 'a', '\\', '\u{feff}', 'é', '😀', '\0',
];

fn node_id() -> String {
    NodeKey::generate(KeyType::Secp256k1)
        .unwrap()
        .node_id()
        .to_string()
}

fn toml_text(id: &str) -> String {
    let mut config = Config::default();
    config.access.deny = vec![id.parse().unwrap()];
    config.network.peers = vec!["127.0.0.1:30301".parse().unwrap()];
    config.to_toml()
}

fn ini_2x(id: &str) -> String {
    format!(
        "[p2p]\n    listen_ip=0.0.0.0\n    listen_port=30300\n    ; peers\n    \
         node.0=127.0.0.1:30301\n    node.1=peer.example:30302\n\
         [certificate_blacklist]\n    crl.0={id}\n[certificate_whitelist]\n    cal.0=0x{id}\n\
         [network_security]\n    data_path=conf/\n    key=${{data_path}}/node.key\n    \
         cert=${{data_path}}/node.crt\n    ca_cert=${{data_path}}/ca.crt\n[chain]\n    id=1\n"
    )
}

const INI_3X: &str = "[p2p]\n    listen_ip=::\n    listen_port=30300\n    nodes_path=./\n    \
                      nodes_file=nodes.json\n[cert]\n    ca_path=./conf\n    ca_cert=ca.crt\n    \
                      node_key=ssl.key\n    node_cert=ssl.crt\n";

/// FISCO 2.x 国密: `[chain] sm_crypto` picks the gm files, `en_key`/`en_cert` the encryption pair.
const INI_2X_SM: &str = "[p2p]\n    listen_port=30300\n    node.0=127.0.0.1:30301\n\
                         [network_security]\n    data_path=conf/\n    key=gmnode.key\n    \
                         cert=gmnode.crt\n    ca_cert=gmca.crt\n    en_key=${data_path}/gmennode.key\n\
                         [chain]\n    id=1\n    sm_crypto=true\n";

/// FISCO 3.x 国密: `[p2p] sm_ssl` picks `[cert]`'s `sm_*` files.
const INI_3X_SM: &str = "[p2p]\n    listen_port=30300\n    sm_ssl=true\n    node.0=[::1]:30301\n\
                         [cert]\n    ca_path=./conf\n    sm_ca_cert=sm_ca.crt\n    \
                         sm_node_key=sm_ssl.key\n    sm_node_cert=sm_ssl.crt\n    \
                         sm_ennode_key=sm_enssl.key\n    sm_ennode_cert=sm_enssl.crt\n";

/// A parser under test: text in, config and warnings or the error out.
type Parse<'a> = &'a dyn Fn(&str) -> Result<(Config, Vec<String>), String>;

const NODES_JSON: &str = r#"{"nodes":["127.0.0.1:30300","[::1]:30309","peer.example:30301"]}"#;

/// Parses `text` with `parse`; anything accepted must survive a TOML round trip.
fn check(parse: Parse<'_>, text: &str, case: &str) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(text)));
    let Ok(parsed) = result else {
        panic!("{case}: the parser panicked on {text:?}");
    };
    if let Ok((config, _)) = parsed {
        let toml = config.to_toml();
        let (again, unknown) = Config::parse(&toml)
            .unwrap_or_else(|e| panic!("{case}: our TOML of {text:?} does not parse: {e}"));
        assert!(unknown.is_empty(), "{case}: {unknown:?}");
        assert_eq!(again, config, "{case}: TOML round trip of {text:?}");
    }
}

/// Every prefix of `text` (at character boundaries), then [`EDITS`] random edits of it.
fn truncations_and_edits(name: &str, text: &str, seed: u64, parse: Parse<'_>) {
    assert!(parse(text).is_ok(), "{name}: the unedited text is valid");
    for (cut, _) in text.char_indices() {
        check(parse, &text[..cut], &format!("{name} cut at {cut}"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..EDITS {
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..chars.len());
            let c = if rng.random_bool(0.8) {
                ALPHABET[rng.random_range(0..ALPHABET.len())]
            } else {
                char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}')
            };
            match rng.random_range(0..3) {
                0 => chars[at] = c,
                1 => chars.insert(at, c),
                _ if chars.len() > 1 => {
                    chars.remove(at);
                }
                _ => {}
            }
        }
        let edited: String = chars.into_iter().collect();
        check(parse, &edited, &format!("{name} edit {case} (seed {seed})"));
    }
}

#[test]
fn toml_truncations_and_edits_never_panic() {
    let text = toml_text(&node_id());
    truncations_and_edits("config.toml", &text, 1, &|t: &str| Config::parse(t));
}

#[test]
fn fisco_ini_truncations_and_edits_never_panic() {
    let base = Path::new("/nonexistent/bcos-p2p-test");
    let parse = |t: &str| Config::from_fisco_ini(t, base);
    truncations_and_edits("2.x config.ini", &ini_2x(&node_id()), 2, &parse);
    // The 3.x file names a nodes.json next to it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nodes.json"), NODES_JSON).unwrap();
    let parse = |t: &str| Config::from_fisco_ini(t, dir.path());
    truncations_and_edits("3.x config.ini", INI_3X, 3, &parse);
}

#[test]
fn fisco_sm_ini_truncations_and_edits_never_panic() {
    let parse = |t: &str| Config::from_fisco_ini(t, "/nonexistent/bcos-p2p-test");
    let (config, warnings) = parse(INI_2X_SM).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(config.certificate.enc_pair().is_some());
    truncations_and_edits("2.x 国密 config.ini", INI_2X_SM, 5, &parse);
    let (config, warnings) = parse(INI_3X_SM).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(config.certificate.enc_pair().is_some());
    truncations_and_edits("3.x 国密 config.ini", INI_3X_SM, 6, &parse);
}

#[test]
fn nodes_json_truncations_and_edits_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.json");
    let parse = |json: &str| {
        std::fs::write(&path, json).unwrap();
        Config::from_fisco_ini(INI_3X, dir.path())
    };
    truncations_and_edits("nodes.json", NODES_JSON, 4, &parse);
}
