//! Host metrics: the `system.*` series of the Datadog core checks (cpu, load, memory, disk, io,
//! network, uptime, file handles), computed from `/proc` and `/sys`.
//!
//! Why a synchronous, file-reading [`HostCollector`]: every number comes from a handful of tiny
//! text files, so the collector is a pure function of (`procfs_path`, `sysfs_path`, previous
//! snapshot, time). Tests point it at fixture trees and assert exact values; containers point it
//! at `/host/proc`. [`run_collector`] only adds the timer and runs each collection on the
//! blocking pool (a `statvfs` on a dead NFS mount can block; the async runtime must not).
//!
//! # Metric semantics (follows the Datadog agent, spec `agent.md` §10)
//!
//! * **gauge**: the value now, [`MetricKind::Gauge`].
//! * **monotonic_count** (`system.cpu.context_switches`, `system.disk.read_time`,
//!   `system.disk.write_time`): the increase since the previous collection, sent as
//!   [`MetricKind::Count`] — what the Datadog aggregator's `MonotonicCount` flushes.
//! * **rate** (network, io ops, swap in/out, block in/out, read_time_pct): the Datadog check
//!   `rate()` submits raw counters and the agent flushes `(v2 - v1) / (t2 - t1)` as a **GAUGE**
//!   on the wire. We do the same computation here and send the per-second value as
//!   [`MetricKind::Gauge`]; `MetricKind::Rate` is reserved for DogStatsD-style "count per
//!   interval" rates and would be misread by the intake.
//! * Every series carries `interval = host_metrics_interval` (the check interval), the unit in
//!   [`Series::unit`], `host = hostname` and the configured host `tags` plus its own tags
//!   (`core:cpuN`, `device:`, `iface:`).
//! * The first collection emits no delta-based metric (cpu %, counts, rates), like the agent.
//!   A counter that went backwards (reboot, wrap, device re-plug) is skipped for one interval
//!   instead of emitting a huge negative or positive spike.
//!
//! # Choices worth knowing
//!
//! * `system.mem.used` is `MemTotal - MemFree` exactly as the spec table says (not gopsutil's
//!   newer "total - free - buffers - cached").
//! * Swap in/out pages are converted with a 4 KiB page (gopsutil does the same).
//! * `system.io.svctm` uses the sysstat formula `Δio_ticks / Δios` (ms per request), which
//!   equals `util / throughput` with util as busy-ms per second.
//! * Disk mounts come from `<procfs>/self/mounts`. Excluded file-system types
//!   ([`EXCLUDED_FS`]): the spec's `iso9660`, `tracefs`, `binfmt_misc`, plus kernel-virtual ones
//!   that never hold user data (proc, sysfs, cgroup*, devpts, devtmpfs, securityfs, debugfs,
//!   pstore, bpf, mqueue, hugetlbfs, configfs, fusectl, autofs, rpc_pipefs, nsfs, selinuxfs,
//!   efivarfs, ramfs, nfsd) and `squashfs` (read-only images such as snaps, always 100% full).
//!   `tmpfs` and `overlay` are kept: they consume RAM or hold a container's root and fill up
//!   for real. Bind mounts of the same `/dev/...` device are reported once (first mount wins);
//!   every series has tags `device:`, `device_name:` (base name) and `mount_point:` (which keeps
//!   the many `tmpfs` mounts apart). In a container the mount points are resolved in the
//!   agent's own mount namespace. Each `statvfs` runs on a helper thread with a 2 s timeout; a
//!   mount that hangs (dead hard-mounted NFS) is skipped from then on, with a warning.
//! * I/O devices that have never done any I/O (unused `loop`/`ram` devices) are skipped.
//! * `lo` is excluded from network metrics, like the default Datadog network config.
//! * No outbound probes: there is no NTP check (spec §10 security note).

mod procfs;
pub(crate) mod sys;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use warden_model::{MetricKind, Point, Series};

use crate::config::AgentConfig;
use crate::{OutTx, Outgoing};
use procfs::{CpuTimes, DiskStat, NetDev};

/// File-system types never reported by the disk metrics (see the module docs).
pub const EXCLUDED_FS: &[&str] = &[
    "iso9660",
    "tracefs",
    "binfmt_misc",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "devtmpfs",
    "securityfs",
    "debugfs",
    "pstore",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "autofs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "efivarfs",
    "ramfs",
    "nfsd",
    "squashfs",
];

const MIB: f64 = 1024.0 * 1024.0;
const PAGE_SIZE: f64 = 4096.0;

/// Counters remembered between two collections.
#[derive(Debug, Default)]
struct Snapshot {
    at: i64,
    cpu: Option<CpuTimes>,
    ctxt: Option<u64>,
    vmstat: BTreeMap<String, u64>,
    disks: BTreeMap<String, DiskStat>,
    nets: BTreeMap<String, NetDev>,
    snmp: BTreeMap<String, i64>,
}

/// Computes the `system.*` host metrics from a procfs and a sysfs tree.
#[derive(Debug)]
pub struct HostCollector {
    procfs: PathBuf,
    sysfs: PathBuf,
    host: String,
    tags: Vec<String>,
    interval: i64,
    ticks: f64,
    prev: Option<Snapshot>,
    /// Mount points whose `statvfs` did not return within [`STATVFS_TIMEOUT`]; skipped from
    /// then on (a blocked thread cannot be cancelled, so retrying would leak one per run).
    hung_mounts: HashSet<String>,
}

/// Accumulates series sharing host, tags, interval and timestamp.
struct Emit {
    host: String,
    tags: Vec<String>,
    interval: i64,
    now: i64,
    out: Vec<Series>,
}

impl Emit {
    fn push(&mut self, name: &str, kind: MetricKind, unit: &str, value: f64, extra: &[String]) {
        if !value.is_finite() {
            return;
        }
        let mut tags = self.tags.to_vec();
        tags.extend_from_slice(extra);
        self.out.push(Series {
            name: name.to_owned(),
            tags,
            host: self.host.clone(),
            kind,
            interval: self.interval,
            unit: (!unit.is_empty()).then(|| unit.to_owned()),
            source_type_name: None,
            points: vec![Point {
                timestamp: self.now,
                value,
            }],
        });
    }

    fn gauge(&mut self, name: &str, unit: &str, value: f64, extra: &[String]) {
        self.push(name, MetricKind::Gauge, unit, value, extra);
    }

    /// Increase of a monotonic counter, skipped when it went backwards.
    fn count(&mut self, name: &str, unit: &str, prev: u64, cur: u64, extra: &[String]) {
        if cur >= prev {
            self.push(name, MetricKind::Count, unit, (cur - prev) as f64, extra);
        }
    }

    /// Per-second rate of a counter over `dt` seconds, sent as a gauge (see module docs).
    fn rate(&mut self, name: &str, unit: &str, prev: u64, cur: u64, dt: f64, extra: &[String]) {
        self.rate_scaled(name, unit, prev, cur, 1.0, dt, extra);
    }

    #[allow(clippy::too_many_arguments)]
    fn rate_scaled(
        &mut self,
        name: &str,
        unit: &str,
        prev: u64,
        cur: u64,
        scale: f64,
        dt: f64,
        extra: &[String],
    ) {
        if cur >= prev && dt > 0.0 {
            let v = (cur - prev) as f64 * scale / dt;
            self.push(name, MetricKind::Gauge, unit, v, extra);
        }
    }
}

impl HostCollector {
    /// A collector reading `cfg.procfs_path` and `cfg.sysfs_path`.
    pub fn new(cfg: &AgentConfig) -> Self {
        Self {
            procfs: cfg.procfs_path.clone(),
            sysfs: cfg.sysfs_path.clone(),
            host: cfg.hostname.clone(),
            tags: cfg.tags.clone(),
            interval: i64::try_from(cfg.host_metrics_interval).unwrap_or(i64::MAX),
            ticks: sys::clock_ticks(),
            prev: None,
            hung_mounts: HashSet::new(),
        }
    }

    fn read(&self, rel: &str) -> Option<String> {
        read_file(&self.procfs.join(rel))
    }

    /// One collection at `now_unix` (UNIX seconds). Delta-based metrics need a previous
    /// collection with an earlier timestamp; missing or unreadable files only drop their own
    /// metrics.
    pub fn collect(&mut self, now_unix: i64) -> Vec<Series> {
        let prev = self.prev.take().filter(|p| p.at < now_unix);
        let dt = prev.as_ref().map(|p| (now_unix - p.at) as f64);
        let mut cur = Snapshot {
            at: now_unix,
            ..Snapshot::default()
        };
        let mut e = Emit {
            host: self.host.clone(),
            tags: self.tags.clone(),
            interval: self.interval,
            now: now_unix,
            out: Vec::new(),
        };
        let cores = self.cpu(&mut e, prev.as_ref(), &mut cur);
        self.load(&mut e, cores);
        self.memory(&mut e, prev.as_ref(), &mut cur, dt);
        self.disk(&mut e);
        self.io(&mut e, prev.as_ref(), &mut cur, dt);
        self.network(&mut e, prev.as_ref(), &mut cur, dt);
        if let Some(up) = self.read("uptime").and_then(|t| {
            t.split_ascii_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        }) {
            e.gauge("system.uptime", "second", up, &[]);
        }
        if let Some((alloc, unused, max)) = self
            .read("sys/fs/file-nr")
            .as_deref()
            .and_then(procfs::parse_file_nr)
        {
            let used = alloc.saturating_sub(unused) as f64;
            e.gauge(
                "system.fs.file_handles.allocated",
                "file",
                alloc as f64,
                &[],
            );
            e.gauge(
                "system.fs.file_handles.allocated_unused",
                "file",
                unused as f64,
                &[],
            );
            e.gauge("system.fs.file_handles.used", "file", used, &[]);
            e.gauge("system.fs.file_handles.max", "file", max as f64, &[]);
            if max > 0 {
                e.gauge(
                    "system.fs.file_handles.in_use",
                    "fraction",
                    used / max as f64,
                    &[],
                );
            }
        }
        self.prev = Some(cur);
        e.out
    }

    /// CPU percentages, per-core totals, context switches; returns the core count.
    fn cpu(&self, e: &mut Emit, prev: Option<&Snapshot>, cur: &mut Snapshot) -> usize {
        let stat = self
            .read("stat")
            .map(|t| procfs::parse_stat(&t))
            .unwrap_or_default();
        let mut cores = self
            .read("cpuinfo")
            .map(|t| procfs::parse_cpuinfo_cores(&t))
            .unwrap_or(0);
        if cores == 0 {
            cores = stat.per_cpu.len();
        }
        if cores > 0 {
            e.gauge("system.cpu.num_cores", "core", cores as f64, &[]);
        }
        cur.cpu = stat.total;
        cur.ctxt = stat.ctxt;
        if let (Some(p), Some(c)) = (prev.and_then(|p| p.cpu), stat.total) {
            let dtotal = c.total() - p.total();
            if dtotal > 0.0 {
                let pct = |cur: f64, prev: f64| (cur - prev).max(0.0) * 100.0 / dtotal;
                let items = [
                    ("system.cpu.user", c.user + c.nice, p.user + p.nice),
                    (
                        "system.cpu.system",
                        c.system + c.irq + c.softirq,
                        p.system + p.irq + p.softirq,
                    ),
                    ("system.cpu.interrupt", c.irq + c.softirq, p.irq + p.softirq),
                    ("system.cpu.iowait", c.iowait, p.iowait),
                    ("system.cpu.idle", c.idle, p.idle),
                    ("system.cpu.stolen", c.steal, p.steal),
                    ("system.cpu.guest", c.guest, p.guest),
                ];
                for (name, c, p) in items {
                    e.gauge(name, "percent", pct(c, p), &[]);
                }
            }
        }
        if let (Some(p), Some(c)) = (prev.and_then(|p| p.ctxt), stat.ctxt) {
            e.count("system.cpu.context_switches", "switch", p, c, &[]);
        }
        for (n, t) in &stat.per_cpu {
            let tag = [format!("core:cpu{n}")];
            let fields = [
                ("user", t.user),
                ("nice", t.nice),
                ("system", t.system),
                ("idle", t.idle),
                ("iowait", t.iowait),
                ("irq", t.irq),
                ("softirq", t.softirq),
                ("steal", t.steal),
                ("guest", t.guest),
                ("guestnice", t.guest_nice),
            ];
            for (f, v) in fields {
                e.gauge(
                    &format!("system.cpu.{f}.total"),
                    "second",
                    v / self.ticks,
                    &tag,
                );
            }
        }
        cores
    }

    fn load(&self, e: &mut Emit, cores: usize) {
        let Some((l1, l5, l15)) = self
            .read("loadavg")
            .as_deref()
            .and_then(procfs::parse_loadavg)
        else {
            return;
        };
        for (n, v) in [("1", l1), ("5", l5), ("15", l15)] {
            e.gauge(&format!("system.load.{n}"), "", v, &[]);
            if cores > 0 {
                e.gauge(&format!("system.load.norm.{n}"), "", v / cores as f64, &[]);
            }
        }
    }

    fn memory(&self, e: &mut Emit, prev: Option<&Snapshot>, cur: &mut Snapshot, dt: Option<f64>) {
        if let Some(m) = self.read("meminfo").map(|t| procfs::parse_meminfo(&t)) {
            let get = |k: &str| m.get(k).map(|v| *v as f64);
            let mib = |v: f64| v / MIB;
            if let Some(total) = get("MemTotal") {
                e.gauge("system.mem.total", "mebibyte", mib(total), &[]);
                if let Some(free) = get("MemFree") {
                    e.gauge("system.mem.free", "mebibyte", mib(free), &[]);
                    e.gauge("system.mem.used", "mebibyte", mib(total - free), &[]);
                }
                if let Some(avail) = get("MemAvailable") {
                    e.gauge("system.mem.usable", "mebibyte", mib(avail), &[]);
                    if total > 0.0 {
                        e.gauge("system.mem.pct_usable", "fraction", avail / total, &[]);
                    }
                }
            }
            for (name, key) in [
                ("cached", "Cached"),
                ("buffered", "Buffers"),
                ("shared", "Shmem"),
                ("slab", "Slab"),
                ("slab_reclaimable", "SReclaimable"),
                ("page_tables", "PageTables"),
                ("commit_limit", "CommitLimit"),
                ("committed_as", "Committed_AS"),
            ] {
                if let Some(v) = get(key) {
                    e.gauge(&format!("system.mem.{name}"), "mebibyte", mib(v), &[]);
                }
            }
            if let (Some(total), Some(free)) = (get("SwapTotal"), get("SwapFree")) {
                let used = (total - free).max(0.0);
                e.gauge("system.swap.total", "mebibyte", mib(total), &[]);
                e.gauge("system.swap.free", "mebibyte", mib(free), &[]);
                e.gauge("system.swap.used", "mebibyte", mib(used), &[]);
                let used_pct = if total > 0.0 {
                    used * 100.0 / total
                } else {
                    0.0
                };
                e.gauge(
                    "system.swap.pct_free",
                    "fraction",
                    (100.0 - used_pct) / 100.0,
                    &[],
                );
            }
            if let Some(v) = get("SwapCached") {
                e.gauge("system.swap.cached", "mebibyte", mib(v), &[]);
            }
        }
        cur.vmstat = self
            .read("vmstat")
            .map(|t| procfs::parse_key_values(&t))
            .unwrap_or_default();
        let (Some(p), Some(dt)) = (prev, dt) else {
            return;
        };
        for (name, key, unit, scale) in [
            ("system.swap.swap_in", "pswpin", "mebibyte", PAGE_SIZE / MIB),
            (
                "system.swap.swap_out",
                "pswpout",
                "mebibyte",
                PAGE_SIZE / MIB,
            ),
            ("system.io.block_in", "pgpgin", "block", 1.0),
            ("system.io.block_out", "pgpgout", "block", 1.0),
        ] {
            if let (Some(a), Some(b)) = (p.vmstat.get(key), cur.vmstat.get(key)) {
                e.rate_scaled(name, unit, *a, *b, scale, dt, &[]);
            }
        }
    }

    fn disk(&mut self, e: &mut Emit) {
        let Some(text) = self.read("self/mounts") else {
            return;
        };
        let mut seen_dev = HashSet::new();
        let mut seen_mnt = HashSet::new();
        for (dev, mnt, fs) in procfs::parse_mounts(&text) {
            if EXCLUDED_FS.contains(&fs.as_str()) || dev == "none" || dev.is_empty() {
                continue;
            }
            if dev.starts_with('/') && !seen_dev.insert(dev.clone()) {
                continue;
            }
            if !seen_mnt.insert(mnt.clone()) {
                continue;
            }
            if self.hung_mounts.contains(&mnt) {
                continue;
            }
            let st = match statvfs_with_timeout(&mnt) {
                Ok(st) => st,
                Err(StatvfsError::Io(err)) => {
                    tracing::debug!(mount = %mnt, %err, "statvfs failed; mount skipped");
                    continue;
                }
                Err(StatvfsError::Hung) => {
                    tracing::warn!(mount = %mnt, timeout = ?STATVFS_TIMEOUT,
                        "statvfs did not return (dead network file system?); mount skipped until restart");
                    self.hung_mounts.insert(mnt);
                    continue;
                }
            };
            if st.blocks == 0 {
                continue;
            }
            let device_name = dev.rsplit('/').next().unwrap_or(&dev).to_owned();
            let tags = [
                format!("device:{dev}"),
                format!("device_name:{device_name}"),
                format!("mount_point:{mnt}"),
            ];
            let kib = |blocks: u64| blocks as f64 * st.frsize as f64 / 1024.0;
            let total = kib(st.blocks);
            let used = kib(st.blocks.saturating_sub(st.bfree));
            let free = kib(st.bavail);
            e.gauge("system.disk.total", "kibibyte", total, &tags);
            e.gauge("system.disk.used", "kibibyte", used, &tags);
            e.gauge("system.disk.free", "kibibyte", free, &tags);
            if used + free > 0.0 {
                let in_use = used / (used + free);
                e.gauge("system.disk.in_use", "fraction", in_use, &tags);
                e.gauge("system.disk.utilized", "percent", in_use * 100.0, &tags);
            }
            if st.files > 0 {
                let iused = st.files.saturating_sub(st.ffree);
                e.gauge("system.fs.inodes.total", "inode", st.files as f64, &tags);
                e.gauge("system.fs.inodes.used", "inode", iused as f64, &tags);
                e.gauge("system.fs.inodes.free", "inode", st.ffree as f64, &tags);
                e.gauge(
                    "system.fs.inodes.in_use",
                    "fraction",
                    iused as f64 / st.files as f64,
                    &tags,
                );
            }
        }
    }

    fn io(&self, e: &mut Emit, prev: Option<&Snapshot>, cur: &mut Snapshot, dt: Option<f64>) {
        let Some(text) = self.read("diskstats") else {
            return;
        };
        cur.disks = procfs::parse_diskstats(&text)
            .into_iter()
            .filter(|(_, d)| *d != DiskStat::default())
            .collect();
        let (Some(p), Some(dt)) = (prev, dt) else {
            return;
        };
        for (name, c) in &cur.disks {
            let Some(o) = p.disks.get(name) else { continue };
            let fields = [
                (o.reads, c.reads),
                (o.reads_merged, c.reads_merged),
                (o.sectors_read, c.sectors_read),
                (o.read_ms, c.read_ms),
                (o.writes, c.writes),
                (o.writes_merged, c.writes_merged),
                (o.sectors_written, c.sectors_written),
                (o.write_ms, c.write_ms),
                (o.io_ms, c.io_ms),
                (o.weighted_ms, c.weighted_ms),
            ];
            if fields.iter().any(|(a, b)| b < a) {
                continue; // counters reset: skip this device for one interval
            }
            let d = |a: u64, b: u64| (b - a) as f64;
            let tags = [format!("device:{name}")];
            e.count(
                "system.disk.read_time",
                "millisecond",
                o.read_ms,
                c.read_ms,
                &tags,
            );
            e.count(
                "system.disk.write_time",
                "millisecond",
                o.write_ms,
                c.write_ms,
                &tags,
            );
            e.rate_scaled(
                "system.disk.read_time_pct",
                "percent",
                o.read_ms,
                c.read_ms,
                0.1,
                dt,
                &tags,
            );
            e.rate_scaled(
                "system.disk.write_time_pct",
                "percent",
                o.write_ms,
                c.write_ms,
                0.1,
                dt,
                &tags,
            );
            e.rate("system.io.r_s", "request", o.reads, c.reads, dt, &tags);
            e.rate("system.io.w_s", "request", o.writes, c.writes, dt, &tags);
            e.rate(
                "system.io.rrqm_s",
                "request",
                o.reads_merged,
                c.reads_merged,
                dt,
                &tags,
            );
            e.rate(
                "system.io.wrqm_s",
                "request",
                o.writes_merged,
                c.writes_merged,
                dt,
                &tags,
            );
            // Sectors are always 512 bytes in /proc/diskstats; 2 sectors = 1 KiB.
            e.rate_scaled(
                "system.io.rkb_s",
                "kibibyte",
                o.sectors_read,
                c.sectors_read,
                0.5,
                dt,
                &tags,
            );
            e.rate_scaled(
                "system.io.wkb_s",
                "kibibyte",
                o.sectors_written,
                c.sectors_written,
                0.5,
                dt,
                &tags,
            );
            let dr = d(o.reads, c.reads);
            let dw = d(o.writes, c.writes);
            let ios = dr + dw;
            let per_op = |num: f64, ops: f64| if ops > 0.0 { num / ops } else { 0.0 };
            e.gauge(
                "system.io.avg_rq_sz",
                "sector",
                per_op(
                    d(o.sectors_read, c.sectors_read) + d(o.sectors_written, c.sectors_written),
                    ios,
                ),
                &tags,
            );
            let rt = d(o.read_ms, c.read_ms);
            let wt = d(o.write_ms, c.write_ms);
            e.gauge(
                "system.io.await",
                "millisecond",
                per_op(rt + wt, ios),
                &tags,
            );
            e.gauge("system.io.r_await", "millisecond", per_op(rt, dr), &tags);
            e.gauge("system.io.w_await", "millisecond", per_op(wt, dw), &tags);
            e.gauge(
                "system.io.avg_q_sz",
                "request",
                d(o.weighted_ms, c.weighted_ms) / (dt * 1000.0),
                &tags,
            );
            let ticks = d(o.io_ms, c.io_ms);
            e.gauge(
                "system.io.util",
                "percent",
                (ticks / (dt * 1000.0) * 100.0).min(100.0),
                &tags,
            );
            e.gauge("system.io.svctm", "millisecond", per_op(ticks, ios), &tags);
        }
    }

    fn network(&self, e: &mut Emit, prev: Option<&Snapshot>, cur: &mut Snapshot, dt: Option<f64>) {
        if let Some(text) = self.read("net/dev") {
            cur.nets = procfs::parse_net_dev(&text);
            cur.nets.remove("lo");
        }
        let class = self.sysfs.join("class/net");
        for iface in cur.nets.keys() {
            let dir = class.join(iface);
            let num = |f: &str| read_file(&dir.join(f)).and_then(|s| s.trim().parse::<i64>().ok());
            let tags = [format!("iface:{iface}")];
            if let Some(v) = num("mtu") {
                e.gauge("system.net.iface.mtu", "byte", v as f64, &tags);
            }
            if let Some(v) = num("tx_queue_len") {
                e.gauge("system.net.iface.tx_queue_len", "", v as f64, &tags);
            }
            if let Some(state) = read_file(&dir.join("operstate")) {
                let up = f64::from(u8::from(state.trim() == "up"));
                e.gauge("system.net.iface.up", "", up, &tags);
            }
            if let Ok(rd) = std::fs::read_dir(dir.join("queues")) {
                let names: Vec<String> = rd
                    .filter_map(|d| d.ok())
                    .map(|d| d.file_name().to_string_lossy().into_owned())
                    .collect();
                let n = |p: &str| names.iter().filter(|x| x.starts_with(p)).count() as f64;
                e.gauge("system.net.iface.num_tx_queues", "", n("tx-"), &tags);
                e.gauge("system.net.iface.num_rx_queues", "", n("rx-"), &tags);
            }
        }
        let snmp_text = [self.read("net/snmp"), self.read("net/netstat")];
        for t in snmp_text.iter().flatten() {
            cur.snmp.extend(procfs::parse_snmp(t));
        }
        if let Some(v) = cur.snmp.get("Tcp.CurrEstab") {
            e.gauge(
                "system.net.tcp.current_established",
                "connection",
                *v as f64,
                &[],
            );
        }
        let (Some(p), Some(dt)) = (prev, dt) else {
            return;
        };
        for (iface, c) in &cur.nets {
            let Some(o) = p.nets.get(iface) else { continue };
            let mut tags = vec![format!("device:{iface}")];
            let dir = class.join(iface);
            if let Some(speed) = read_file(&dir.join("speed"))
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|s| *s > 0)
            {
                tags.push(format!("speed:{speed}"));
            }
            if let Some(mtu) = read_file(&dir.join("mtu")).map(|s| s.trim().to_owned()) {
                tags.push(format!("mtu:{mtu}"));
            }
            let items = [
                ("system.net.bytes_rcvd", "byte", o.rx_bytes, c.rx_bytes),
                ("system.net.bytes_sent", "byte", o.tx_bytes, c.tx_bytes),
                (
                    "system.net.packets_in.count",
                    "packet",
                    o.rx_packets,
                    c.rx_packets,
                ),
                ("system.net.packets_in.drop", "packet", o.rx_drop, c.rx_drop),
                (
                    "system.net.packets_in.error",
                    "packet",
                    o.rx_errs,
                    c.rx_errs,
                ),
                (
                    "system.net.packets_out.count",
                    "packet",
                    o.tx_packets,
                    c.tx_packets,
                ),
                (
                    "system.net.packets_out.drop",
                    "packet",
                    o.tx_drop,
                    c.tx_drop,
                ),
                (
                    "system.net.packets_out.error",
                    "packet",
                    o.tx_errs,
                    c.tx_errs,
                ),
            ];
            for (name, unit, a, b) in items {
                e.rate(name, unit, a, b, dt, &tags);
            }
        }
        for (name, key, unit) in SNMP_RATES {
            if let (Some(a), Some(b)) = (p.snmp.get(*key), cur.snmp.get(*key)) {
                if let (Ok(a), Ok(b)) = (u64::try_from(*a), u64::try_from(*b)) {
                    e.rate(name, unit, a, b, dt, &[]);
                }
            }
        }
    }
}

/// `(metric, /proc/net/{snmp,netstat} key, unit)` sent as per-second rates.
const SNMP_RATES: &[(&str, &str, &str)] = &[
    ("system.net.tcp.retrans_segs", "Tcp.RetransSegs", "segment"),
    ("system.net.tcp.in_segs", "Tcp.InSegs", "segment"),
    ("system.net.tcp.out_segs", "Tcp.OutSegs", "segment"),
    (
        "system.net.tcp.listen_overflows",
        "TcpExt.ListenOverflows",
        "connection",
    ),
    (
        "system.net.tcp.listen_drops",
        "TcpExt.ListenDrops",
        "connection",
    ),
    (
        "system.net.tcp.backlog_drops",
        "TcpExt.TCPBacklogDrop",
        "packet",
    ),
    ("system.net.udp.in_datagrams", "Udp.InDatagrams", "datagram"),
    (
        "system.net.udp.out_datagrams",
        "Udp.OutDatagrams",
        "datagram",
    ),
    ("system.net.udp.in_errors", "Udp.InErrors", "datagram"),
    ("system.net.udp.no_ports", "Udp.NoPorts", "datagram"),
    ("system.net.udp.rcv_buf_errors", "Udp.RcvbufErrors", "error"),
    ("system.net.udp.snd_buf_errors", "Udp.SndbufErrors", "error"),
];

/// How long one `statvfs` may take before its mount is considered hung.
const STATVFS_TIMEOUT: Duration = Duration::from_secs(2);

enum StatvfsError {
    Io(std::io::Error),
    Hung,
}

/// `statvfs` on a helper thread, so a mount that blocks forever (hard-mounted NFS whose server
/// is gone) costs one stuck thread once instead of the whole collector.
fn statvfs_with_timeout(mount: &str) -> Result<sys::FsStats, StatvfsError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = PathBuf::from(mount);
    std::thread::Builder::new()
        .name("warden-statvfs".into())
        .spawn(move || {
            let _ = tx.send(sys::statvfs(&path));
        })
        .map_err(StatvfsError::Io)?;
    match rx.recv_timeout(STATVFS_TIMEOUT) {
        Ok(r) => r.map_err(StatvfsError::Io),
        Err(_) => Err(StatvfsError::Hung),
    }
}

fn read_file(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::trace!(path = %path.display(), %err, "host metric source unreadable");
            None
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Collects host metrics every `host_metrics_interval` seconds and sends them as
/// [`Outgoing::Series`] until `shutdown` turns true (or its sender is dropped) or the
/// forwarder's channel closes. Returns at once when `collect_host_metrics` is off.
pub async fn run_collector(cfg: AgentConfig, tx: OutTx, mut shutdown: watch::Receiver<bool>) {
    if !cfg.collect_host_metrics {
        return;
    }
    let period = Duration::from_secs(cfg.host_metrics_interval.max(1));
    let mut collector = Some(HostCollector::new(&cfg));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break; }
                continue;
            }
        }
        let Some(mut c) = collector.take() else { break };
        let now = unix_now();
        let joined = tokio::task::spawn_blocking(move || {
            let s = c.collect(now);
            (c, s)
        })
        .await;
        let series = match joined {
            Ok((c, s)) => {
                collector = Some(c);
                s
            }
            Err(err) => {
                // A panic in a parser must not end host metrics for good: start afresh.
                tracing::error!(%err, "host metric collection failed; collector restarted");
                collector = Some(HostCollector::new(&cfg));
                continue;
            }
        };
        if !series.is_empty() && tx.send(Outgoing::Series(series)).await.is_err() {
            tracing::debug!("forwarder channel closed; host collector stops");
            break;
        }
    }
}
