//! A test that cannot run here says so where the person running `cargo test` sees it.
//!
//! cargo captures what a passing test prints with `println!` and `eprintln!` and throws it
//! away, so a `SKIPPED:` line printed that way is never seen: the run just counts one more pass.
//! [`skip`] writes straight to the process's standard error, past the test harness's capture,
//! naming the test, why it cannot run and the one command that installs what is missing.
//!
//! Where every tool is meant to be there (`.ci/run` installs them all and sets
//! `BCOS_P2P_REQUIRE_ALL=1`), a skip fails the test instead: a skip in CI means an install broke.
//!
//! Shared by `mod common` and, through `#[path]`, by the test files that have no other use for
//! `common` (interop_js.rs, netns.rs).

use std::io::Write as _;

/// The variable that turns every skip into a failure.
pub const REQUIRE_ALL: &str = "BCOS_P2P_REQUIRE_ALL";

/// Reports that the running test does not run because of `why`; `install` is the command that
/// fixes it. The caller returns right after. Panics instead when [`REQUIRE_ALL`] is set to `1`.
pub fn skip(why: &str, install: &str) {
    // libtest names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let line = format!("SKIPPED: {test}: {why}; to run it: {install}");
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("{line} ({REQUIRE_ALL}=1: every test must run here)");
    }
    // One write of the whole line, so lines of parallel tests do not interleave.
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("\n{line}\n").as_bytes());
}
