//! The only `unsafe` of the host collector: `statvfs(3)` and `sysconf(3)` through `libc`.
//!
//! Why here and not a crate: `nix`/`rustix` would pull a large dependency for two calls; the
//! unsafe surface is a zeroed plain-old-data struct and a NUL-terminated path.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The fields of `struct statvfs` the disk metrics need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FsStats {
    /// Fragment size: the unit of the block counts.
    pub(crate) frsize: u64,
    pub(crate) blocks: u64,
    /// Free blocks (including those reserved for root).
    pub(crate) bfree: u64,
    /// Free blocks available to unprivileged users.
    pub(crate) bavail: u64,
    pub(crate) files: u64,
    pub(crate) ffree: u64,
}

/// `statvfs(path)`.
pub(crate) fn statvfs(path: &Path) -> std::io::Result<FsStats> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")
    })?;
    // SAFETY: `libc::statvfs` is a plain C struct of integers, so all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call and `st` is a valid,
    // writable `statvfs` the kernel fills in; nothing else aliases it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // field widths differ between libc targets
    Ok(FsStats {
        frsize: if st.f_frsize > 0 {
            st.f_frsize as u64
        } else {
            st.f_bsize as u64
        },
        blocks: st.f_blocks as u64,
        bfree: st.f_bfree as u64,
        bavail: st.f_bavail as u64,
        files: st.f_files as u64,
        ffree: st.f_ffree as u64,
    })
}

/// Clock ticks per second of `/proc/stat` (`USER_HZ`), 100 when unknown.
pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: `sysconf` only reads a constant of the C library; no pointers are involved.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as f64 } else { 100.0 }
}
