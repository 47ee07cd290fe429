//! Built-in TCP connect check (Datadog `tcp_check`): `tcp.can_connect` service check,
//! `network.tcp.can_connect` (1/0) and `network.tcp.response_time` (seconds to connect).

use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use warden_model::{CheckStatus, MetricKind};

use super::{CheckKind, CheckOutput, Ctx, unix_now};
use crate::config::TcpCheckConfig;

pub(super) async fn run(cfg: &TcpCheckConfig, ctx: &Ctx) -> CheckOutput {
    let timeout = Duration::from_secs(cfg.timeout.max(1));
    let interval = Duration::from_secs(cfg.interval.max(1));
    let tags = ctx.tags_with(
        [
            format!("instance:{}", cfg.name),
            format!("target_host:{}", cfg.host),
            format!("port:{}", cfg.port),
        ]
        .into_iter()
        .chain(cfg.tags.iter().cloned()),
    );
    let target = format!("{}:{}", cfg.host, cfg.port);
    let start = Instant::now();
    let res =
        tokio::time::timeout(timeout, TcpStream::connect((cfg.host.as_str(), cfg.port))).await;
    let elapsed = start.elapsed().as_secs_f64();
    let now = unix_now();
    let (status, message) = match res {
        Ok(Ok(stream)) => {
            drop(stream);
            (
                CheckStatus::Ok,
                format!("connected to {target} in {elapsed:.3}s"),
            )
        }
        Ok(Err(e)) => (
            CheckStatus::Critical,
            format!("connection to {target} failed: {e}"),
        ),
        Err(_) => (
            CheckStatus::Critical,
            format!(
                "connection to {target} timed out after {}s",
                timeout.as_secs()
            ),
        ),
    };
    let up = status == CheckStatus::Ok;
    let mut series = vec![ctx.series(
        "network.tcp.can_connect",
        MetricKind::Gauge,
        None,
        f64::from(u8::from(up)),
        &tags,
        now,
        interval,
    )];
    if up {
        series.push(ctx.series(
            "network.tcp.response_time",
            MetricKind::Gauge,
            Some("second"),
            elapsed,
            &tags,
            now,
            interval,
        ));
    }
    CheckOutput {
        name: cfg.name.clone(),
        kind: CheckKind::Tcp,
        status,
        service_checks: vec![ctx.service_check("tcp.can_connect", status, &tags, &message, now)],
        message,
        error: None,
        series,
        timestamp: now,
        duration_ms: 0,
    }
}
