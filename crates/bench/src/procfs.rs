//! Readings from `/proc`: UDP socket drop counters, process CPU time and memory, and the
//! `net.core.rmem_default` sysctl.
//!
//! Why the kernel's counters: they are the one loss measure that means the same thing for every
//! receiver (the agent, statsdproxy, the sink) without trusting the receiver's own telemetry.

use std::path::Path;

/// One row of `/proc/net/udp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UdpSock {
    /// Bytes queued in the receive buffer (skb truesize), not datagrams.
    pub(crate) rx_queue: u64,
    pub(crate) inode: u64,
    /// Datagrams the kernel dropped because the receive buffer was full.
    pub(crate) drops: u64,
}

/// Finds the IPv4 UDP socket bound to 127.0.0.1:`port` (or 0.0.0.0:`port`) in the text of
/// `/proc/net/udp`.
pub(crate) fn parse_udp(text: &str, port: u16) -> Option<UdpSock> {
    let want_lo = format!("0100007F:{port:04X}");
    let want_any = format!("00000000:{port:04X}");
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 {
            continue;
        }
        if f[1] != want_lo && f[1] != want_any {
            continue;
        }
        let rx_queue = f[4]
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())?;
        let inode = f[9].parse().ok()?;
        let drops = f[12].parse().ok()?;
        return Some(UdpSock {
            rx_queue,
            inode,
            drops,
        });
    }
    None
}

pub(crate) fn udp_sock(port: u16) -> Option<UdpSock> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    parse_udp(&text, port)
}

/// utime + stime of a process, in clock ticks, from the text of `/proc/<pid>/stat`.
pub(crate) fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// VmRSS and VmHWM in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mem {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

pub(crate) fn parse_status_mem(text: &str) -> Option<Mem> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

pub(crate) fn mem(pid: u32) -> Option<Mem> {
    parse_status_mem(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Threads of a process (`Threads:` in status).
pub(crate) fn threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

/// 1-minute load average.
pub(crate) fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The socket's receive buffer size in bytes as `ss -m` reports it (`rb`), for the record.
pub(crate) fn socket_rcvbuf(port: u16) -> Option<u64> {
    let out = std::process::Command::new("ss")
        .args(["-uanmH", "sport", "=", &format!(":{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let i = text.find(",rb")?;
    let digits: String = text[i + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

const RMEM_DEFAULT: &str = "/proc/sys/net/core/rmem_default";

/// Sets `net.core.rmem_default` for as long as the guard lives, then restores the old value.
///
/// Why: statsdproxy has no option for `SO_RCVBUF`, so the only way to give it the same
/// receive buffer as the agent is the system default at the moment its socket is created. The
/// driver holds the guard only while a receiver binds its socket, so other programs on the
/// machine see the changed default for a fraction of a second.
pub(crate) struct RmemDefault {
    old: u64,
}

impl RmemDefault {
    pub(crate) fn get() -> anyhow::Result<u64> {
        read_u64(Path::new(RMEM_DEFAULT))
    }

    pub(crate) fn set(bytes: u64) -> anyhow::Result<RmemDefault> {
        let old = Self::get()?;
        std::fs::write(RMEM_DEFAULT, bytes.to_string()).map_err(|e| {
            anyhow::anyhow!("cannot write {RMEM_DEFAULT} (needs root): {e}; use --rcvbuf 0")
        })?;
        Ok(RmemDefault { old })
    }
}

impl Drop for RmemDefault {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(RMEM_DEFAULT, self.old.to_string()) {
            eprintln!(
                "warning: could not restore {RMEM_DEFAULT} to {}: {e}",
                self.old
            );
        }
    }
}

fn read_u64(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: not a number ({e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn parses_a_proc_net_udp_row() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  118: 0100007F:1FBD 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 43210 2 0000000000000000 17\n";
        let s = parse_udp(text, 8125).expect("row for 8125");
        assert_eq!(
            s,
            UdpSock {
                rx_queue: 0xA00,
                inode: 43210,
                drops: 17
            }
        );
        assert_eq!(parse_udp(text, 8126), None);
    }

    #[test]
    fn finds_a_real_socket_and_sees_its_queue_grow() {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = sock.local_addr().expect("addr").port();
        let before = udp_sock(port).expect("socket listed in /proc/net/udp");
        assert_eq!(before.rx_queue, 0);
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        tx.send_to(b"x:1|c\n", ("127.0.0.1", port)).expect("send");
        let after = udp_sock(port).expect("still listed");
        assert!(after.rx_queue > 0, "{after:?}");
        assert_eq!(after.inode, before.inode);
    }

    #[test]
    fn parses_stat_with_spaces_in_the_command_name() {
        let text =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(text), Some(325));
    }

    #[test]
    fn reads_own_memory_and_cpu() {
        let pid = std::process::id();
        let m = mem(pid).expect("status");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
        assert!(cpu_ticks(pid).is_some());
        assert!(threads(pid).expect("threads") >= 1);
    }

    #[test]
    fn parses_status_memory() {
        let text = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            parse_status_mem(text),
            Some(Mem {
                rss_kib: 10240,
                hwm_kib: 20480
            })
        );
    }
}
