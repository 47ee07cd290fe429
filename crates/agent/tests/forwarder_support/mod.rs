//! Shared setup of the forwarder integration tests: configs built through the real YAML
//! loader, a running forwarder with its channel and shutdown switch, and small builders.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use warden_agent::forwarder::Forwarder;
use warden_agent::{AgentConfig, OutTx, Outgoing, Telemetry};
use warden_model::{MetricKind, Point, Series};

pub const KEY: &str = "0123456789abcdef0123456789abcdef";

/// Fast retry settings so outage tests take seconds.
pub const FAST_BACKOFF: &str = "forwarder_backoff_base: 0.05\nforwarder_backoff_factor: 2\nforwarder_backoff_max: 0.5\nforwarder_timeout: 5\n";

/// A config for `url`, trusting `ca` when given, plus `extra` YAML lines.
pub fn config(url: &str, ca: Option<&Path>, extra: &str) -> AgentConfig {
    let mut yaml = format!("api_key: {KEY}\nserver_url: {url}\nhostname: test-host\n");
    if let Some(ca) = ca {
        yaml.push_str(&format!("tls_ca_file: {}\n", ca.display()));
    }
    yaml.push_str(extra);
    AgentConfig::from_yaml_with_env(&yaml, "test.yaml", &[]).expect("valid test config")
}

pub struct Running {
    pub tx: OutTx,
    pub shutdown: watch::Sender<bool>,
    pub handle: JoinHandle<()>,
    pub telemetry: Arc<Telemetry>,
}

impl Running {
    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(self) {
        self.shutdown.send(true).expect("forwarder still listening");
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("forwarder stops within its stop timeout")
            .expect("forwarder task did not panic");
    }

    pub async fn send(&self, batch: Outgoing) {
        self.tx
            .send(batch)
            .await
            .expect("forwarder accepts batches");
    }

    pub fn get(&self, f: impl Fn(&Telemetry) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.telemetry).load(Ordering::Relaxed)
    }

    /// Polls a telemetry predicate.
    pub async fn wait_telemetry(
        &self,
        timeout: Duration,
        pred: impl Fn(&Telemetry) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if pred(&self.telemetry) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pred(&self.telemetry)
    }
}

/// Starts a forwarder on `cfg`.
pub fn spawn(cfg: &AgentConfig) -> Running {
    let telemetry = Arc::new(Telemetry::default());
    let fwd = Forwarder::new(cfg, telemetry.clone())
        .expect("forwarder builds")
        .with_stop_timeout(Duration::from_millis(500));
    let (tx, rx) = mpsc::channel(1024);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let handle = tokio::spawn(fwd.run(rx, shutdown_rx));
    Running {
        tx,
        shutdown,
        handle,
        telemetry,
    }
}

/// A one-point gauge series.
pub fn gauge(name: &str, value: f64, ts: i64) -> Series {
    Series {
        name: name.into(),
        tags: vec!["env:test".into()],
        host: "test-host".into(),
        kind: MetricKind::Gauge,
        interval: 0,
        unit: None,
        source_type_name: None,
        points: vec![Point {
            timestamp: ts,
            value,
        }],
    }
}

pub fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}
