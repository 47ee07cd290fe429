//! On-disk containers: every file the store writes (WAL, series index, segments) starts with the
//! same 192-byte header carrying its own wrapped data key, so the master key can be rotated by
//! rewriting two small header slots per file and nothing else.
//!
//! Header (all integers little endian):
//!
//! ```text
//! 0..8     magic "WRDNSTR1"
//! 8        kind (1 wal, 2 index, 3 raw, 4 rollup, 5 sketch raw, 6 sketch rollup)
//! 9..16    zero
//! 16..24   file id (u64, unique per store)
//! 24..104  key slot A: gen u32 | wrapped DEK (72 bytes, see warden-crypto) | crc32 u32
//! 104..184 key slot B: same
//! 184..192 zero
//! ```
//!
//! The valid slot with the highest generation is the live one; a rewrap writes the *other* slot
//! with generation + 1 and fsyncs, so a crash mid-rewrap leaves the old slot usable.
//!
//! Block containers (index, segments) follow the header with sealed blocks
//! (`zstd(plaintext)` sealed under AAD `warden|<kind>|<id>|blk|<n>`), then a sealed footer
//! (AAD `warden|<kind>|<id>|footer`) holding the block table and the caller's footer bytes, then
//! a 24-byte trailer: `footer offset u64 | footer len u32 | crc32 u32 | "WRDNEND1"`. Files are
//! written as `*.tmp`, fsynced and renamed, so a segment either exists whole or not at all.
//!
//! The WAL follows the header with records `len u32 | crc32(sealed) u32 | sealed`, the sealed
//! payload under AAD `warden|wal|<id>|<seq>` (seq = record number), so records can be neither
//! reordered nor moved between files.

use crate::StoreError;
use crate::codec::{Reader, corrupt, put_uvarint};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use warden_crypto::{DataKey, Keyring, MasterKey, WRAPPED_LEN, WrappedKey};

pub(crate) const HEADER_LEN: u64 = 192;
const MAGIC: &[u8; 8] = b"WRDNSTR1";
const END_MAGIC: &[u8; 8] = b"WRDNEND1";
const SLOT_LEN: usize = 4 + WRAPPED_LEN + 4;
const SLOT_A: usize = 24;
const SLOT_B: usize = SLOT_A + SLOT_LEN;
const TRAILER_LEN: u64 = 24;
/// zstd level for blocks: 3 is the library default, a good ratio at ~300 MB/s.
const ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Wal = 1,
    Index = 2,
    Raw = 3,
    Rollup = 4,
    SketchRaw = 5,
    SketchRollup = 6,
    /// Holds only the data key for small sealed records kept outside the store (no blocks).
    Records = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Wal,
            2 => Self::Index,
            3 => Self::Raw,
            4 => Self::Rollup,
            5 => Self::SketchRaw,
            6 => Self::SketchRollup,
            7 => Self::Records,
            _ => return None,
        })
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Wal => "wal",
            Self::Index => "idx",
            Self::Raw => "raw",
            Self::Rollup => "rollup",
            Self::SketchRaw => "sketch",
            Self::SketchRollup => "sketch-rollup",
            Self::Records => "records",
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn dek_context(kind: Kind, id: u64) -> String {
    format!("{}:{id}", kind.name())
}

fn slot_bytes(gen_: u32, w: &WrappedKey) -> [u8; SLOT_LEN] {
    let mut s = [0u8; SLOT_LEN];
    s[..4].copy_from_slice(&gen_.to_le_bytes());
    s[4..4 + WRAPPED_LEN].copy_from_slice(&w.to_bytes());
    let crc = crc32fast::hash(&s[..4 + WRAPPED_LEN]);
    s[4 + WRAPPED_LEN..].copy_from_slice(&crc.to_le_bytes());
    s
}

fn header(kind: Kind, id: u64, w: &WrappedKey) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8] = kind as u8;
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h[SLOT_A..SLOT_A + SLOT_LEN].copy_from_slice(&slot_bytes(1, w));
    h
}

/// Parsed header: kind, id and the valid key slots (generation, offset, wrapped key),
/// highest generation first.
struct Header {
    kind: Kind,
    id: u64,
    slots: Vec<(u32, usize, WrappedKey)>,
}

fn read_header(file: &File, path: &Path) -> Result<Header, StoreError> {
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0).map_err(io_err(path))?;
    if &h[..8] != MAGIC {
        return Err(StoreError::Corrupt(format!(
            "{}: not a Warden store file",
            path.display()
        )));
    }
    let kind = Kind::from_u8(h[8])
        .ok_or_else(|| StoreError::Corrupt(format!("{}: unknown kind", path.display())))?;
    let mut idb = [0u8; 8];
    idb.copy_from_slice(&h[16..24]);
    let mut slots = Vec::new();
    for off in [SLOT_A, SLOT_B] {
        let s = &h[off..off + SLOT_LEN];
        let crc = u32::from_le_bytes([
            s[4 + WRAPPED_LEN],
            s[5 + WRAPPED_LEN],
            s[6 + WRAPPED_LEN],
            s[7 + WRAPPED_LEN],
        ]);
        let gen_ = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        if gen_ == 0 || crc32fast::hash(&s[..4 + WRAPPED_LEN]) != crc {
            continue;
        }
        if let Ok(w) = WrappedKey::from_bytes(&s[4..4 + WRAPPED_LEN]) {
            slots.push((gen_, off, w));
        }
    }
    slots.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(Header {
        kind,
        id: u64::from_le_bytes(idb),
        slots,
    })
}

/// Unwraps the file's DEK with the live slot; returns the key and whether that slot is wrapped
/// by the keyring's current master key.
fn unwrap_header(
    h: &Header,
    keyring: &Keyring,
    path: &Path,
) -> Result<(DataKey, bool), StoreError> {
    let ctx = dek_context(h.kind, h.id);
    let mut last_err = None;
    for (_, _, w) in &h.slots {
        match keyring.unwrap(w, &ctx) {
            Ok(k) => return Ok((k, keyring.is_current(w))),
            Err(e) => last_err = Some(e),
        }
    }
    Err(match last_err {
        Some(e) => StoreError::Key {
            path: path.to_path_buf(),
            source: e,
        },
        None => StoreError::Corrupt(format!("{}: no valid key slot", path.display())),
    })
}

/// Re-wraps the DEK of one file under `to` (crash-safe: writes the inactive slot, fsyncs).
/// Returns false when the file was already wrapped by `to`.
pub(crate) fn rewrap_file(path: &Path, from: &Keyring, to: &MasterKey) -> Result<bool, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let h = read_header(&file, path)?;
    let (dek, _) = unwrap_header(&h, from, path)?;
    if let Some((_, _, w)) = h.slots.first()
        && w.kek_version() == to.version()
        && Keyring::new(to.clone()).is_current(w)
    {
        return Ok(false);
    }
    let ctx = dek_context(h.kind, h.id);
    let w = to.wrap(&dek, &ctx).map_err(|e| StoreError::Key {
        path: path.to_path_buf(),
        source: e,
    })?;
    let (live_gen, live_off) = h.slots.first().map(|s| (s.0, s.1)).unwrap_or((0, SLOT_B));
    let target = if live_off == SLOT_A { SLOT_B } else { SLOT_A };
    let next_gen = live_gen
        .checked_add(1)
        .ok_or_else(|| corrupt("key slot generation exhausted"))?;
    file.write_all_at(&slot_bytes(next_gen, &w), target as u64)
        .map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))?;
    Ok(true)
}

fn seal_err(path: &Path) -> impl FnOnce(warden_crypto::CryptoError) -> StoreError + '_ {
    move |source| StoreError::Key {
        path: path.to_path_buf(),
        source,
    }
}

// ------------------------------------------------------------------ block containers

/// Writes an immutable block container (`*.tmp`, renamed by [`ContainerWriter::finish`]).
pub(crate) struct ContainerWriter {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    kind: Kind,
    id: u64,
    dek: DataKey,
    offset: u64,
    blocks: Vec<(u64, u32)>,
    sealed: Vec<u8>,
}

impl ContainerWriter {
    pub(crate) fn create(
        path: PathBuf,
        kind: Kind,
        id: u64,
        keyring: &Keyring,
    ) -> Result<Self, StoreError> {
        let tmp = path.with_extension("tmp");
        let dek = DataKey::generate().map_err(seal_err(&path))?;
        let w = keyring
            .wrap(&dek, &dek_context(kind, id))
            .map_err(seal_err(&path))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(&header(kind, id, &w))
            .map_err(io_err(&tmp))?;
        Ok(Self {
            file,
            tmp,
            path,
            kind,
            id,
            dek,
            offset: HEADER_LEN,
            blocks: Vec::new(),
            sealed: Vec::new(),
        })
    }

    fn write_sealed(&mut self, aad: &str, plain: &[u8]) -> Result<(u64, u32), StoreError> {
        let z = zstd::bulk::compress(plain, ZSTD_LEVEL).map_err(io_err(&self.tmp))?;
        self.sealed.clear();
        self.dek
            .seal_into(aad.as_bytes(), &z, &mut self.sealed)
            .map_err(seal_err(&self.path))?;
        self.file
            .write_all(&self.sealed)
            .map_err(io_err(&self.tmp))?;
        let at = self.offset;
        let len =
            u32::try_from(self.sealed.len()).map_err(|_| corrupt("block larger than 4 GiB"))?;
        self.offset += u64::from(len);
        Ok((at, len))
    }

    /// Appends one block; returns its number.
    pub(crate) fn write_block(&mut self, plain: &[u8]) -> Result<u32, StoreError> {
        let n = self.blocks.len() as u32;
        let aad = format!("warden|{}|{}|blk|{n}", self.kind.name(), self.id);
        let r = self.write_sealed(&aad, plain)?;
        self.blocks.push(r);
        Ok(n)
    }

    /// Writes footer + trailer, fsyncs, renames into place and fsyncs the directory.
    pub(crate) fn finish(mut self, footer: &[u8]) -> Result<u64, StoreError> {
        let mut f = Vec::with_capacity(footer.len() + self.blocks.len() * 8 + 8);
        put_uvarint(&mut f, self.blocks.len() as u64);
        for &(off, len) in &self.blocks {
            put_uvarint(&mut f, off);
            put_uvarint(&mut f, u64::from(len));
        }
        f.extend_from_slice(footer);
        let aad = format!("warden|{}|{}|footer", self.kind.name(), self.id);
        let (off, len) = self.write_sealed(&aad, &f)?;
        let mut t = [0u8; TRAILER_LEN as usize];
        t[..8].copy_from_slice(&off.to_le_bytes());
        t[8..12].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&t[..12]);
        t[12..16].copy_from_slice(&crc.to_le_bytes());
        t[16..].copy_from_slice(END_MAGIC);
        self.file.write_all(&t).map_err(io_err(&self.tmp))?;
        self.file.sync_all().map_err(io_err(&self.tmp))?;
        fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(self.offset + TRAILER_LEN)
    }
}

/// An open, verified block container.
pub(crate) struct Container {
    file: File,
    pub(crate) path: PathBuf,
    pub(crate) kind: Kind,
    pub(crate) id: u64,
    dek: DataKey,
    blocks: Vec<(u64, u32)>,
    /// The caller's footer bytes (after the block table).
    pub(crate) footer: Vec<u8>,
}

impl Container {
    pub(crate) fn open(path: &Path, keyring: &Keyring) -> Result<Self, StoreError> {
        let file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        let bad = |what: &str| StoreError::Corrupt(format!("{}: {what}", path.display()));
        if size < HEADER_LEN + TRAILER_LEN {
            return Err(bad("too short"));
        }
        let h = read_header(&file, path)?;
        let (dek, _) = unwrap_header(&h, keyring, path)?;
        let mut t = [0u8; TRAILER_LEN as usize];
        file.read_exact_at(&mut t, size - TRAILER_LEN)
            .map_err(io_err(path))?;
        if &t[16..] != END_MAGIC
            || crc32fast::hash(&t[..12]) != u32::from_le_bytes([t[12], t[13], t[14], t[15]])
        {
            return Err(bad("bad trailer"));
        }
        let mut ob = [0u8; 8];
        ob.copy_from_slice(&t[..8]);
        let off = u64::from_le_bytes(ob);
        let len = u32::from_le_bytes([t[8], t[9], t[10], t[11]]);
        if off < HEADER_LEN || off + u64::from(len) + TRAILER_LEN != size {
            return Err(bad("bad footer position"));
        }
        let mut c = Self {
            file,
            path: path.to_path_buf(),
            kind: h.kind,
            id: h.id,
            dek,
            blocks: Vec::new(),
            footer: Vec::new(),
        };
        let aad = format!("warden|{}|{}|footer", h.kind.name(), h.id);
        let f = c.read_sealed(off, len, &aad)?;
        let mut r = Reader::new(&f);
        let n = r.len()?;
        for _ in 0..n {
            let o = r.uvarint()?;
            let l = u32::try_from(r.uvarint()?).map_err(|_| bad("block length"))?;
            if o + u64::from(l) > off {
                return Err(bad("block beyond footer"));
            }
            c.blocks.push((o, l));
        }
        c.footer = f[r.position()..].to_vec();
        Ok(c)
    }

    fn read_sealed(&self, off: u64, len: u32, aad: &str) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, off)
            .map_err(io_err(&self.path))?;
        let z = self
            .dek
            .open(aad.as_bytes(), &buf, &self.path.display().to_string())
            .map_err(seal_err(&self.path))?;
        decompress(&z).map_err(io_err(&self.path))
    }

    /// The file's data key (the records key file exists only to carry it).
    pub(crate) fn data_key(&self) -> &DataKey {
        &self.dek
    }

    pub(crate) fn block_count(&self) -> usize {
        self.blocks.len()
    }

    pub(crate) fn read_block(&self, n: u32) -> Result<Vec<u8>, StoreError> {
        let &(off, len) = self
            .blocks
            .get(n as usize)
            .ok_or_else(|| corrupt("block number"))?;
        let aad = format!("warden|{}|{}|blk|{n}", self.kind.name(), self.id);
        self.read_sealed(off, len, &aad)
    }
}

/// Largest block plaintext we preallocate for from the frame header (a block is ~128 KiB; a
/// single huge chunk can make one bigger, which then takes the streaming path).
const MAX_PREALLOC: u64 = 64 << 20;

thread_local! {
    /// One zstd decompression context per thread: creating one per block showed up in profiles.
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses one zstd frame (block plaintext sizes are in the frame header).
fn decompress(z: &[u8]) -> std::io::Result<Vec<u8>> {
    let size = zstd::zstd_safe::get_frame_content_size(z).ok().flatten();
    match size {
        Some(n) if n <= MAX_PREALLOC => DCTX.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            match d.as_mut() {
                Some(d) => d.decompress(z, n as usize),
                None => zstd::stream::decode_all(z),
            }
        }),
        _ => zstd::stream::decode_all(z),
    }
}

// ------------------------------------------------------------------ WAL

/// The file being appended to. Not thread-safe by itself: the group-commit leader owns it.
pub(crate) struct WalWriter {
    file: File,
    pub(crate) path: PathBuf,
    id: u64,
    dek: DataKey,
    seq: u64,
    buf: Vec<u8>,
    pub(crate) bytes: u64,
}

impl WalWriter {
    pub(crate) fn create(path: PathBuf, id: u64, keyring: &Keyring) -> Result<Self, StoreError> {
        let dek = DataKey::generate().map_err(seal_err(&path))?;
        let w = keyring
            .wrap(&dek, &dek_context(Kind::Wal, id))
            .map_err(seal_err(&path))?;
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(&header(Kind::Wal, id, &w))
            .map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(Self {
            file,
            path,
            id,
            dek,
            seq: 0,
            buf: Vec::new(),
            bytes: HEADER_LEN,
        })
    }

    /// Seals and writes one record (no fsync).
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        let aad = format!("warden|wal|{}|{}", self.id, self.seq);
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        self.dek
            .seal_into(aad.as_bytes(), payload, &mut self.buf)
            .map_err(seal_err(&self.path))?;
        let len = u32::try_from(self.buf.len() - 8).map_err(|_| corrupt("WAL record too big"))?;
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all(&self.buf).map_err(io_err(&self.path))?;
        self.bytes += self.buf.len() as u64;
        self.seq += 1;
        Ok(())
    }

    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

/// Reads every intact record of a WAL file. A torn tail (short record or CRC mismatch: a write
/// that was never acknowledged) ends the file and is truncated away; a record whose CRC matches
/// but does not decrypt is an error (wrong key or tampering).
pub(crate) fn read_wal(path: &Path, keyring: &Keyring) -> Result<Vec<Vec<u8>>, StoreError> {
    let data = fs::read(path).map_err(io_err(path))?;
    if data.len() < HEADER_LEN as usize {
        // Crash while creating the file: nothing in it was ever acknowledged.
        tracing::warn!(path = %path.display(), "WAL file shorter than its header; ignored");
        return Ok(Vec::new());
    }
    let file = File::open(path).map_err(io_err(path))?;
    let h = read_header(&file, path)?;
    if h.kind != Kind::Wal {
        return Err(StoreError::Corrupt(format!(
            "{}: not a WAL",
            path.display()
        )));
    }
    let (dek, _) = unwrap_header(&h, keyring, path)?;
    let mut out = Vec::new();
    let mut pos = HEADER_LEN as usize;
    let mut seq = 0u64;
    while pos + 8 <= data.len() {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let Some(rec) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(rec) != crc {
            break;
        }
        let aad = format!("warden|wal|{}|{seq}", h.id);
        let plain = dek
            .open(aad.as_bytes(), rec, &path.display().to_string())
            .map_err(seal_err(path))?;
        out.push(plain);
        pos += 8 + len;
        seq += 1;
    }
    if pos < data.len() {
        tracing::warn!(path = %path.display(), valid = pos, size = data.len(), "truncating torn WAL tail");
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(pos as u64).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    Ok(out)
}

/// Reads only the header kind and id of a store file (for listing at open).
pub(crate) fn peek_kind(path: &Path) -> Result<(Kind, u64), StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let h = read_header(&file, path)?;
    Ok((h.kind, h.id))
}
