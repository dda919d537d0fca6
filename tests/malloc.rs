//! `malloc::tune`: a heap that frees and reallocates frame-sized buffers stops faulting them back
//! in from the kernel. Its own test binary, so that nothing else in the process has tuned malloc.

use bcos_p2p::malloc::{self, Tuned};

#[path = "common/skip.rs"]
mod skip;

/// Minor page faults of the calling thread so far (field 10 of /proc/thread-self/stat).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(7).unwrap().parse().unwrap()
}

/// Pages in one round of [`churn_faults`].
const ROUND_PAGES: u64 = 3 * 64 / 4;

/// Faults taken by `rounds` rounds of filling three yamux-frame-sized buffers (64 KiB) and freeing
/// them, on a thread of its own (its own malloc arena, as a runtime worker has). Nothing larger
/// is allocated: freeing a block glibc had mapped on its own would raise its thresholds itself.
fn churn_faults(rounds: usize) -> u64 {
    std::thread::spawn(move || {
        let before = minor_faults();
        for i in 0..rounds {
            let frames: Vec<Vec<u8>> = (0..3).map(|k| vec![(i + k) as u8; 64 * 1024]).collect();
            std::hint::black_box(&frames);
        }
        minor_faults() - before
    })
    .join()
    .unwrap()
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tuned_malloc_keeps_freed_frames_instead_of_faulting_them_in_again() {
    const ROUNDS: usize = 200;
    let untuned = churn_faults(ROUNDS);
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        assert_eq!(malloc::tune(), Tuned::LeftToEnvironment);
        skip::skip(
            "GLIBC_TUNABLES sets malloc parameters for this process",
            "run it without glibc.malloc.* in GLIBC_TUNABLES",
        );
        return;
    }
    assert_eq!(malloc::tune(), Tuned::Applied);
    let tuned = churn_faults(ROUNDS);
    println!("{ROUNDS} rounds: {untuned} minor faults with glibc's defaults, {tuned} tuned");
    // glibc's defaults trim freed frames and fault them in again, round after round (seen: 16
    // pages a round, one frame); if a glibc stops doing that, this says so (and tune may no
    // longer be needed).
    assert!(
        untuned > ROUNDS as u64 * 8,
        "glibc's defaults took only {untuned} faults in {ROUNDS} rounds"
    );
    // Tuned, only the first round's pages may fault.
    assert!(
        tuned <= 2 * ROUND_PAGES,
        "{tuned} faults in {ROUNDS} rounds after tuning"
    );
}
