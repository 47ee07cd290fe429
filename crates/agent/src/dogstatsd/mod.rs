//! DogStatsD listeners: sockets → reader threads → one parser/aggregator thread → forwarder.
//!
//! Why threads and not async tasks: the reader's only job is to drain the kernel queue as fast
//! as possible (a stalled reader means kernel drops, agent spec §9.4). A dedicated OS thread
//! blocked in `recvmmsg` is never delayed by other work on the async runtime. Readers hand
//! whole batches (up to 64 datagrams) to the parser thread over a bounded channel; when that
//! channel is full the reader blocks and the kernel buffer (`dogstatsd_so_rcvbuf`) absorbs the
//! burst, so there is exactly one place where packets can be lost, and the kernel counts it.
//!
//! The parser thread owns the [`Aggregator`]: no locks on the hot path. Every
//! `flush_interval` it closes finished 10 s buckets and sends the result to the forwarder.

mod socket;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
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

/// Datagrams read by one `recvmmsg` call, copied into one allocation.
struct Batch {
    data: Vec<u8>,
    ends: Vec<u32>,
    transport: Transport,
}

/// Running listeners; dropping it does not stop them, call [`DogstatsdServer::stop`].
pub struct DogstatsdServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
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
        let (batch_tx, batch_rx) = sync_channel::<Batch>(cfg.dogstatsd_queue_size);
        let mut threads = Vec::new();
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
            threads.push(spawn_reader(
                fd_owner,
                Transport::Udp,
                cfg.dogstatsd_buffer_size,
                batch_tx.clone(),
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
            threads.push(spawn_reader(
                Box::new(sock),
                Transport::Uds,
                cfg.dogstatsd_buffer_size,
                batch_tx.clone(),
                telemetry.clone(),
                stop.clone(),
            )?);
        }
        drop(batch_tx);

        let agg_cfg = AggregatorConfig {
            hostname: cfg.hostname.clone(),
            histogram_aggregates: cfg.histogram_aggregates.clone(),
            histogram_percentiles: cfg.histogram_percentiles.clone(),
            expiry_seconds: i64::try_from(cfg.dogstatsd_expiry_seconds).unwrap_or(300),
            extra_tags: cfg.dogstatsd_tags.clone(),
        };
        let worker = Worker {
            aggregator: Aggregator::new(agg_cfg),
            tx,
            telemetry,
            eol_udp: cfg.dogstatsd_eol_required.iter().any(|t| t == "udp"),
            eol_uds: cfg.dogstatsd_eol_required.iter().any(|t| t == "uds"),
            hostname: cfg.hostname.clone(),
            extra_tags: cfg.dogstatsd_tags.clone(),
            flush_every: Duration::from_secs(cfg.flush_interval.max(1)),
        };
        threads.push(
            std::thread::Builder::new()
                .name("dsd-parse".into())
                .spawn(move || worker.run(batch_rx))
                .map_err(DogstatsdError::Thread)?,
        );
        Ok(Self {
            stop,
            threads,
            udp_addr,
        })
    }

    /// Stops reading, flushes every open bucket to the forwarder, and joins the threads.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
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

fn spawn_reader(
    sock: Box<dyn AsRawFd + Send>,
    transport: Transport,
    buf_size: usize,
    out: SyncSender<Batch>,
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
                let mut batch = Batch {
                    data: Vec::new(),
                    ends: Vec::new(),
                    transport,
                };
                match reader.read(fd) {
                    Ok(datagrams) => {
                        for d in datagrams {
                            batch.data.extend_from_slice(d);
                            batch.ends.push(batch.data.len() as u32);
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dogstatsd read failed");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
                Telemetry::add(&telemetry.packets, batch.ends.len() as u64);
                Telemetry::add(&telemetry.packet_bytes, batch.data.len() as u64);
                if out.send(batch).is_err() {
                    break;
                }
            }
            drop(sock);
        })
        .map_err(DogstatsdError::Thread)
}

struct Worker {
    aggregator: Aggregator,
    tx: OutTx,
    telemetry: Arc<Telemetry>,
    eol_udp: bool,
    eol_uds: bool,
    hostname: String,
    /// `dogstatsd_tags`, added to events and service checks too.
    extra_tags: Vec<String>,
    flush_every: Duration,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Worker {
    fn run(mut self, rx: Receiver<Batch>) {
        let mut next_flush = Instant::now() + self.flush_every;
        let mut events = Vec::new();
        let mut checks = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(batch) => {
                    let now = unix_now();
                    self.process(&batch, now, &mut events, &mut checks);
                    // Drain whatever else is queued before looking at the clock again.
                    while let Ok(batch) = rx.try_recv() {
                        self.process(&batch, now, &mut events, &mut checks);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_flush {
                next_flush = Instant::now() + self.flush_every;
                self.flush(unix_now(), &mut events, &mut checks);
            }
        }
        // Shutdown: close the current bucket too, so nothing received is left behind.
        self.flush(unix_now() + 10, &mut events, &mut checks);
    }

    fn process(
        &mut self,
        batch: &Batch,
        now: i64,
        events: &mut Vec<warden_model::Event>,
        checks: &mut Vec<warden_model::ServiceCheck>,
    ) {
        let eol_required = match batch.transport {
            Transport::Udp => self.eol_udp,
            Transport::Uds => self.eol_uds,
        };
        let mut start = 0usize;
        let mut ok = 0u64;
        let mut errors = 0u64;
        for &end in &batch.ends {
            let end = end as usize;
            let mut datagram = &batch.data[start..end];
            start = end;
            if eol_required && !datagram.ends_with(b"\n") {
                // Drop the unterminated tail, keep complete lines.
                match datagram.iter().rposition(|&b| b == b'\n') {
                    Some(i) => datagram = &datagram[..=i],
                    None => {
                        errors += 1;
                        continue;
                    }
                }
                errors += 1;
            }
            for msg in parse_datagram(datagram) {
                match msg {
                    Ok(Message::Metric(m)) => {
                        self.aggregator.insert(&m, now);
                        ok += 1;
                    }
                    Ok(Message::Event(e)) => {
                        events.push(e.to_model(&self.hostname, &self.extra_tags));
                        ok += 1;
                    }
                    Ok(Message::ServiceCheck(c)) => {
                        let mut check = c.to_model(&self.hostname, &self.extra_tags);
                        if check.timestamp == 0 {
                            // Like the Datadog agent: stamped when received.
                            check.timestamp = now;
                        }
                        checks.push(check);
                        ok += 1;
                    }
                    Err(e) => {
                        errors += 1;
                        tracing::debug!(error = %e, "dogstatsd parse error");
                    }
                }
            }
        }
        Telemetry::add(&self.telemetry.messages, ok);
        Telemetry::add(&self.telemetry.parse_errors, errors);
    }

    fn flush(
        &mut self,
        now: i64,
        events: &mut Vec<warden_model::Event>,
        checks: &mut Vec<warden_model::ServiceCheck>,
    ) {
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
        if !events.is_empty() {
            out.push(Outgoing::Events(std::mem::take(events)));
        }
        if !checks.is_empty() {
            out.push(Outgoing::ServiceChecks(std::mem::take(checks)));
        }
        for o in out {
            if self.tx.blocking_send(o).is_err() {
                tracing::warn!("forwarder stopped; dropping dogstatsd flush");
                return;
            }
        }
    }
}
