//! Datagram sockets for DogStatsD: binding, receive-buffer sizing, and batched reads.
//!
//! Why `recvmmsg`: on a small or shared host the binding limit of a UDP receiver is how fast it
//! drains the kernel queue (agent spec §9.4). One `recvmmsg` call returns up to
//! [`BATCH`] datagrams, so the syscall cost is paid once per batch instead of once per packet.
//! The same call works for UDP and Unix datagram sockets.
#![allow(unsafe_code)]

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Datagrams read per `recvmmsg` call.
pub(crate) const BATCH: usize = 64;

/// The receive buffer the kernel actually granted, and whether it is below the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RcvBuf {
    pub(crate) requested: usize,
    pub(crate) granted: usize,
}

/// Binds the UDP listener with the requested `SO_RCVBUF`, falling back to `SO_RCVBUFFORCE`
/// (works with `CAP_NET_ADMIN`) and finally to whatever the kernel caps it at.
pub(crate) fn bind_udp(
    addr: std::net::SocketAddr,
    rcvbuf: usize,
) -> io::Result<(UdpSocket, RcvBuf)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let granted = set_rcvbuf(&socket, rcvbuf);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok((
        socket.into(),
        RcvBuf {
            requested: rcvbuf,
            granted,
        },
    ))
}

/// Binds a Unix datagram socket, replacing a stale socket file (never any other kind of file)
/// and making it writable by anyone but readable only by the agent (`0722`, like Datadog).
pub(crate) fn bind_uds(path: &Path, rcvbuf: usize) -> io::Result<(UnixDatagram, RcvBuf)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = UnixDatagram::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let s2 = socket2::SockRef::from(&sock);
    let granted = set_rcvbuf_ref(&s2, rcvbuf);
    Ok((
        sock,
        RcvBuf {
            requested: rcvbuf,
            granted,
        },
    ))
}

fn set_rcvbuf(socket: &Socket, want: usize) -> usize {
    set_rcvbuf_ref(&socket2::SockRef::from(socket), want)
}

fn set_rcvbuf_ref(socket: &socket2::SockRef<'_>, want: usize) -> usize {
    if want == 0 {
        return socket.recv_buffer_size().unwrap_or(0);
    }
    let _ = socket.set_recv_buffer_size(want);
    // Linux doubles the value for bookkeeping and reports the doubled figure.
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted >= want {
        return granted;
    }
    let v = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is a valid open socket owned by `socket` for the duration of the call; the
    // option value points at a live `c_int` whose size is passed correctly.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let _ = rc;
    socket.recv_buffer_size().unwrap_or(0) / 2
}

/// Reusable buffers for one `recvmmsg` batch.
///
/// The headers and iovecs are built once: they point into `bufs`, whose heap allocation never
/// moves or changes size (the vectors are never grown), and the kernel only writes `msg_len`
/// and `msg_flags` back. Slots are `stride` bytes apart, one cache line more than the buffer
/// size: with a power-of-two stride every datagram would start in the same cache set, and a
/// batch of small datagrams would evict itself from L1 between the kernel's copy and the parse.
pub(crate) struct BatchReader {
    bufs: Vec<u8>,
    buf_size: usize,
    stride: usize,
    /// Kept alive for `msgs`, which point into it.
    _iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `_iovecs`/`msgs` only ever point into `bufs`/`_iovecs`,
// heap allocations owned by the same struct that move with it and are never reallocated.
unsafe impl Send for BatchReader {}

impl BatchReader {
    pub(crate) fn new(buf_size: usize) -> Self {
        let buf_size = buf_size.max(1);
        let stride = buf_size.next_multiple_of(64) + 64;
        let mut bufs = vec![0u8; stride * BATCH];
        let base = bufs.as_mut_ptr();
        let mut iovecs = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            // SAFETY: `i * stride + buf_size <= BATCH * stride`: the slot is inside `bufs`.
            let ptr = unsafe { base.add(i * stride) };
            iovecs.push(libc::iovec {
                iov_base: ptr.cast(),
                iov_len: buf_size,
            });
        }
        let mut msgs = Vec::with_capacity(BATCH);
        for iov in iovecs.iter_mut() {
            // SAFETY: mmsghdr is a plain C struct for which all-zero is a valid value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
        }
        Self {
            bufs,
            buf_size,
            stride,
            _iovecs: iovecs,
            msgs,
        }
    }

    /// Blocks until at least one datagram arrives (or the socket's read timeout passes) and
    /// returns the datagrams read, each truncated to the buffer size like the Datadog agent.
    pub(crate) fn read(&mut self, fd: RawFd) -> io::Result<impl Iterator<Item = &[u8]>> {
        // SAFETY: `msgs` holds BATCH initialised headers whose iovecs point into `bufs`, all
        // alive and not otherwise borrowed during the call (`&mut self`); a null timeout means
        // "no timeout" (the socket's SO_RCVTIMEO still applies to the first datagram).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(BATCH);
        let (buf_size, stride) = (self.buf_size, self.stride);
        let bufs = &self.bufs;
        let msgs = &self.msgs;
        Ok((0..n).map(move |i| {
            let len = (msgs[i].msg_len as usize).min(buf_size);
            &bufs[i * stride..i * stride + len]
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_reader_returns_every_datagram_in_order() {
        let (rx, buf) = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert!(buf.granted > 0);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = rx.local_addr().unwrap();
        for i in 0..10 {
            tx.send_to(format!("m{i}:1|c").as_bytes(), addr).unwrap();
        }
        let mut reader = BatchReader::new(8192);
        let mut got = Vec::new();
        while got.len() < 10 {
            for d in reader.read(rx.as_raw_fd()).unwrap() {
                got.push(String::from_utf8(d.to_vec()).unwrap());
            }
        }
        let want: Vec<String> = (0..10).map(|i| format!("m{i}:1|c")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn uds_refuses_to_replace_a_regular_file_and_sets_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dsd.socket");
        std::fs::write(&p, "not a socket").unwrap();
        let err = bind_uds(&p, 0).err().unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        std::fs::remove_file(&p).unwrap();
        let (_s, _) = bind_uds(&p, 0).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o722);
        // A stale socket is replaced.
        drop(_s);
        assert!(bind_uds(&p, 0).is_ok());
    }
}
