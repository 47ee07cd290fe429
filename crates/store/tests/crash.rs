//! `kill -9` during sustained ingest: every acknowledged point survives.
//!
//! The test re-executes its own binary as the writer (`crash_child`, active only when
//! `WARDEN_CRASH_DIR` is set): four threads append batches with group commit and print
//! `ACK <thread> <seq>` after each `append` returned. The parent SIGKILLs the child mid-stream
//! (while background flushes run, because the head limit is tiny), reopens the store and checks
//! every acknowledged point and sketch (present exactly once).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_store::{
    DDSketch, FsyncPolicy, MetricKind, Point, SeriesWrite, SketchWrite, Store, StoreOptions,
    TagFilter,
};

const BASE: i64 = 1_700_000_000;
const HOSTS: usize = 10;

fn opts(background: bool) -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::Always,
        max_head_points: 5_000,
        background,
        flush_interval: Duration::from_millis(300),
        clock: Arc::new(warden_store::ManualClock::new(BASE + 100_000)),
        ..StoreOptions::default()
    }
}

fn batch(thread: u64, seq: u64) -> Vec<SeriesWrite> {
    (0..HOSTS)
        .map(|h| SeriesWrite {
            name: "crash.metric".into(),
            tags: vec![format!("thread:{thread}")],
            host: format!("h{h}"),
            kind: MetricKind::Gauge,
            interval: 10,
            unit: None,
            points: vec![Point {
                timestamp: BASE + seq as i64,
                value: (thread * 1_000_000 + seq) as f64 + h as f64 / 100.0,
            }],
        })
        .collect()
}

fn sketch(thread: u64, seq: u64) -> SketchWrite {
    let mut s = DDSketch::new();
    s.insert(seq as f64 + 1.0);
    SketchWrite {
        name: "crash.dist".into(),
        tags: vec![format!("thread:{thread}")],
        host: String::new(),
        points: vec![(BASE + seq as i64, s)],
    }
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("WARDEN_CRASH_DIR") else {
        return; // Only active when the parent test runs us.
    };
    let store = Arc::new(Store::open(Path::new(&dir), opts(true)).expect("child open"));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for seq in 0.. {
                    store.append(7, &batch(t, seq)).expect("append");
                    store
                        .append_sketches(7, &[sketch(t, seq)])
                        .expect("append sketch");
                    let mut o = out.lock().expect("stdout");
                    writeln!(o, "ACK {t} {seq}").expect("write");
                    o.flush().expect("flush");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_point() {
    let dir = tempfile::tempdir().expect("tmp");
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("WARDEN_CRASH_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut it = line.split_whitespace();
            if it.next() == Some("ACK") {
                let t: u64 = it.next().and_then(|x| x.parse().ok()).expect("thread");
                let s: u64 = it.next().and_then(|x| x.parse().ok()).expect("seq");
                acks.push((t, s));
            }
        }
        acks
    });
    // Let it ingest (and flush in the background) for a while, then SIGKILL.
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().expect("kill -9");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "child must have been killed");
    let acks = reader.join().expect("reader");
    assert!(
        acks.len() > 50,
        "child acknowledged only {} batches in {:?}",
        acks.len(),
        start.elapsed()
    );

    let store = Store::open(dir.path(), opts(false)).expect("reopen after kill -9");
    // Background flushes ran during ingest, so the points come from segments *and* WAL replay.
    let stats = store.stats();
    assert!(
        stats.segments > 0,
        "no segment was flushed during ingest: {stats:?}"
    );
    assert!(
        stats.head_points > 0,
        "nothing replayed from the WAL: {stats:?}"
    );
    let mut checked = 0;
    for t in 0..4u64 {
        let series = store.find_series(
            7,
            "crash.metric",
            &TagFilter::Eq("thread".into(), t.to_string()),
        );
        let mut by_host = std::collections::HashMap::new();
        for s in &series {
            let pts = store.read(7, s.id, BASE, BASE + 10_000_000).expect("read");
            let m: std::collections::HashMap<i64, f64> =
                pts.iter().map(|p| (p.timestamp, p.value)).collect();
            by_host.insert(s.host.clone(), m);
        }
        // Sketches: every acknowledged one present exactly once (a WAL replayed on top of a
        // segment that already holds it would merge it twice).
        let dist = store.find_series(
            7,
            "crash.dist",
            &TagFilter::Eq("thread".into(), t.to_string()),
        );
        let sketches: std::collections::HashMap<i64, u64> = match dist.first() {
            Some(d) => store
                .read_sketches(7, d.id, BASE, BASE + 10_000_000)
                .expect("sketches")
                .into_iter()
                .map(|(ts, s)| (ts, s.count()))
                .collect(),
            None => Default::default(),
        };
        for &(_, seq) in acks.iter().filter(|a| a.0 == t) {
            assert_eq!(
                sketches.get(&(BASE + seq as i64)),
                Some(&1),
                "acknowledged sketch thread {t} seq {seq} missing or merged twice"
            );
            for h in 0..HOSTS {
                let pts = by_host
                    .get(&format!("h{h}"))
                    .unwrap_or_else(|| panic!("series thread {t} host h{h} lost"));
                let want = (t * 1_000_000 + seq) as f64 + h as f64 / 100.0;
                assert_eq!(
                    pts.get(&(BASE + seq as i64)),
                    Some(&want),
                    "acknowledged point thread {t} seq {seq} host h{h} missing"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, acks.len() * HOSTS);
    // The reopened store keeps working and survives a flush of the replayed WAL.
    store.append(7, &batch(9, 0)).expect("append after restart");
    store.flush().expect("flush after restart");
    eprintln!("verified {checked} acknowledged points after kill -9");
}
