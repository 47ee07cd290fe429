//! DogStatsD listeners: sockets → reader threads that parse and aggregate → forwarder.
//!
//! Why dedicated OS threads and not async tasks: a reader's only job is to drain the kernel
//! queue as fast as possible (a stalled reader means kernel drops, agent spec §9.4). A thread
//! blocked in `recvmmsg` is never delayed by other work on the async runtime.
//!
//! Why the reader parses too, instead of handing datagrams to a parser thread: on a small host
//! the hand-off (a channel send and a thread wake-up per `recvmmsg` batch, often one datagram
//! at moderate rates) cost more CPU than parsing itself. Each reader parses the datagrams
//! straight out of its receive buffers (no copy) and folds them into the shared
//! [`Aggregator`] under a mutex taken once per batch; with one socket the lock is never
//! contended. A separate flusher thread takes the lock every `flush_interval` just long
//! enough to close finished 10 s buckets, and ships the result outside the lock. While it
//! holds the lock the kernel buffer (`dogstatsd_so_rcvbuf`) absorbs the burst, so there is
//! exactly one place where packets can be lost, and the kernel counts it.
//!
//! Why a reader pauses after draining its socket: on a VM a thread wake-up costs tens of
//! microseconds of the reader's own CPU (the halted vCPU must be woken), more than reading and
//! aggregating a hundred one-line datagrams. A reader that blocks again as soon as the queue is
//! empty is woken for every few datagrams and spends most of its CPU being woken. After a
//! short batch (the queue is drained) a reader therefore sleeps up to [`MAX_COALESCE`] before
//! the next read, so it is woken a few hundred times a second at most and every read returns
//! a full batch under load. The pause is bounded by the receive buffer actually granted (see
//! [`coalesce_pause`]): what arrives meanwhile waits in the kernel queue, nothing is dropped
//! or sampled, and a small buffer gets no pause at all. The cost is up to [`MAX_COALESCE`] of
//! delivery latency, nothing next to a 10 s bucket.

mod socket;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use warden_dogstatsd::{Aggregator, AggregatorConfig, Message, parse_datagram};

use crate::config::AgentConfig;
use crate::telemetry::Telemetry;
use crate::{OutTx, Outgoing};

/// Errors starting the DogStatsD listeners.
#[derive(Debug, thiserror::Error)]
pub enum DogstatsdError {
    #[error("cannot bind DogStatsD UDP on {addr}: {source}")]
    BindUdp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind DogStatsD socket {path}: {source}")]
    BindUds {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start a DogStatsD thread: {0}")]
    Thread(std::io::Error),
}

/// Which socket a batch came from (end-of-line rules differ per transport).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Uds,
}

/// Running listeners; dropping it does not stop them, call [`DogstatsdServer::stop`].
pub struct DogstatsdServer {
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
    /// Bound UDP address (useful when the port was 0).
    pub udp_addr: Option<SocketAddr>,
}

impl DogstatsdServer {
    /// Binds the configured sockets and starts the reader and parser threads.
    pub fn start(
        cfg: &AgentConfig,
        tx: OutTx,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, DogstatsdError> {
        let stop = Arc::new(AtomicBool::new(false));
        let agg_cfg = AggregatorConfig {
            hostname: cfg.hostname.clone(),
            histogram_aggregates: cfg.histogram_aggregates.clone(),
            histogram_percentiles: cfg.histogram_percentiles.clone(),
            expiry_seconds: i64::try_from(cfg.dogstatsd_expiry_seconds).unwrap_or(300),
            extra_tags: cfg.dogstatsd_tags.clone(),
        };
        let worker = Arc::new(Mutex::new(Worker {
            aggregator: Aggregator::new(agg_cfg),
            events: Vec::new(),
            checks: Vec::new(),
            telemetry: telemetry.clone(),
            eol_udp: cfg.dogstatsd_eol_required.iter().any(|t| t == "udp"),
            eol_uds: cfg.dogstatsd_eol_required.iter().any(|t| t == "uds"),
            hostname: cfg.hostname.clone(),
            extra_tags: cfg.dogstatsd_tags.clone(),
        }));
        let mut readers = Vec::new();
        let mut udp_addr = None;

        if cfg.dogstatsd_port != 0 {
            let ip: IpAddr = if cfg.dogstatsd_non_local_traffic {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                cfg.bind_host
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
            };
            let addr = SocketAddr::new(ip, cfg.dogstatsd_port);
            let (sock, buf) = socket::bind_udp(addr, cfg.dogstatsd_so_rcvbuf)
                .map_err(|source| DogstatsdError::BindUdp { addr, source })?;
            report_rcvbuf("udp", buf);
            udp_addr = sock.local_addr().ok();
            tracing::info!(addr = %udp_addr.unwrap_or(addr), "dogstatsd listening on udp");
            let fd_owner: Box<dyn AsRawFd + Send> = Box::new(sock);
            readers.push(spawn_reader(
                fd_owner,
                Transport::Udp,
                coalesce_pause(buf.granted),
                cfg.dogstatsd_buffer_size,
                worker.clone(),
                telemetry.clone(),
                stop.clone(),
            )?);
        }
        if let Some(path) = &cfg.dogstatsd_socket {
            let (sock, buf) =
                socket::bind_uds(path, cfg.dogstatsd_so_rcvbuf).map_err(|source| {
                    DogstatsdError::BindUds {
                        path: path.clone(),
                        source,
                    }
                })?;
            report_rcvbuf("uds", buf);
            tracing::info!(path = %path.display(), "dogstatsd listening on unix socket");
            readers.push(spawn_reader(
                Box::new(sock),
                Transport::Uds,
                coalesce_pause(buf.granted),
                cfg.dogstatsd_buffer_size,
                worker.clone(),
                telemetry.clone(),
                stop.clone(),
            )?);
        }

        let flush_every = Duration::from_secs(cfg.flush_interval.max(1));
        let flusher_stop = stop.clone();
        let flusher = std::thread::Builder::new()
            .name("dsd-flush".into())
            .spawn(move || run_flusher(worker, tx, flush_every, flusher_stop))
            .map_err(DogstatsdError::Thread)?;
        Ok(Self {
            stop,
            readers,
            flusher: Some(flusher),
            udp_addr,
        })
    }

    /// Stops reading, flushes every open bucket to the forwarder, and joins the threads.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Readers first: the flusher's last flush must see everything they read.
        for t in self.readers {
            let _ = t.join();
        }
        if let Some(f) = self.flusher {
            let _ = f.join();
        }
    }
}

fn report_rcvbuf(transport: &str, buf: socket::RcvBuf) {
    if buf.requested > 0 && buf.granted < buf.requested {
        tracing::warn!(
            transport,
            requested = buf.requested,
            granted = buf.granted,
            "the kernel capped the dogstatsd receive buffer; raise net.core.rmem_max or grant \
             CAP_NET_ADMIN to avoid drops under bursts"
        );
    } else {
        tracing::debug!(transport, granted = buf.granted, "dogstatsd receive buffer");
    }
}

/// Longest pause of a reader after it drained its socket (see the module docs).
const MAX_COALESCE: Duration = Duration::from_millis(2);

/// Receive-buffer bytes a datagram is assumed to occupy while it waits: the kernel charges
/// the buffer an skb's true size, about 1 KiB even for a one-line datagram.
const BUFFER_BYTES_PER_DATAGRAM: u64 = 1024;

/// The fastest datagram rate the pause must absorb without loss: about what one core can
/// receive at all on loopback (agent spec §9.4), datagrams per second.
const MAX_DATAGRAM_RATE: u64 = 1_000_000;

/// How long a reader may pause after draining its socket, given the receive buffer the kernel
/// granted (bytes): at most a quarter of the time the buffer takes to fill at
/// [`MAX_DATAGRAM_RATE`], at most [`MAX_COALESCE`], and no pause under 100 µs (a small buffer
/// is better served by reading at once).
fn coalesce_pause(granted_bytes: usize) -> Duration {
    let datagrams = granted_bytes as u64 / BUFFER_BYTES_PER_DATAGRAM;
    let fill = Duration::from_micros(datagrams.saturating_mul(1_000_000) / MAX_DATAGRAM_RATE);
    let pause = (fill / 4).min(MAX_COALESCE);
    if pause < Duration::from_micros(100) {
        Duration::ZERO
    } else {
        pause
    }
}

fn spawn_reader(
    sock: Box<dyn AsRawFd + Send>,
    transport: Transport,
    pause: Duration,
    buf_size: usize,
    worker: Arc<Mutex<Worker>>,
    telemetry: Arc<Telemetry>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, DogstatsdError> {
    let name = match transport {
        Transport::Udp => "dsd-read-udp",
        Transport::Uds => "dsd-read-uds",
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut reader = socket::BatchReader::new(buf_size);
            let fd = sock.as_raw_fd();
            while !stop.load(Ordering::Relaxed) {
                match reader.read(fd) {
                    Ok(datagrams) => {
                        let now = unix_now();
                        let mut packets = 0u64;
                        let mut bytes = 0u64;
                        let mut counts = LineCounts::default();
                        let mut w = worker.lock().unwrap_or_else(PoisonError::into_inner);
                        for d in datagrams {
                            packets += 1;
                            bytes += d.len() as u64;
                            w.process(d, transport, now, &mut counts);
                        }
                        drop(w);
                        // Once per batch: an atomic add per datagram is a measurable share
                        // of the cost of a one-line datagram.
                        Telemetry::add(&telemetry.packets, packets);
                        Telemetry::add(&telemetry.packet_bytes, bytes);
                        Telemetry::add(&telemetry.messages, counts.ok);
                        if counts.errors > 0 {
                            Telemetry::add(&telemetry.parse_errors, counts.errors);
                        }
                        if (packets as usize) < socket::BATCH && !pause.is_zero() {
                            // Drained: let the next batch gather in the kernel queue.
                            std::thread::sleep(pause);
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "dogstatsd read failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            drop(sock);
        })
        .map_err(DogstatsdError::Thread)
}

/// Lines parsed and rejected in one batch (added to the telemetry once per batch).
#[derive(Default)]
struct LineCounts {
    ok: u64,
    errors: u64,
}

/// Parsing and aggregation state shared by the readers (and the flusher).
struct Worker {
    aggregator: Aggregator,
    events: Vec<warden_model::Event>,
    checks: Vec<warden_model::ServiceCheck>,
    telemetry: Arc<Telemetry>,
    eol_udp: bool,
    eol_uds: bool,
    hostname: String,
    /// `dogstatsd_tags`, added to events and service checks too.
    extra_tags: Vec<String>,
}

/// Closes finished buckets every `every` and ships them; on stop, closes the current bucket
/// too so nothing received is left behind.
fn run_flusher(worker: Arc<Mutex<Worker>>, tx: OutTx, every: Duration, stop: Arc<AtomicBool>) {
    let mut next = Instant::now() + every;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping || Instant::now() >= next {
            next = Instant::now() + every;
            let now = unix_now() + if stopping { BUCKET_CLOSE_ON_STOP } else { 0 };
            let out = worker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take_flush(now);
            for o in out {
                if tx.blocking_send(o).is_err() {
                    tracing::warn!("forwarder stopped; dropping dogstatsd flush");
                    break;
                }
            }
            if stopping {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Added to the clock at shutdown so the bucket in progress is closed and shipped.
const BUCKET_CLOSE_ON_STOP: i64 = 10;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Worker {
    /// Parses one datagram and folds it into the aggregator / pending events and checks.
    fn process(
        &mut self,
        datagram: &[u8],
        transport: Transport,
        now: i64,
        counts: &mut LineCounts,
    ) {
        let eol_required = match transport {
            Transport::Udp => self.eol_udp,
            Transport::Uds => self.eol_uds,
        };
        let mut datagram = datagram;
        let mut ok = 0u64;
        let mut errors = 0u64;
        if eol_required && !datagram.ends_with(b"\n") {
            // Drop the unterminated tail (counted), keep the complete lines.
            errors += 1;
            match datagram.iter().rposition(|&b| b == b'\n') {
                Some(i) => datagram = &datagram[..=i],
                None => {
                    counts.errors += errors;
                    return;
                }
            }
        }
        for msg in parse_datagram(datagram) {
            match msg {
                Ok(Message::Metric(m)) => {
                    self.aggregator.insert(&m, now);
                    ok += 1;
                }
                Ok(Message::Event(e)) => {
                    self.events
                        .push(e.to_model(&self.hostname, &self.extra_tags));
                    ok += 1;
                }
                Ok(Message::ServiceCheck(c)) => {
                    let mut check = c.to_model(&self.hostname, &self.extra_tags);
                    if check.timestamp == 0 {
                        // Like the Datadog agent: stamped when received.
                        check.timestamp = now;
                    }
                    self.checks.push(check);
                    ok += 1;
                }
                Err(e) => {
                    errors += 1;
                    tracing::debug!(error = %e, "dogstatsd parse error");
                }
            }
        }
        counts.ok += ok;
        counts.errors += errors;
    }

    /// Closes finished buckets and takes pending events and checks, as forwarder batches.
    fn take_flush(&mut self, now: i64) -> Vec<Outgoing> {
        let flushed = self.aggregator.flush(now);
        Telemetry::set(
            &self.telemetry.contexts,
            self.aggregator.context_count() as u64,
        );
        let mut out = Vec::new();
        let mut series = flushed.series;
        series.extend(flushed.late);
        if !series.is_empty() {
            out.push(Outgoing::Series(series));
        }
        if !flushed.sketches.is_empty() {
            out.push(Outgoing::Sketches(flushed.sketches));
        }
        if !self.events.is_empty() {
            out.push(Outgoing::Events(std::mem::take(&mut self.events)));
        }
        if !self.checks.is_empty() {
            out.push(Outgoing::ServiceChecks(std::mem::take(&mut self.checks)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_pause_is_bounded_by_the_buffer() {
        // The kernel default (212 992 B) holds ~200 small datagrams: read at once.
        assert_eq!(coalesce_pause(212_992), Duration::ZERO);
        assert_eq!(coalesce_pause(0), Duration::ZERO);
        // 1 MiB: ~1000 datagrams, a quarter of a millisecond's worth at 1 M/s.
        assert_eq!(coalesce_pause(1 << 20), Duration::from_micros(256));
        // The default 16 MiB (or the reported doubled 32 MiB): capped.
        assert_eq!(coalesce_pause(16 << 20), MAX_COALESCE);
        assert_eq!(coalesce_pause(usize::MAX), MAX_COALESCE);
    }
}
