//! The configuration parsers: TOML (`config.toml`) and FISCO BCOS `config.ini`. Whatever
//! parses and validates must write itself out as TOML and read back unchanged.
//!
//! Input: a mode byte, then UTF-8 text.
#![no_main]

use bcos_p2p::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parsed = if mode % 2 == 0 {
        Config::parse(text)
    } else {
        // A directory that does not exist: a `nodes_file` key then fails instead of reading.
        Config::from_fisco_ini(text, "/nonexistent/bcos-p2p-fuzz")
    };
    if let Ok((config, _warnings)) = parsed {
        let toml = config.to_toml();
        let (again, unknown) = Config::parse(&toml).expect("our own TOML parses");
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(again, config, "{toml}");
    }
});
