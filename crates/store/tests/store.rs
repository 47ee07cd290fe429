//! Store behaviour through the public API only: persistence, encryption at rest, retention and
//! rollups with an injected clock, tenancy, tag filters, key rotation and sketches.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use warden_store::{
    DDSketch, FsyncPolicy, ManualClock, MasterKey, MasterKeySource, MetricKind, Point, SeriesWrite,
    SketchWrite, Store, StoreError, StoreOptions, TagFilter,
};

const T0: i64 = 1_750_000_000 - 1_750_000_000 % 3600; // an hour boundary

fn opts(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        background: false,
        clock: clock.clone(),
        ..StoreOptions::default()
    }
}

fn gauge(name: &str, tags: &[&str], host: &str, points: &[(i64, f64)]) -> SeriesWrite {
    SeriesWrite {
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        host: host.into(),
        kind: MetricKind::Gauge,
        interval: 10,
        unit: None,
        points: points
            .iter()
            .map(|&(timestamp, value)| Point { timestamp, value })
            .collect(),
    }
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn assert_no_plaintext(dir: &Path, needles: &[&str]) -> usize {
    let files = all_files(dir);
    for f in &files {
        let data = std::fs::read(f).expect("read file");
        for n in needles {
            assert!(
                !contains(&data, n.as_bytes()),
                "{n:?} found in plaintext in {}",
                f.display()
            );
        }
    }
    files.len()
}

#[test]
fn data_at_rest_is_encrypted_wal_index_and_segments() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let name = "zebra.secret.metric.name";
    let tag = "customer:acme-unicorn-4711";
    let host = "host-quokka-9";
    let store = Store::open(dir.path(), opts(&clock)).expect("open");
    let pts: Vec<(i64, f64)> = (0..100).map(|i| (T0 + i * 10, 123456.789)).collect();
    store
        .append(1, &[gauge(name, &[tag], host, &pts)])
        .expect("append");
    let mut sk = DDSketch::new();
    sk.insert(1.5);
    store
        .append_sketches(
            1,
            &[SketchWrite {
                name: "zebra.secret.distribution".into(),
                tags: vec![tag.into()],
                host: host.into(),
                points: vec![(T0, sk)],
            }],
        )
        .expect("sketch");
    let needles = [
        name,
        "acme-unicorn-4711",
        host,
        "zebra.secret.distribution",
        "123456.789",
    ];
    // Only the WAL holds the data now.
    let wal_files = assert_no_plaintext(dir.path(), &needles);
    assert!(wal_files >= 2, "expected key + WAL files, got {wal_files}");
    // The value's raw f64 bytes are not there either.
    for f in all_files(dir.path()) {
        let data = std::fs::read(&f).expect("read");
        assert!(
            !contains(&data, &123456.789f64.to_le_bytes()),
            "{}",
            f.display()
        );
    }
    store.flush().expect("flush");
    // Index file + segments (+ fresh WAL).
    let n = assert_no_plaintext(dir.path(), &needles);
    assert!(
        n >= 4,
        "expected key, WAL, index and segment files, got {n}"
    );
    // Everything is owner-only.
    use std::os::unix::fs::PermissionsExt;
    for f in all_files(dir.path()) {
        let mode = std::fs::metadata(&f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
    for d in ["data", "wal", "keys", ""] {
        let mode = std::fs::metadata(dir.path().join(d))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert!(mode == 0o700 || d.is_empty(), "{d} has mode {mode:o}");
    }
    let found = store.find_series(1, name, &TagFilter::All);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].host, host);
    drop(store);
    // Without the key the data is unreadable: a different master key fails to open.
    let other = MasterKey::generate(1).expect("key");
    let err = Store::open(
        dir.path(),
        StoreOptions {
            master_key: MasterKeySource::Key(Box::new(other)),
            ..opts(&clock)
        },
    )
    .expect_err("wrong key must not open");
    assert!(err.to_string().contains("not loaded"), "{err}");
}

#[test]
fn reopen_keeps_points_type_interval_and_unit() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 7200));
    let mut w = gauge(
        "req.count",
        &["env:prod"],
        "a",
        &[(T0, 5.0), (T0 + 10, 7.0)],
    );
    w.kind = MetricKind::Count;
    w.interval = 15;
    w.unit = Some("request".into());
    {
        let store = Store::open(dir.path(), opts(&clock)).expect("open");
        store.append(3, std::slice::from_ref(&w)).expect("append");
        store.flush().expect("flush");
        // Overwrite one timestamp and add one more after the flush (WAL only).
        store
            .append(
                3,
                &[SeriesWrite {
                    points: vec![
                        Point {
                            timestamp: T0 + 10,
                            value: 8.0,
                        },
                        Point {
                            timestamp: T0 + 20,
                            value: 9.0,
                        },
                    ],
                    ..w.clone()
                }],
            )
            .expect("append 2");
    }
    let store = Store::open(dir.path(), opts(&clock)).expect("reopen");
    let s = store.find_series(3, "req.count", &TagFilter::All);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].kind, MetricKind::Count);
    assert_eq!(s[0].interval, 15);
    assert_eq!(s[0].unit.as_deref(), Some("request"));
    let pts = store.read(3, s[0].id, T0, T0 + 100).expect("read");
    let got: Vec<(i64, f64)> = pts.iter().map(|p| (p.timestamp, p.value)).collect();
    assert_eq!(got, vec![(T0, 5.0), (T0 + 10, 8.0), (T0 + 20, 9.0)]);
    assert_eq!(store.list_metrics(3), vec!["req.count".to_string()]);
    assert!(store.stats().bytes_on_disk > 0);
}

#[test]
fn retention_rolls_up_exactly_then_expires() {
    let dir = tempfile::tempdir().expect("tmp");
    // Written while all of it is within raw retention; the clock moves on before retention runs.
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let o = StoreOptions {
        retention_raw: Duration::from_secs(2 * 3600),
        retention_rollup: Duration::from_secs(10 * 3600),
        ..opts(&clock)
    };
    let store = Store::open(dir.path(), o.clone()).expect("open");
    // 3 hours of 10 s data, values with decimals, one minute with an irregular extra point.
    let mut pts: Vec<(i64, f64)> = (0..3 * 360)
        .map(|i| (T0 + i * 10, (i % 17) as f64 * 0.25 - 1.0))
        .collect();
    pts.push((T0 + 65, 100.5));
    store
        .append(1, &[gauge("cpu", &["env:prod"], "h1", &pts)])
        .expect("append");
    store.flush().expect("flush");
    let id = store.find_series(1, "cpu", &TagFilter::All)[0].id;
    // Expected exact per-minute aggregates for the first hour (computed independently).
    let mut expect = std::collections::BTreeMap::new();
    for &(t, v) in &pts {
        let m = t - t.rem_euclid(60);
        let e = expect
            .entry(m)
            .or_insert((f64::MAX, f64::MIN, 0.0f64, 0u64));
        e.0 = e.0.min(v);
        e.1 = e.1.max(v);
        e.2 += v;
        e.3 += 1;
    }

    // Now = T0 + 3 h: raw retention 2 h, so the first hour becomes rollups.
    clock.set(T0 + 3 * 3600);
    let rep = store.enforce_retention().expect("retention");
    assert_eq!(rep.rolled_segments, 1);
    assert_eq!(rep.rollups_written, 60);
    let raw_cutoff = T0 + 3600;
    let raw = store.read(1, id, T0, T0 + 3 * 3600).expect("read");
    // Old part: one point per minute (avg), new part: raw 10 s points.
    let old: Vec<&Point> = raw.iter().filter(|p| p.timestamp < raw_cutoff).collect();
    assert_eq!(old.len(), 60);
    assert!(old.iter().all(|p| p.timestamp % 60 == 0));
    assert_eq!(
        raw.iter().filter(|p| p.timestamp >= raw_cutoff).count(),
        2 * 360
    );
    let roll = store
        .read_rollup(1, id, T0, raw_cutoff - 1)
        .expect("rollup");
    assert_eq!(roll.len(), 60);
    for r in &roll {
        let e = expect[&r.ts];
        assert_eq!((r.min, r.max, r.count), (e.0, e.1, e.3), "minute {}", r.ts);
        assert!(
            (r.sum - e.2).abs() < 1e-9,
            "sum at {}: {} vs {}",
            r.ts,
            r.sum,
            e.2
        );
    }
    // The irregular minute has 7 points.
    assert_eq!(roll[1].count, 7);
    assert_eq!(roll[1].max, 100.5);
    // Rollups over the raw range are computed on the fly and agree with the raw data.
    let live = store
        .read_rollup(1, id, raw_cutoff, raw_cutoff + 59)
        .expect("live rollup");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].count, 6);

    // Survives reopen (the rollup segment is on disk, the raw first hour is gone).
    drop(store);
    let store = Store::open(dir.path(), o).expect("reopen");
    assert_eq!(
        store
            .read_rollup(1, id, T0, raw_cutoff - 1)
            .expect("rollup"),
        roll
    );

    // Ten minutes later a second retention run adds a second rollup segment; compaction merges
    // the day's rollup segments and the rollups stay exact.
    clock.set(T0 + 3 * 3600 + 600);
    let rep = store.enforce_retention().expect("retention 1b");
    assert_eq!(rep.rollups_written, 10);
    // The two rollup segments of the same day (the raw remainder was rewritten, not added).
    assert_eq!(store.compact().expect("compact"), 2);
    let roll2 = store
        .read_rollup(1, id, T0, raw_cutoff + 599)
        .expect("rollup 2");
    assert_eq!(roll2.len(), 70);
    assert_eq!(&roll2[..60], &roll[..]);
    for r in &roll2 {
        let e = expect[&r.ts];
        assert_eq!((r.min, r.max, r.count), (e.0, e.1, e.3), "minute {}", r.ts);
    }

    // Advance: rollup retention 10 h drops the first hour's rollups at now = T0 + 11 h + 30 min.
    clock.set(T0 + 11 * 3600 + 1800);
    let rep = store.enforce_retention().expect("retention 2");
    assert!(rep.expired_segments >= 1, "{rep:?}");
    let left = store
        .read_rollup(1, id, T0, T0 + 3 * 3600)
        .expect("rollups");
    assert!(
        left.iter().all(|r| r.ts >= T0 + 3600 + 1800),
        "{:?}",
        left.first()
    );
    assert!(!left.is_empty());
    // Total count of what is left is exact.
    let want: u64 = expect
        .iter()
        .filter(|(m, _)| **m >= T0 + 5400)
        .map(|(_, e)| e.3)
        .sum();
    assert_eq!(left.iter().map(|r| r.count).sum::<u64>(), want);
    // Writes older than raw retention are dropped and counted.
    store
        .append(1, &[gauge("cpu", &["env:prod"], "h1", &[(T0, 1.0)])])
        .expect("append old");
    assert_eq!(store.stats().dropped_points, 1);
}

#[test]
fn orgs_never_see_each_other() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let store = Store::open(dir.path(), opts(&clock)).expect("open");
    store
        .append(1, &[gauge("shared.name", &["env:prod"], "h", &[(T0, 1.0)])])
        .expect("org 1");
    store
        .append(2, &[gauge("shared.name", &["env:prod"], "h", &[(T0, 2.0)])])
        .expect("org 2");
    store
        .append(2, &[gauge("only.two", &[], "", &[(T0, 3.0)])])
        .expect("org 2b");
    let a = store.find_series(1, "shared.name", &TagFilter::All);
    let b = store.find_series(2, "shared.name", &TagFilter::All);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0].id, b[0].id);
    assert_eq!(store.read(1, a[0].id, T0, T0).expect("r")[0].value, 1.0);
    assert_eq!(store.read(2, b[0].id, T0, T0).expect("r")[0].value, 2.0);
    // Org 1 cannot read org 2's series by id, nor list its metrics.
    assert!(matches!(
        store.read(1, b[0].id, T0, T0),
        Err(StoreError::NotFound { org: 1, .. })
    ));
    assert!(store.read_rollup(1, b[0].id, T0, T0).is_err());
    assert!(store.read_sketches(1, b[0].id, T0, T0).is_err());
    assert!(store.series(1, b[0].id).is_none());
    assert_eq!(store.list_metrics(1), vec!["shared.name".to_string()]);
    assert!(store.find_series(1, "only.two", &TagFilter::All).is_empty());
    store.flush().expect("flush");
    assert!(store.read(1, b[0].id, T0, T0).is_err());
    assert_eq!(store.read(2, b[0].id, T0, T0).expect("r")[0].value, 2.0);
}

#[test]
fn tag_filters_use_the_inverted_index() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let store = Store::open(dir.path(), opts(&clock)).expect("open");
    let mk = |svc: &str, az: &str, host: &str, extra: &[&str]| {
        let mut tags = vec![format!("service:{svc}"), format!("az:{az}")];
        tags.extend(extra.iter().map(|s| s.to_string()));
        SeriesWrite {
            tags,
            ..gauge("m", &[], host, &[(T0, 1.0)])
        }
    };
    store
        .append(
            5,
            &[
                mk("web-1", "us-east-1a", "a", &[]),
                mk("web-2", "us-west-2a", "b", &["canary"]),
                mk("api-canary", "eu-east-1", "c", &[]),
                mk("db", "us-east-1b", "d", &["tier:gold"]),
            ],
        )
        .expect("append");
    let hosts = |f: TagFilter| {
        let mut v: Vec<String> = store
            .find_series(5, "m", &f)
            .into_iter()
            .map(|s| s.host)
            .collect();
        v.sort();
        v.join(",")
    };
    assert_eq!(hosts(TagFilter::All), "a,b,c,d");
    assert_eq!(hosts(TagFilter::term("service:web-*")), "a,b");
    assert_eq!(hosts(TagFilter::term("service:*-canary")), "c");
    assert_eq!(hosts(TagFilter::term("az:*east*")), "a,c,d");
    assert_eq!(hosts(TagFilter::term("!az:*east*")), "b");
    assert_eq!(hosts(TagFilter::term("canary")), "b");
    assert_eq!(hosts(TagFilter::term("tier")), "d");
    assert_eq!(hosts(TagFilter::term("host:c")), "c");
    assert_eq!(hosts(TagFilter::all_of("az:*east*,!service:db")), "a,c");
    assert_eq!(
        hosts(TagFilter::And(vec![
            TagFilter::term("az:*east*"),
            TagFilter::Or(vec![
                TagFilter::term("service:db"),
                TagFilter::term("service:web-1"),
            ]),
        ])),
        "a,d"
    );
    assert_eq!(hosts(TagFilter::term("service:nope")), "");
    assert!(store.find_series(5, "other", &TagFilter::All).is_empty());
    // Unsorted tags name the same series as sorted ones.
    let mut w = mk("db", "us-east-1b", "d", &["tier:gold"]);
    w.tags.reverse();
    store.append(5, &[w]).expect("append");
    assert_eq!(store.find_series(5, "m", &TagFilter::All).len(), 4);
    // Bad input: empty name is a clear error.
    let err = store
        .append(5, &[gauge("", &[], "", &[(T0, 1.0)])])
        .expect_err("empty name");
    assert!(err.to_string().contains("empty metric name"), "{err}");
}

#[test]
fn rotate_master_rewraps_without_rewriting_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let store = Store::open(dir.path(), opts(&clock)).expect("open");
    store
        .append(
            1,
            &[gauge("m", &["k:v"], "h", &[(T0, 1.0), (T0 + 10, 2.0)])],
        )
        .expect("append");
    store.flush().expect("flush");
    store
        .append(1, &[gauge("m", &["k:v"], "h", &[(T0 + 20, 3.0)])])
        .expect("append wal");
    let key_before = std::fs::read(dir.path().join("keys/master.key")).expect("key");
    // Snapshot the files' bodies (everything after the 192-byte header).
    let bodies = |dir: &Path| {
        let mut v: Vec<(PathBuf, Vec<u8>)> = all_files(dir)
            .into_iter()
            .filter(|p| !p.starts_with(dir.join("keys")))
            .map(|p| {
                let d = std::fs::read(&p).expect("read");
                (p, d[192.min(d.len())..].to_vec())
            })
            .collect();
        v.sort();
        v
    };
    let before = bodies(dir.path());
    let v = store.rotate_master(None).expect("rotate");
    assert_eq!(v, 2);
    assert_eq!(bodies(dir.path()), before, "rotation must not rewrite data");
    let key_after = std::fs::read(dir.path().join("keys/master.key")).expect("key");
    assert_ne!(key_before, key_after);
    assert!(!dir.path().join("keys/master.key.next").exists());
    // New writes under the new key, then reopen with only the new key on disk.
    store
        .append(1, &[gauge("m", &["k:v"], "h", &[(T0 + 30, 4.0)])])
        .expect("append after rotate");
    drop(store);
    let store = Store::open(dir.path(), opts(&clock)).expect("reopen with new key only");
    let id = store.find_series(1, "m", &TagFilter::All)[0].id;
    let vals: Vec<f64> = store
        .read(1, id, T0, T0 + 100)
        .expect("read")
        .iter()
        .map(|p| p.value)
        .collect();
    assert_eq!(vals, vec![1.0, 2.0, 3.0, 4.0]);
    // The old key no longer opens the store.
    drop(store);
    let old_path = dir.path().join("old.key");
    std::fs::write(&old_path, &key_before).expect("write old key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&old_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(
        Store::open(
            dir.path(),
            StoreOptions {
                master_key: MasterKeySource::File(old_path),
                ..opts(&clock)
            }
        )
        .is_err()
    );
}

#[test]
fn external_key_rotation_and_interrupted_rotation_resume() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let k1 = MasterKey::generate(1).expect("k1");
    let k2 = MasterKey::generate(2).expect("k2");
    let with = |k: &MasterKey, prev: Vec<MasterKeySource>| StoreOptions {
        master_key: MasterKeySource::Key(Box::new(k.clone())),
        previous_master_keys: prev,
        fsync: FsyncPolicy::Never,
        ..opts(&clock)
    };
    {
        let store = Store::open(dir.path(), with(&k1, vec![])).expect("open k1");
        store
            .append(1, &[gauge("m", &[], "", &[(T0, 1.0)])])
            .expect("append");
        store.flush().expect("flush");
    }
    // Operator switches the key source to k2 and lists k1 as previous: open rewraps.
    {
        let store = Store::open(
            dir.path(),
            with(&k2, vec![MasterKeySource::Key(Box::new(k1.clone()))]),
        )
        .expect("open k2 with k1 as previous");
        let id = store.find_series(1, "m", &TagFilter::All)[0].id;
        assert_eq!(store.read(1, id, T0, T0).expect("read").len(), 1);
    }
    // Now k2 alone suffices, k1 alone fails.
    assert!(Store::open(dir.path(), with(&k2, vec![])).is_ok());
    assert!(Store::open(dir.path(), with(&k1, vec![])).is_err());
}

#[test]
fn sketches_merge_and_roll_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let store = Store::open(
        dir.path(),
        StoreOptions {
            retention_raw: Duration::from_secs(2 * 3600),
            ..opts(&clock)
        },
    )
    .expect("open");
    let sk = |lo: i32, hi: i32| {
        let mut s = DDSketch::new();
        for v in lo..hi {
            s.insert(f64::from(v));
        }
        s
    };
    let w = |t: i64, s: DDSketch| SketchWrite {
        name: "latency".into(),
        tags: vec!["svc:a".into()],
        host: String::new(),
        points: vec![(t, s)],
    };
    // Two sketches in the same bucket (two payloads) and one 10 s later, in the first hour.
    store.append_sketches(1, &[w(T0, sk(1, 101))]).expect("s1");
    store
        .append_sketches(1, &[w(T0, sk(101, 201))])
        .expect("s2");
    store
        .append_sketches(1, &[w(T0 + 10, sk(201, 301))])
        .expect("s3");
    store
        .append_sketches(1, &[w(T0 + 2 * 3600 + 60, sk(1, 11))])
        .expect("s4");
    let s = store.find_series(1, "latency", &TagFilter::All);
    assert_eq!(s.len(), 1);
    assert!(s[0].distribution);
    let got = store.read_sketches(1, s[0].id, T0, T0 + 59).expect("read");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.count(), 200);
    assert_eq!(got[0].1.max(), 200.0);
    store.flush().expect("flush");
    assert_eq!(
        store.read_sketches(1, s[0].id, T0, T0 + 59).expect("read"),
        got
    );
    clock.set(T0 + 3 * 3600);
    let rep = store.enforce_retention().expect("retention");
    assert_eq!(rep.rolled_segments, 1);
    // One merged sketch for the minute, exact count/min/max/sum, quantiles within 1 %.
    let rolled = store
        .read_sketches(1, s[0].id, T0, T0 + 3599)
        .expect("rolled");
    assert_eq!(rolled.len(), 1);
    let m = &rolled[0].1;
    assert_eq!((m.count(), m.min(), m.max()), (300, 1.0, 300.0));
    assert_eq!(m.sum(), (1..301).sum::<i32>() as f64);
    let p50 = m.quantile(0.5).expect("p50");
    assert!((p50 - 151.0).abs() / 151.0 < 0.01, "{p50}");
    // The recent sketch is still raw.
    let recent = store
        .read_sketches(1, s[0].id, T0 + 2 * 3600, T0 + 3 * 3600)
        .expect("recent");
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].0, T0 + 2 * 3600 + 60);
}

#[test]
fn concurrent_writers_share_group_commits() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let store = Arc::new(Store::open(dir.path(), opts(&clock)).expect("open"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    store
                        .append(
                            1,
                            &[gauge(
                                "g",
                                &[&format!("t:{t}")],
                                "",
                                &[(T0 + i, f64::from(t))],
                            )],
                        )
                        .expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    assert_eq!(store.stats().points, 8 * 200);
    for s in store.find_series(1, "g", &TagFilter::All) {
        assert_eq!(store.read(1, s.id, T0, T0 + 1000).expect("read").len(), 200);
    }
}

#[test]
fn open_finishes_an_interrupted_data_dir_rotation() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    {
        let store = Store::open(dir.path(), opts(&clock)).expect("open");
        store
            .append(1, &[gauge("m", &[], "", &[(T0, 1.0)])])
            .expect("append");
        store.flush().expect("flush");
        store
            .append(1, &[gauge("m", &[], "", &[(T0 + 10, 2.0)])])
            .expect("append wal");
    }
    // A rotation that crashed right after parking the new key (nothing rewrapped yet).
    let k2 = MasterKey::generate(2).expect("k2");
    k2.write_file(&dir.path().join("keys/master.key.next"))
        .expect("park key");
    let store = Store::open(dir.path(), opts(&clock)).expect("open finishes rotation");
    assert!(!dir.path().join("keys/master.key.next").exists());
    let on_disk = MasterKey::load_file(&dir.path().join("keys/master.key")).expect("key");
    assert_eq!(on_disk.fingerprint(), k2.fingerprint());
    let id = store.find_series(1, "m", &TagFilter::All)[0].id;
    assert_eq!(store.read(1, id, T0, T0 + 10).expect("read").len(), 2);
    drop(store);
    // Only k2 is needed from now on.
    assert!(
        Store::open(
            dir.path(),
            StoreOptions {
                master_key: MasterKeySource::Key(Box::new(k2)),
                ..opts(&clock)
            }
        )
        .is_ok()
    );
}

#[test]
fn compaction_merges_segments_and_keeps_newest_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let store = Store::open(dir.path(), opts(&clock)).expect("open");
    for round in 0..3 {
        let pts: Vec<(i64, f64)> = (0..60)
            .map(|i| (T0 + round * 300 + i * 10, (round * 1000 + i) as f64))
            .collect();
        store
            .append(
                1,
                &[gauge("c", &["a:b"], "h", &pts), gauge("d", &[], "h", &pts)],
            )
            .expect("append");
        store.flush().expect("flush");
    }
    let mut sk = DDSketch::new();
    sk.insert(3.0);
    for _ in 0..2 {
        store
            .append_sketches(
                1,
                &[SketchWrite {
                    name: "dist".into(),
                    tags: vec![],
                    host: String::new(),
                    points: vec![(T0, sk.clone())],
                }],
            )
            .expect("sketch");
        store.flush().expect("flush");
    }
    let ids: Vec<u64> = ["c", "d", "dist"]
        .iter()
        .map(|m| store.find_series(1, m, &TagFilter::All)[0].id)
        .collect();
    let before: Vec<Vec<Point>> = ids[..2]
        .iter()
        .map(|&id| store.read(1, id, T0, T0 + 7200).expect("read"))
        .collect();
    // Overlapping rounds: later rounds overwrote timestamps of earlier ones.
    assert_eq!(before[0].len(), 60 + 2 * 30);
    assert_eq!(before[0][30].value, 1000.0);
    assert_eq!(store.stats().segments, 5);
    assert_eq!(store.compact().expect("compact"), 5);
    assert_eq!(store.stats().segments, 2);
    for (i, &id) in ids[..2].iter().enumerate() {
        assert_eq!(store.read(1, id, T0, T0 + 7200).expect("read"), before[i]);
    }
    let sk_read = store.read_sketches(1, ids[2], T0, T0).expect("sketches");
    assert_eq!(sk_read[0].1.count(), 2);
    drop(store);
    let store = Store::open(dir.path(), opts(&clock)).expect("reopen");
    assert_eq!(store.stats().segments, 2);
    assert_eq!(
        store.read(1, ids[0], T0, T0 + 7200).expect("read"),
        before[0]
    );
}

#[test]
fn wal_left_behind_by_a_crash_after_flush_is_not_replayed_twice() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let store = Store::open(dir.path(), opts(&clock)).expect("open");
    let mut sk = DDSketch::new();
    sk.insert(2.0);
    store
        .append_sketches(
            1,
            &[SketchWrite {
                name: "dist".into(),
                tags: vec![],
                host: String::new(),
                points: vec![(T0, sk)],
            }],
        )
        .expect("sketch");
    // Save the WAL as it was before the flush deletes it.
    let wal_dir = dir.path().join("wal");
    let saved: Vec<(PathBuf, Vec<u8>)> = all_files(&wal_dir)
        .into_iter()
        .map(|p| {
            let d = std::fs::read(&p).expect("read");
            (p, d)
        })
        .collect();
    store.flush().expect("flush");
    drop(store);
    // "Crash" between writing the segment and deleting the WAL: put the old WAL back.
    for (p, d) in &saved {
        if !p.exists() {
            std::fs::write(p, d).expect("restore wal");
        }
    }
    let store = Store::open(dir.path(), opts(&clock)).expect("reopen");
    let id = store.find_series(1, "dist", &TagFilter::All)[0].id;
    let got = store.read_sketches(1, id, T0, T0).expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.count(), 1, "sketch merged twice after WAL replay");
    assert!(
        saved.iter().all(|(p, _)| !p.exists()),
        "covered WAL not deleted"
    );
}

#[test]
fn reads_during_flushes_see_every_point_exactly_once() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let store = Arc::new(
        Store::open(
            dir.path(),
            StoreOptions {
                fsync: FsyncPolicy::Never,
                ..opts(&clock)
            },
        )
        .expect("open"),
    );
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let write = |i: usize| {
        let mut sk = DDSketch::new();
        sk.insert(i as f64);
        (
            gauge("p", &[], "", &[(T0 + i as i64, i as f64)]),
            SketchWrite {
                name: "s".into(),
                tags: vec![],
                host: String::new(),
                points: vec![(T0 + i as i64, sk)],
            },
        )
    };
    let (g, s) = write(0);
    store.append(1, &[g]).expect("first");
    store.append_sketches(1, &[s]).expect("first sketch");
    acked.store(1, Ordering::SeqCst);
    let pid = store.find_series(1, "p", &TagFilter::All)[0].id;
    let sid = store.find_series(1, "s", &TagFilter::All)[0].id;
    let writer = {
        let (store, acked) = (store.clone(), acked.clone());
        std::thread::spawn(move || {
            for i in 1..600 {
                let (g, s) = write(i);
                store.append(1, &[g]).expect("append");
                store.append_sketches(1, &[s]).expect("sketch");
                acked.store(i + 1, Ordering::SeqCst);
                // Spread the writes so many flushes interleave with them.
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let flusher = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                store.flush().expect("flush");
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads < 50 {
        let before = acked.load(Ordering::SeqCst);
        let pts = store.read(1, pid, T0, T0 + 10_000).expect("read");
        let sks = store
            .read_sketches(1, sid, T0, T0 + 10_000)
            .expect("sketches");
        assert!(pts.len() >= before, "lost points: {} < {before}", pts.len());
        assert!(
            sks.len() >= before,
            "lost sketches: {} < {before}",
            sks.len()
        );
        for (t, sk) in &sks {
            assert_eq!(sk.count(), 1, "sketch at {t} counted {} times", sk.count());
        }
        reads += 1;
    }
    writer.join().expect("writer");
    stop.store(true, Ordering::SeqCst);
    flusher.join().expect("flusher");
    assert_eq!(
        store.read(1, pid, T0, T0 + 10_000).expect("read").len(),
        600
    );
    let segs = store.stats().segments;
    assert!(segs > 4, "only {segs} segments: flushes did not interleave");
}

#[test]
fn background_job_flushes_and_enforces_retention() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 600));
    let store = Store::open(
        dir.path(),
        StoreOptions {
            background: true,
            retention_raw: Duration::from_secs(3600),
            retention_interval: Duration::from_millis(50),
            flush_interval: Duration::from_millis(50),
            ..opts(&clock)
        },
    )
    .expect("open");
    let pts: Vec<(i64, f64)> = (0..60).map(|i| (T0 + i * 10, 2.0)).collect();
    store
        .append(1, &[gauge("bg", &[], "", &pts)])
        .expect("append");
    let id = store.find_series(1, "bg", &TagFilter::All)[0].id;
    // The head is flushed without anyone calling flush().
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.stats().segments == 0 {
        assert!(std::time::Instant::now() < deadline, "no background flush");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two hours later the background job turns the raw points into rollups.
    clock.set(T0 + 2 * 3600 + 600);
    loop {
        let r = store.read_rollup(1, id, T0, T0 + 600).expect("rollup");
        let raw = store.read(1, id, T0, T0 + 600).expect("read");
        if raw.len() == 10 && r.len() == 10 {
            assert!(r.iter().all(|p| p.count == 6 && p.sum == 12.0));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    store.close().expect("close");
}

#[test]
fn torn_wal_tail_is_truncated_and_earlier_records_survive() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    {
        let store = Store::open(dir.path(), opts(&clock)).expect("open");
        for i in 0..3 {
            store
                .append(1, &[gauge("w", &[], "", &[(T0 + i, i as f64)])])
                .expect("append");
        }
    }
    // A write cut short by a crash: half a record header and some bytes at the end.
    let mut wals = all_files(&dir.path().join("wal"));
    wals.sort();
    let wal = wals
        .iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a WAL file")
        .clone();
    let len_before = std::fs::metadata(&wal).expect("meta").len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&wal)
            .expect("open wal");
        f.write_all(&[200, 1, 0, 0, 7, 7, 7, 7, 1, 2, 3])
            .expect("write");
    }
    let store = Store::open(dir.path(), opts(&clock)).expect("reopen with torn tail");
    assert_eq!(std::fs::metadata(&wal).expect("meta").len(), len_before);
    let id = store.find_series(1, "w", &TagFilter::All)[0].id;
    let vals: Vec<f64> = store
        .read(1, id, T0, T0 + 10)
        .expect("read")
        .iter()
        .map(|p| p.value)
        .collect();
    assert_eq!(vals, vec![0.0, 1.0, 2.0]);
    store
        .append(1, &[gauge("w", &[], "", &[(T0 + 5, 5.0)])])
        .expect("append after recovery");
    drop(store);
    let store = Store::open(dir.path(), opts(&clock)).expect("reopen again");
    assert_eq!(store.read(1, id, T0, T0 + 10).expect("read").len(), 4);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir.path(), opts(&clock)).expect("open");
    let err = Store::open(dir.path(), opts(&clock)).expect_err("second open must fail");
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    drop(store);
    Store::open(dir.path(), opts(&clock)).expect("open after the first one closed");
}

#[test]
fn sealed_records_open_after_reopen_and_rotation_and_bind_their_aad() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir.path(), opts(&clock)).expect("open");
    let sealed = store
        .seal_record(b"signal|1|abc", b"attacker 203.0.113.9 hit /login")
        .expect("seal");
    assert!(
        !sealed
            .windows(b"203.0.113.9".len())
            .any(|w| w == b"203.0.113.9"),
        "sealed record leaks plaintext"
    );
    assert!(
        store.open_record(b"signal|2|abc", &sealed).is_err(),
        "aad not bound"
    );
    store.rotate_master(None).expect("rotate");
    drop(store);
    let store = Store::open(dir.path(), opts(&clock)).expect("reopen");
    let plain = store.open_record(b"signal|1|abc", &sealed).expect("open");
    assert_eq!(plain, b"attacker 203.0.113.9 hit /login");
}
