//! [`ScrubWriter`]: an `io::Write` adapter that scrubs complete lines before they reach the
//! inner writer (the agent's log file, a flare archive entry).
//!
//! Why lines: every rule is line-scoped except PEM and YAML blocks, which the state machine
//! carries from line to line. A partial line is held back until its `\n` arrives (or the
//! buffer exceeds `MAX_PENDING` (256 KiB)), because a secret split across two `write` calls must not
//! reach the sink half-scrubbed.

use crate::{Block, Scrubber};
use std::io::{self, Write};
use std::sync::Arc;

/// A pending partial line longer than this is scrubbed and written without waiting for `\n`,
/// so a writer that never sends a newline cannot make the buffer grow without bound.
pub(crate) const MAX_PENDING: usize = 256 * 1024;

/// Scrubbing `io::Write` adapter. See the module docs.
pub struct ScrubWriter<W: Write> {
    inner: W,
    scrubber: Arc<Scrubber>,
    pending: Vec<u8>,
    state: Block,
    out: String,
}

impl<W: Write> ScrubWriter<W> {
    pub fn new(inner: W, scrubber: Arc<Scrubber>) -> Self {
        Self {
            inner,
            scrubber,
            pending: Vec::new(),
            state: Block::None,
            out: String::new(),
        }
    }

    /// Scrub and write whatever partial line is pending, flush, and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.drain_all()?;
        self.inner.flush()?;
        // `self` implements no Drop, so the inner writer can be moved out.
        Ok(self.inner)
    }

    /// The inner writer (for inspection; writing to it directly bypasses scrubbing).
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn emit(&mut self, bytes_end: usize) -> io::Result<()> {
        self.out.clear();
        let chunk = &self.pending[..bytes_end];
        let text = String::from_utf8_lossy(chunk);
        self.scrubber
            .scrub_lines_shared(&mut self.state, &text, &mut self.out);
        self.inner.write_all(self.out.as_bytes())?;
        self.pending.drain(..bytes_end);
        Ok(())
    }

    fn drain_all(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.emit(self.pending.len())?;
        }
        Ok(())
    }
}

impl<W: Write> Write for ScrubWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Only the new bytes can contain the last newline of the pending buffer.
        let old = self.pending.len();
        self.pending.extend_from_slice(buf);
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            self.emit(old + i + 1)?;
        } else if self.pending.len() > MAX_PENDING {
            self.drain_all()?;
        }
        Ok(buf.len())
    }

    /// Flushes the inner writer. A partial line (no `\n` yet) stays pending: scrubbing it now
    /// could let half of a secret through. Use [`ScrubWriter::finish`] at the end.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> std::fmt::Debug for ScrubWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrubWriter")
            .field("pending_bytes", &self.pending.len())
            .field("state", &self.state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_split_across_writes_and_pem_across_writes() {
        let s = Arc::new(Scrubber::default());
        let mut w = ScrubWriter::new(Vec::new(), s);
        w.write_all(b"connect password=hun").expect("write");
        w.write_all(b"ter2XYZ ok\nkey:\n  -----BEGIN RSA PRIVATE KEY-----\n")
            .expect("write");
        w.write_all(b"  MIIEpAIBAAKCAQEAsecretbody1\n")
            .expect("write");
        w.write_all(b"  Zm9vYmFyYmF6c2VjcmV0Ym9keTI=\n  -----END RSA PRIVATE KEY-----\nafter line")
            .expect("write");
        let out = String::from_utf8(w.finish().expect("finish")).expect("utf8");
        assert!(!out.contains("hunter2XYZ"), "{out}");
        assert!(!out.contains("secretbody1"), "{out}");
        assert!(!out.contains("Zm9vYmFy"), "{out}");
        assert!(out.contains("connect password=******** ok\n"), "{out}");
        assert!(out.ends_with("after line"), "{out}");
    }
}
