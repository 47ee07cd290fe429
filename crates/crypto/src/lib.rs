//! The only Warden crate that touches key material.
//!
//! Why a separate crate: keys must not leak into logs, error messages or random corners of the
//! storage code, and an auditor should be able to read one small file to see how data at rest is
//! protected. Everything else (the store) handles only opaque [`DataKey`] / [`Keyring`] values and
//! sealed byte strings.
//!
//! Scheme (envelope encryption, spec `identity-and-data-protection.md` §3.2):
//!
//! * A **master key** (KEK, 256 bit) has a *version* and a *fingerprint* (first 8 bytes of
//!   SHA-256 over a domain tag and the key); both travel with every wrapped data key so the
//!   right KEK can be picked, and a wrong KEK is reported as such instead of as "corrupt data".
//! * Each file (segment, WAL file, index file) gets a fresh random 256-bit **data key** (DEK).
//!   The DEK is wrapped by the current KEK with AES-256-GCM and AAD
//!   `warden-dek|kek:v<version>|<context>`, where `<context>` names the file (e.g. `seg:42`), so
//!   a wrapped DEK copied into another file does not unwrap.
//! * Data is sealed with the DEK: AES-256-GCM, random 96-bit nonce, caller-chosen AAD (the store
//!   binds block number and file id). Sealed form: `nonce(12) || ciphertext || tag(16)`.
//! * Rotation: [`rewrap`] unwraps a DEK with the old KEK and wraps it with the new one, so
//!   rotating the master key costs O(files), never a data rewrite.
//! * A DEK refuses to seal more than 2^32 messages (random-nonce GCM limit); the store starts a
//!   new file with a new DEK long before.
//!
//! Master key sources ([`MasterKeySource`]): the data directory's `keys/master.key` (created on
//! first use with mode 0600 inside a 0700 directory), an explicit file, or an environment
//! variable. Key files readable by group or others are refused, like ssh does.
//!
//! Zeroization: raw key bytes live in [`zeroize::Zeroizing`] buffers and are wiped on drop. The
//! expanded AES key schedule inside `ring` is not wiped (ring offers no hook); it lives only as
//! long as the owning key.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// Bytes of a raw AES-256 key.
pub const KEY_LEN: usize = 32;
/// Bytes of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Overhead of [`DataKey::seal`]: nonce + tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of a serialized [`WrappedKey`].
pub const WRAPPED_LEN: usize = 8 + 4 + NONCE_LEN + KEY_LEN + TAG_LEN;
/// Random-nonce GCM message limit per key.
const MAX_SEALS: u64 = 1 << 32;

/// Everything that can go wrong with keys and sealed data. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} has mode {mode:o}: it must be readable by its owner only (chmod 600)")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("master key {origin}: {reason}")]
    BadKey { origin: String, reason: String },
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("system random generator failed")]
    Random,
    #[error("decryption failed for {0}: wrong key, or data corrupted or moved")]
    Open(String),
    #[error("encryption failed")]
    Seal,
    #[error("wrapped key is {0} bytes, expected {WRAPPED_LEN}")]
    WrappedLength(usize),
    #[error(
        "data key was wrapped by master key v{version} (fingerprint {fingerprint}), which is not loaded"
    )]
    UnknownKek { version: u32, fingerprint: String },
    #[error("data key used for 2^32 messages; a new one is required")]
    Exhausted,
}

type Result<T> = std::result::Result<T, CryptoError>;

fn rng() -> &'static SystemRandom {
    static RNG: std::sync::OnceLock<SystemRandom> = std::sync::OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

/// Fills `buf` with cryptographically secure random bytes.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    rng().fill(buf).map_err(|_| CryptoError::Random)
}

fn aead_key(raw: &[u8; KEY_LEN]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, raw)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Seal)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex_key(s: &str, origin: &str) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let bad = |reason: &str| CryptoError::BadKey {
        origin: origin.to_string(),
        reason: reason.to_string(),
    };
    let s = s.trim().as_bytes();
    if s.len() != KEY_LEN * 2 {
        return Err(bad("key must be 64 hex characters (256 bits)"));
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    for (i, pair) in s.chunks(2).enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        match (d(pair[0]), d(pair[1])) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => return Err(bad("key contains a non-hex character")),
        }
    }
    Ok(out)
}

/// A key-encryption key: 256 random bits plus a version number.
pub struct MasterKey {
    version: u32,
    fingerprint: [u8; 8],
    raw: Zeroizing<[u8; KEY_LEN]>,
    key: LessSafeKey,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MasterKey(v{}, {})",
            self.version,
            hex(&self.fingerprint)
        )
    }
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        Self::from_raw(self.version, self.raw.clone()).expect("a valid key stays valid")
    }
}

impl MasterKey {
    fn from_raw(version: u32, raw: Zeroizing<[u8; KEY_LEN]>) -> Result<Self> {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"warden-kek-fingerprint".as_slice(), raw.as_slice()].concat(),
        );
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&digest.as_ref()[..8]);
        let key = aead_key(&raw)?;
        Ok(Self {
            version,
            fingerprint,
            raw,
            key,
        })
    }

    /// A fresh random master key with the given version.
    pub fn generate(version: u32) -> Result<Self> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(raw.as_mut_slice())?;
        Self::from_raw(version, raw)
    }

    /// Parses the key-file format (see [`MasterKey::to_file_text`]) or a bare 64-hex-digit key
    /// (version 1), or `v<N>:<hex>`. `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let bad = |reason: &str| CryptoError::BadKey {
            origin: origin.to_string(),
            reason: reason.to_string(),
        };
        let parse_version = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad("version must be a positive integer"))
        };
        let t = text.trim();
        if t.contains("key=") {
            let mut version = None;
            let mut key = None;
            for line in t.lines() {
                let line = line.trim();
                if line.starts_with('#') || line.is_empty() {
                    continue;
                }
                if let Some(v) = line.strip_prefix("version=") {
                    version = Some(parse_version(v)?);
                } else if let Some(k) = line.strip_prefix("key=") {
                    key = Some(unhex_key(k, origin)?);
                } else {
                    return Err(bad("unexpected line (expected version= and key=)"));
                }
            }
            let key = key.ok_or_else(|| bad("no key= line"))?;
            return Self::from_raw(version.unwrap_or(1), key);
        }
        if let Some(rest) = t.strip_prefix('v')
            && let Some((v, k)) = rest.split_once(':')
        {
            return Self::from_raw(parse_version(v)?, unhex_key(k, origin)?);
        }
        Self::from_raw(1, unhex_key(t, origin)?)
    }

    /// The key-file text: a comment, `version=N` and `key=<64 hex>`.
    fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# Warden master key (KEK). Losing it loses the data; keep a copy offline.\nversion={}\nkey={}\n",
            self.version,
            hex(self.raw.as_slice())
        ))
    }

    /// Version number (rotation increments it).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Hex fingerprint (safe to log).
    pub fn fingerprint(&self) -> String {
        hex(&self.fingerprint)
    }

    /// Reads a key file, refusing files that group or others may read.
    pub fn load_file(path: &Path) -> Result<Self> {
        check_private(path)?;
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| CryptoError::Io {
            path: path.to_path_buf(),
            source,
        })?);
        Self::parse(&text, &path.display().to_string())
    }

    /// Writes the key to `path` atomically with mode 0600 (temp file, fsync, rename, dir fsync).
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let io = |source| CryptoError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let tmp = path.with_extension("tmp");
        let _ = fs::remove_file(&tmp);
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(self.to_file_text().as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, path).map_err(io)?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }

    /// Wraps `dek` for the file named by `context` (e.g. `seg:42`).
    pub fn wrap(&self, dek: &DataKey, context: &str) -> Result<WrappedKey> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut buf = Zeroizing::new(dek.raw.to_vec());
        let aad = wrap_aad(self.version, context);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                buf.as_mut_slice(),
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut ct = [0u8; KEY_LEN + TAG_LEN];
        ct[..KEY_LEN].copy_from_slice(&buf);
        ct[KEY_LEN..].copy_from_slice(tag.as_ref());
        Ok(WrappedKey {
            fingerprint: self.fingerprint,
            version: self.version,
            nonce,
            ct,
        })
    }

    fn unwrap_raw(&self, w: &WrappedKey, context: &str) -> Result<DataKey> {
        let mut buf = Zeroizing::new(w.ct.to_vec());
        let aad = wrap_aad(w.version, context);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(w.nonce),
                Aad::from(aad.as_bytes()),
                buf.as_mut_slice(),
            )
            .map_err(|_| CryptoError::Open(format!("data key of {context}")))?;
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        raw.copy_from_slice(plain);
        DataKey::from_raw(raw)
    }
}

fn wrap_aad(version: u32, context: &str) -> String {
    format!("warden-dek|kek:v{version}|{context}")
}

fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|source| CryptoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_file() || mode & 0o077 != 0 {
        return Err(CryptoError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| CryptoError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mode = fs::metadata(dir).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Where the master key comes from.
#[derive(Clone, Debug, Default)]
pub enum MasterKeySource {
    /// `DATA_DIR/keys/master.key`, created (0600) on first use.
    #[default]
    DataDir,
    /// An existing key file (must be 0600 or 0400).
    File(PathBuf),
    /// An environment variable holding the key (bare hex, `v<N>:<hex>` or the file format).
    Env(String),
    /// A key already in memory (tests, embedding).
    Key(Box<MasterKey>),
}

/// Relative path of the default key file inside a data directory.
pub const DEFAULT_KEY_FILE: &str = "keys/master.key";
/// Where a rotation parks the new key until every data key is rewrapped.
pub const PENDING_KEY_FILE: &str = "keys/master.key.next";

impl MasterKeySource {
    /// Loads (or, for [`MasterKeySource::DataDir`] on a fresh directory, creates) the key.
    pub fn load(&self, data_dir: &Path) -> Result<MasterKey> {
        match self {
            Self::DataDir => {
                let path = data_dir.join(DEFAULT_KEY_FILE);
                if path.exists() {
                    MasterKey::load_file(&path)
                } else {
                    let key = MasterKey::generate(1)?;
                    key.write_file(&path)?;
                    Ok(key)
                }
            }
            Self::File(p) => MasterKey::load_file(p),
            Self::Env(var) => {
                let v = Zeroizing::new(
                    std::env::var(var).map_err(|_| CryptoError::EnvMissing(var.clone()))?,
                );
                MasterKey::parse(&v, &format!("${var}"))
            }
            Self::Key(k) => Ok(k.as_ref().clone()),
        }
    }
}

/// Loads the key a rotation parked in `DATA_DIR/keys/master.key.next`, if any (an interrupted
/// rotation: the store finishes rewrapping with it, then calls [`commit_pending`]).
pub fn load_pending(data_dir: &Path) -> Result<Option<MasterKey>> {
    let path = data_dir.join(PENDING_KEY_FILE);
    if path.exists() {
        MasterKey::load_file(&path).map(Some)
    } else {
        Ok(None)
    }
}

/// Parks `key` as the pending master key of a data directory (step 1 of a rotation).
pub fn write_pending(data_dir: &Path, key: &MasterKey) -> Result<()> {
    key.write_file(&data_dir.join(PENDING_KEY_FILE))
}

/// Makes the pending key the data directory's master key (last step of a rotation; the old key
/// file is replaced atomically).
pub fn commit_pending(data_dir: &Path) -> Result<()> {
    let from = data_dir.join(PENDING_KEY_FILE);
    let to = data_dir.join(DEFAULT_KEY_FILE);
    let io = |source| CryptoError::Io {
        path: to.clone(),
        source,
    };
    fs::rename(&from, &to).map_err(io)?;
    if let Some(dir) = to.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// The master keys a process can unwrap with: the current one (used for new files) and older
/// ones still needed while a rotation is in progress.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: MasterKey,
    others: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            others: Vec::new(),
        }
    }

    /// Adds a key usable for unwrapping only.
    pub fn add_old(&mut self, key: MasterKey) {
        if key.fingerprint != self.current.fingerprint
            && !self.others.iter().any(|k| k.fingerprint == key.fingerprint)
        {
            self.others.push(key);
        }
    }

    /// The key new files are wrapped with.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// Wraps a fresh DEK with the current key.
    pub fn wrap(&self, dek: &DataKey, context: &str) -> Result<WrappedKey> {
        self.current.wrap(dek, context)
    }

    /// Unwraps with whichever loaded key the wrapped DEK names.
    pub fn unwrap(&self, w: &WrappedKey, context: &str) -> Result<DataKey> {
        std::iter::once(&self.current)
            .chain(&self.others)
            .find(|k| k.fingerprint == w.fingerprint && k.version == w.version)
            .ok_or_else(|| CryptoError::UnknownKek {
                version: w.version,
                fingerprint: hex(&w.fingerprint),
            })?
            .unwrap_raw(w, context)
    }

    /// True when `w` is wrapped by the current key.
    pub fn is_current(&self, w: &WrappedKey) -> bool {
        w.fingerprint == self.current.fingerprint && w.version == self.current.version
    }
}

/// Unwraps `w` with `from` and wraps the same DEK with `to`: rotation without data rewrite.
pub fn rewrap(w: &WrappedKey, context: &str, from: &Keyring, to: &MasterKey) -> Result<WrappedKey> {
    let dek = from.unwrap(w, context)?;
    to.wrap(&dek, context)
}

/// A DEK wrapped by a master key: `fingerprint(8) | version(4, LE) | nonce(12) | ct+tag(48)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    fingerprint: [u8; 8],
    version: u32,
    nonce: [u8; NONCE_LEN],
    ct: [u8; KEY_LEN + TAG_LEN],
}

impl WrappedKey {
    /// Fixed-size serialization ([`WRAPPED_LEN`] bytes).
    pub fn to_bytes(&self) -> [u8; WRAPPED_LEN] {
        let mut out = [0u8; WRAPPED_LEN];
        out[..8].copy_from_slice(&self.fingerprint);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..24].copy_from_slice(&self.nonce);
        out[24..].copy_from_slice(&self.ct);
        out
    }

    /// Parses [`WrappedKey::to_bytes`] output.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != WRAPPED_LEN {
            return Err(CryptoError::WrappedLength(b.len()));
        }
        let mut w = Self {
            fingerprint: [0; 8],
            version: 0,
            nonce: [0; NONCE_LEN],
            ct: [0; KEY_LEN + TAG_LEN],
        };
        w.fingerprint.copy_from_slice(&b[..8]);
        w.version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        w.nonce.copy_from_slice(&b[12..24]);
        w.ct.copy_from_slice(&b[24..]);
        Ok(w)
    }

    /// Version of the master key that wrapped this DEK.
    pub fn kek_version(&self) -> u32 {
        self.version
    }
}

/// A per-file data key. Seals with random nonces and counts its uses.
pub struct DataKey {
    raw: Zeroizing<[u8; KEY_LEN]>,
    key: LessSafeKey,
    seals: AtomicU64,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    fn from_raw(raw: Zeroizing<[u8; KEY_LEN]>) -> Result<Self> {
        let key = aead_key(&raw)?;
        Ok(Self {
            raw,
            key,
            seals: AtomicU64::new(0),
        })
    }

    /// A fresh random DEK.
    pub fn generate() -> Result<Self> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(raw.as_mut_slice())?;
        Self::from_raw(raw)
    }

    /// Appends `nonce || AES-256-GCM(plaintext) || tag` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.seals.fetch_add(1, Ordering::Relaxed) >= MAX_SEALS {
            return Err(CryptoError::Exhausted);
        }
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| CryptoError::Seal)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// `seal_into` a new vector.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens a sealed string; `what` names it in the error.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Open(what.to_string()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| CryptoError::Open(what.to_string()))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_aad_binding() {
        let dek = DataKey::generate().expect("dek");
        let sealed = dek.seal(b"seg:1|blk:0", b"hello metrics").expect("seal");
        assert_eq!(sealed.len(), 13 + SEAL_OVERHEAD);
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(
            dek.open(b"seg:1|blk:0", &sealed, "t").expect("open"),
            b"hello metrics"
        );
        assert!(dek.open(b"seg:1|blk:1", &sealed, "t").is_err());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(dek.open(b"seg:1|blk:0", &tampered, "t").is_err());
        let other = DataKey::generate().expect("dek");
        assert!(other.open(b"seg:1|blk:0", &sealed, "t").is_err());
    }

    #[test]
    fn wrap_unwrap_rewrap() {
        let k1 = MasterKey::generate(1).expect("k1");
        let k2 = MasterKey::generate(2).expect("k2");
        let dek = DataKey::generate().expect("dek");
        let sealed = dek.seal(b"a", b"payload").expect("seal");
        let w = k1.wrap(&dek, "seg:42").expect("wrap");
        let w2 = WrappedKey::from_bytes(&w.to_bytes()).expect("parse");
        assert_eq!(w, w2);
        let ring1 = Keyring::new(k1.clone());
        // Moving the wrapped key to another file fails.
        assert!(matches!(
            ring1.unwrap(&w, "seg:43"),
            Err(CryptoError::Open(_))
        ));
        let back = ring1.unwrap(&w, "seg:42").expect("unwrap");
        assert_eq!(back.open(b"a", &sealed, "t").expect("open"), b"payload");
        // Rewrap to k2: only k2 is then needed.
        let wr = rewrap(&w, "seg:42", &ring1, &k2).expect("rewrap");
        assert_eq!(wr.kek_version(), 2);
        let ring2 = Keyring::new(k2);
        assert!(ring2.is_current(&wr));
        let back2 = ring2.unwrap(&wr, "seg:42").expect("unwrap v2");
        assert_eq!(back2.open(b"a", &sealed, "t").expect("open"), b"payload");
        assert!(matches!(
            ring2.unwrap(&w, "seg:42"),
            Err(CryptoError::UnknownKek { version: 1, .. })
        ));
    }

    #[test]
    fn key_file_permissions_and_formats() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let k = MasterKeySource::DataDir.load(dir.path()).expect("create");
        let path = dir.path().join(DEFAULT_KEY_FILE);
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(path.parent().expect("parent"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let again = MasterKeySource::DataDir.load(dir.path()).expect("load");
        assert_eq!(again.fingerprint(), k.fingerprint());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = MasterKeySource::DataDir
            .load(dir.path())
            .expect_err("must refuse 0644");
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let hexkey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let a = MasterKey::parse(hexkey, "t").expect("bare");
        assert_eq!(a.version(), 1);
        let b = MasterKey::parse(&format!("v7:{hexkey}"), "t").expect("versioned");
        assert_eq!(b.version(), 7);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(MasterKey::parse("abcd", "t").is_err());
        assert!(MasterKey::parse(&hexkey.replace('0', "g"), "t").is_err());
        let text = b.to_file_text();
        assert_eq!(MasterKey::parse(&text, "t").expect("file").version(), 7);
        // Debug output never shows key bytes.
        assert!(!format!("{b:?}").contains("00112233"));
    }
}
