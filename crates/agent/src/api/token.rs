//! The local API bearer token (`auth_token`) and the small primitives around secrets that the
//! API and the GUI share: OS randomness, hex, constant-time comparison.
//!
//! Why a file: the CLI (`warden agent status`, …) runs as a separate process and proves it may
//! talk to the agent by reading a file only the agent's user can read — the same trust model as
//! the Datadog agent (`specs/agent.md` §7). So the file must be 0600 and belong to the agent's
//! user; anything looser means another local user may already know the token, and the agent
//! refuses to start rather than serve an API protected by a leaked secret.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Shortest token accepted when read back (the Datadog agent's rule).
pub const MIN_TOKEN_LEN: usize = 32;

/// Problems with the token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read auth token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create auth token file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "auth token file {path} is accessible by other users (mode {mode:04o}); anyone who can \
         read it controls the agent's local API. Fix: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "auth token file {path} belongs to uid {owner}, but the agent runs as uid {euid}. \
         Fix: chown the file to the agent's user (or delete it to get a new one)"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "auth token in {path} is too short ({len} characters, at least {MIN_TOKEN_LEN} needed); \
         delete the file to get a new random one"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "auth token in {path} contains characters other than printable ASCII; delete the file \
         to get a new random one"
    )]
    Invalid { path: PathBuf },
    #[error("cannot read random bytes from the OS: {0}")]
    Random(std::io::Error),
}

/// The bearer token; wiped from memory on drop, never printed.
pub struct AuthToken(Zeroizing<String>);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(********)")
    }
}

impl AuthToken {
    /// The token text (for the `Authorization` header and the scrubber).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time check of a presented token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        ct_eq(self.0.as_bytes(), presented)
    }

    /// Reads the token file, creating it (64 hex characters from 32 random bytes, mode 0600)
    /// when it does not exist. Refuses files that group or others can access, files owned by
    /// another user, and tokens shorter than [`MIN_TOKEN_LEN`].
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        match Self::create(path) {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        Self::load(path)
    }

    /// Reads an existing token file with the same checks as [`AuthToken::load_or_create`]
    /// (what the CLI does: it never creates the token).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let read_err = |source| TokenError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let euid = effective_uid();
        // root may read any user's token (an administrator running the CLI); the agent
        // itself is never supposed to run as root, and run.rs warns when it does.
        if euid != 0 && meta.uid() != euid {
            return Err(TokenError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                euid,
            });
        }
        let mut text = Zeroizing::new(String::new());
        file.take(4096)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        let token = Zeroizing::new(text.trim().to_owned());
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort {
                path: path.to_owned(),
                len: token.len(),
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid {
                path: path.to_owned(),
            });
        }
        Ok(Self(token))
    }

    /// Creates the file with a new token; `Ok(None)` when it already exists.
    fn create(path: &Path) -> Result<Option<Self>, TokenError> {
        let create_err = |source| TokenError::Create {
            path: path.to_owned(),
            source,
        };
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(create_err(e)),
        };
        let token = Zeroizing::new(hex(&random_bytes::<32>().map_err(TokenError::Random)?[..]));
        let written = file
            .write_all(token.as_bytes())
            .and_then(|()| file.sync_all())
            // The umask cannot widen 0600, but an inherited ACL default could: set it exactly.
            .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o600)));
        if let Err(e) = written {
            let _ = std::fs::remove_file(path);
            return Err(create_err(e));
        }
        // An explicit target: the module path ends in `token`, and `…::token: value` is what
        // the scrubber (rightly) masks as a `token: <secret>` pair.
        tracing::info!(
            target: "warden_agent::api",
            path = %path.display(),
            "created a new local API auth token (mode 0600)"
        );
        Ok(Some(Self(token)))
    }
}

/// `N` bytes from the kernel's CSPRNG (`/dev/urandom` never blocks once the pool is seeded,
/// which it is long before the agent starts).
pub fn random_bytes<const N: usize>() -> std::io::Result<Zeroizing<[u8; N]>> {
    let mut buf = Zeroizing::new([0u8; N]);
    std::fs::File::open("/dev/urandom")?.read_exact(buf.as_mut())?;
    Ok(buf)
}

/// A new random secret: `N` random bytes as lowercase hex.
pub fn random_hex<const N: usize>() -> std::io::Result<String> {
    Ok(hex(&random_bytes::<N>()?[..]))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Equality whose running time depends only on the lengths, not on where the inputs differ,
/// so a remote caller cannot find a token byte by byte from response times. (Lengths are not
/// secret: tokens have a fixed, documented length.)
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// The effective uid, from `/proc/self/status` (no `unsafe`); `u32::MAX` if unreadable, which
/// matches no file owner.
pub(crate) fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|e| e.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_token_is_64_hex_mode_0600_and_read_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth_token");
        let t = AuthToken::load_or_create(&p).unwrap();
        assert_eq!(t.expose().len(), 64);
        assert!(t.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let again = AuthToken::load_or_create(&p).unwrap();
        assert_eq!(again.expose(), t.expose());
        let other = AuthToken::load_or_create(&dir.path().join("other")).unwrap();
        assert_ne!(other.expose(), t.expose(), "tokens must be random");
    }

    #[test]
    fn short_or_open_tokens_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth_token");
        std::fs::write(&p, "0123456789abcdef0123456789abcde\n").unwrap(); // 31 chars
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = AuthToken::load_or_create(&p).unwrap_err();
        assert!(matches!(e, TokenError::TooShort { len: 31, .. }), "{e}");
        std::fs::write(&p, "0123456789abcdef0123456789abcdef").unwrap();
        assert!(AuthToken::load(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = AuthToken::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(matches!(
            AuthToken::load(&p),
            Err(TokenError::Permissions { mode: 0o604, .. })
        ));
    }

    #[test]
    fn constant_time_compare_is_plain_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
        assert_eq!(hex(&[0x00, 0xff, 0x1a]), "00ff1a");
    }
}
