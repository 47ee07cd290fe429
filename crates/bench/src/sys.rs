//! The few system calls std does not expose: `sendmmsg`, `recvmmsg`, CPU affinity, `CLK_TCK`.
//!
//! Why raw syscalls: the method (agent spec §9.2) sends in batches of 32 datagrams per syscall
//! so that the generator, not the receiver, is the cheap side; std's `UdpSocket::send` is one
//! syscall per datagram and would cap the offered load at roughly a third. All unsafe code of
//! the crate lives here, each block with its justification.
#![allow(unsafe_code)]

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::payload::Payload;

/// Datagrams per `sendmmsg` call (spec §9.2).
pub(crate) const SEND_BATCH: usize = 32;

/// A connected UDP socket plus one pre-built `mmsghdr` per datagram of a [`Payload`].
pub(crate) struct BatchSender<'a> {
    sock: UdpSocket,
    // `hdrs[i].msg_hdr.msg_iov` points at `iovs[i]`, whose base points into
    // `payload.datagrams[i]`; both vectors are never resized after construction and the
    // payload is borrowed for 'a, so the pointers stay valid for the life of the sender.
    hdrs: Vec<libc::mmsghdr>,
    _iovs: Vec<libc::iovec>,
    _payload: &'a Payload,
}

impl<'a> BatchSender<'a> {
    /// `sock` must already be connected to the target.
    pub(crate) fn new(sock: UdpSocket, payload: &'a Payload) -> Self {
        let mut iovs: Vec<libc::iovec> = payload
            .datagrams
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        let hdrs = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: `mmsghdr` is a plain C struct for which all-zero bytes is a valid
                // value (null pointers, zero lengths).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        BatchSender {
            sock,
            hdrs,
            _iovs: iovs,
            _payload: payload,
        }
    }

    /// Number of datagrams in the ring.
    pub(crate) fn len(&self) -> usize {
        self.hdrs.len()
    }

    /// Sends datagrams `start..start + n` (no wrap-around) in one `sendmmsg`; returns how many
    /// the kernel accepted.
    pub(crate) fn send(&mut self, start: usize, n: usize) -> io::Result<usize> {
        let end = start.saturating_add(n).min(self.hdrs.len());
        if start >= end {
            return Ok(0);
        }
        let count = (end - start) as libc::c_uint;
        // SAFETY: `start..end` is within `hdrs` (clamped above); every header points at a live
        // iovec over a live datagram buffer (see the field comment); the socket fd is owned by
        // `self.sock` and open. The kernel only writes the `msg_len` fields, which we own
        // mutably through `&mut self`.
        let rc = unsafe {
            libc::sendmmsg(
                self.sock.as_raw_fd(),
                self.hdrs.as_mut_ptr().add(start),
                count,
                0,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }
}

/// Pins the calling thread to one CPU.
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    set_affinity(0, cpu)
}

fn set_affinity(pid: libc::pid_t, cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU index {cpu} out of range"),
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bitmask; zeroed is the empty set. CPU_SET only writes
    // inside the set (index checked above). sched_setaffinity reads `size_of::<cpu_set_t>()`
    // bytes from a valid pointer.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes a child process start pinned to `cpu` (all its threads inherit the mask), like
/// `taskset -c cpu` without needing the tool, and optionally inside a cgroup (by writing `0`,
/// "this process", to the given `cgroup.procs` file) before it runs any of its own code.
pub(crate) fn prepare_child(
    cmd: &mut Command,
    cpu: Option<usize>,
    nice: Option<i32>,
    cgroup_procs: Option<std::ffi::CString>,
) {
    // SAFETY: the closure runs between fork and exec. It only makes raw, async-signal-safe
    // syscalls (prctl, sched_setaffinity, setpriority, open, write, close) on data prepared before the fork (the
    // CString is moved in), and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Die with the bench (e.g. on Ctrl-C) instead of lingering on the port.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(cpu) = cpu {
                set_affinity(0, cpu)?;
            }
            if let Some(n) = nice {
                if libc::setpriority(libc::PRIO_PROCESS, 0, n) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(path) = &cgroup_procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let rc = libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if rc != 1 {
                    return Err(err);
                }
            }
            Ok(())
        });
    }
}

/// Sets the nice value of the calling thread (threads it creates later inherit it).
pub(crate) fn set_nice(n: i32) -> io::Result<()> {
    // SAFETY: setpriority has no memory-safety preconditions.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clock ticks per second used by `/proc/<pid>/stat`.
pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Number of online CPUs.
pub(crate) fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as usize } else { 1 }
}

/// The minimal `count` sink of the method: `recvmmsg` × 64 into 8 KiB buffers, counting
/// datagrams and bytes, forever (until the process is killed). Kept as a baseline that shows
/// what the kernel and the generator alone can do on this machine.
pub(crate) fn sink_count(sock: &UdpSocket) -> io::Result<()> {
    const BATCH: usize = 64;
    const BUF: usize = 8192;
    let mut bufs = vec![[0u8; BUF]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: BUF,
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: all-zero is a valid `mmsghdr`.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut datagrams: u64 = 0;
    let mut bytes: u64 = 0;
    loop {
        // SAFETY: `hdrs` holds BATCH headers, each pointing at an iovec over a live BUF-byte
        // buffer; none of the vectors is resized while the pointers are in use. Blocking call,
        // null timeout.
        let rc = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        datagrams += rc as u64;
        for h in &hdrs[..rc as usize] {
            bytes += u64::from(h.msg_len);
        }
        std::hint::black_box((datagrams, bytes));
    }
}

/// Sends SIGTERM to a child process we started.
pub(crate) fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions; the pid is our own live child (not yet
    // reaped, so the id cannot have been reused).
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
