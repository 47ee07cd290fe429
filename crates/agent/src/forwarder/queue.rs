//! The in-memory retry queue.
//!
//! Why ordered by sequence number rather than a FIFO: the Datadog forwarder retries the
//! *newest* transactions first (fresh data matters most once the intake is back) and, when the
//! byte bound is hit, drops the *oldest*. Keying by the payload's creation sequence makes both
//! O(log n) and keeps the order exact even when a failed in-flight payload is put back after
//! newer ones arrived.

use std::collections::BTreeMap;

use super::serialize::{ENDPOINTS, Endpoint, Payload};

/// Payloads waiting to be sent, bounded by total body bytes.
///
/// One ordered map per endpoint, so that "newest payload of an endpoint that is not backing
/// off" and "oldest payload overall" are both O(log n) even with a long backlog on a blocked
/// endpoint.
#[derive(Debug)]
pub(crate) struct MemoryQueue {
    items: [BTreeMap<u64, Payload>; ENDPOINTS],
    bytes: u64,
    max_bytes: u64,
}

impl MemoryQueue {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            items: Default::default(),
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
        self.items.iter().map(BTreeMap::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.iter().all(BTreeMap::is_empty)
    }

    /// Whether the queue is over its bound.
    pub(crate) fn over(&self) -> bool {
        self.bytes > self.max_bytes
    }

    /// Inserts a payload (may leave the queue over its bound; see [`MemoryQueue::over`]).
    pub(crate) fn insert(&mut self, p: Payload) {
        self.bytes += p.size();
        if let Some(old) = self.items[p.endpoint.index()].insert(p.seq, p) {
            self.bytes -= old.size();
        }
    }

    /// Removes and returns the newest payload whose endpoint passes `ready`.
    pub(crate) fn pop_newest(&mut self, ready: impl Fn(Endpoint) -> bool) -> Option<Payload> {
        let ep = Endpoint::ALL
            .into_iter()
            .filter(|e| ready(*e))
            .filter_map(|e| self.items[e.index()].last_key_value().map(|(s, _)| (*s, e)))
            .max()?
            .1;
        let (_, p) = self.items[ep.index()].pop_last()?;
        self.bytes -= p.size();
        Some(p)
    }

    /// Removes and returns the oldest payload.
    pub(crate) fn pop_oldest(&mut self) -> Option<Payload> {
        let i = self
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.first_key_value().map(|(s, _)| (*s, i)))
            .min()?
            .1;
        let (_, p) = self.items[i].pop_first()?;
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
        let mut all: Vec<Payload> = self
            .items
            .iter_mut()
            .flat_map(|m| std::mem::take(m).into_values())
            .collect();
        all.sort_by_key(|p| p.seq);
        all
    }

    /// Endpoints that have at least one payload queued.
    pub(crate) fn endpoints(&self) -> [bool; ENDPOINTS] {
        std::array::from_fn(|i| !self.items[i].is_empty())
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
        q.insert(p(7, Endpoint::Intake, 5));
        assert_eq!(q.endpoints(), [true, false, false, true, false]);
        assert_eq!(
            q.pop_newest(|e| e != Endpoint::Intake).map(|x| x.seq),
            Some(2)
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q.drain().len(), 1);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}
