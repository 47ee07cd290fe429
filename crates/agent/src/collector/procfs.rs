//! Parsers for the `/proc` text files the host collector reads.
//!
//! Pure functions over `&str` so every format quirk is unit-testable without a kernel. A line
//! that does not parse is skipped rather than failing the whole file: one odd field in a new
//! kernel must not blank every host metric.

use std::collections::BTreeMap;

/// Aggregate or per-CPU jiffies from a `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CpuTimes {
    pub(crate) user: f64,
    pub(crate) nice: f64,
    pub(crate) system: f64,
    pub(crate) idle: f64,
    pub(crate) iowait: f64,
    pub(crate) irq: f64,
    pub(crate) softirq: f64,
    pub(crate) steal: f64,
    pub(crate) guest: f64,
    pub(crate) guest_nice: f64,
}

impl CpuTimes {
    /// The denominator of the percentages (guest time is already counted inside `user`).
    pub(crate) fn total(&self) -> f64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// What the collector needs from `/proc/stat`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Stat {
    pub(crate) total: Option<CpuTimes>,
    /// `(N, times)` for every `cpuN` line.
    pub(crate) per_cpu: Vec<(u32, CpuTimes)>,
    pub(crate) ctxt: Option<u64>,
}

pub(crate) fn parse_stat(text: &str) -> Stat {
    let mut st = Stat::default();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(key) = it.next() else { continue };
        if key == "ctxt" {
            st.ctxt = it.next().and_then(|v| v.parse().ok());
        } else if let Some(rest) = key.strip_prefix("cpu") {
            let v: Vec<f64> = it.map_while(|f| f.parse::<f64>().ok()).collect();
            if v.len() < 4 {
                continue;
            }
            let g = |i: usize| v.get(i).copied().unwrap_or(0.0);
            let t = CpuTimes {
                user: g(0),
                nice: g(1),
                system: g(2),
                idle: g(3),
                iowait: g(4),
                irq: g(5),
                softirq: g(6),
                steal: g(7),
                guest: g(8),
                guest_nice: g(9),
            };
            if rest.is_empty() {
                st.total = Some(t);
            } else if let Ok(n) = rest.parse::<u32>() {
                st.per_cpu.push((n, t));
            }
        }
    }
    st
}

/// Number of `processor` entries in `/proc/cpuinfo` (logical cores).
pub(crate) fn parse_cpuinfo_cores(text: &str) -> usize {
    text.lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count()
}

/// `(load1, load5, load15)` from `/proc/loadavg`.
pub(crate) fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut it = text.split_ascii_whitespace().map(|f| f.parse::<f64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// `/proc/meminfo` as key → bytes (values given in `kB` are multiplied by 1024).
pub(crate) fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some((k, rest)) = line.split_once(':') else {
            continue;
        };
        let mut it = rest.split_ascii_whitespace();
        let Some(Ok(v)) = it.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match it.next() {
            Some("kB") => v.saturating_mul(1024),
            _ => v,
        };
        m.insert(k.trim().to_owned(), bytes);
    }
    m
}

/// `key value` lines (`/proc/vmstat`).
pub(crate) fn parse_key_values(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_ascii_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// `/proc/net/snmp` and `/proc/net/netstat`: pairs of header/value lines such as
/// `Tcp: RtoAlgorithm ...` / `Tcp: 1 ...`, flattened to `Tcp.CurrEstab` → value.
/// Values are signed in the file (`MaxConn` is -1), so they are kept as `i64`.
pub(crate) fn parse_snmp(text: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [head, vals] = pair else { continue };
        let (Some((p1, names)), Some((p2, values))) = (head.split_once(':'), vals.split_once(':'))
        else {
            continue;
        };
        if p1 != p2 {
            continue;
        }
        for (n, v) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            if let Ok(v) = v.parse::<i64>() {
                m.insert(format!("{p1}.{n}"), v);
            }
        }
    }
    m
}

/// One line of `/proc/diskstats` (fields per `Documentation/admin-guide/iostats.rst`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DiskStat {
    pub(crate) reads: u64,
    pub(crate) reads_merged: u64,
    pub(crate) sectors_read: u64,
    pub(crate) read_ms: u64,
    pub(crate) writes: u64,
    pub(crate) writes_merged: u64,
    pub(crate) sectors_written: u64,
    pub(crate) write_ms: u64,
    pub(crate) in_progress: u64,
    pub(crate) io_ms: u64,
    pub(crate) weighted_ms: u64,
}

pub(crate) fn parse_diskstats(text: &str) -> BTreeMap<String, DiskStat> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let n: Vec<u64> = f[3..14].iter().filter_map(|x| x.parse().ok()).collect();
        if n.len() != 11 {
            continue;
        }
        m.insert(
            f[2].to_owned(),
            DiskStat {
                reads: n[0],
                reads_merged: n[1],
                sectors_read: n[2],
                read_ms: n[3],
                writes: n[4],
                writes_merged: n[5],
                sectors_written: n[6],
                write_ms: n[7],
                in_progress: n[8],
                io_ms: n[9],
                weighted_ms: n[10],
            },
        );
    }
    m
}

/// Per-interface counters of `/proc/net/dev`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NetDev {
    pub(crate) rx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) rx_errs: u64,
    pub(crate) rx_drop: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) tx_packets: u64,
    pub(crate) tx_errs: u64,
    pub(crate) tx_drop: u64,
}

pub(crate) fn parse_net_dev(text: &str) -> BTreeMap<String, NetDev> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let n: Vec<u64> = rest
            .split_ascii_whitespace()
            .map_while(|x| x.parse().ok())
            .collect();
        if n.len() < 16 {
            continue;
        }
        m.insert(
            name.trim().to_owned(),
            NetDev {
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errs: n[2],
                rx_drop: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errs: n[10],
                tx_drop: n[11],
            },
        );
    }
    m
}

/// One line of `/proc/self/mounts`: `(device, mount point, fs type)`, with the octal escapes
/// (`\040` for a space) decoded.
pub(crate) fn parse_mounts(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_ascii_whitespace();
            let dev = unescape_mount(it.next()?);
            let mnt = unescape_mount(it.next()?);
            let fs = it.next()?.to_owned();
            Some((dev, mnt, fs))
        })
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(allocated, allocated but unused, max)` from `/proc/sys/fs/file-nr`.
pub(crate) fn parse_file_nr(text: &str) -> Option<(u64, u64, u64)> {
    let mut it = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_and_short_cpu_lines() {
        let s = parse_stat(
            "cpu  10 2 3 4 5 6 7 8 9 1\ncpu0 1 2 3 4\ncpu1 x\nintr 5 6\nctxt 777\nbtime 1\n",
        );
        let t = s.total.unwrap();
        assert_eq!(t.steal, 8.0);
        assert_eq!(t.total(), 10.0 + 2.0 + 3.0 + 4.0 + 5.0 + 6.0 + 7.0 + 8.0);
        assert_eq!(s.per_cpu.len(), 1);
        assert_eq!(s.per_cpu[0].1.iowait, 0.0);
        assert_eq!(s.ctxt, Some(777));
    }

    #[test]
    fn snmp_pairs_are_flattened_and_signed() {
        let m = parse_snmp(
            "Tcp: RtoAlgorithm MaxConn CurrEstab\nTcp: 1 -1 12\nUdp: InDatagrams\nUdp: 5\n",
        );
        assert_eq!(m["Tcp.CurrEstab"], 12);
        assert_eq!(m["Tcp.MaxConn"], -1);
        assert_eq!(m["Udp.InDatagrams"], 5);
    }

    #[test]
    fn mount_escapes_are_decoded() {
        let m = parse_mounts("/dev/sda1 /mnt/my\\040disk ext4 rw 0 0\nbad\n");
        assert_eq!(
            m,
            vec![("/dev/sda1".into(), "/mnt/my disk".into(), "ext4".into())]
        );
    }

    #[test]
    fn meminfo_units() {
        let m = parse_meminfo("MemTotal:  2048 kB\nHugePages_Total: 3\nbroken\n");
        assert_eq!(m["MemTotal"], 2048 * 1024);
        assert_eq!(m["HugePages_Total"], 3);
    }
}
