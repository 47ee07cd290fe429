//! Paced sender: offers a fixed line rate to 127.0.0.1:PORT for a fixed time.
//!
//! Pacing works on a schedule (datagrams due = elapsed × rate) and sends in `sendmmsg` batches
//! of up to 32. If the sender falls behind (descheduled by a noisy neighbour, or simply at its
//! own ceiling) it catches up by at most 20 ms worth of datagrams and forgets the rest: bursts
//! bigger than that would measure the scheduler, not the receiver. The achieved rate, not the
//! nominal one, is what the driver reports.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::payload::Payload;
use crate::sys::{BatchSender, SEND_BATCH};

/// What one paced send achieved.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SendStats {
    pub(crate) datagrams: u64,
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
    /// `sendmmsg` calls that failed (ECONNREFUSED when nobody listens, ENOBUFS, ...).
    pub(crate) errors: u64,
    /// Datagrams the schedule gave up on because the sender fell more than 20 ms behind.
    pub(crate) skipped: u64,
    pub(crate) elapsed: Duration,
}

impl SendStats {
    pub(crate) fn lines_per_sec(&self) -> f64 {
        self.lines as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub(crate) fn datagrams_per_sec(&self) -> f64 {
        self.datagrams as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Largest catch-up burst, as time worth of datagrams.
const MAX_DEBT: Duration = Duration::from_millis(20);

/// A sender bound to one target; keeps its ring position across calls so consecutive steps
/// continue the same sequence of contexts.
pub(crate) struct Generator<'a> {
    sender: BatchSender<'a>,
    payload: &'a Payload,
    pos: usize,
}

impl<'a> Generator<'a> {
    pub(crate) fn new(port: u16, payload: &'a Payload) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        sock.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
        Ok(Generator {
            sender: BatchSender::new(sock, payload),
            payload,
            pos: 0,
        })
    }

    /// Offers `lines_per_sec` for `duration`.
    pub(crate) fn run(&mut self, lines_per_sec: f64, duration: Duration) -> SendStats {
        let dgrams_per_sec = lines_per_sec / self.payload.avg_lines_per_datagram();
        let max_debt = (dgrams_per_sec * MAX_DEBT.as_secs_f64()).max(SEND_BATCH as f64) as u64;
        let mut st = SendStats::default();
        let start = Instant::now();
        // Datagrams forgiven after falling too far behind (the generator could not keep up).
        let mut forgiven: u64 = 0;
        loop {
            let el = start.elapsed();
            if el >= duration {
                break;
            }
            let due = (el.as_secs_f64() * dgrams_per_sec) as u64;
            let due = due.saturating_sub(forgiven);
            if due > st.datagrams + max_debt {
                forgiven += due - st.datagrams - max_debt;
                continue;
            }
            // Send only whole batches of 32 (one syscall each), except for the tail of the
            // step: sleep until a full batch is due.
            let remaining = duration.saturating_sub(el);
            let batch_due = st.datagrams + SEND_BATCH as u64;
            if due < batch_due && remaining > Duration::from_millis(1) {
                let wait = (batch_due - due) as f64 / dgrams_per_sec.max(1e-9);
                let wait = Duration::from_secs_f64(wait.min(0.01)).min(remaining);
                if wait > Duration::from_micros(120) {
                    std::thread::sleep(wait - Duration::from_micros(60));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            if due <= st.datagrams {
                std::hint::spin_loop();
                continue;
            }
            let want = ((due - st.datagrams) as usize)
                .min(SEND_BATCH)
                .min(self.sender.len() - self.pos);
            match self.sender.send(self.pos, want) {
                Ok(n) => {
                    for i in self.pos..self.pos + n {
                        st.lines += u64::from(self.payload.lines[i]);
                        st.bytes += self.payload.datagrams[i].len() as u64;
                    }
                    st.datagrams += n as u64;
                    self.pos = (self.pos + n) % self.sender.len();
                }
                Err(_) => {
                    st.errors += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        st.skipped = forgiven;
        st.elapsed = start.elapsed();
        st
    }
}
