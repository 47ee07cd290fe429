//! The last log lines the agent wrote, kept in memory for the flare and the GUI.
//!
//! Why a writer tee and not a second formatter: the ring must hold exactly what went to the
//! log — already formatted and already scrubbed — so the binary stacks
//! `ScrubWriter<RingTee<stderr>>` under its tracing subscriber and every line reaches the ring
//! after the scrubber, never before. The flare and GUI scrub again anyway (defence in depth).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

/// Lines kept by default.
pub const DEFAULT_LOG_LINES: usize = 2000;
/// Longest line kept; longer lines are cut (with a marker) so one huge line cannot hold the
/// whole memory budget.
const MAX_LINE: usize = 8 * 1024;

/// A bounded ring of recent log lines. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct LogRing {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
}

impl Default for LogRing {
    fn default() -> Self {
        Self::new(DEFAULT_LOG_LINES)
    }
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
        }
    }

    /// Appends one line (without its newline), dropping the oldest when full.
    pub fn push(&self, line: &str) {
        let line = strip_ansi(line);
        let line = if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{} …[line cut at {MAX_LINE} bytes]", &line[..cut])
        } else {
            line
        };
        let mut q = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() == self.capacity {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The most recent `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let q = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        q.iter().skip(q.len().saturating_sub(n)).cloned().collect()
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`), which a terminal log may contain.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// An `io::Write` that passes bytes to `inner` and records every complete line in a
/// [`LogRing`].
#[derive(Debug)]
pub struct RingTee<W: Write> {
    inner: W,
    ring: Arc<LogRing>,
    partial: Vec<u8>,
}

impl<W: Write> RingTee<W> {
    pub fn new(inner: W, ring: Arc<LogRing>) -> Self {
        Self {
            inner,
            ring,
            partial: Vec::new(),
        }
    }
}

impl<W: Write> Write for RingTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The ring records what was offered even if the sink fails: a full disk must not also
        // blind the flare.
        let res = self.inner.write_all(buf);
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..i]);
            self.ring.push(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
            rest = &rest[i + 1..];
        }
        if self.partial.len() + rest.len() <= MAX_LINE {
            self.partial.extend_from_slice(rest);
        }
        res.map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_without_colour_codes() {
        let ring = Arc::new(LogRing::new(3));
        let mut tee = RingTee::new(Vec::new(), ring.clone());
        tee.write_all(b"\x1b[32m INFO\x1b[0m one\ntwo\nthr")
            .unwrap();
        tee.write_all(b"ee\nfour\n").unwrap();
        assert_eq!(ring.tail(10), [" INFO one", "two", "three", "four"][1..]);
        assert_eq!(ring.tail(1), ["four"]);
        assert_eq!(tee.inner.len(), 34, "every byte reaches the sink");
    }
}
