//! An exclusive advisory lock on `DIR/LOCK`, held for the life of a [`crate::Store`].
//!
//! Why: two processes appending to the same WAL, or a `warden keys rotate-master` run while the
//! server is up, would corrupt the store. `flock` is released by the kernel when the process
//! dies (including `kill -9`), so there is no stale-lock cleanup.
#![allow(unsafe_code)]

use crate::StoreError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Holds the lock until dropped (closing the file releases it).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(crate::files::io_err(&path))?;
        // SAFETY: `flock` on a valid, open file descriptor owned by `file`, which outlives the
        // call; no memory is passed to the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                StoreError::Locked(dir.to_path_buf())
            } else {
                StoreError::Io { path, source: err }
            });
        }
        Ok(Self { _file: file })
    }
}
