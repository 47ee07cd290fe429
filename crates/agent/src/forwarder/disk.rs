//! The on-disk retry queue: payloads that could not be delivered and did not fit in memory.
//!
//! # Why
//!
//! During an intake outage the memory queue fills (`forwarder_retry_queue_payloads_max_size`).
//! Rather than evicting, the forwarder spills its oldest payloads here, so that nothing the
//! agent accepted is lost while the outage fits within `forwarder_storage_max_size_in_bytes`,
//! including across an agent restart: graceful shutdown persists the memory queue too.
//!
//! # Layout
//!
//! One directory (mode 0700) of immutable *segment* files `<id:020>.wdq` (mode 0600). `id`
//! grows with every segment written; a segment is written once (the payloads of one spill),
//! read once, then deleted. Nothing is ever appended to an existing file.
//!
//! ```text
//! segment := header record*
//! header  := magic "WDFQ" | version u16 = 1 | reserved u16 = 0 | record_count u32
//!            | min_seq u64 | max_seq u64 | crc32(previous 28 bytes) u32        (32 bytes)
//! record  := len u32 | crc32(body) u32 | body[len]
//! body    := seq u64 | created_ms i64 | endpoint u8 | encoding u8 | reserved u16 | payload
//! ```
//!
//! All integers are little-endian. `payload` is the compressed request body exactly as it
//! would be sent; headers are rebuilt at send time, so **the API key is never written to
//! disk**.
//!
//! # Invariants
//!
//! * A segment becomes visible under its final name only after its bytes are written and
//!   `fsync`ed (`<id>.wdq.tmp` → `rename` → `fsync(dir)`). A crash mid-write leaves only a
//!   `.tmp` file, which is deleted at the next open. So a `.wdq` file is complete unless the
//!   storage itself damaged it.
//! * Damage is contained per record: a record whose CRC does not match is skipped and counted;
//!   a record whose length runs past the end of the file (truncated tail) ends the read and the
//!   rest is counted as lost. A segment whose header is unreadable is renamed `*.corrupt`,
//!   logged, and no longer counted against the size bound. A segment of an unknown *future*
//!   version is left untouched (a downgrade must not destroy data) and ignored.
//! * Size bound: the sum of segment file sizes never exceeds the configured maximum after a
//!   write. Room is made by deleting whole segments, oldest data (lowest `min_seq`) first; if
//!   a single spill is larger than the whole bound, its oldest records are dropped. Every
//!   payload dropped this way is reported to the caller (counted as evicted).
//! * Read order is newest segment first (highest `max_seq`), mirroring the memory queue's
//!   "newest first". A segment is deleted right after it is read; its payloads then live in
//!   memory (and are persisted again at graceful shutdown). A crash between reading and
//!   delivering loses at most that segment; a crash before the delete re-sends it
//!   (at-least-once, duplicates possible).
//! * Sequence numbers (`seq`) are preserved, so payloads reloaded after a restart still sort
//!   older than anything produced by the new process (the forwarder starts numbering above
//!   the largest `max_seq` found).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::serialize::{Endpoint, Payload, compression_code, compression_from_code};

const MAGIC: &[u8; 4] = b"WDFQ";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 32;
const RECORD_HEAD: usize = 8;
const BODY_FIXED: usize = 20;
/// Sanity bound of one record; anything larger is treated as damage.
const MAX_RECORD: usize = 64 * 1024 * 1024;
const EXT: &str = "wdq";

/// Errors of the disk queue.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk queue {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Clone, Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    bytes: u64,
    records: u32,
    min_seq: u64,
    max_seq: u64,
}

/// What reading a segment back produced.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) payloads: Vec<Payload>,
    /// Records skipped because their CRC or content was invalid.
    pub(crate) corrupt: u64,
    /// Records announced by the header but missing (truncated file).
    pub(crate) missing: u64,
}

/// The on-disk queue (see module docs).
#[derive(Debug)]
pub(crate) struct DiskQueue {
    dir: PathBuf,
    max_bytes: u64,
    segments: Vec<Segment>,
    bytes: u64,
    next_id: u64,
}

impl DiskQueue {
    /// Opens (creating if needed) the queue in `dir`, indexing existing segments by their
    /// headers only.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Self, DiskError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let mut segments = Vec::new();
        let mut next_id = 0u64;
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".wdq.tmp") {
                tracing::warn!(file = %path.display(), "removing incomplete disk-queue segment left by a crash");
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(id) = name
                .strip_suffix(".wdq")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            next_id = next_id.max(id + 1);
            match read_header(&path) {
                Ok(Header::Ok {
                    records,
                    min_seq,
                    max_seq,
                    len,
                }) => segments.push(Segment {
                    id,
                    path,
                    bytes: len,
                    records,
                    min_seq,
                    max_seq,
                }),
                Ok(Header::FutureVersion(v)) => {
                    tracing::warn!(file = %path.display(), version = v, "ignoring disk-queue segment written by a newer agent");
                }
                Ok(Header::Corrupt(why)) => {
                    let bad = path.with_extension("corrupt");
                    tracing::error!(file = %path.display(), reason = why, renamed = %bad.display(), "disk-queue segment header is damaged; set aside");
                    let _ = fs::rename(&path, &bad);
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        segments.sort_by_key(|s| s.id);
        let bytes = segments.iter().map(|s| s.bytes).sum();
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            segments,
            bytes,
            next_id,
        })
    }

    /// Bytes of all segments on disk.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Payload records announced by segment headers.
    pub(crate) fn records(&self) -> u64 {
        self.segments.iter().map(|s| u64::from(s.records)).sum()
    }

    /// Largest sequence number stored, if any.
    pub(crate) fn max_seq(&self) -> Option<u64> {
        self.segments.iter().map(|s| s.max_seq).max()
    }

    /// Writes `payloads` (any order) as one new segment, making room by deleting the oldest
    /// segments. Returns how many payloads were dropped to respect the bound.
    pub(crate) fn push(&mut self, mut payloads: Vec<Payload>) -> Result<u64, DiskError> {
        if payloads.is_empty() {
            return Ok(0);
        }
        payloads.sort_by_key(|p| p.seq);
        let mut dropped = 0u64;
        // A spill bigger than the whole bound: keep its newest records only.
        let mut size = segment_size(&payloads);
        while size > self.max_bytes && !payloads.is_empty() {
            let p = payloads.remove(0);
            size -= (RECORD_HEAD + BODY_FIXED) as u64 + p.size();
            dropped += 1;
        }
        if payloads.is_empty() {
            return Ok(dropped);
        }
        while self.bytes + size > self.max_bytes {
            let Some(oldest) = self
                .segments
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.min_seq)
                .map(|(i, _)| i)
            else {
                break;
            };
            let seg = self.segments.remove(oldest);
            self.bytes -= seg.bytes;
            dropped += u64::from(seg.records);
            tracing::warn!(file = %seg.path.display(), records = seg.records, "disk queue full; deleting its oldest segment");
            if let Err(e) = fs::remove_file(&seg.path) {
                tracing::error!(file = %seg.path.display(), error = %e, "cannot delete an evicted disk-queue segment");
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let path = self.dir.join(format!("{id:020}.{EXT}"));
        let tmp = self.dir.join(format!("{id:020}.{EXT}.tmp"));
        let data = encode_segment(&payloads);
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
        self.segments.push(Segment {
            id,
            path,
            bytes: data.len() as u64,
            records: u32::try_from(payloads.len()).unwrap_or(u32::MAX),
            min_seq: payloads.first().map(|p| p.seq).unwrap_or(0),
            max_seq: payloads.last().map(|p| p.seq).unwrap_or(0),
        });
        self.bytes += data.len() as u64;
        Ok(dropped)
    }

    /// Reads, validates and deletes the newest segment.
    pub(crate) fn pop_newest(&mut self) -> Result<Option<Loaded>, DiskError> {
        let Some(i) = self
            .segments
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.max_seq)
            .map(|(i, _)| i)
        else {
            return Ok(None);
        };
        let seg = self.segments.remove(i);
        self.bytes -= seg.bytes;
        let mut data = Vec::with_capacity(usize::try_from(seg.bytes).unwrap_or(0));
        File::open(&seg.path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io_err(&seg.path))?;
        let loaded = decode_segment(&data);
        if loaded.corrupt > 0 || loaded.missing > 0 {
            tracing::error!(
                file = %seg.path.display(),
                corrupt = loaded.corrupt,
                missing = loaded.missing,
                recovered = loaded.payloads.len(),
                "disk-queue segment was damaged; unreadable records skipped"
            );
        }
        if let Err(e) = fs::remove_file(&seg.path) {
            // The payloads are handed over anyway; the file may be sent again after a
            // restart (a duplicate, never a loss).
            tracing::error!(file = %seg.path.display(), error = %e, "cannot delete a read disk-queue segment");
        }
        Ok(Some(loaded))
    }
}

fn segment_size(payloads: &[Payload]) -> u64 {
    HEADER_LEN as u64
        + payloads
            .iter()
            .map(|p| (RECORD_HEAD + BODY_FIXED) as u64 + p.size())
            .sum::<u64>()
}

fn encode_segment(payloads: &[Payload]) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(segment_size(payloads)).unwrap_or(0));
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(
        &u32::try_from(payloads.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    header.extend_from_slice(&payloads.first().map(|p| p.seq).unwrap_or(0).to_le_bytes());
    header.extend_from_slice(&payloads.last().map(|p| p.seq).unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    for p in payloads {
        let mut body = Vec::with_capacity(BODY_FIXED + p.body.len());
        body.extend_from_slice(&p.seq.to_le_bytes());
        body.extend_from_slice(&p.created_ms.to_le_bytes());
        body.push(p.endpoint.code());
        body.push(compression_code(p.encoding));
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&p.body);
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

enum Header {
    Ok {
        records: u32,
        min_seq: u64,
        max_seq: u64,
        len: u64,
    },
    FutureVersion(u16),
    Corrupt(&'static str),
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn parse_header(h: &[u8]) -> Header {
    if h.len() < HEADER_LEN {
        return Header::Corrupt("shorter than a header");
    }
    if &h[0..4] != MAGIC {
        return Header::Corrupt("bad magic");
    }
    if crc32fast::hash(&h[0..28]) != le_u32(h, 28) {
        return Header::Corrupt("header checksum mismatch");
    }
    let v = le_u16(h, 4);
    if v != VERSION {
        return Header::FutureVersion(v);
    }
    Header::Ok {
        records: le_u32(h, 8),
        min_seq: le_u64(h, 12),
        max_seq: le_u64(h, 20),
        len: 0,
    }
}

fn read_header(path: &Path) -> io::Result<Header> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut h = Vec::with_capacity(HEADER_LEN);
    Read::by_ref(&mut f)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut h)?;
    Ok(match parse_header(&h) {
        Header::Ok {
            records,
            min_seq,
            max_seq,
            ..
        } => Header::Ok {
            records,
            min_seq,
            max_seq,
            len,
        },
        other => other,
    })
}

fn decode_segment(data: &[u8]) -> Loaded {
    let mut out = Loaded::default();
    let announced = match parse_header(data) {
        Header::Ok { records, .. } => u64::from(records),
        // The header was valid when indexed; damage since then loses the whole segment's
        // framing guarantees, but records are self-checking, so still try to salvage them.
        _ => 0,
    };
    let mut at = HEADER_LEN.min(data.len());
    let mut seen = 0u64;
    while at < data.len() {
        if data.len() - at < RECORD_HEAD {
            break;
        }
        let len = le_u32(data, at) as usize;
        let crc = le_u32(data, at + 4);
        if len > MAX_RECORD || data.len() - at - RECORD_HEAD < len {
            // Truncated tail (or a damaged length): nothing after this is trustworthy.
            break;
        }
        let body = &data[at + RECORD_HEAD..at + RECORD_HEAD + len];
        at += RECORD_HEAD + len;
        seen += 1;
        if crc32fast::hash(body) != crc || len < BODY_FIXED {
            out.corrupt += 1;
            continue;
        }
        let (Some(endpoint), Some(encoding)) = (
            Endpoint::from_code(body[16]),
            compression_from_code(body[17]),
        ) else {
            out.corrupt += 1;
            continue;
        };
        out.payloads.push(Payload {
            seq: le_u64(body, 0),
            created_ms: i64::from_le_bytes(le_u64(body, 8).to_le_bytes()),
            endpoint,
            encoding,
            body: Bytes::copy_from_slice(&body[BODY_FIXED..]),
        });
    }
    out.missing = announced.saturating_sub(seen);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Compression;

    fn payload(seq: u64, size: usize) -> Payload {
        Payload {
            seq,
            created_ms: 1_700_000_000_000 + seq as i64,
            endpoint: if seq % 2 == 0 {
                Endpoint::Series
            } else {
                Endpoint::CheckRun
            },
            encoding: Compression::Zstd,
            body: Bytes::from(vec![(seq % 251) as u8; size]),
        }
    }

    fn only_file(dir: &Path) -> PathBuf {
        let files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    #[test]
    fn round_trip_survives_reopen_and_keeps_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(q.push(vec![payload(3, 10), payload(1, 20)]).unwrap(), 0);
        assert_eq!(q.push(vec![payload(7, 5)]).unwrap(), 0);
        let bytes = q.bytes();
        drop(q);
        let mut q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(q.bytes(), bytes);
        assert_eq!(q.records(), 3);
        assert_eq!(q.max_seq(), Some(7));
        let a = q.pop_newest().unwrap().unwrap();
        assert_eq!(a.payloads, vec![payload(7, 5)]);
        let b = q.pop_newest().unwrap().unwrap();
        assert_eq!(b.payloads, vec![payload(1, 20), payload(3, 10)]);
        assert!(q.pop_newest().unwrap().is_none());
        assert_eq!(q.bytes(), 0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn crc_corruption_is_detected_and_only_that_record_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        q.push(vec![payload(1, 100), payload(2, 100), payload(3, 100)])
            .unwrap();
        drop(q);
        let f = only_file(dir.path());
        let mut data = fs::read(&f).unwrap();
        // Flip one payload byte of the second record.
        let second_body = HEADER_LEN + (RECORD_HEAD + BODY_FIXED + 100) + RECORD_HEAD + BODY_FIXED;
        data[second_body + 50] ^= 0xff;
        fs::write(&f, &data).unwrap();
        let mut q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        let l = q.pop_newest().unwrap().unwrap();
        assert_eq!(l.corrupt, 1);
        assert_eq!(l.missing, 0);
        assert_eq!(l.payloads, vec![payload(1, 100), payload(3, 100)]);
    }

    #[test]
    fn truncated_tail_is_ignored_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        q.push(vec![payload(1, 100), payload(2, 100), payload(3, 100)])
            .unwrap();
        drop(q);
        let f = only_file(dir.path());
        let data = fs::read(&f).unwrap();
        fs::write(&f, &data[..data.len() - 30]).unwrap();
        let mut q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        let l = q.pop_newest().unwrap().unwrap();
        assert_eq!(l.corrupt, 0);
        assert_eq!(l.missing, 1);
        assert_eq!(l.payloads, vec![payload(1, 100), payload(2, 100)]);
    }

    #[test]
    fn damaged_header_is_set_aside_and_leftover_tmp_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        q.push(vec![payload(1, 10)]).unwrap();
        drop(q);
        let f = only_file(dir.path());
        let mut data = fs::read(&f).unwrap();
        data[9] ^= 1; // record count byte: header CRC no longer matches
        fs::write(&f, &data).unwrap();
        fs::write(dir.path().join("00000000000000000009.wdq.tmp"), b"partial").unwrap();
        let q = DiskQueue::open(dir.path(), 1 << 20).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        let left = only_file(dir.path());
        assert_eq!(left.extension().unwrap(), "corrupt");
    }

    #[test]
    fn size_bound_drops_oldest_segments_first_and_reports_them() {
        let dir = tempfile::tempdir().unwrap();
        let one = segment_size(&[payload(0, 1000)]);
        // Room for exactly three single-record segments.
        let mut q = DiskQueue::open(dir.path(), one * 3).unwrap();
        for seq in 1..=3 {
            assert_eq!(q.push(vec![payload(seq, 1000)]).unwrap(), 0);
        }
        assert_eq!(q.bytes(), one * 3);
        assert_eq!(q.push(vec![payload(4, 1000)]).unwrap(), 1);
        assert_eq!(q.push(vec![payload(5, 1000)]).unwrap(), 1);
        assert!(q.bytes() <= one * 3);
        let mut seqs = Vec::new();
        while let Some(l) = q.pop_newest().unwrap() {
            seqs.extend(l.payloads.iter().map(|p| p.seq));
        }
        assert_eq!(seqs, [5, 4, 3]);
        // A spill larger than the whole bound keeps its newest records.
        let mut q = DiskQueue::open(dir.path(), one + 500).unwrap();
        let dropped = q
            .push(vec![
                payload(10, 1000),
                payload(11, 1000),
                payload(12, 1000),
            ])
            .unwrap();
        assert_eq!(dropped, 2);
        let l = q.pop_newest().unwrap().unwrap();
        assert_eq!(l.payloads, vec![payload(12, 1000)]);
    }

    proptest::proptest! {
        /// Arbitrary damage never panics the reader and never yields a payload that was not
        /// written: every record is either recovered intact or counted.
        #[test]
        fn damaged_segments_never_yield_foreign_payloads(
            sizes in proptest::collection::vec(0usize..300, 1..12),
            flips in proptest::collection::vec((0usize..10_000, 1u8..=255), 0..6),
            cut in proptest::option::of(0usize..10_000),
        ) {
            let written: Vec<Payload> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| payload(i as u64, *n))
                .collect();
            let mut data = encode_segment(&written);
            for (at, x) in flips {
                let len = data.len();
                data[at % len] ^= x;
            }
            if let Some(c) = cut {
                data.truncate(c % (data.len() + 1));
            }
            let l = decode_segment(&data);
            for p in &l.payloads {
                proptest::prop_assert!(written.contains(p), "foreign payload {p:?}");
            }
            proptest::prop_assert!(l.payloads.len() <= written.len());
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let l = decode_segment(&data);
            proptest::prop_assert!(l.payloads.len() <= data.len() / (RECORD_HEAD + BODY_FIXED));
        }
    }
}
