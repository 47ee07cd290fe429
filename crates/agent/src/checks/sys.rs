//! The only `unsafe` of the checks: signalling a process group and reading the effective uid.
//!
//! Why: a timed-out user check may have forked children (a shell pipeline, `sleep`); killing
//! only the direct child would leave them running and holding the stdout pipe. The child is
//! started as the leader of its own process group (`process_group(0)`), so `kill(-pgid)`
//! reaches every descendant that did not deliberately leave the group.
#![allow(unsafe_code)]

/// Sends SIGKILL to every process of group `pgid`. Errors (group already gone) are ignored.
pub(crate) fn kill_process_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return; // never signal "all processes" or init
    }
    // SAFETY: `kill` takes plain integers; a negative pid addresses the process group, and the
    // guard above rules out 0/-1, which would address our own group or every process.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// The effective user id of the agent.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: `geteuid` has no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}
