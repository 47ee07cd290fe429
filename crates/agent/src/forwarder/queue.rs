//! The in-memory retry queue.
//!
//! Why ordered by sequence number rather than a FIFO: the Datadog forwarder retries the
//! *newest* transactions first (fresh data matters most once the intake is back) and, when the
//! byte bound is hit, drops the *oldest*. Keying by the payload's creation sequence makes both
//! O(log n) and keeps the order exact even when a failed in-flight payload is put back after
//! newer ones arrived.

use std::collections::BTreeMap;

use super::serialize::{Endpoint, Payload};

/// Payloads waiting to be sent, bounded by total body bytes.
#[derive(Debug)]
pub(crate) struct MemoryQueue {
    items: BTreeMap<u64, Payload>,
    bytes: u64,
    max_bytes: u64,
}

impl MemoryQueue {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            items: BTreeMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the queue is over its bound.
    pub(crate) fn over(&self) -> bool {
        self.bytes > self.max_bytes
    }

    /// Inserts a payload (may leave the queue over its bound; see [`MemoryQueue::over`]).
    pub(crate) fn insert(&mut self, p: Payload) {
        self.bytes += p.size();
        if let Some(old) = self.items.insert(p.seq, p) {
            self.bytes -= old.size();
        }
    }

    /// Removes and returns the newest payload whose endpoint passes `ready`.
    pub(crate) fn pop_newest(&mut self, ready: impl Fn(Endpoint) -> bool) -> Option<Payload> {
        let seq = self
            .items
            .iter()
            .rev()
            .find(|(_, p)| ready(p.endpoint))
            .map(|(s, _)| *s)?;
        let p = self.items.remove(&seq)?;
        self.bytes -= p.size();
        Some(p)
    }

    /// Removes and returns the oldest payload.
    pub(crate) fn pop_oldest(&mut self) -> Option<Payload> {
        let (_, p) = self.items.pop_first()?;
        self.bytes -= p.size();
        Some(p)
    }

    /// Removes the oldest payloads until at least `bytes` were taken (or the queue is empty).
    pub(crate) fn take_oldest(&mut self, bytes: u64) -> Vec<Payload> {
        let mut out = Vec::new();
        let mut taken = 0;
        while taken < bytes {
            let Some(p) = self.pop_oldest() else { break };
            taken += p.size();
            out.push(p);
        }
        out
    }

    /// Removes everything, oldest first.
    pub(crate) fn drain(&mut self) -> Vec<Payload> {
        self.bytes = 0;
        std::mem::take(&mut self.items).into_values().collect()
    }

    /// Endpoints that have at least one payload queued.
    pub(crate) fn endpoints(&self) -> [bool; 4] {
        let mut out = [false; 4];
        for p in self.items.values() {
            out[p.endpoint.index()] = true;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Compression;
    use bytes::Bytes;

    fn p(seq: u64, ep: Endpoint, size: usize) -> Payload {
        Payload {
            seq,
            created_ms: 0,
            endpoint: ep,
            encoding: Compression::Zstd,
            body: Bytes::from(vec![0u8; size]),
        }
    }

    #[test]
    fn newest_first_oldest_evicted_and_bytes_tracked() {
        let mut q = MemoryQueue::new(250);
        for seq in [2, 1, 3] {
            q.insert(p(seq, Endpoint::Series, 100));
        }
        assert!(q.over());
        assert_eq!(q.bytes(), 300);
        assert_eq!(q.pop_oldest().map(|x| x.seq), Some(1));
        assert!(!q.over());
        q.insert(p(0, Endpoint::CheckRun, 10));
        assert_eq!(
            q.pop_newest(|e| e == Endpoint::CheckRun).map(|x| x.seq),
            Some(0)
        );
        assert_eq!(q.pop_newest(|_| true).map(|x| x.seq), Some(3));
        assert_eq!(q.take_oldest(1).len(), 1);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}
