//! glibc malloc settings for a process that moves bulk data through yamux.
//!
//! yamux allocates every frame body afresh (a 64 KiB `Vec` per data frame, sent or received).
//! With glibc's defaults, freeing such a buffer at the top of a heap often takes the heap over
//! the 128 KiB trim threshold, so the memory goes back to the kernel and the next frame faults it
//! in again, page by page: profiled on the unicast bench, page faults in yamux's `memset` and
//! copy took up to a third of a transfer's CPU time, and whether they happened changed from run
//! to run. [`tune`] raises the trim threshold to [`TRIM_THRESHOLD`] (each malloc arena may keep
//! that much free memory at its top) and fixes the mmap threshold at [`MMAP_THRESHOLD`] (larger
//! blocks, such as big frames, still come from and go back to the kernel directly).
//!
//! The `bcos-p2p` binary and the benches call it at start; an application embedding the library
//! decides for its own process (or sets `GLIBC_TUNABLES`, or uses another allocator).

/// The trim threshold [`tune`] sets: free memory an arena keeps at its top.
pub const TRIM_THRESHOLD: usize = 4 << 20;
/// The mmap threshold [`tune`] sets: blocks at least this large are mapped on their own.
pub const MMAP_THRESHOLD: usize = 2 << 20;

/// What [`tune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuned {
    /// Both thresholds are set.
    Applied,
    /// `GLIBC_TUNABLES` names malloc settings: the operator's choice stands.
    LeftToEnvironment,
    /// glibc refused a setting (it returned an error).
    Refused,
    /// Not a glibc target: nothing to do.
    NotGlibc,
}

/// Sets glibc's malloc trim and mmap thresholds for this process (see the module docs). Safe to
/// call at any time and more than once; the first call at start helps most.
pub fn tune() -> Tuned {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return Tuned::LeftToEnvironment;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() -> Tuned {
    // SAFETY: mallopt only changes allocator parameters, under glibc's own arena locks; it may be
    // called from any thread at any time, and both values are positive and fit an i32.
    let applied = unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
    };
    if applied {
        Tuned::Applied
    } else {
        Tuned::Refused
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> Tuned {
    Tuned::NotGlibc
}
