//! `warden agent flare`: one `.tar.gz` with what support needs to diagnose an agent — status,
//! effective configuration, recent logs, the `checks_d` listing — every file scrubbed.
//!
//! Why a hand-written tar writer: the archive holds a handful of small regular files; a ustar
//! header is 512 bytes of fixed fields, and writing it directly avoids a dependency for ~50
//! lines. Entries are only regular files with fixed modes (0600), no links, no owners, so
//! extracting a flare can never create anything but plain files under its one folder.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Builds a gzip-compressed ustar archive in memory.
pub(crate) struct TarGz {
    gz: GzEncoder<Vec<u8>>,
    mtime: u64,
}

impl TarGz {
    pub(crate) fn new(mtime: u64) -> Self {
        Self {
            gz: GzEncoder::new(Vec::new(), Compression::default()),
            mtime,
        }
    }

    /// Adds a regular file. `path` must be relative, at most 100 bytes, without `..`.
    pub(crate) fn add(&mut self, path: &str, data: &[u8]) -> std::io::Result<()> {
        if path.len() > 100
            || path.starts_with('/')
            || path.split('/').any(|p| p == ".." || p.is_empty())
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad archive path {path:?}"),
            ));
        }
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        octal(&mut h[100..108], 0o600);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], self.mtime);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..271].copy_from_slice(b"warden");
        h[297..303].copy_from_slice(b"warden");
        // Checksum: sum of all header bytes with the checksum field taken as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.gz.write_all(&h)?;
        self.gz.write_all(data)?;
        let pad = (512 - data.len() % 512) % 512;
        self.gz.write_all(&[0u8; 512][..pad])
    }

    /// Writes the end-of-archive marker and returns the compressed bytes.
    pub(crate) fn finish(mut self) -> std::io::Result<Vec<u8>> {
        self.gz.write_all(&[0u8; 1024])?;
        self.gz.finish()
    }
}

/// Zero-padded octal digits followed by NUL, filling `field`.
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(s);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_round_trips_through_gzip_and_ustar() {
        let mut t = TarGz::new(1_700_000_000);
        t.add("flare/a.txt", b"hello\n").unwrap();
        t.add("flare/logs/b.log", &vec![b'x'; 1000]).unwrap();
        assert!(t.add("../evil", b"").is_err());
        assert!(t.add("/abs", b"").is_err());
        let gz = t.finish().unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        // header + 1 data block, header + 2 data blocks, 2 end blocks
        assert_eq!(raw.len(), 512 * 7);
        assert_eq!(&raw[..11], b"flare/a.txt");
        assert_eq!(&raw[124..135], b"00000000006");
        let sum: u64 = raw[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        let stored = u64::from_str_radix(std::str::from_utf8(&raw[148..154]).unwrap(), 8).unwrap();
        assert_eq!(stored, sum);
        assert_eq!(&raw[512..518], b"hello\n");
        assert_eq!(&raw[1024..1040], b"flare/logs/b.log");
        assert!(raw[512 * 5..].iter().all(|&b| b == 0));
    }
}
