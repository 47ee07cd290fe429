//! Host collector against fixture `/proc` + `/sys` trees (exact values) and the real `/proc`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use warden_agent::collector::{HostCollector, run_collector};
use warden_agent::{AgentConfig, Outgoing};
use warden_model::{MetricKind, Series};

fn config(procfs: &Path, sysfs: &Path, interval: u64) -> AgentConfig {
    let yaml = format!(
        "api_key: k\nhostname: fixture-host\ntags: [env:test]\nhost_metrics_interval: {interval}\n\
         procfs_path: {}\nsysfs_path: {}\n",
        procfs.display(),
        sysfs.display()
    );
    AgentConfig::from_yaml_with_env(&yaml, "test", &[]).expect("valid test config")
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const NET_HEADER: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

struct Fixture {
    _dir: tempfile::TempDir,
    proc_: std::path::PathBuf,
    sys: std::path::PathBuf,
    data: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let proc_ = dir.path().join("proc");
    let sys = dir.path().join("sys");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::create_dir_all(data.join("t")).unwrap();
    write(
        &proc_,
        "cpuinfo",
        "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n",
    );
    write(&proc_, "loadavg", "0.50 1.00 2.00 1/100 1234\n");
    write(
        &proc_,
        "meminfo",
        "MemTotal:        8388608 kB\nMemFree:         2097152 kB\nMemAvailable:    4194304 kB\n\
         Buffers:          102400 kB\nCached:          1048576 kB\nSwapCached:         1024 kB\n\
         Shmem:             51200 kB\nSlab:             204800 kB\nSReclaimable:     102400 kB\n\
         PageTables:        10240 kB\nCommitLimit:     6291456 kB\nCommitted_AS:    3145728 kB\n\
         SwapTotal:       2097152 kB\nSwapFree:        1572864 kB\n",
    );
    write(&proc_, "uptime", "12345.67 2000.00\n");
    write(&proc_, "sys/fs/file-nr", "1024\t24\t100000\n");
    let d = data.display();
    write(
        &proc_,
        "self/mounts",
        &format!(
            "/dev/fakedisk {d} ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n\
             /dev/fakedisk {d}/sub ext4 rw 0 0\ntmpfs {d}/t tmpfs rw 0 0\n\
             sysfs /sys sysfs rw 0 0\n/dev/sr0 /media/cd iso9660 ro 0 0\n"
        ),
    );
    write(&sys, "class/net/eth0/speed", "1000\n");
    write(&sys, "class/net/eth0/mtu", "1500\n");
    write(&sys, "class/net/eth0/operstate", "up\n");
    write(&sys, "class/net/eth0/tx_queue_len", "1000\n");
    for q in ["tx-0", "tx-1", "rx-0"] {
        std::fs::create_dir_all(sys.join("class/net/eth0/queues").join(q)).unwrap();
    }
    Fixture {
        _dir: dir,
        proc_,
        sys,
        data,
    }
}

fn snapshot_1(p: &Path) {
    write(
        p,
        "stat",
        "cpu  100 20 50 800 10 5 5 10 0 0\ncpu0 50 10 25 400 5 2 3 5 0 0\n\
         cpu1 50 10 25 400 5 3 2 5 0 0\nintr 1 2\nctxt 5000\nbtime 1\n",
    );
    write(
        p,
        "vmstat",
        "nr_free_pages 1\npgpgin 10000\npgpgout 20000\npswpin 1000\npswpout 2000\n",
    );
    write(
        p,
        "diskstats",
        "   8       0 sda 1000 100 20000 5000 2000 200 40000 8000 0 3000 13000 0 0 0 0\n   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
    );
    write(
        p,
        "net/dev",
        &format!(
            "{NET_HEADER}    lo: 5000 50 0 0 0 0 0 0 5000 50 0 0 0 0 0 0\n  eth0: 1000000 1000 1 2 0 0 0 0 500000 800 0 1 0 0 0 0\n"
        ),
    );
    write(
        p,
        "net/snmp",
        "Tcp: RtoAlgorithm MaxConn CurrEstab RetransSegs\nTcp: 1 -1 7 100\n",
    );
}

fn snapshot_2(p: &Path) {
    write(
        p,
        "stat",
        "cpu  150 30 90 1650 30 10 10 30 8 0\ncpu0 75 15 45 825 15 5 5 15 4 0\n\
         cpu1 75 15 45 825 15 5 5 15 4 0\nintr 1 2\nctxt 5600\nbtime 1\n",
    );
    write(
        p,
        "vmstat",
        "nr_free_pages 1\npgpgin 10500\npgpgout 21000\npswpin 3560\npswpout 3280\n",
    );
    write(
        p,
        "diskstats",
        "   8       0 sda 1500 150 30240 6000 2500 300 60480 11000 1 8000 33000 0 0 0 0\n   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
    );
    write(
        p,
        "net/dev",
        &format!(
            "{NET_HEADER}    lo: 9000 90 0 0 0 0 0 0 9000 90 0 0 0 0 0 0\n  eth0: 1100000 1500 3 2 0 0 0 0 520000 900 0 6 0 0 0 0\n"
        ),
    );
    write(
        p,
        "net/snmp",
        "Tcp: RtoAlgorithm MaxConn CurrEstab RetransSegs\nTcp: 1 -1 9 150\n",
    );
}

fn find<'a>(s: &'a [Series], name: &str, tag: Option<&str>) -> Option<&'a Series> {
    s.iter()
        .find(|x| x.name == name && tag.is_none_or(|t| x.tags.iter().any(|g| g == t)))
}

#[track_caller]
fn value(s: &[Series], name: &str, tag: Option<&str>) -> f64 {
    let found = find(s, name, tag).unwrap_or_else(|| panic!("{name} {tag:?} missing"));
    assert_eq!(found.points.len(), 1);
    found.points[0].value
}

#[track_caller]
fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}

#[test]
fn first_run_emits_gauges_only_and_exact_memory_values() {
    let f = fixture();
    snapshot_1(&f.proc_);
    let mut c = HostCollector::new(&config(&f.proc_, &f.sys, 10));
    let s = c.collect(1000);
    // No delta-based metric on the first run.
    for name in [
        "system.cpu.user",
        "system.cpu.idle",
        "system.cpu.context_switches",
        "system.io.r_s",
        "system.net.bytes_rcvd",
        "system.swap.swap_in",
        "system.disk.read_time",
    ] {
        assert!(find(&s, name, None).is_none(), "{name} on first run");
    }
    close(value(&s, "system.cpu.num_cores", None), 2.0);
    close(value(&s, "system.load.1", None), 0.5);
    close(value(&s, "system.load.norm.15", None), 1.0);
    close(value(&s, "system.mem.total", None), 8192.0);
    close(value(&s, "system.mem.free", None), 2048.0);
    close(value(&s, "system.mem.used", None), 6144.0);
    close(value(&s, "system.mem.usable", None), 4096.0);
    close(value(&s, "system.mem.pct_usable", None), 0.5);
    close(value(&s, "system.mem.cached", None), 1024.0);
    close(value(&s, "system.mem.buffered", None), 100.0);
    close(value(&s, "system.mem.shared", None), 50.0);
    close(value(&s, "system.mem.slab", None), 200.0);
    close(value(&s, "system.mem.slab_reclaimable", None), 100.0);
    close(value(&s, "system.mem.page_tables", None), 10.0);
    close(value(&s, "system.mem.commit_limit", None), 6144.0);
    close(value(&s, "system.mem.committed_as", None), 3072.0);
    close(value(&s, "system.swap.total", None), 2048.0);
    close(value(&s, "system.swap.free", None), 1536.0);
    close(value(&s, "system.swap.used", None), 512.0);
    close(value(&s, "system.swap.cached", None), 1.0);
    close(value(&s, "system.swap.pct_free", None), 0.75);
    close(value(&s, "system.uptime", None), 12345.67);
    close(value(&s, "system.fs.file_handles.allocated", None), 1024.0);
    close(
        value(&s, "system.fs.file_handles.allocated_unused", None),
        24.0,
    );
    close(value(&s, "system.fs.file_handles.used", None), 1000.0);
    close(value(&s, "system.fs.file_handles.max", None), 100000.0);
    close(value(&s, "system.fs.file_handles.in_use", None), 0.01);
    close(value(&s, "system.net.tcp.current_established", None), 7.0);
    close(
        value(&s, "system.cpu.user.total", Some("core:cpu0")),
        50.0 / 100.0,
    );
    close(
        value(&s, "system.net.iface.mtu", Some("iface:eth0")),
        1500.0,
    );
    close(value(&s, "system.net.iface.up", Some("iface:eth0")), 1.0);
    close(
        value(&s, "system.net.iface.num_tx_queues", Some("iface:eth0")),
        2.0,
    );
    close(
        value(&s, "system.net.iface.num_rx_queues", Some("iface:eth0")),
        1.0,
    );
    assert!(
        find(&s, "system.net.iface.mtu", Some("iface:lo")).is_none(),
        "lo is excluded"
    );

    let total = find(&s, "system.mem.total", None).unwrap();
    assert_eq!(total.host, "fixture-host");
    assert_eq!(total.tags, ["env:test"]);
    assert_eq!(total.kind, MetricKind::Gauge);
    assert_eq!(total.unit.as_deref(), Some("mebibyte"));
    assert_eq!(total.interval, 10);
    assert_eq!(total.points[0].timestamp, 1000);
}

#[test]
fn second_run_computes_exact_cpu_io_net_and_swap_rates() {
    let f = fixture();
    snapshot_1(&f.proc_);
    let mut c = HostCollector::new(&config(&f.proc_, &f.sys, 10));
    c.collect(1000);
    snapshot_2(&f.proc_);
    let s = c.collect(1010);

    // CPU: the aggregate delta is 1000 jiffies.
    close(value(&s, "system.cpu.user", None), 6.0);
    close(value(&s, "system.cpu.system", None), 5.0);
    close(value(&s, "system.cpu.interrupt", None), 1.0);
    close(value(&s, "system.cpu.iowait", None), 2.0);
    close(value(&s, "system.cpu.idle", None), 85.0);
    close(value(&s, "system.cpu.stolen", None), 2.0);
    close(value(&s, "system.cpu.guest", None), 0.8);
    assert_eq!(
        find(&s, "system.cpu.idle", None).unwrap().unit.as_deref(),
        Some("percent")
    );
    let cs = find(&s, "system.cpu.context_switches", None).unwrap();
    assert_eq!(cs.kind, MetricKind::Count);
    close(cs.points[0].value, 600.0);

    // Swap and block rates from /proc/vmstat over 10 s.
    close(value(&s, "system.swap.swap_in", None), 1.0);
    close(value(&s, "system.swap.swap_out", None), 0.5);
    close(value(&s, "system.io.block_in", None), 50.0);
    close(value(&s, "system.io.block_out", None), 100.0);

    // I/O of sda over 10 s.
    let sda = Some("device:sda");
    close(value(&s, "system.io.r_s", sda), 50.0);
    close(value(&s, "system.io.w_s", sda), 50.0);
    close(value(&s, "system.io.rrqm_s", sda), 5.0);
    close(value(&s, "system.io.wrqm_s", sda), 10.0);
    close(value(&s, "system.io.rkb_s", sda), 512.0);
    close(value(&s, "system.io.wkb_s", sda), 1024.0);
    close(value(&s, "system.io.avg_rq_sz", sda), 30.72);
    close(value(&s, "system.io.await", sda), 4.0);
    close(value(&s, "system.io.r_await", sda), 2.0);
    close(value(&s, "system.io.w_await", sda), 6.0);
    close(value(&s, "system.io.avg_q_sz", sda), 2.0);
    close(value(&s, "system.io.util", sda), 50.0);
    close(value(&s, "system.io.svctm", sda), 5.0);
    close(value(&s, "system.disk.read_time_pct", sda), 10.0);
    close(value(&s, "system.disk.write_time_pct", sda), 30.0);
    let rt = find(&s, "system.disk.read_time", sda).unwrap();
    assert_eq!(rt.kind, MetricKind::Count);
    close(rt.points[0].value, 1000.0);
    assert!(
        find(&s, "system.io.r_s", Some("device:loop0")).is_none(),
        "never-used devices are skipped"
    );

    // Network of eth0 over 10 s; rates are per-second gauges with device/speed/mtu tags.
    let eth0 = Some("device:eth0");
    close(value(&s, "system.net.bytes_rcvd", eth0), 10000.0);
    close(value(&s, "system.net.bytes_sent", eth0), 2000.0);
    close(value(&s, "system.net.packets_in.count", eth0), 50.0);
    close(value(&s, "system.net.packets_in.error", eth0), 0.2);
    close(value(&s, "system.net.packets_in.drop", eth0), 0.0);
    close(value(&s, "system.net.packets_out.count", eth0), 10.0);
    close(value(&s, "system.net.packets_out.drop", eth0), 0.5);
    close(value(&s, "system.net.packets_out.error", eth0), 0.0);
    let rx = find(&s, "system.net.bytes_rcvd", eth0).unwrap();
    assert_eq!(rx.kind, MetricKind::Gauge);
    assert_eq!(
        rx.tags,
        ["env:test", "device:eth0", "speed:1000", "mtu:1500"]
    );
    assert!(find(&s, "system.net.bytes_rcvd", Some("device:lo")).is_none());
    close(value(&s, "system.net.tcp.retrans_segs", None), 5.0);
    close(value(&s, "system.net.tcp.current_established", None), 9.0);
}

#[test]
fn counters_going_backwards_are_skipped_not_negative() {
    let f = fixture();
    snapshot_2(&f.proc_);
    let mut c = HostCollector::new(&config(&f.proc_, &f.sys, 10));
    c.collect(1000);
    snapshot_1(&f.proc_); // everything "reset"
    let s = c.collect(1010);
    assert!(find(&s, "system.io.r_s", Some("device:sda")).is_none());
    assert!(find(&s, "system.net.bytes_rcvd", Some("device:eth0")).is_none());
    assert!(find(&s, "system.cpu.context_switches", None).is_none());
    assert!(s.iter().all(|x| x.points[0].value >= 0.0));
    // A timestamp that did not advance gives no rates either.
    let s = c.collect(1010);
    assert!(find(&s, "system.cpu.idle", None).is_none());
}

/// Independent reading of the same file system through coreutils `stat -f`.
fn stat_f(path: &Path) -> (u64, u64, u64) {
    let out = std::process::Command::new("stat")
        .args(["-f", "--format=%S %b %c"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

#[test]
fn disk_metrics_per_mount_with_exclusions_and_bind_mount_dedup() {
    let f = fixture();
    snapshot_1(&f.proc_);
    let mut c = HostCollector::new(&config(&f.proc_, &f.sys, 10));
    let s = c.collect(1000);
    let totals: Vec<&Series> = s.iter().filter(|x| x.name == "system.disk.total").collect();
    // /dev/fakedisk once (its bind mount is skipped), the tmpfs mount; proc, sysfs, iso9660 not.
    assert_eq!(totals.len(), 2, "{totals:#?}");
    let dev = Some("device:/dev/fakedisk");
    let d = find(&s, "system.disk.total", dev).unwrap();
    let mp = format!("mount_point:{}", f.data.display());
    assert_eq!(
        d.tags,
        [
            "env:test",
            "device:/dev/fakedisk",
            "device_name:fakedisk",
            mp.as_str()
        ]
    );
    assert_eq!(d.unit.as_deref(), Some("kibibyte"));
    let (frsize, blocks, files) = stat_f(&f.data);
    close(d.points[0].value, (frsize * blocks) as f64 / 1024.0);
    close(value(&s, "system.fs.inodes.total", dev), files as f64);
    let used = value(&s, "system.disk.used", dev);
    let free = value(&s, "system.disk.free", dev);
    close(value(&s, "system.disk.in_use", dev), used / (used + free));
    close(
        value(&s, "system.disk.utilized", dev),
        used / (used + free) * 100.0,
    );
    assert!(used + free <= d.points[0].value + 1e-6);
    assert!(find(&s, "system.disk.total", Some("device:tmpfs")).is_some());
}

#[test]
fn real_proc_gives_sane_values() {
    let cfg = config(Path::new("/proc"), Path::new("/sys"), 15);
    let mut c = HostCollector::new(&cfg);
    let now = 2_000_000_000;
    let first = c.collect(now);
    assert!(value(&first, "system.mem.total", None) > 0.0);
    assert!(value(&first, "system.cpu.num_cores", None) >= 1.0);
    let pct = value(&first, "system.mem.pct_usable", None);
    assert!((0.0..=1.0).contains(&pct), "{pct}");
    assert!(value(&first, "system.uptime", None) > 0.0);
    assert!(value(&first, "system.fs.file_handles.max", None) > 0.0);
    assert!(find(&first, "system.load.1", None).is_some());
    assert!(
        find(&first, "system.disk.total", None).is_some(),
        "no disk reported"
    );
    // Burn a little CPU so the delta is not empty, then collect one "second" later.
    let t0 = std::time::Instant::now();
    let mut x = 0u64;
    while t0.elapsed() < Duration::from_millis(300) {
        x = x.wrapping_mul(31).wrapping_add(7);
    }
    std::hint::black_box(x);
    std::thread::sleep(Duration::from_millis(200));
    let second = c.collect(now + 1);
    let mut sum = 0.0;
    for n in ["user", "system", "iowait", "idle", "stolen"] {
        let v = value(&second, &format!("system.cpu.{n}"), None);
        assert!((0.0..=100.0).contains(&v), "system.cpu.{n} = {v}");
        sum += v;
    }
    // interrupt is part of system; user+system+iowait+idle+stolen covers all of the total.
    assert!((sum - 100.0).abs() < 1e-6, "cpu percentages sum to {sum}");
    assert!(value(&second, "system.cpu.user", None) > 0.0);
    assert!(find(&second, "system.cpu.context_switches", None).is_some());
}

#[tokio::test]
async fn run_collector_sends_batches_and_stops_on_shutdown() {
    let cfg = config(Path::new("/proc"), Path::new("/sys"), 1);
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_collector(cfg, tx, stop_rx));
    let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a batch within 5 s")
        .expect("channel open");
    let Outgoing::Series(series) = batch else {
        panic!("expected series, got {batch:?}")
    };
    assert!(series.iter().any(|s| s.name == "system.mem.total"));
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("collector stops on shutdown")
        .unwrap();
}
