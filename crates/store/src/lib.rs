//! Warden's embedded time-series store: one directory, no external services, encrypted at rest.
//!
//! Why our own store: the query language needs the metric *type* and *interval* per series
//! (VictoriaMetrics drops both), distributions must stay mergeable sketches, and every byte on
//! disk — samples, series names, tag values, the WAL — must be encrypted under a master key the
//! operator controls. The design is recorded in `docs/adr/0003-store.md`.
//!
//! # Layout of `DIR`
//!
//! * `keys/master.key` — the master key (KEK), mode 0600, unless supplied by file or env.
//! * `wal/<id>.wal` — write-ahead log; every record sealed (AES-256-GCM) under the file's DEK.
//! * `data/<id>.seg` — immutable block containers: series index files and raw / rollup / sketch
//!   segments, each with its own DEK wrapped in its header (see `files.rs`).
//! * `LOCK` — `flock`ed while the store is open ([`StoreError::Locked`] for a second opener).
//!
//! # Write path and durability
//!
//! [`Store::append`] resolves series ids (creating definitions), encodes one WAL entry list and
//! joins the **group commit** queue: the first waiting writer becomes leader, writes every queued
//! batch as *one* sealed WAL record, `fdatasync`s ([`FsyncPolicy::Always`], the default), inserts
//! the points into the in-memory head and wakes all writers of the group. `append` returns only
//! after that, so an `Ok` (an HTTP 202) means the points survive `kill -9` and power loss.
//! [`FsyncPolicy::Never`] skips the fsync (survives a process crash, not a power loss).
//!
//! [`Store::flush`] (run by the background thread when the head is large or old) rotates the
//! WAL, writes new series definitions to an index file and the head to compressed, encrypted
//! segments, then deletes the old WAL files. Raw segments of the same 2-hour window are later
//! merged by compaction ([`Store::compact`], and in the background once a window is complete).
//!
//! # Reads
//!
//! Raw points come from segments, the head being flushed and the head; equal timestamps keep the
//! newest write. Data older than `retention_raw` is only available as 1-minute rollups
//! (min/max/sum/count), which [`Store::enforce_retention`] computes before deleting raw data.
//!
//! # Tenancy
//!
//! Every series belongs to an org (`u64`); every read takes the org and returns nothing (or
//! [`StoreError::NotFound`]) for another org's series ids.
//!
//! # API summary
//!
//! ```text
//! Store::open(dir, StoreOptions) -> Result<Store>
//! append(org, &[SeriesWrite]) / append_sketches(org, &[SketchWrite])   // durable on Ok
//! find_series(org, metric, &TagFilter) -> Vec<SeriesMeta>;  series(org, id);  list_metrics(org)
//! read(org, id, from, to) -> Vec<Point>;  read_rollup(..) -> Vec<RollupPoint>
//! read_sketches(..) -> Vec<(i64, DDSketch)>
//! flush();  compact();  enforce_retention() -> RetentionReport
//! rotate_master(Option<MasterKeySource>) -> new version;  stats() -> StoreStats;  close()
//! ```
//!
//! # Thread safety
//!
//! `Store` is `Send + Sync`; share it in an `Arc`. All methods block (file I/O, fsync): call them
//! from `spawn_blocking` or a dedicated thread.

mod codec;
mod dirlock;
mod files;
mod index;

use codec::{Reader, put_ivarint, put_str, put_uvarint};
use files::{Container, ContainerWriter, Kind, WalWriter, io_err, sync_dir};
use index::{Index, SeriesKey};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use warden_crypto::Keyring;

pub use index::{SeriesMeta, TagFilter};
pub use warden_crypto::{CryptoError, MasterKey, MasterKeySource};
pub use warden_model::{DDSketch, MetricKind, Point};

/// Errors of the store. Messages name the file or input at fault and never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: CryptoError,
    },
    #[error("master key: {0}")]
    MasterKey(#[from] CryptoError),
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("series {id} not found for org {org}")]
    NotFound { org: u64, id: u64 },
    #[error("store is read-only after a failed WAL write; restart to recover from the WAL")]
    Poisoned,
    #[error("store directory {0} is in use by another process (LOCK held)")]
    Locked(PathBuf),
}

/// Current time in UNIX seconds; injectable so retention can be tested without waiting.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock the caller moves by hand (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: i64) -> Self {
        Self(AtomicI64::new(now))
    }
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// When a WAL write is made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Group commit: `fdatasync` before `append` returns; concurrent writers share one fsync.
    #[default]
    Always,
    /// No fsync on append (the OS writes back later): survives a process crash, not a power
    /// loss. Segments and index files are always fsynced.
    Never,
}

/// Store configuration. `Default` = 15 months raw, 3 years of rollups, key in `DIR/keys`.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Full-resolution retention (`retention.raw`).
    pub retention_raw: Duration,
    /// 1-minute rollup retention (`retention.rollup`), counted from now.
    pub retention_rollup: Duration,
    pub master_key: MasterKeySource,
    /// Keys still accepted for unwrapping (an interrupted rotation with an external key source);
    /// files found under them are rewrapped to `master_key` at open.
    pub previous_master_keys: Vec<MasterKeySource>,
    pub fsync: FsyncPolicy,
    pub clock: Arc<dyn Clock>,
    /// Head size (points + sketches) that triggers a background flush.
    pub max_head_points: usize,
    /// Flush the head at least this often.
    pub flush_interval: Duration,
    /// How often the background job enforces retention.
    pub retention_interval: Duration,
    /// Run the background flush/retention thread (tests turn it off and call the methods).
    pub background: bool,
}

const DAY: u64 = 86_400;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retention_raw: Duration::from_secs(457 * DAY),
            retention_rollup: Duration::from_secs(3 * 366 * DAY),
            master_key: MasterKeySource::DataDir,
            previous_master_keys: Vec::new(),
            fsync: FsyncPolicy::Always,
            clock: Arc::new(SystemClock),
            max_head_points: 4_000_000,
            flush_interval: Duration::from_secs(15 * 60),
            retention_interval: Duration::from_secs(3600),
            background: true,
        }
    }
}

/// One series' points in an append batch.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesWrite {
    pub name: String,
    /// `key:value` or bare `key`; sorted and deduplicated by the store if they are not.
    pub tags: Vec<String>,
    /// Empty = no host.
    pub host: String,
    pub kind: MetricKind,
    pub interval: i64,
    pub unit: Option<String>,
    pub points: Vec<Point>,
}

/// One distribution's sketches in an append batch.
#[derive(Clone, Debug, PartialEq)]
pub struct SketchWrite {
    pub name: String,
    pub tags: Vec<String>,
    pub host: String,
    /// `(bucket start, sketch)`.
    pub points: Vec<(i64, DDSketch)>,
}

/// A 1-minute rollup: exact min/max/sum/count of the raw points in `[ts, ts + 60)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RollupPoint {
    pub ts: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

impl RollupPoint {
    fn of(ts: i64, v: f64) -> Self {
        Self {
            ts,
            min: v,
            max: v,
            sum: v,
            count: 1,
        }
    }
    fn merge(&mut self, o: &RollupPoint) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
    }
    /// `sum / count`.
    pub fn avg(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

/// What [`Store::stats`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Series of all orgs.
    pub series: u64,
    /// Raw points + sketches stored (segments and head; rollups not counted).
    pub points: u64,
    pub head_points: u64,
    pub segments: u64,
    /// Size of every file under the data directory (keys, WAL, index, segments).
    pub bytes_on_disk: u64,
    /// Points refused since open: non-finite values or older than `retention_raw`.
    pub dropped_points: u64,
    /// Head flushes since open.
    pub flushes: u64,
    /// WAL group commits (one write + fsync each) since open.
    pub commits: u64,
}

/// What [`Store::enforce_retention`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Raw (and raw sketch) segments folded into rollups.
    pub rolled_segments: u64,
    /// Rollup points written.
    pub rollups_written: u64,
    /// Segments deleted or rewritten because they aged out.
    pub expired_segments: u64,
}

// ------------------------------------------------------------------ in-memory state

#[derive(Default)]
struct Head {
    points: FxHashMap<u64, Vec<(i64, f64)>>,
    sketches: FxHashMap<u64, Vec<(i64, DDSketch)>>,
    n: usize,
    /// `Instant` of the first insert since the last flush.
    since: Option<Instant>,
}

impl Head {
    fn is_empty(&self) -> bool {
        self.points.is_empty() && self.sketches.is_empty()
    }
    fn insert_points(&mut self, id: u64, pts: Vec<(i64, f64)>) {
        self.n += pts.len();
        self.since.get_or_insert_with(Instant::now);
        match self.points.get_mut(&id) {
            Some(v) => v.extend(pts),
            None => {
                self.points.insert(id, pts);
            }
        }
    }
    /// Inserts a run of `(id, ts, value)` of one series.
    fn insert_run(&mut self, run: &[(u64, i64, f64)]) {
        let Some(&(id, _, _)) = run.first() else {
            return;
        };
        self.n += run.len();
        self.since.get_or_insert_with(Instant::now);
        self.points
            .entry(id)
            .or_insert_with(|| Vec::with_capacity(run.len().max(32)))
            .extend(run.iter().map(|p| (p.1, p.2)));
    }
    fn insert_sketches(&mut self, id: u64, sk: Vec<(i64, DDSketch)>) {
        self.n += sk.len();
        self.since.get_or_insert_with(Instant::now);
        self.sketches.entry(id).or_default().extend(sk);
    }
    /// Puts `older` in front of what is here (a failed flush hands its data back).
    fn prepend(&mut self, older: Head) {
        for (id, mut v) in older.points {
            if let Some(newer) = self.points.remove(&id) {
                v.extend(newer);
            }
            self.points.insert(id, v);
        }
        for (id, mut v) in older.sketches {
            if let Some(newer) = self.sketches.remove(&id) {
                v.extend(newer);
            }
            self.sketches.insert(id, v);
        }
        self.n += older.n;
        self.since = Some(Instant::now());
    }
}

#[derive(Clone, Copy, Debug)]
struct ChunkRef {
    block: u32,
    off: u32,
    len: u32,
    min: i64,
    max: i64,
    n: u32,
}

struct Segment {
    c: Container,
    min_ts: i64,
    max_ts: i64,
    chunks: FxHashMap<u64, ChunkRef>,
    consumed: Vec<u64>,
    points: u64,
    /// Decoded blocks, shared by every segment of the store.
    cache: Arc<BlockCache>,
    /// When this process wrote (or opened) the segment: compaction waits for a window to go
    /// quiet.
    born: Instant,
}

/// Decrypted, decompressed segment blocks, least recently used evicted first, bounded by bytes.
///
/// Why: a query over one metric reads a handful of neighbouring blocks (segments keep each
/// metric's series together, see [`Inner::layout_order`]), and dashboards repeat the same
/// queries; opening and decompressing a 128 KiB block costs far more than the few chunks read
/// from it. Keys are `(file id, block)`: file ids are never reused, so entries of deleted
/// segments can only age out, never be served for another file.
struct BlockCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

/// `(file id, block number)`.
type BlockKey = (u64, u32);

#[derive(Default)]
struct CacheInner {
    /// Block → (plaintext, last use tick).
    map: FxHashMap<BlockKey, (Arc<Vec<u8>>, u64)>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, (u64, u32)>,
    tick: u64,
    bytes: usize,
}

/// Default size of the decoded-block cache.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

impl BlockCache {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn get(&self, key: (u64, u32)) -> Option<Arc<Vec<u8>>> {
        let mut c = lock(&self.inner);
        c.tick += 1;
        let tick = c.tick;
        let (data, old) = {
            let e = c.map.get_mut(&key)?;
            let old = std::mem::replace(&mut e.1, tick);
            (e.0.clone(), old)
        };
        c.order.remove(&old);
        c.order.insert(tick, key);
        Some(data)
    }

    fn put(&self, key: (u64, u32), data: Arc<Vec<u8>>) {
        if data.len() > self.budget / 4 {
            return;
        }
        let mut c = lock(&self.inner);
        c.tick += 1;
        let tick = c.tick;
        let len = data.len();
        if let Some((old, t)) = c.map.insert(key, (data, tick)) {
            c.bytes -= old.len();
            c.order.remove(&t);
        }
        c.order.insert(tick, key);
        c.bytes += len;
        while c.bytes > self.budget {
            let Some((_, k)) = c.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = c.map.remove(&k) {
                c.bytes -= d.len();
            }
        }
    }
}

/// Rows of one series in one segment.
enum Rows {
    Raw(Vec<(i64, f64)>),
    Rollup(Vec<RollupPoint>),
    Sketch(Vec<(i64, DDSketch)>),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Raw(v) => v.len(),
            Rows::Rollup(v) => v.len(),
            Rows::Sketch(v) => v.len(),
        }
    }
    fn ts_range(&self) -> (i64, i64) {
        fn range(ts: impl Iterator<Item = i64>) -> (i64, i64) {
            let (lo, hi) = ts.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
            if lo > hi { (0, 0) } else { (lo, hi) }
        }
        match self {
            Rows::Raw(v) => range(v.iter().map(|p| p.0)),
            Rows::Rollup(v) => range(v.iter().map(|p| p.ts)),
            Rows::Sketch(v) => range(v.iter().map(|p| p.0)),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.len() as u64);
        match self {
            Rows::Raw(v) => {
                codec::encode_ts(v.iter().map(|p| p.0), out);
                codec::encode_values(&v.iter().map(|p| p.1).collect::<Vec<_>>(), out);
            }
            Rows::Rollup(v) => {
                codec::encode_ts(v.iter().map(|p| p.ts), out);
                codec::encode_values(&v.iter().map(|p| p.min).collect::<Vec<_>>(), out);
                codec::encode_values(&v.iter().map(|p| p.max).collect::<Vec<_>>(), out);
                codec::encode_values(&v.iter().map(|p| p.sum).collect::<Vec<_>>(), out);
                let counts: Vec<i64> = v.iter().map(|p| p.count as i64).collect();
                codec::encode_ts(counts, out);
            }
            Rows::Sketch(v) => {
                codec::encode_ts(v.iter().map(|p| p.0), out);
                for (_, s) in v {
                    codec::encode_sketch(s, out);
                }
            }
        }
    }
    fn decode(kind: Kind, buf: &[u8]) -> Result<Rows, StoreError> {
        let mut r = Reader::new(buf);
        let n = r.len()?;
        let ts = codec::decode_ts(&mut r, n)?;
        Ok(match kind {
            Kind::Raw => {
                let vals = codec::decode_values(&mut r, n)?;
                Rows::Raw(ts.into_iter().zip(vals).collect())
            }
            Kind::Rollup => {
                let min = codec::decode_values(&mut r, n)?;
                let max = codec::decode_values(&mut r, n)?;
                let sum = codec::decode_values(&mut r, n)?;
                let cnt = codec::decode_ts(&mut r, n)?;
                Rows::Rollup(
                    (0..n)
                        .map(|i| RollupPoint {
                            ts: ts[i],
                            min: min[i],
                            max: max[i],
                            sum: sum[i],
                            count: cnt[i] as u64,
                        })
                        .collect(),
                )
            }
            Kind::SketchRaw | Kind::SketchRollup => {
                let mut v = Vec::with_capacity(n);
                for t in ts {
                    v.push((t, codec::decode_sketch(&mut r)?));
                }
                Rows::Sketch(v)
            }
            Kind::Wal | Kind::Index | Kind::Records => {
                return Err(codec::corrupt("not a data segment"));
            }
        })
    }
}

impl Segment {
    fn load(c: Container, cache: Arc<BlockCache>) -> Result<Self, StoreError> {
        let mut r = Reader::new(&c.footer);
        let min_ts = r.ivarint()?;
        let max_ts = r.ivarint()?;
        let n = r.len()?;
        let mut chunks = FxHashMap::with_capacity_and_hasher(n, Default::default());
        let mut id = 0u64;
        let mut points = 0u64;
        for _ in 0..n {
            id = id.wrapping_add(r.uvarint()?);
            let block = u32::try_from(r.uvarint()?).map_err(|_| codec::corrupt("block"))?;
            let off = u32::try_from(r.uvarint()?).map_err(|_| codec::corrupt("offset"))?;
            let len = u32::try_from(r.uvarint()?).map_err(|_| codec::corrupt("length"))?;
            let min = r.ivarint()?;
            let max = r.ivarint()?;
            let cnt = u32::try_from(r.uvarint()?).map_err(|_| codec::corrupt("count"))?;
            if block as usize >= c.block_count() {
                return Err(codec::corrupt("chunk block number"));
            }
            points += u64::from(cnt);
            chunks.insert(
                id,
                ChunkRef {
                    block,
                    off,
                    len,
                    min,
                    max,
                    n: cnt,
                },
            );
        }
        let nc = r.len()?;
        let mut consumed = Vec::with_capacity(nc);
        for _ in 0..nc {
            consumed.push(r.uvarint()?);
        }
        Ok(Self {
            c,
            min_ts,
            max_ts,
            chunks,
            consumed,
            points,
            cache,
            born: Instant::now(),
        })
    }

    fn overlaps(&self, from: i64, to: i64) -> bool {
        self.min_ts <= to && self.max_ts >= from
    }

    fn block(&self, n: u32) -> Result<Arc<Vec<u8>>, StoreError> {
        let key = (self.c.id, n);
        if let Some(data) = self.cache.get(key) {
            return Ok(data);
        }
        let data = Arc::new(self.c.read_block(n)?);
        self.cache.put(key, data.clone());
        Ok(data)
    }

    fn rows(&self, id: u64, from: i64, to: i64) -> Result<Option<Rows>, StoreError> {
        let Some(cr) = self.chunks.get(&id) else {
            return Ok(None);
        };
        if cr.min > to || cr.max < from || cr.n == 0 {
            return Ok(None);
        }
        let block = self.block(cr.block)?;
        let bytes = block
            .get(cr.off as usize..cr.off as usize + cr.len as usize)
            .ok_or_else(|| codec::corrupt("chunk outside block"))?;
        Rows::decode(self.c.kind, bytes).map(Some)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn rlock<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn wlock<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// What an append says about a series (borrowed from the write).
#[derive(Clone, Copy)]
struct DefIn<'a> {
    name: &'a str,
    tags: &'a [String],
    host: &'a str,
    kind: MetricKind,
    interval: i64,
    unit: &'a Option<String>,
    distribution: bool,
}

struct Batch {
    ticket: u64,
    /// The appending thread sleeps on its own condvar (with the commit mutex), so a finished
    /// group wakes exactly its members and the next leader, not every waiting writer.
    waker: Arc<Condvar>,
    payload: Vec<u8>,
    /// `(series id, ts, value)`, runs of one series contiguous.
    points: Vec<(u64, i64, f64)>,
    sketches: Vec<(u64, Vec<(i64, DDSketch)>)>,
    defs: Vec<u64>,
}

struct Commit {
    queue: Vec<Batch>,
    leader: bool,
    next_ticket: u64,
    /// Every ticket below this is durable.
    done: u64,
    wal: Option<WalWriter>,
    /// WAL files whose content is (or is being) flushed; deleted after a successful flush.
    old_wals: Vec<PathBuf>,
    /// A flush is swapping the WAL: no new leader may start.
    rotating: bool,
}

#[derive(Default)]
struct Bg {
    shutdown: bool,
    flush_wanted: bool,
}

struct Inner {
    dir: PathBuf,
    data_dir: PathBuf,
    wal_dir: PathBuf,
    opts: StoreOptions,
    keyring: RwLock<Keyring>,
    /// `records.key`: carries the data key of [`Store::seal_record`].
    records: Container,
    index: RwLock<Index>,
    head: RwLock<Head>,
    frozen: RwLock<Option<Arc<Head>>>,
    segs: RwLock<Vec<Arc<Segment>>>,
    cache: Arc<BlockCache>,
    commit: Mutex<Commit>,
    commit_cv: Condvar,
    /// Serializes flush, retention and rotation.
    maint: Mutex<()>,
    next_file: AtomicU64,
    poisoned: AtomicBool,
    dropped: AtomicU64,
    flushes: AtomicU64,
    commits: AtomicU64,
    bg: Mutex<Bg>,
    bg_cv: Condvar,
}

/// The store. See the crate docs.
pub struct Store {
    inner: Arc<Inner>,
    _lock: dirlock::DirLock,
    bg: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.inner.dir.display())
    }
}

// ------------------------------------------------------------------ WAL entries

const E_DEF: u8 = 1;
const E_POINTS: u8 = 2;
const E_SKETCHES: u8 = 3;

fn kind_byte(k: MetricKind) -> u8 {
    match k {
        MetricKind::Gauge => 0,
        MetricKind::Count => 1,
        MetricKind::Rate => 2,
    }
}

fn encode_def(m: &SeriesMeta, out: &mut Vec<u8>) {
    put_uvarint(out, m.id);
    put_uvarint(out, m.org);
    out.push(u8::from(m.distribution));
    out.push(kind_byte(m.kind));
    put_ivarint(out, m.interval);
    put_str(out, &m.name);
    put_str(out, &m.host);
    match &m.unit {
        Some(u) => {
            out.push(1);
            put_str(out, u);
        }
        None => out.push(0),
    }
    put_uvarint(out, m.tags.len() as u64);
    for t in &m.tags {
        put_str(out, t);
    }
}

fn decode_def(r: &mut Reader<'_>) -> Result<SeriesMeta, StoreError> {
    let id = r.uvarint()?;
    let org = r.uvarint()?;
    let distribution = r.u8()? != 0;
    let kind = match r.u8()? {
        0 => MetricKind::Gauge,
        1 => MetricKind::Count,
        2 => MetricKind::Rate,
        _ => return Err(codec::corrupt("metric kind")),
    };
    let interval = r.ivarint()?;
    let name = r.str()?;
    let host = r.str()?;
    let unit = if r.u8()? == 1 { Some(r.str()?) } else { None };
    let n = r.len()?;
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        tags.push(r.str()?);
    }
    Ok(SeriesMeta {
        id,
        org,
        name,
        tags,
        host,
        kind,
        interval,
        unit,
        distribution,
    })
}

enum WalEntry {
    Def(SeriesMeta),
    Points(u64, Vec<(i64, f64)>),
    Sketches(u64, Vec<(i64, DDSketch)>),
}

fn decode_entries(buf: &[u8]) -> Result<Vec<WalEntry>, StoreError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        match r.u8()? {
            E_DEF => out.push(WalEntry::Def(decode_def(&mut r)?)),
            E_POINTS => {
                let id = r.uvarint()?;
                let n = r.len()?;
                let ts = codec::decode_ts(&mut r, n)?;
                let mut pts = Vec::with_capacity(n);
                for t in ts {
                    pts.push((t, r.f64()?));
                }
                out.push(WalEntry::Points(id, pts));
            }
            E_SKETCHES => {
                let id = r.uvarint()?;
                let n = r.len()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = r.ivarint()?;
                    v.push((t, codec::decode_sketch(&mut r)?));
                }
                out.push(WalEntry::Sketches(id, v));
            }
            _ => return Err(codec::corrupt("WAL entry type")),
        }
    }
    Ok(out)
}

fn minute(ts: i64) -> i64 {
    ts.div_euclid(60) * 60
}

/// Sorts by timestamp (stable) and keeps the last write of each timestamp.
fn dedup_last<T>(v: &mut Vec<(i64, T)>) {
    // Nearly always already strictly ascending: check before sorting or moving anything.
    if v.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    v.sort_by_key(|p| p.0);
    // `dedup_by` keeps the first of a run; swapping each later element into the kept slot
    // makes it keep the last (the stable sort preserved write order within a timestamp).
    v.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            std::mem::swap(later, kept);
            true
        } else {
            false
        }
    });
}

fn rollup_of(points: &[(i64, f64)]) -> Vec<RollupPoint> {
    let mut out: Vec<RollupPoint> = Vec::new();
    for &(t, v) in points {
        let m = minute(t);
        match out.last_mut() {
            Some(last) if last.ts == m => last.merge(&RollupPoint::of(m, v)),
            _ => out.push(RollupPoint::of(m, v)),
        }
    }
    out
}

fn merge_rollups(mut v: Vec<RollupPoint>) -> Vec<RollupPoint> {
    v.sort_by_key(|p| p.ts);
    let mut out: Vec<RollupPoint> = Vec::with_capacity(v.len());
    for p in v {
        match out.last_mut() {
            Some(last) if last.ts == p.ts => last.merge(&p),
            _ => out.push(p),
        }
    }
    out
}

fn merge_sketches(mut v: Vec<(i64, DDSketch)>) -> Vec<(i64, DDSketch)> {
    v.sort_by_key(|p| p.0);
    let mut out: Vec<(i64, DDSketch)> = Vec::with_capacity(v.len());
    for (t, s) in v {
        match out.last_mut() {
            Some(last) if last.0 == t => last.1.merge(&s),
            _ => out.push((t, s)),
        }
    }
    out
}

/// The id in a WAL file name (`<id hex>.wal`).
fn wal_id(p: &Path) -> Option<u64> {
    u64::from_str_radix(p.file_stem()?.to_str()?, 16).ok()
}

fn list_dir(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let p = e.map_err(io_err(dir))?.path();
        if p.extension().and_then(|x| x.to_str()) == Some(ext) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Target plaintext size of a segment block before zstd + sealing.
const BLOCK_TARGET: usize = 128 * 1024;

impl Inner {
    fn file_id(&self) -> u64 {
        self.next_file.fetch_add(1, Ordering::SeqCst)
    }

    fn seg_path(&self, id: u64) -> PathBuf {
        self.data_dir.join(format!("{id:016x}.seg"))
    }

    /// Writes one data segment from rows in the order they should sit in blocks, normally
    /// [`Inner::layout_order`] (streamed: compaction feeds one series at a time). Each series at
    /// most once.
    fn write_segment(
        &self,
        kind: Kind,
        rows: impl IntoIterator<Item = Result<(u64, Rows), StoreError>>,
        consumed: &[u64],
    ) -> Result<Arc<Segment>, StoreError> {
        let id = self.file_id();
        let keyring = rlock(&self.keyring).clone();
        let mut w = ContainerWriter::create(self.seg_path(id), kind, id, &keyring)?;
        let mut block = Vec::with_capacity(BLOCK_TARGET + 4096);
        let mut refs: Vec<(u64, ChunkRef)> = Vec::new();
        let mut nblock = 0u32;
        let (mut smin, mut smax) = (i64::MAX, i64::MIN);
        for item in rows {
            let (sid, r) = item?;
            if r.len() == 0 {
                continue;
            }
            let start = block.len();
            r.encode(&mut block);
            let (min, max) = r.ts_range();
            smin = smin.min(min);
            smax = smax.max(max);
            refs.push((
                sid,
                ChunkRef {
                    block: nblock,
                    off: start as u32,
                    len: (block.len() - start) as u32,
                    min,
                    max,
                    n: r.len() as u32,
                },
            ));
            if block.len() >= BLOCK_TARGET {
                w.write_block(&block)?;
                block.clear();
                nblock += 1;
            }
        }
        if !block.is_empty() {
            w.write_block(&block)?;
        }
        if refs.is_empty() {
            smin = 0;
            smax = -1;
        }
        // Blocks follow the caller's (layout) order; the footer lists series by id.
        refs.sort_unstable_by_key(|r| r.0);
        let mut footer = Vec::with_capacity(refs.len() * 12 + 32);
        put_ivarint(&mut footer, smin);
        put_ivarint(&mut footer, smax);
        put_uvarint(&mut footer, refs.len() as u64);
        let mut prev = 0u64;
        for (sid, c) in &refs {
            put_uvarint(&mut footer, sid - prev);
            prev = *sid;
            put_uvarint(&mut footer, u64::from(c.block));
            put_uvarint(&mut footer, u64::from(c.off));
            put_uvarint(&mut footer, u64::from(c.len));
            put_ivarint(&mut footer, c.min);
            put_ivarint(&mut footer, c.max);
            put_uvarint(&mut footer, u64::from(c.n));
        }
        put_uvarint(&mut footer, consumed.len() as u64);
        for c in consumed {
            put_uvarint(&mut footer, *c);
        }
        let path = self.seg_path(id);
        w.finish(&footer)?;
        let c = Container::open(&path, &keyring)?;
        Ok(Arc::new(Segment::load(c, self.cache.clone())?))
    }

    /// The order series sit in segment blocks: by org and metric name, then id. A query names
    /// one metric, so its series share a few neighbouring blocks instead of being spread over
    /// every block of the segment (ids are handed out in arrival order, i.e. host by host), and
    /// similar series side by side compress better. Deduplicates `ids`.
    fn layout_order(&self, mut ids: Vec<u64>) -> Vec<u64> {
        ids.sort_unstable();
        ids.dedup();
        let idx = rlock(&self.index);
        let mut keyed: Vec<(u64, &str, u64)> = ids
            .iter()
            .map(|&id| match idx.series.get(&id) {
                Some(e) => (e.meta.org, e.meta.name.as_str(), id),
                None => (0, "", id),
            })
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|k| k.2).collect()
    }

    fn write_index_file(&self, metas: &[Arc<SeriesMeta>]) -> Result<u64, StoreError> {
        let id = self.file_id();
        let keyring = rlock(&self.keyring).clone();
        let mut w = ContainerWriter::create(self.seg_path(id), Kind::Index, id, &keyring)?;
        let mut block = Vec::with_capacity(BLOCK_TARGET + 4096);
        for m in metas {
            encode_def(m, &mut block);
            if block.len() >= BLOCK_TARGET {
                w.write_block(&block)?;
                block.clear();
            }
        }
        if !block.is_empty() {
            w.write_block(&block)?;
        }
        w.finish(&[])?;
        Ok(id)
    }

    fn delete_segment_files(&self, ids: &[u64]) -> Result<(), StoreError> {
        for &id in ids {
            let p = self.seg_path(id);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        sync_dir(&self.data_dir)
    }

    fn index_file_ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for p in list_dir(&self.data_dir, "seg")? {
            if let Ok((Kind::Index, id)) = files::peek_kind(&p) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    // -------------------------------------------------------------- group commit

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let waker = Arc::new(Condvar::new());
        let mut c = lock(&self.commit);
        let ticket = c.next_ticket;
        c.next_ticket += 1;
        c.queue.push(Batch {
            ticket,
            waker: waker.clone(),
            ..batch
        });
        loop {
            if c.done > ticket {
                return Ok(());
            }
            if self.poisoned.load(Ordering::SeqCst) {
                return Err(StoreError::Poisoned);
            }
            if c.leader || c.rotating {
                c = waker.wait(c).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            c.leader = true;
            let group = std::mem::take(&mut c.queue);
            let last = group.last().map_or(ticket, |b| b.ticket);
            let wakers: Vec<Arc<Condvar>> = group.iter().map(|b| b.waker.clone()).collect();
            let Some(mut wal) = c.wal.take() else {
                c.leader = false;
                self.poisoned.store(true, Ordering::SeqCst);
                return Err(StoreError::Poisoned);
            };
            drop(c);
            let res = self.lead(&mut wal, group);
            c = lock(&self.commit);
            c.wal = Some(wal);
            c.leader = false;
            for w in &wakers {
                w.notify_one();
            }
            // Flush may be waiting for the leader to finish.
            self.commit_cv.notify_all();
            match res {
                Ok(()) => {
                    c.done = last + 1;
                    // Hand leadership to the first writer that queued meanwhile.
                    if let Some(next) = c.queue.first() {
                        next.waker.notify_one();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "WAL write failed; store is now read-only");
                    self.poisoned.store(true, Ordering::SeqCst);
                    for b in &c.queue {
                        b.waker.notify_one();
                    }
                    return Err(e);
                }
            }
        }
    }

    fn lead(&self, wal: &mut WalWriter, group: Vec<Batch>) -> Result<(), StoreError> {
        if group.len() == 1 {
            wal.append(&group[0].payload)?;
        } else {
            let total = group.iter().map(|b| b.payload.len()).sum();
            let mut buf = Vec::with_capacity(total);
            for b in &group {
                buf.extend_from_slice(&b.payload);
            }
            wal.append(&buf)?;
        }
        if self.opts.fsync == FsyncPolicy::Always {
            wal.sync()?;
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        let mut defs = Vec::new();
        let head_n = {
            let mut head = wlock(&self.head);
            for b in group {
                for run in b.points.chunk_by(|a, b| a.0 == b.0) {
                    head.insert_run(run);
                }
                for (id, sk) in b.sketches {
                    head.insert_sketches(id, sk);
                }
                defs.extend(b.defs);
            }
            head.n
        };
        if !defs.is_empty() {
            let mut idx = wlock(&self.index);
            for id in defs {
                if idx.mark_durable(id) {
                    idx.dirty.push(id);
                }
            }
        }
        if head_n >= self.opts.max_head_points {
            let mut bg = lock(&self.bg);
            if !bg.flush_wanted {
                bg.flush_wanted = true;
                self.bg_cv.notify_all();
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- series resolution

    /// Returns the series id for a write, adding its definition to `payload` when it is new,
    /// changed, or not yet durable.
    fn resolve(&self, org: u64, d: &DefIn<'_>, payload: &mut Vec<u8>, defs: &mut Vec<u64>) -> u64 {
        let DefIn {
            name,
            tags,
            host,
            kind,
            interval,
            unit,
            distribution,
        } = *d;
        let key = SeriesKey {
            name,
            tags,
            host,
            distribution,
        };
        // Distributions have no kind/interval/unit of their own.
        let (kind, interval, unit) = if distribution {
            (MetricKind::Gauge, 0, &None)
        } else {
            (kind, interval, unit)
        };
        let (hash, attrs) = {
            let idx = rlock(&self.index);
            let hash = idx.key_hash(&key);
            let attrs = idx.attrs_hash(kind, interval, unit);
            if let Some(e) = idx.lookup(org, hash)
                && e.durable
                && e.attrs == attrs
            {
                return e.id;
            }
            (hash, attrs)
        };
        let mut idx = wlock(&self.index);
        let existing = idx
            .lookup(org, hash)
            .and_then(|e| idx.series.get(&e.id).map(|s| (e, s.meta.clone())));
        let meta = match existing {
            Some((e, m)) if e.attrs == attrs => {
                if e.durable {
                    return e.id;
                }
                m
            }
            Some((_, m)) => {
                let mut m = (*m).clone();
                m.kind = kind;
                m.interval = interval;
                m.unit = unit.clone();
                idx.put(m.clone(), false);
                Arc::new(m)
            }
            None => {
                let m = SeriesMeta {
                    id: idx.next_id,
                    org,
                    name: name.to_string(),
                    tags: tags.to_vec(),
                    host: host.to_string(),
                    kind,
                    interval,
                    unit: unit.clone(),
                    distribution,
                };
                idx.put(m.clone(), false);
                Arc::new(m)
            }
        };
        payload.push(E_DEF);
        encode_def(&meta, payload);
        defs.push(meta.id);
        meta.id
    }

    // -------------------------------------------------------------- flush

    fn flush_locked(&self) -> Result<(), StoreError> {
        if rlock(&self.head).is_empty() && rlock(&self.index).dirty.is_empty() {
            return Ok(());
        }
        // Create (and fsync) the next WAL before stopping writers; only the swap is exclusive.
        let id = self.file_id();
        let keyring = rlock(&self.keyring).clone();
        let new_wal = WalWriter::create(self.wal_dir.join(format!("{id:016x}.wal")), id, &keyring)?;
        let (frozen, defs, old_wals) = {
            let mut c = lock(&self.commit);
            // Keep new leaders from starting (under steady load there is always one), then
            // wait for the running one.
            c.rotating = true;
            while c.leader {
                c = self.commit_cv.wait(c).unwrap_or_else(|p| p.into_inner());
            }
            if let Some(old) = c.wal.replace(new_wal) {
                c.old_wals.push(old.path.clone());
            }
            let old_wals = c.old_wals.clone();
            let defs = std::mem::take(&mut wlock(&self.index).dirty);
            // Lock order everywhere: frozen → segs → head (readers hold `frozen` throughout, so
            // they see the data exactly once: in the head, the frozen head or a segment).
            let mut fz = wlock(&self.frozen);
            let h = Arc::new(std::mem::take(&mut *wlock(&self.head)));
            *fz = Some(h.clone());
            drop(fz);
            c.rotating = false;
            if let Some(next) = c.queue.first() {
                next.waker.notify_one();
            }
            (h, defs, old_wals)
        };
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let wal_ids: Vec<u64> = old_wals.iter().filter_map(|p| wal_id(p)).collect();
        match self.write_flush(&frozen, &defs, &wal_ids) {
            Ok(()) => {
                {
                    let mut c = lock(&self.commit);
                    c.old_wals.retain(|p| !old_wals.contains(p));
                }
                for p in &old_wals {
                    if let Err(e) = std::fs::remove_file(p)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        return Err(io_err(p)(e));
                    }
                }
                sync_dir(&self.wal_dir)?;
                Ok(())
            }
            Err(e) => {
                // Hand the data back to the head; the old WAL files stay until a flush succeeds.
                let mut fz = wlock(&self.frozen);
                let mut head = wlock(&self.head);
                let f = fz.take();
                if let Some(f) = f {
                    let older = Arc::try_unwrap(f).unwrap_or_else(|a| Head {
                        points: a.points.clone(),
                        sketches: a.sketches.clone(),
                        n: a.n,
                        since: a.since,
                    });
                    head.prepend(older);
                }
                drop(head);
                drop(fz);
                wlock(&self.index).dirty.extend(defs);
                Err(e)
            }
        }
    }

    /// Writes the frozen head. The last file written lists the WAL files it covers, so a crash
    /// before those are deleted does not replay them (sketches would be merged twice).
    fn write_flush(&self, frozen: &Head, defs: &[u64], wals: &[u64]) -> Result<(), StoreError> {
        if !defs.is_empty() {
            let old_index = self.index_file_ids()?;
            let idx = rlock(&self.index);
            // Compact the index when it is spread over many files: one file with everything.
            let (metas, obsolete): (Vec<Arc<SeriesMeta>>, Vec<u64>) = if old_index.len() >= 8 {
                let mut all: Vec<_> = idx
                    .series
                    .values()
                    .filter(|e| e.durable)
                    .map(|e| e.meta.clone())
                    .collect();
                all.sort_by_key(|m| m.id);
                (all, old_index)
            } else {
                (
                    defs.iter()
                        .filter_map(|id| idx.series.get(id).map(|e| e.meta.clone()))
                        .collect(),
                    Vec::new(),
                )
            };
            drop(idx);
            self.write_index_file(&metas)?;
            self.delete_segment_files(&obsolete)?;
        }
        let mut new_segs = Vec::new();
        if !frozen.points.is_empty() {
            let order = self.layout_order(frozen.points.keys().copied().collect());
            let rows = order.into_iter().filter_map(|id| {
                let mut v = frozen.points.get(&id)?.clone();
                dedup_last(&mut v);
                Some((id, Rows::Raw(v)))
            });
            let covers = if frozen.sketches.is_empty() {
                wals
            } else {
                &[]
            };
            new_segs.push(self.write_segment(Kind::Raw, rows.map(Ok), covers)?);
        }
        if !frozen.sketches.is_empty() {
            let mut rows = BTreeMap::new();
            for (&id, sk) in &frozen.sketches {
                rows.insert(id, Rows::Sketch(merge_sketches(sk.clone())));
            }
            new_segs.push(self.write_segment(Kind::SketchRaw, rows.into_iter().map(Ok), wals)?);
        }
        // Publish the segments and retire the frozen head in one step for readers.
        let mut fz = wlock(&self.frozen);
        wlock(&self.segs).extend(new_segs);
        *fz = None;
        Ok(())
    }

    // -------------------------------------------------------------- reads

    fn segments_of(&self, kind: Kind, from: i64, to: i64) -> Vec<Arc<Segment>> {
        let mut v: Vec<_> = rlock(&self.segs)
            .iter()
            .filter(|s| s.c.kind == kind && s.overlaps(from, to))
            .cloned()
            .collect();
        v.sort_by_key(|s| s.c.id);
        v
    }

    fn raw_points(&self, id: u64, from: i64, to: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        let frozen = rlock(&self.frozen);
        let mut out = Vec::new();
        for s in self.segments_of(Kind::Raw, from, to) {
            if let Some(Rows::Raw(v)) = s.rows(id, from, to)? {
                let inside =
                    v.first().is_some_and(|p| p.0 >= from) && v.last().is_some_and(|p| p.0 <= to);
                if inside && out.is_empty() {
                    out = v;
                } else {
                    out.extend(v.into_iter().filter(|p| p.0 >= from && p.0 <= to));
                }
            }
        }
        if let Some(f) = frozen.as_ref()
            && let Some(v) = f.points.get(&id)
        {
            out.extend(v.iter().filter(|p| p.0 >= from && p.0 <= to));
        }
        if let Some(v) = rlock(&self.head).points.get(&id) {
            out.extend(v.iter().filter(|p| p.0 >= from && p.0 <= to));
        }
        dedup_last(&mut out);
        Ok(out)
    }

    fn stored_rollups(&self, id: u64, from: i64, to: i64) -> Result<Vec<RollupPoint>, StoreError> {
        let mut out = Vec::new();
        for s in self.segments_of(Kind::Rollup, from, to) {
            if let Some(Rows::Rollup(v)) = s.rows(id, from, to)? {
                out.extend(v.into_iter().filter(|p| p.ts >= from && p.ts <= to));
            }
        }
        Ok(merge_rollups(out))
    }

    fn sketches(
        &self,
        kinds: &[Kind],
        id: u64,
        from: i64,
        to: i64,
        head: bool,
    ) -> Result<Vec<(i64, DDSketch)>, StoreError> {
        let frozen = rlock(&self.frozen);
        let mut out = Vec::new();
        for &k in kinds {
            for s in self.segments_of(k, from, to) {
                if let Some(Rows::Sketch(v)) = s.rows(id, from, to)? {
                    out.extend(v.into_iter().filter(|p| p.0 >= from && p.0 <= to));
                }
            }
        }
        if head {
            if let Some(f) = frozen.as_ref()
                && let Some(v) = f.sketches.get(&id)
            {
                out.extend(v.iter().filter(|p| p.0 >= from && p.0 <= to).cloned());
            }
            if let Some(v) = rlock(&self.head).sketches.get(&id) {
                out.extend(v.iter().filter(|p| p.0 >= from && p.0 <= to).cloned());
            }
        }
        Ok(merge_sketches(out))
    }

    // -------------------------------------------------------------- retention

    fn roll(&self, src: Kind, dst: Kind, cutoff: i64) -> Result<(u64, u64), StoreError> {
        let old: Vec<Arc<Segment>> = {
            let mut v: Vec<_> = rlock(&self.segs)
                .iter()
                .filter(|s| s.c.kind == src && !s.chunks.is_empty() && s.min_ts < cutoff)
                .cloned()
                .collect();
            v.sort_by_key(|s| s.c.id);
            v
        };
        if old.is_empty() {
            return Ok((0, 0));
        }
        let mut remainder = BTreeMap::new();
        let mut rolled = BTreeMap::new();
        let mut ids: Vec<u64> = old.iter().flat_map(|s| s.chunks.keys().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut written = 0u64;
        for id in ids {
            match src {
                Kind::Raw => {
                    let mut pts = Vec::new();
                    for s in &old {
                        if let Some(Rows::Raw(v)) = s.rows(id, i64::MIN, i64::MAX)? {
                            pts.extend(v);
                        }
                    }
                    dedup_last(&mut pts);
                    let split = pts.partition_point(|p| p.0 < cutoff);
                    let keep = pts.split_off(split);
                    if !keep.is_empty() {
                        remainder.insert(id, Rows::Raw(keep));
                    }
                    let r = rollup_of(&pts);
                    written += r.len() as u64;
                    if !r.is_empty() {
                        rolled.insert(id, Rows::Rollup(r));
                    }
                }
                _ => {
                    let mut sk = Vec::new();
                    for s in &old {
                        if let Some(Rows::Sketch(v)) = s.rows(id, i64::MIN, i64::MAX)? {
                            sk.extend(v);
                        }
                    }
                    let sk = merge_sketches(sk);
                    let split = sk.partition_point(|p| p.0 < cutoff);
                    let mut sk = sk;
                    let keep = sk.split_off(split);
                    if !keep.is_empty() {
                        remainder.insert(id, Rows::Sketch(keep));
                    }
                    let per_minute =
                        merge_sketches(sk.into_iter().map(|(t, s)| (minute(t), s)).collect());
                    written += per_minute.len() as u64;
                    if !per_minute.is_empty() {
                        rolled.insert(id, Rows::Sketch(per_minute));
                    }
                }
            }
        }
        let consumed: Vec<u64> = old.iter().map(|s| s.c.id).collect();
        // Order matters for crash safety: the remainder first (duplicates are harmless), then
        // the rollup segment that records which raw segments it consumed, then the deletes.
        let mut added = Vec::new();
        if !remainder.is_empty() {
            added.push(self.write_segment(src, remainder.into_iter().map(Ok), &[])?);
        }
        added.push(self.write_segment(dst, rolled.into_iter().map(Ok), &consumed)?);
        {
            let mut segs = wlock(&self.segs);
            segs.retain(|s| !consumed.contains(&s.c.id));
            segs.extend(added);
        }
        self.delete_segment_files(&consumed)?;
        Ok((consumed.len() as u64, written))
    }

    fn expire(&self, kind: Kind, cutoff: i64) -> Result<u64, StoreError> {
        let old: Vec<Arc<Segment>> = rlock(&self.segs)
            .iter()
            .filter(|s| s.c.kind == kind && s.min_ts < cutoff)
            .cloned()
            .collect();
        let mut n = 0;
        for s in old {
            let mut added = None;
            if s.max_ts >= cutoff {
                let mut rows = BTreeMap::new();
                for &id in s.chunks.keys() {
                    match s.rows(id, cutoff, i64::MAX)? {
                        Some(Rows::Rollup(v)) => {
                            let v: Vec<_> = v.into_iter().filter(|p| p.ts >= cutoff).collect();
                            if !v.is_empty() {
                                rows.insert(id, Rows::Rollup(v));
                            }
                        }
                        Some(Rows::Sketch(v)) => {
                            let v: Vec<_> = v.into_iter().filter(|p| p.0 >= cutoff).collect();
                            if !v.is_empty() {
                                rows.insert(id, Rows::Sketch(v));
                            }
                        }
                        _ => {}
                    }
                }
                added = Some(self.write_segment(kind, rows.into_iter().map(Ok), &[s.c.id])?);
            }
            {
                let mut segs = wlock(&self.segs);
                segs.retain(|x| x.c.id != s.c.id);
                segs.extend(added);
            }
            self.delete_segment_files(&[s.c.id])?;
            n += 1;
        }
        Ok(n)
    }

    /// Merges the raw (and raw sketch) segments whose first point falls in the same 2-hour
    /// window — rollup segments: the same day — into one segment: longer chunks compress better and reads touch fewer files.
    /// Windows are merged once complete (plus a grace period for late points), or earlier when
    /// they hold too many segments, or always when `all` is set. Crash-safe like retention: the
    /// merged segment lists the ones it consumed, and `open` deletes leftovers.
    fn compact_locked(&self, all: bool) -> Result<u64, StoreError> {
        let now = self.opts.clock.now();
        let mut merged = 0;
        for (kind, window) in [
            (Kind::Raw, COMPACT_WINDOW),
            (Kind::SketchRaw, COMPACT_WINDOW),
            (Kind::Rollup, ROLLUP_COMPACT_WINDOW),
            (Kind::SketchRollup, ROLLUP_COMPACT_WINDOW),
        ] {
            let mut windows: BTreeMap<i64, Vec<Arc<Segment>>> = BTreeMap::new();
            for s in rlock(&self.segs)
                .iter()
                .filter(|s| s.c.kind == kind && !s.chunks.is_empty())
            {
                windows
                    .entry(s.min_ts.div_euclid(window))
                    .or_default()
                    .push(s.clone());
            }
            for (w, mut segs) in windows {
                // A complete window still receiving late data (a backfill, a replay) would be
                // rewritten after every flush — quadratic in its size — so wait until it has
                // had no new segment for a while.
                let quiet = segs.iter().all(|s| s.born.elapsed() >= COMPACT_QUIET);
                let complete = (w + 1) * window + COMPACT_GRACE <= now && quiet;
                if segs.len() < 2 || !(all || complete || segs.len() >= COMPACT_MAX_SEGMENTS) {
                    continue;
                }
                segs.sort_by_key(|s| s.c.id);
                let ids: Vec<u64> = segs.iter().flat_map(|s| s.chunks.keys().copied()).collect();
                let ids = self.layout_order(ids);
                let consumed: Vec<u64> = segs.iter().map(|s| s.c.id).collect();
                let rows = ids.into_iter().map(|id| merged_rows(&segs, kind, id));
                let new = self.write_segment(kind, rows, &consumed)?;
                {
                    let mut all_segs = wlock(&self.segs);
                    all_segs.retain(|s| !consumed.contains(&s.c.id));
                    all_segs.push(new);
                }
                self.delete_segment_files(&consumed)?;
                merged += consumed.len() as u64;
            }
        }
        Ok(merged)
    }

    fn enforce_retention(&self) -> Result<RetentionReport, StoreError> {
        let _m = lock(&self.maint);
        self.flush_locked()?;
        let now = self.opts.clock.now();
        let raw_cutoff = minute(now.saturating_sub(self.opts.retention_raw.as_secs() as i64));
        let rollup_cutoff = now.saturating_sub(self.opts.retention_rollup.as_secs() as i64);
        let mut rep = RetentionReport::default();
        for (src, dst) in [
            (Kind::Raw, Kind::Rollup),
            (Kind::SketchRaw, Kind::SketchRollup),
        ] {
            let (segs, pts) = self.roll(src, dst, raw_cutoff)?;
            rep.rolled_segments += segs;
            rep.rollups_written += pts;
        }
        for k in [Kind::Rollup, Kind::SketchRollup] {
            rep.expired_segments += self.expire(k, rollup_cutoff)?;
        }
        if rep != RetentionReport::default() {
            tracing::info!(?rep, raw_cutoff, rollup_cutoff, "retention enforced");
        }
        Ok(rep)
    }

    fn all_file_paths(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut v = list_dir(&self.data_dir, "seg")?;
        v.push(self.records.path.clone());
        v.extend(list_dir(&self.wal_dir, "wal")?);
        Ok(v)
    }
}

/// Width of a compaction window (seconds).
const COMPACT_WINDOW: i64 = 2 * 3600;
/// Rollup segments (one per retention run, i.e. hourly) are merged per day.
const ROLLUP_COMPACT_WINDOW: i64 = 86_400;
/// A window is complete this long after its end.
const COMPACT_GRACE: i64 = 600;
/// A complete window is merged once no segment was added to it for this long.
const COMPACT_QUIET: Duration = Duration::from_secs(5 * 60);
/// An incomplete window is merged anyway once it has this many segments.
const COMPACT_MAX_SEGMENTS: usize = 8;

/// One series' rows merged across `segs` (oldest first, so the newest write of a timestamp
/// wins; sketches sharing a timestamp are merged).
fn merged_rows(segs: &[Arc<Segment>], kind: Kind, id: u64) -> Result<(u64, Rows), StoreError> {
    if kind == Kind::Rollup {
        let mut v = Vec::new();
        for s in segs {
            if let Some(Rows::Rollup(r)) = s.rows(id, i64::MIN, i64::MAX)? {
                v.extend(r);
            }
        }
        return Ok((id, Rows::Rollup(merge_rollups(v))));
    }
    if kind == Kind::Raw {
        let mut pts = Vec::new();
        for s in segs {
            if let Some(Rows::Raw(v)) = s.rows(id, i64::MIN, i64::MAX)? {
                pts.extend(v);
            }
        }
        dedup_last(&mut pts);
        Ok((id, Rows::Raw(pts)))
    } else {
        let mut sk = Vec::new();
        for s in segs {
            if let Some(Rows::Sketch(v)) = s.rows(id, i64::MIN, i64::MAX)? {
                sk.extend(v);
            }
        }
        Ok((id, Rows::Sketch(merge_sketches(sk))))
    }
}

fn background(inner: Arc<Inner>) {
    let tick = Duration::from_secs(1)
        .min(inner.opts.retention_interval)
        .min(inner.opts.flush_interval)
        .max(Duration::from_millis(10));
    let started = Instant::now();
    // First retention pass a minute after start (or sooner if the interval is shorter), then
    // every `retention_interval`.
    let first = inner.opts.retention_interval.min(Duration::from_secs(60));
    let mut last_retention: Option<Instant> = None;
    loop {
        let flush_wanted = {
            let bg = lock(&inner.bg);
            let (mut bg, _) = inner
                .bg_cv
                .wait_timeout_while(bg, tick, |b| !b.shutdown && !b.flush_wanted)
                .unwrap_or_else(|p| p.into_inner());
            if bg.shutdown {
                return;
            }
            std::mem::take(&mut bg.flush_wanted)
        };
        let old = rlock(&inner.head)
            .since
            .is_some_and(|s| s.elapsed() >= inner.opts.flush_interval);
        if flush_wanted || old {
            let _m = lock(&inner.maint);
            if let Err(e) = inner.flush_locked() {
                tracing::error!(error = %e, "background flush failed");
            } else if let Err(e) = inner.compact_locked(false) {
                tracing::error!(error = %e, "background compaction failed");
            }
        }
        let due = match last_retention {
            None => started.elapsed() >= first,
            Some(t) => t.elapsed() >= inner.opts.retention_interval,
        };
        if due {
            last_retention = Some(Instant::now());
            if let Err(e) = inner.enforce_retention() {
                tracing::error!(error = %e, "retention failed");
            }
        }
    }
}

fn check_name(what: &str, i: usize, s: &str) -> Result<(), StoreError> {
    if s.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "{what} {i}: empty metric name"
        )));
    }
    if s.len() > 1024 {
        return Err(StoreError::InvalidInput(format!(
            "{what} {i}: metric name longer than 1024 bytes"
        )));
    }
    Ok(())
}

fn norm_tags(tags: &[String]) -> std::borrow::Cow<'_, [String]> {
    if tags.windows(2).all(|w| w[0] < w[1]) {
        std::borrow::Cow::Borrowed(tags)
    } else {
        let mut t = tags.to_vec();
        t.sort();
        t.dedup();
        std::borrow::Cow::Owned(t)
    }
}

/// The key file behind [`Store::seal_record`], directly in the store directory.
const RECORDS_KEY_FILE: &str = "records.key";

impl Store {
    /// Opens (or creates) the store in `dir`: loads the master key, the index and segments,
    /// replays the WAL, finishes an interrupted key rotation, and starts the background job.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let data_dir = dir.join("data");
        let wal_dir = dir.join("wal");
        for d in [dir, &data_dir, &wal_dir] {
            // Owner-only: the contents are encrypted, but names and sizes are nobody's business.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(io_err(d))?;
        }
        let lock = dirlock::DirLock::acquire(dir)?;
        let key = opts.master_key.load(dir)?;
        let mut keyring = Keyring::new(key.clone());
        for k in &opts.previous_master_keys {
            keyring.add_old(k.load(dir)?);
        }
        let pending = if matches!(opts.master_key, MasterKeySource::DataDir) {
            warden_crypto::load_pending(dir)?
        } else {
            None
        };
        if let Some(p) = &pending {
            tracing::warn!(
                version = p.version(),
                "finishing an interrupted master key rotation"
            );
            let mut r = Keyring::new(p.clone());
            r.add_old(key);
            keyring = r;
        }

        let records_path = dir.join(RECORDS_KEY_FILE);
        if !records_path.exists() {
            ContainerWriter::create(records_path.clone(), Kind::Records, 0, &keyring)?
                .finish(&[])?;
        }
        let records = Container::open(&records_path, &keyring)?;

        let mut index = Index::default();
        let mut segs = Vec::new();
        let mut max_id = 0u64;
        let mut stale = Vec::new();
        for p in list_dir(&data_dir, "tmp")? {
            stale.push(p);
        }
        for p in &stale {
            let _ = std::fs::remove_file(p);
        }
        let mut index_files = Vec::new();
        let cache = Arc::new(BlockCache::new(BLOCK_CACHE_BYTES));
        for p in list_dir(&data_dir, "seg")? {
            let c = Container::open(&p, &keyring)?;
            max_id = max_id.max(c.id);
            if c.kind == Kind::Index {
                index_files.push(c);
            } else {
                segs.push(Arc::new(Segment::load(c, cache.clone())?));
            }
        }
        index_files.sort_by_key(|c| c.id);
        for c in &index_files {
            for b in 0..c.block_count() {
                let data = c.read_block(b as u32)?;
                let mut r = Reader::new(&data);
                while !r.is_empty() {
                    index.put(decode_def(&mut r)?, true);
                }
            }
        }
        // Finish retention steps cut short by a crash: consumed segments are already folded in.
        let consumed: Vec<u64> = segs.iter().flat_map(|s| s.consumed.clone()).collect();
        if !consumed.is_empty() {
            segs.retain(|s| !consumed.contains(&s.c.id));
        }

        let mut head = Head::default();
        let wal_files = list_dir(&wal_dir, "wal")?;
        let mut wal_files = wal_files;
        for p in wal_files.clone() {
            if wal_id(&p).is_some_and(|id| consumed.contains(&id)) {
                // Flushed to a segment before the crash; only the delete was missing.
                std::fs::remove_file(&p).map_err(io_err(&p))?;
                wal_files.retain(|x| x != &p);
            }
        }
        for p in &wal_files {
            let (_, id) = files::peek_kind(p).unwrap_or((Kind::Wal, 0));
            max_id = max_id.max(id);
            for rec in files::read_wal(p, &keyring)? {
                for e in decode_entries(&rec)? {
                    match e {
                        WalEntry::Def(m) => {
                            let id = m.id;
                            index.put(m, true);
                            index.dirty.push(id);
                        }
                        WalEntry::Points(id, pts) => head.insert_points(id, pts),
                        WalEntry::Sketches(id, sk) => head.insert_sketches(id, sk),
                    }
                }
            }
        }
        index.dirty.sort_unstable();
        index.dirty.dedup();
        let wal_id = max_id + 1;
        let wal = WalWriter::create(wal_dir.join(format!("{wal_id:016x}.wal")), wal_id, &keyring)?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            data_dir,
            wal_dir,
            keyring: RwLock::new(keyring),
            records,
            index: RwLock::new(index),
            head: RwLock::new(head),
            frozen: RwLock::new(None),
            segs: RwLock::new(segs),
            cache,
            commit: Mutex::new(Commit {
                queue: Vec::new(),
                leader: false,
                next_ticket: 0,
                done: 0,
                wal: Some(wal),
                old_wals: wal_files,
                rotating: false,
            }),
            commit_cv: Condvar::new(),
            maint: Mutex::new(()),
            next_file: AtomicU64::new(wal_id + 1),
            poisoned: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            bg: Mutex::new(Bg::default()),
            bg_cv: Condvar::new(),
            opts,
        });
        inner.delete_segment_files(&consumed)?;
        // Resume a rotation: rewrap whatever is not under the current key.
        let ring = rlock(&inner.keyring).clone();
        for p in inner.all_file_paths()? {
            files::rewrap_file(&p, &ring, ring.current())?;
        }
        if pending.is_some() {
            warden_crypto::commit_pending(&inner.dir)?;
            *wlock(&inner.keyring) = Keyring::new(ring.current().clone());
        }
        let bg = if inner.opts.background {
            let i = inner.clone();
            Some(
                std::thread::Builder::new()
                    .name("warden-store".into())
                    .spawn(move || background(i))
                    .map_err(io_err(dir))?,
            )
        } else {
            None
        };
        Ok(Store {
            inner,
            _lock: lock,
            bg,
        })
    }

    /// Appends points; returns once they are durable (see [`FsyncPolicy`]). Points with
    /// non-finite values or older than `retention_raw` are dropped and counted in
    /// [`StoreStats::dropped_points`]; an empty metric name fails the whole batch.
    pub fn append(&self, org: u64, batch: &[SeriesWrite]) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        for (i, w) in batch.iter().enumerate() {
            check_name("series", i, &w.name)?;
        }
        let cutoff = inner.opts.clock.now() - inner.opts.retention_raw.as_secs() as i64;
        let npts: usize = batch.iter().map(|w| w.points.len()).sum();
        let mut payload = Vec::with_capacity(npts * 10 + batch.len() * 8);
        let mut points: Vec<(u64, i64, f64)> = Vec::with_capacity(npts);
        let mut defs = Vec::new();
        let mut dropped = 0u64;
        for w in batch {
            let tags = norm_tags(&w.tags);
            let def = DefIn {
                name: &w.name,
                tags: &tags,
                host: &w.host,
                kind: w.kind,
                interval: w.interval,
                unit: &w.unit,
                distribution: false,
            };
            let id = inner.resolve(org, &def, &mut payload, &mut defs);
            let start = points.len();
            points.extend(
                w.points
                    .iter()
                    .filter(|p| p.value.is_finite() && p.timestamp >= cutoff)
                    .map(|p| (id, p.timestamp, p.value)),
            );
            let pts = &points[start..];
            dropped += (w.points.len() - pts.len()) as u64;
            if pts.is_empty() {
                continue;
            }
            payload.push(E_POINTS);
            put_uvarint(&mut payload, id);
            put_uvarint(&mut payload, pts.len() as u64);
            codec::encode_ts(pts.iter().map(|p| p.1), &mut payload);
            for p in pts {
                payload.extend_from_slice(&p.2.to_le_bytes());
            }
        }
        if dropped > 0 {
            inner.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if payload.is_empty() {
            return Ok(());
        }
        inner.commit(Batch {
            ticket: 0,
            waker: Arc::default(),
            payload,
            points,
            sketches: Vec::new(),
            defs,
        })
    }

    /// Appends distribution sketches (same durability as [`Store::append`]). Sketches with the
    /// same series and timestamp are merged at read time.
    pub fn append_sketches(&self, org: u64, batch: &[SketchWrite]) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        for (i, w) in batch.iter().enumerate() {
            check_name("sketch series", i, &w.name)?;
        }
        let cutoff = inner.opts.clock.now() - inner.opts.retention_raw.as_secs() as i64;
        let mut payload = Vec::new();
        let mut sketches = Vec::new();
        let mut defs = Vec::new();
        let mut dropped = 0u64;
        for w in batch {
            let tags = norm_tags(&w.tags);
            let def = DefIn {
                name: &w.name,
                tags: &tags,
                host: &w.host,
                kind: MetricKind::Gauge,
                interval: 0,
                unit: &None,
                distribution: true,
            };
            let id = inner.resolve(org, &def, &mut payload, &mut defs);
            let sk: Vec<(i64, DDSketch)> =
                w.points.iter().filter(|p| p.0 >= cutoff).cloned().collect();
            dropped += (w.points.len() - sk.len()) as u64;
            if sk.is_empty() {
                continue;
            }
            payload.push(E_SKETCHES);
            put_uvarint(&mut payload, id);
            put_uvarint(&mut payload, sk.len() as u64);
            for (t, s) in &sk {
                put_ivarint(&mut payload, *t);
                codec::encode_sketch(s, &mut payload);
            }
            sketches.push((id, sk));
        }
        if dropped > 0 {
            inner.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if payload.is_empty() {
            return Ok(());
        }
        inner.commit(Batch {
            ticket: 0,
            waker: Arc::default(),
            payload,
            points: Vec::new(),
            sketches,
            defs,
        })
    }

    /// Series of `org` named `metric` that match `filter`, ordered by id.
    pub fn find_series(&self, org: u64, metric: &str, filter: &TagFilter) -> Vec<SeriesMeta> {
        rlock(&self.inner.index)
            .find(org, metric, filter)
            .into_iter()
            .map(|m| (*m).clone())
            .collect()
    }

    /// Metadata of one series, if it belongs to `org`.
    pub fn series(&self, org: u64, id: u64) -> Option<SeriesMeta> {
        rlock(&self.inner.index).get(org, id).map(|m| (**m).clone())
    }

    /// Metric names of `org`, sorted.
    pub fn list_metrics(&self, org: u64) -> Vec<String> {
        rlock(&self.inner.index).metrics(org)
    }

    fn check(&self, org: u64, id: u64) -> Result<Arc<SeriesMeta>, StoreError> {
        rlock(&self.inner.index)
            .get(org, id)
            .cloned()
            .ok_or(StoreError::NotFound { org, id })
    }

    /// Points in `[from, to]` (UNIX seconds, inclusive), ascending. Where only rollups remain
    /// (older than `retention_raw`), one point per minute at the minute start with the value
    /// `sum` for count series and `sum / count` otherwise.
    pub fn read(&self, org: u64, id: u64, from: i64, to: i64) -> Result<Vec<Point>, StoreError> {
        let meta = self.check(org, id)?;
        let mut out: Vec<Point> = self
            .inner
            .stored_rollups(id, minute(from), to)?
            .into_iter()
            .filter(|r| r.ts >= from)
            .map(|r| Point {
                timestamp: r.ts,
                value: if meta.kind == MetricKind::Count {
                    r.sum
                } else {
                    r.avg()
                },
            })
            .collect();
        let raw = self.inner.raw_points(id, from, to)?;
        let raw = raw
            .into_iter()
            .map(|(timestamp, value)| Point { timestamp, value });
        if out.is_empty() {
            // No rollups in range (the usual case): the raw points are already in order.
            return Ok(raw.collect());
        }
        out.extend(raw);
        out.sort_by_key(|p| p.timestamp);
        Ok(out)
    }

    /// 1-minute rollups covering `[minute(from), to]`: stored rollups for data past raw
    /// retention, computed from raw points otherwise. Exact min/max/sum/count.
    pub fn read_rollup(
        &self,
        org: u64,
        id: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<RollupPoint>, StoreError> {
        self.check(org, id)?;
        let from = minute(from);
        let mut v = self.inner.stored_rollups(id, from, to)?;
        v.extend(rollup_of(&self.inner.raw_points(id, from, to)?));
        Ok(merge_rollups(v))
    }

    /// Sketches in `[from, to]`, ascending; sketches sharing a timestamp are merged. Past raw
    /// retention there is one merged sketch per minute.
    pub fn read_sketches(
        &self,
        org: u64,
        id: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, DDSketch)>, StoreError> {
        self.check(org, id)?;
        self.inner
            .sketches(&[Kind::SketchRollup, Kind::SketchRaw], id, from, to, true)
    }

    /// Writes the head to encrypted segments (and new series definitions to an index file),
    /// then deletes the WAL files it covered.
    pub fn flush(&self) -> Result<(), StoreError> {
        let _m = lock(&self.inner.maint);
        self.inner.flush_locked()
    }

    /// Merges raw segments per 2-hour window now, including windows still being written (the
    /// background job merges complete windows by itself). Returns how many segments were merged.
    pub fn compact(&self) -> Result<u64, StoreError> {
        let _m = lock(&self.inner.maint);
        self.inner.compact_locked(true)
    }

    /// Flushes, then folds raw data older than `retention_raw` into 1-minute rollups (written
    /// before the raw data is deleted) and deletes rollups older than `retention_rollup`.
    /// The background job runs this every `retention_interval`.
    pub fn enforce_retention(&self) -> Result<RetentionReport, StoreError> {
        self.inner.enforce_retention()
    }

    /// Rotates the master key: every file's data key is rewrapped under the new key (two header
    /// slots per file, no data rewrite); afterwards the old key is no longer needed.
    ///
    /// `new = None` generates version `current + 1`. With [`MasterKeySource::DataDir`] the new
    /// key is parked in `keys/master.key.next` first and replaces `keys/master.key` at the end,
    /// so a crash mid-rotation is finished by the next `open`. With an external key source the
    /// caller must point the source at the new key before the next open (and may list the old
    /// one in `previous_master_keys` if the rotation was interrupted). Returns the new version.
    pub fn rotate_master(&self, new: Option<MasterKeySource>) -> Result<u32, StoreError> {
        let inner = &self.inner;
        let _m = lock(&inner.maint);
        let old = rlock(&inner.keyring).clone();
        let new_key = match new {
            None => MasterKey::generate(old.current().version() + 1)?,
            Some(src) => src.load(&inner.dir)?,
        };
        let data_dir_key = matches!(inner.opts.master_key, MasterKeySource::DataDir);
        if data_dir_key {
            warden_crypto::write_pending(&inner.dir, &new_key)?;
        }
        let mut both = Keyring::new(new_key.clone());
        both.add_old(old.current().clone());
        *wlock(&inner.keyring) = both.clone();
        let mut n = 0;
        // Files are only created by flush/retention/compaction, which `maint` excludes, so this
        // list is complete; new files already use the new key.
        let paths = inner.all_file_paths()?;
        for p in paths {
            if files::rewrap_file(&p, &both, &new_key)? {
                n += 1;
            }
        }
        if data_dir_key {
            warden_crypto::commit_pending(&inner.dir)?;
        }
        *wlock(&inner.keyring) = Keyring::new(new_key.clone());
        tracing::info!(
            version = new_key.version(),
            fingerprint = %new_key.fingerprint(),
            files = n,
            "master key rotated"
        );
        Ok(new_key.version())
    }

    /// Seals a small record that lives outside the time-series files (security events,
    /// signals, notification channel secrets kept in SQLite by the server) under the store's
    /// records data key, so it is protected and rotated with everything else. `aad` binds the
    /// record to its place (e.g. `"signal|<org>|<id>"`): a sealed value copied elsewhere does
    /// not open.
    pub fn seal_record(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let path = &self.inner.records.path;
        self.inner
            .records
            .data_key()
            .seal(aad, plaintext)
            .map_err(|source| StoreError::Key {
                path: path.clone(),
                source,
            })
    }

    /// Opens a value sealed by [`Store::seal_record`] with the same `aad`.
    pub fn open_record(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let path = &self.inner.records.path;
        self.inner
            .records
            .data_key()
            .open(aad, sealed, "sealed record")
            .map_err(|source| StoreError::Key {
                path: path.clone(),
                source,
            })
    }

    /// Counters and sizes.
    pub fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        // Same lock order as everywhere: frozen → segs → head.
        let frozen = rlock(&inner.frozen);
        let segs = rlock(&inner.segs);
        let head_points = rlock(&inner.head).n as u64 + frozen.as_ref().map_or(0, |f| f.n as u64);
        StoreStats {
            series: rlock(&inner.index).series.len() as u64,
            points: head_points
                + segs
                    .iter()
                    .filter(|s| matches!(s.c.kind, Kind::Raw | Kind::SketchRaw))
                    .map(|s| s.points)
                    .sum::<u64>(),
            head_points,
            segments: segs.len() as u64,
            bytes_on_disk: dir_size(&inner.dir),
            dropped_points: inner.dropped.load(Ordering::Relaxed),
            flushes: inner.flushes.load(Ordering::Relaxed),
            commits: inner.commits.load(Ordering::Relaxed),
        }
    }

    /// Flushes and stops the background job (dropping the store without `close` is safe too:
    /// the WAL holds everything).
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop_bg();
        self.flush()
    }

    fn stop_bg(&mut self) {
        if let Some(h) = self.bg.take() {
            lock(&self.inner.bg).shutdown = true;
            self.inner.bg_cv.notify_all();
            let _ = h.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_bg();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_last_keeps_the_newest_write_of_a_timestamp() {
        let mut v = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e'), (3, 'f')];
        dedup_last(&mut v);
        assert_eq!(v, vec![(1, 'e'), (2, 'd'), (3, 'f')]);
        let mut sorted = vec![(1, 'x'), (2, 'y')];
        dedup_last(&mut sorted);
        assert_eq!(sorted, vec![(1, 'x'), (2, 'y')]);
    }

    #[test]
    fn block_cache_stays_within_budget_and_evicts_the_least_recently_used() {
        let c = BlockCache::new(4000);
        let block = |b: u8| Arc::new(vec![b; 1000]);
        for n in 0..4 {
            c.put((1, n), block(n as u8));
        }
        // Touch block 0 so block 1 is now the oldest.
        assert_eq!(c.get((1, 0)).map(|d| d[0]), Some(0));
        c.put((2, 0), block(9));
        assert!(c.get((1, 1)).is_none(), "least recently used evicted");
        assert!(c.get((1, 0)).is_some());
        assert!(c.get((2, 0)).is_some());
        assert!(lock(&c.inner).bytes <= 4000);
        // Too big to cache at all (over a quarter of the budget).
        c.put((3, 0), Arc::new(vec![0; 1500]));
        assert!(c.get((3, 0)).is_none());
        // Same key again replaces, not double-counts.
        c.put((2, 0), block(7));
        assert_eq!(c.get((2, 0)).map(|d| d[0]), Some(7));
        let inner = lock(&c.inner);
        assert_eq!(
            inner.bytes,
            inner.map.values().map(|v| v.0.len()).sum::<usize>()
        );
        assert_eq!(inner.map.len(), inner.order.len());
    }
}
