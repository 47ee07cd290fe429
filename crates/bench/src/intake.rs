//! Where the agent under test ships its payloads during the benchmark.
//!
//! The measurement must include shipping (serialising, compressing, sending), otherwise the
//! agent's forwarder would just queue and its memory would measure the queue. Two choices:
//!
//! * `testkit`: the workspace's real HTTPS intake receiver (TLS, decoding), which also lets the
//!   bench read the agent's own counters (`warden.agent.packets*`) from what it shipped.
//! * `http`: a minimal plain-HTTP responder on 127.0.0.1 that reads each request and answers
//!   `202 Accepted` (the agent is then configured with `allow_insecure_http: true`). Cheaper,
//!   no TLS, no decoding; useful when the testkit is unavailable.
//!
//! Both run inside the bench process, which is pinned to the generator CPU, so the intake's
//! work never lands on the receiving core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Cumulative agent self-counters as shipped to the intake.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct AgentCounters {
    /// `warden.agent.packets`: datagrams the agent read.
    pub(crate) packets: f64,
    /// `warden.agent.packets_dropped`: datagrams dropped inside the agent (queue full).
    pub(crate) packets_dropped: f64,
    /// `warden.agent.messages`: lines parsed.
    pub(crate) messages: f64,
    /// `warden.agent.parse_errors`.
    pub(crate) parse_errors: f64,
}

/// A running intake.
pub(crate) enum Intake {
    Http(HttpIntake),
    Testkit(TestkitIntake),
}

impl Intake {
    /// Starts an intake of the given kind (`testkit` or `http`) on the runtime.
    pub(crate) fn start(kind: &str, rt: &tokio::runtime::Runtime) -> anyhow::Result<Intake> {
        match kind {
            "http" => Ok(Intake::Http(rt.block_on(HttpIntake::start())?)),
            "testkit" => Ok(Intake::Testkit(rt.block_on(TestkitIntake::start())?)),
            other => anyhow::bail!("unknown intake {other:?} (testkit or http)"),
        }
    }

    pub(crate) fn url(&self) -> String {
        match self {
            Intake::Http(h) => format!("http://127.0.0.1:{}", h.port),
            Intake::Testkit(t) => t.url(),
        }
    }

    pub(crate) fn ca_file(&self) -> Option<std::path::PathBuf> {
        match self {
            Intake::Http(_) => None,
            Intake::Testkit(t) => Some(t.ca_file()),
        }
    }

    /// Requests received so far (any path).
    pub(crate) fn requests(&self) -> u64 {
        match self {
            Intake::Http(h) => h.requests.load(Ordering::Relaxed),
            Intake::Testkit(t) => t.requests(),
        }
    }

    /// The agent's own counters summed over everything shipped so far, when the intake can
    /// decode payloads.
    pub(crate) fn agent_counters(&self) -> Option<AgentCounters> {
        match self {
            Intake::Http(_) => None,
            Intake::Testkit(t) => Some(t.agent_counters()),
        }
    }
}

/// The API key the bench's agent uses (32 hex digits, like a Datadog key).
pub(crate) const API_KEY: &str = "0123456789abcdef0123456789abcdef";

/// Minimal HTTP/1.1 responder: reads headers and a `Content-Length` body, answers 202.
pub(crate) struct HttpIntake {
    pub(crate) port: u16,
    requests: Arc<AtomicU64>,
}

impl HttpIntake {
    pub(crate) async fn start() -> anyhow::Result<HttpIntake> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the HTTP intake")?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, counter.clone()));
            }
        });
        Ok(HttpIntake { port, requests })
    }
}

async fn serve(mut stream: tokio::net::TcpStream, requests: Arc<AtomicU64>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Read until the end of the headers.
        let header_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < header_end + len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..header_end + len);
        requests.fetch_add(1, Ordering::Relaxed);
        let resp = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if stream.write_all(resp).await.is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The workspace testkit receiver (HTTPS with a throw-away CA, decodes every payload).
pub(crate) struct TestkitIntake {
    inner: warden_testkit::Receiver,
}

impl TestkitIntake {
    pub(crate) async fn start() -> anyhow::Result<TestkitIntake> {
        let inner = warden_testkit::Receiver::start_with(API_KEY, warden_testkit::Mode::Tls)
            .await
            .map_err(|e| anyhow::anyhow!("starting the testkit intake: {e}"))?;
        Ok(TestkitIntake { inner })
    }

    fn url(&self) -> String {
        self.inner.url()
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.inner.ca_file().to_path_buf()
    }

    fn requests(&self) -> u64 {
        self.inner.requests().len() as u64
    }

    fn agent_counters(&self) -> AgentCounters {
        let mut c = AgentCounters::default();
        for s in self.inner.series() {
            let v: f64 = s.points.iter().map(|p| p.value).sum();
            match s.metric.as_str() {
                "warden.agent.packets" => c.packets += v,
                "warden.agent.packets_dropped" => c.packets_dropped += v,
                "warden.agent.messages" => c.messages += v,
                "warden.agent.parse_errors" => c.parse_errors += v,
                _ => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_intake_answers_202_and_counts_keep_alive_requests() {
        let intake = HttpIntake::start().await.expect("start");
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", intake.port))
            .await
            .expect("connect");
        for _ in 0..2 {
            s.write_all(
                b"POST /api/v2/series HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello",
            )
            .await
            .expect("write");
            let mut resp = vec![0u8; 256];
            let n = s.read(&mut resp).await.expect("read");
            let text = String::from_utf8_lossy(&resp[..n]);
            assert!(text.starts_with("HTTP/1.1 202"), "{text}");
        }
        assert_eq!(intake.requests.load(Ordering::Relaxed), 2);
    }
}
