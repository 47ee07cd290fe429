//! The side-by-side DogStatsD benchmark (agent spec §9.2).
//!
//! For each repeat, for each framing mode, every receiver gets the same ladder of offered
//! rates, back to back, so that the ratio between receivers is measured under the same
//! machine conditions (the host is shared; absolute numbers drift, ratios drift much less).
//! The receiver order alternates between repeats to cancel slow drift.
//!
//! Loss is what the kernel dropped on the receiver's socket (`/proc/net/udp` `drops`) over the
//! datagrams offered. The agent never drops after the socket (its reader blocks when the
//! parser queue is full, so the kernel buffer absorbs the burst); the bench checks that claim
//! per sweep from the agent's own shipped counters (`warden.agent.packets`,
//! `packets_dropped`, `messages`), which also prove every offered line was parsed. A step passes when loss <= the threshold (0.05 %) and the
//! socket queue has drained within the drain window. "Sustained" is the highest passing step's
//! achieved line rate.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::generator::{Generator, SendStats};
use crate::intake::{AgentCounters, Intake};
use crate::payload::{self, Mode, Payload};
use crate::procfs;
use crate::receivers::{Kind, Receiver, Setup};
use crate::sys;

/// Options of one benchmark invocation.
#[derive(Clone, Debug)]
pub(crate) struct Opts {
    pub(crate) receivers: Vec<Kind>,
    pub(crate) modes: Vec<Mode>,
    pub(crate) single_rates: Vec<f64>,
    pub(crate) packed_rates: Vec<f64>,
    pub(crate) step: Duration,
    pub(crate) repeats: usize,
    pub(crate) contexts: usize,
    pub(crate) max_loss: f64,
    pub(crate) generator_cpu: Option<usize>,
    /// Seconds a fresh receiver gets before the first step.
    pub(crate) warmup: Duration,
    /// Longest wait for the receiver to go idle after a step.
    pub(crate) drain: Duration,
    /// Largest lag behind the offered load for a step to pass.
    pub(crate) max_lag: Duration,
    /// Pause after each step (lets flushes and timers settle before the next rung).
    pub(crate) gap: Duration,
    pub(crate) throughput: bool,
    pub(crate) rss: bool,
    pub(crate) idle: Duration,
    pub(crate) rss_contexts: usize,
    pub(crate) rss_rate: f64,
    pub(crate) rss_load: Duration,
    /// `testkit` or `http` (see `intake`).
    pub(crate) intake: String,
    /// Receivers limited to this % of one CPU (None: a whole CPU).
    pub(crate) receiver_cpu_quota_pct: Option<f64>,
}

/// One rung of the ladder.
#[derive(Clone, Debug)]
struct Step {
    nominal: f64,
    sent: SendStats,
    kernel_drops: u64,
    backlog_bytes: u64,
    /// Time the receiver kept working after the generator stopped (None: still busy after
    /// the drain window).
    lag: Option<Duration>,
    loss: f64,
    cpu_pct: f64,
    mem: procfs::Mem,
    pass: bool,
    sender_bound: bool,
}

impl Step {
    fn to_json(&self) -> Value {
        json!({
            "nominal_lines_per_s": self.nominal,
            "offered_lines_per_s": self.sent.lines_per_sec().round(),
            "offered_datagrams_per_s": self.sent.datagrams_per_sec().round(),
            "sent_datagrams": self.sent.datagrams,
            "sent_lines": self.sent.lines,
            "sent_bytes": self.sent.bytes,
            "send_errors": self.sent.errors,
            "generator_skipped_datagrams": self.sent.skipped,
            "seconds": self.sent.elapsed.as_secs_f64(),
            "kernel_drops": self.kernel_drops,
            "backlog_bytes_after_drain": self.backlog_bytes,
            "lag_ms": self.lag.map(|l| l.as_millis() as u64),
            "loss": self.loss,
            "cpu_pct": round1(self.cpu_pct),
            "rss_kib": self.mem.rss_kib,
            "hwm_kib": self.mem.hwm_kib,
            "pass": self.pass,
            "sender_bound": self.sender_bound,
        })
    }
}

/// One ladder for one receiver, mode and repeat.
#[derive(Clone, Debug)]
struct Sweep {
    kind: Kind,
    mode: Mode,
    repeat: usize,
    steps: Vec<Step>,
    rcvbuf_observed: Option<u64>,
    threads: Option<u64>,
    /// Requests the agent's intake received during the sweep (proves it shipped).
    intake_requests: Option<u64>,
    /// The agent's own counters summed over the sweep, and what the bench expected them to be.
    agent_check: Option<Value>,
}

impl Sweep {
    /// The passing step with the highest achieved line rate.
    fn sustained(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.pass)
            .max_by(|a, b| a.sent.lines_per_sec().total_cmp(&b.sent.lines_per_sec()))
    }

    /// Lines per second of receiver CPU time at the sustained step: how much one fully busy
    /// core would take if cost scaled linearly (a projection, used when the generator and not
    /// the receiver is the limit).
    fn lines_per_cpu_second(&self) -> Option<f64> {
        let st = self.sustained()?;
        (st.cpu_pct > 0.5).then(|| st.sent.lines_per_sec() / (st.cpu_pct / 100.0))
    }

    /// True when the ladder never found the receiver's limit: its real ceiling is higher than
    /// the sustained figure (the generator could not offer more).
    ///
    /// That is the case unless some step at a higher offered rate than the sustained one
    /// failed (then the ceiling lies between the two).
    fn sender_bound(&self) -> bool {
        let Some(best) = self.sustained() else {
            return false;
        };
        let rate = best.sent.lines_per_sec();
        !self
            .steps
            .iter()
            .any(|s| !s.pass && s.sent.lines_per_sec() > rate)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Human form of a line rate: 1.13M, 283k.
pub(crate) fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn step_once(
    rx: &mut Receiver,
    generator: &mut Generator<'_>,
    nominal: f64,
    opts: &Opts,
) -> anyhow::Result<Step> {
    let pid = rx.pid();
    let clk = sys::clock_ticks();
    let s0 = procfs::udp_sock(rx.port)
        .ok_or_else(|| anyhow::anyhow!("socket 127.0.0.1:{} vanished", rx.port))?;
    let c0 = procfs::cpu_ticks(pid).unwrap_or(0);
    let sent = generator.run(nominal, opts.step);
    // Let the receiver finish what it buffered (kernel queue, and any queue of its own). It
    // is done when its socket queue is empty and it used < 30 % of its CPU budget over the
    // last 100 ms (longer under a quota: 100 ms / share, so the idle test keeps its resolution). The time that took is its lag behind the offered load; a step passes only if the
    // lag is small (`max_lag`), so a deep internal queue cannot hide a receiver that is
    // slower than the offered rate.
    let drain_start = Instant::now();
    let share = opts.receiver_cpu_quota_pct.map_or(1.0, |q| q / 100.0);
    let window = Duration::from_secs_f64(0.1 / share);
    let mut samples: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut s1 = s0;
    let mut c1 = c0;
    let mut lag = None;
    loop {
        let now = Instant::now();
        s1 = procfs::udp_sock(rx.port).unwrap_or(s1);
        c1 = procfs::cpu_ticks(pid).unwrap_or(c1);
        samples.push_back((now, c1));
        while samples.len() > 2 && now.duration_since(samples[1].0) >= window {
            samples.pop_front();
        }
        if let Some(&(t_old, c_old)) = samples.front() {
            let span = now.duration_since(t_old);
            if span >= window && s1.rx_queue == 0 {
                let busy = (c1 - c_old) as f64 / clk / span.as_secs_f64();
                if busy < 0.3 * share {
                    lag = Some(t_old.saturating_duration_since(drain_start));
                    break;
                }
            }
        }
        if drain_start.elapsed() >= opts.drain {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mem = procfs::mem(pid).unwrap_or_default();
    rx.check_alive()?;
    std::thread::sleep(opts.gap);
    let kernel_drops = s1.drops.saturating_sub(s0.drops);
    let loss = if sent.datagrams > 0 {
        kernel_drops as f64 / sent.datagrams as f64
    } else {
        0.0
    };
    let cpu_pct = (c1.saturating_sub(c0)) as f64 / clk / sent.elapsed.as_secs_f64() * 100.0;
    let sender_bound = sent.lines_per_sec() < 0.93 * nominal;
    Ok(Step {
        nominal,
        sent,
        kernel_drops,
        backlog_bytes: s1.rx_queue,
        lag,
        loss,
        cpu_pct,
        mem,
        pass: loss <= opts.max_loss && lag.is_some_and(|l| l <= opts.max_lag) && sent.datagrams > 0,
        sender_bound,
    })
}

fn sweep(
    kind: Kind,
    mode: Mode,
    repeat: usize,
    payload: &Payload,
    setup: &Setup,
    rt: &tokio::runtime::Runtime,
    opts: &Opts,
) -> anyhow::Result<Sweep> {
    let rates = match mode {
        Mode::Single => &opts.single_rates,
        Mode::Packed => &opts.packed_rates,
    };
    let tag = format!("{}-r{repeat}", mode.name());
    // A fresh intake per agent sweep: the testkit keeps every payload it decodes, so one per
    // sweep keeps the bench's own memory and copying bounded.
    let intake = match kind {
        Kind::Warden => Some(Intake::start(&opts.intake, rt)?),
        _ => None,
    };
    let mut setup = setup.clone();
    if let Some(i) = &intake {
        setup.server_url = i.url();
        setup.ca_file = i.ca_file();
    }
    let mut rx = Receiver::start(kind, &setup, &tag)?;
    std::thread::sleep(opts.warmup);
    let mut generator = Generator::new(rx.port, payload)?;
    let mut steps = Vec::new();
    let mut fails = 0;
    eprintln!(
        "  [{}] {} {} (rcvbuf {}):",
        repeat + 1,
        kind.name(),
        mode.name(),
        rx.rcvbuf_observed
            .map(|b| b.to_string())
            .unwrap_or_else(|| "?".into())
    );
    let mut threads = None;
    for &rate in rates {
        let st = step_once(&mut rx, &mut generator, rate, opts)?;
        threads = threads.or_else(|| procfs::threads(rx.pid()));
        eprintln!(
            "    offered {:>7} lines/s ({:>6.0} dgram/s): loss {:>8.4}% ({} dropped), lag {}, cpu {:>5.1}%, rss {} KiB {}{}",
            human(st.sent.lines_per_sec()),
            st.sent.datagrams_per_sec(),
            st.loss * 100.0,
            st.kernel_drops,
            st.lag
                .map(|l| format!("{} ms", l.as_millis()))
                .unwrap_or_else(|| format!("> {:?} ({} B queued)", opts.drain, st.backlog_bytes)),
            st.cpu_pct,
            st.mem.rss_kib,
            if st.pass { "PASS" } else { "FAIL" },
            if st.sender_bound {
                " (sender-bound)"
            } else {
                ""
            },
        );
        let pass = st.pass;
        let loss = st.loss;
        // The generator is saturated when it missed the nominal rate *and* offered no more
        // than the previous rungs (a single starved step on a busy host does not end the run).
        let best_before = steps
            .iter()
            .map(|s: &Step| s.sent.lines_per_sec())
            .fold(0.0, f64::max);
        let sender_saturated = st.sender_bound && st.sent.lines_per_sec() < 1.05 * best_before;
        steps.push(st);
        if pass {
            fails = 0;
        } else {
            fails += 1;
        }
        // Stop climbing when it is clearly over: two failures in a row, heavy loss, or the
        // generator cannot offer more.
        if fails >= 2 || loss > 0.05 || sender_saturated {
            break;
        }
    }
    let upstream = rx.upstream_activity();
    if kind == Kind::Statsdproxy {
        if let Some(u) = upstream {
            eprintln!(
                "    statsdproxy upstream socket: {} B queued, {} datagrams dropped (it forwards)",
                u.rx_queue, u.drops
            );
        }
    }
    let rcvbuf_observed = rx.rcvbuf_observed;
    let agent_check = intake.as_ref().map(|i| agent_check(i, &steps, &mut rx));
    rx.stop();
    let intake_requests = intake.as_ref().map(Intake::requests);
    Ok(Sweep {
        intake_requests,
        agent_check,
        kind,
        mode,
        repeat,
        steps,
        rcvbuf_observed,
        threads,
    })
}

/// Waits for the agent's 10 s telemetry to cover the sweep, then compares its own counters
/// with what the bench sent and the kernel dropped.
fn agent_check(intake: &Intake, steps: &[Step], rx: &mut Receiver) -> Value {
    let sent: u64 = steps.iter().map(|s| s.sent.datagrams).sum();
    let lines: u64 = steps.iter().map(|s| s.sent.lines).sum();
    let dropped: u64 = steps.iter().map(|s| s.kernel_drops).sum();
    let expected = sent.saturating_sub(dropped) as f64;
    let start = Instant::now();
    let mut c = intake.agent_counters().unwrap_or_default();
    while c.packets < expected && start.elapsed() < Duration::from_secs(13) {
        if rx.check_alive().is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        c = intake.agent_counters().unwrap_or_default();
    }
    let AgentCounters {
        packets,
        packets_dropped,
        messages,
        parse_errors,
    } = c;
    eprintln!(
        "    agent counters: read {packets:.0} of {expected:.0} datagrams that reached its socket, \
         {packets_dropped:.0} dropped inside, {messages:.0} lines parsed of {lines} sent, \
         {parse_errors:.0} parse errors"
    );
    json!({
        "sent_datagrams": sent,
        "kernel_drops": dropped,
        "expected_datagrams_read": expected,
        "agent_packets": packets,
        "agent_packets_dropped": packets_dropped,
        "sent_lines": lines,
        "agent_messages": messages,
        "agent_parse_errors": parse_errors,
    })
}

/// Memory of one receiver idle and under a many-context load.
#[derive(Clone, Debug)]
struct RssResult {
    kind: Kind,
    idle: procfs::Mem,
    loaded: procfs::Mem,
    load: SendStats,
    load_kernel_drops: u64,
    cpu_pct_loaded: f64,
}

fn rss_run(
    kind: Kind,
    payload: &Payload,
    setup: &Setup,
    rt: &tokio::runtime::Runtime,
    opts: &Opts,
) -> anyhow::Result<RssResult> {
    let intake = match kind {
        Kind::Warden => Some(Intake::start(&opts.intake, rt)?),
        _ => None,
    };
    let mut setup = setup.clone();
    if let Some(i) = &intake {
        setup.server_url = i.url();
        setup.ca_file = i.ca_file();
    }
    let mut rx = Receiver::start(kind, &setup, "rss")?;
    std::thread::sleep(opts.idle);
    rx.check_alive()?;
    let idle = procfs::mem(rx.pid()).unwrap_or_default();
    let mut generator = Generator::new(rx.port, payload)?;
    let s0 = procfs::udp_sock(rx.port).unwrap_or_default();
    let c0 = procfs::cpu_ticks(rx.pid()).unwrap_or(0);
    let load = generator.run(opts.rss_rate, opts.rss_load);
    let loaded = procfs::mem(rx.pid()).unwrap_or_default();
    let c1 = procfs::cpu_ticks(rx.pid()).unwrap_or(c0);
    let s1 = procfs::udp_sock(rx.port).unwrap_or(s0);
    rx.check_alive()?;
    rx.stop();
    Ok(RssResult {
        kind,
        idle,
        loaded,
        load,
        load_kernel_drops: s1.drops.saturating_sub(s0.drops),
        cpu_pct_loaded: (c1.saturating_sub(c0)) as f64
            / sys::clock_ticks()
            / load.elapsed.as_secs_f64()
            * 100.0,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the whole benchmark; prints progress to stderr and the result table to stdout and
/// returns the JSON document.
pub(crate) fn run(
    opts: &Opts,
    setup: &Setup,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Value> {
    if let Some(cpu) = opts.generator_cpu {
        sys::pin_current_thread(cpu)?;
    }
    let load_before = procfs::loadavg();
    let started = std::time::SystemTime::now();
    let mut sweeps: Vec<Sweep> = Vec::new();

    if opts.throughput {
        let payloads: Vec<(Mode, Payload)> = opts
            .modes
            .iter()
            .map(|&m| Ok((m, payload::build(m, opts.contexts, 0x5eed)?)))
            .collect::<anyhow::Result<_>>()?;
        for (m, p) in &payloads {
            eprintln!(
                "payload {}: {} datagrams, {:.1} lines and {:.0} B per datagram, {} contexts",
                m.name(),
                p.datagrams.len(),
                p.avg_lines_per_datagram(),
                p.avg_datagram_bytes(),
                p.contexts_covered
            );
        }
        for repeat in 0..opts.repeats {
            eprintln!(
                "repeat {}/{} (load average {:?})",
                repeat + 1,
                opts.repeats,
                procfs::loadavg()
            );
            for (mode, payload) in &payloads {
                let mut order = opts.receivers.clone();
                if repeat % 2 == 1 {
                    order.reverse();
                }
                for kind in order {
                    sweeps.push(sweep(kind, *mode, repeat, payload, setup, rt, opts)?);
                }
            }
        }
    }

    let mut rss = Vec::new();
    if opts.rss {
        let p = payload::build(Mode::Packed, opts.rss_contexts, 0xbeef)?;
        eprintln!(
            "rss: idle {:?}, then {} contexts at {} lines/s for {:?}",
            opts.idle,
            p.contexts_covered,
            human(opts.rss_rate),
            opts.rss_load
        );
        for &kind in &opts.receivers {
            let r = rss_run(kind, &p, setup, rt, opts)?;
            eprintln!(
                "  {}: idle RSS {:.1} MiB (HWM {:.1}); loaded RSS {:.1} MiB (HWM {:.1}), loss {} dgrams, cpu {:.1}%",
                kind.name(),
                mib(r.idle.rss_kib),
                mib(r.idle.hwm_kib),
                mib(r.loaded.rss_kib),
                mib(r.loaded.hwm_kib),
                r.load_kernel_drops,
                r.cpu_pct_loaded
            );
            rss.push(r);
        }
    }
    let load_after = procfs::loadavg();

    // --- summary ---------------------------------------------------------------------------
    let mut summary = Vec::new();
    let mut ratios = Vec::new();
    println!();
    println!(
        "DogStatsD intake, loopback UDP, receiver pinned to one CPU{}; sustained = highest \
         offered rate with loss <= {}%; medians of {} runs",
        opts.receiver_cpu_quota_pct
            .map(|q| format!(" limited to {q}% of it (cgroup quota)"))
            .unwrap_or_default(),
        opts.max_loss * 100.0,
        opts.repeats
    );
    println!(
        "{:<7} {:<12} {:>11} {:>8} {:>12} {:>9} {:>9}  per-run sustained",
        "mode", "receiver", "sustained", "CPU %", "lines/CPU-s", "RSS MiB", "HWM MiB"
    );
    for &mode in &opts.modes {
        for &kind in &opts.receivers {
            let runs: Vec<&Sweep> = sweeps
                .iter()
                .filter(|s| s.kind == kind && s.mode == mode)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let mut sust: Vec<f64> = runs
                .iter()
                .map(|s| s.sustained().map_or(0.0, |st| st.sent.lines_per_sec()))
                .collect();
            let per_run = sust.clone();
            let mut cpu: Vec<f64> = runs
                .iter()
                .filter_map(|s| s.sustained().map(|st| st.cpu_pct))
                .collect();
            let mut rssv: Vec<f64> = runs
                .iter()
                .filter_map(|s| s.sustained().map(|st| mib(st.mem.rss_kib)))
                .collect();
            let mut hwm: Vec<f64> = runs
                .iter()
                .filter_map(|s| s.steps.last().map(|st| mib(st.mem.hwm_kib)))
                .collect();
            let mut eff: Vec<f64> = runs
                .iter()
                .filter_map(|s| s.lines_per_cpu_second())
                .collect();
            let eff_med = median(&mut eff);
            let sender_bound = runs.iter().filter(|s| s.sender_bound()).count();
            let med = median(&mut sust).unwrap_or(0.0);
            let cpu_med = median(&mut cpu);
            let rss_med = median(&mut rssv);
            let hwm_med = median(&mut hwm);
            println!(
                "{:<7} {:<12} {:>11} {:>8} {:>12} {:>9} {:>9}  [{}]{}",
                mode.name(),
                kind.name(),
                human(med),
                cpu_med.map_or("-".into(), |c| format!("{c:.0}")),
                eff_med.map_or("-".into(), human),
                rss_med.map_or("-".into(), |c| format!("{c:.1}")),
                hwm_med.map_or("-".into(), |c| format!("{c:.1}")),
                per_run
                    .iter()
                    .map(|&x| human(x))
                    .collect::<Vec<_>>()
                    .join(", "),
                if sender_bound > 0 {
                    format!("  ({sender_bound} run(s) sender-bound: real ceiling higher)")
                } else {
                    String::new()
                }
            );
            summary.push(json!({
                "mode": mode.name(),
                "receiver": kind.name(),
                "sustained_lines_per_s_median": med.round(),
                "sustained_lines_per_s_runs": per_run.iter().map(|x| x.round()).collect::<Vec<_>>(),
                "cpu_pct_at_sustained_median": cpu_med.map(round1),
                "lines_per_cpu_second_at_sustained_median": eff_med.map(f64::round),
                "rss_mib_at_sustained_median": rss_med.map(round1),
                "hwm_mib_end_of_sweep_median": hwm_med.map(round1),
                "runs_sender_bound": sender_bound,
            }));
        }
        // Ratio warden / statsdproxy: per repeat (same run, back to back) and of the medians.
        let find = |kind: Kind, r: usize| {
            sweeps
                .iter()
                .find(|s| s.kind == kind && s.mode == mode && s.repeat == r)
        };
        let mut per_repeat = Vec::new();
        let mut eff_per_repeat = Vec::new();
        let mut warden_sender_bound = false;
        for r in 0..opts.repeats {
            if let (Some(w), Some(p)) = (find(Kind::Warden, r), find(Kind::Statsdproxy, r)) {
                warden_sender_bound |= w.sender_bound();
                let sw = w.sustained().map_or(0.0, |st| st.sent.lines_per_sec());
                let sp = p.sustained().map_or(0.0, |st| st.sent.lines_per_sec());
                if sp > 0.0 {
                    per_repeat.push(sw / sp);
                }
                if let (Some(ew), Some(ep)) = (w.lines_per_cpu_second(), p.lines_per_cpu_second()) {
                    eff_per_repeat.push(ew / ep);
                }
            }
        }
        if !per_repeat.is_empty() || !eff_per_repeat.is_empty() {
            let shown = per_repeat.clone();
            let shown_eff = eff_per_repeat.clone();
            let med = median(&mut per_repeat);
            let med_eff = median(&mut eff_per_repeat);
            let fmt = |v: &[f64]| {
                v.iter()
                    .map(|r| format!("{r:.2}x"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "{:<7} ratio warden/statsdproxy: sustained lines/s median {}{} (per run: {}); lines per CPU-second median {} (per run: {})",
                mode.name(),
                med.map_or("-".into(), |m| format!("{m:.2}x")),
                if warden_sender_bound {
                    " (warden sender-bound: a lower bound)"
                } else {
                    ""
                },
                fmt(&shown),
                med_eff.map_or("-".into(), |m| format!("{m:.2}x")),
                fmt(&shown_eff),
            );
            let r2 = |x: f64| (x * 100.0).round() / 100.0;
            ratios.push(json!({
                "mode": mode.name(),
                "sustained_ratio_median_of_per_run": med.map(r2),
                "sustained_ratio_per_run": shown.iter().copied().map(r2).collect::<Vec<_>>(),
                "warden_sender_bound": warden_sender_bound,
                "lines_per_cpu_second_ratio_median": med_eff.map(r2),
                "lines_per_cpu_second_ratio_per_run": shown_eff.iter().copied().map(r2).collect::<Vec<_>>(),
            }));
        }
    }
    if !rss.is_empty() {
        println!();
        println!(
            "{:<12} {:>13} {:>13} {:>15} {:>15}",
            "receiver", "idle RSS MiB", "idle HWM MiB", "loaded RSS MiB", "loaded HWM MiB"
        );
        for r in &rss {
            println!(
                "{:<12} {:>13.1} {:>13.1} {:>15.1} {:>15.1}",
                r.kind.name(),
                mib(r.idle.rss_kib),
                mib(r.idle.hwm_kib),
                mib(r.loaded.rss_kib),
                mib(r.loaded.hwm_kib)
            );
        }
    }
    println!(
        "load average before {:?}, after {:?}",
        load_before, load_after
    );

    let doc = json!({
        "benchmark": "dogstatsd",
        "started_unix": started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "machine": {
            "cpus": sys::online_cpus(),
            "cpu_model": cpu_model(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "settings": {
            "receivers": opts.receivers.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "modes": opts.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "step_seconds": opts.step.as_secs_f64(),
            "repeats": opts.repeats,
            "contexts": opts.contexts,
            "max_loss": opts.max_loss,
            "max_lag_seconds": opts.max_lag.as_secs_f64(),
            "rcvbuf_bytes_via_rmem_default": setup.rcvbuf,
            "generator_cpu": opts.generator_cpu,
            "receiver_cpu": setup.receiver_cpu,
            "nice": setup.nice,
            "receiver_cpu_quota_pct": opts.receiver_cpu_quota_pct,
            "statsdproxy_flush_ms": setup.statsdproxy_flush_ms,
            "intake": opts.intake,
            "single_rates": opts.single_rates,
            "packed_rates": opts.packed_rates,
        },
        "summary": summary,
        "ratios": ratios,
        "sweeps": sweeps.iter().map(|s| json!({
            "receiver": s.kind.name(),
            "mode": s.mode.name(),
            "repeat": s.repeat,
            "rcvbuf_observed_bytes": s.rcvbuf_observed,
            "threads": s.threads,
            "intake_requests": s.intake_requests,
            "agent_counters_check": s.agent_check,
            "sustained_lines_per_s": s.sustained().map(|st| st.sent.lines_per_sec().round()),
            "steps": s.steps.iter().map(Step::to_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "rss": rss.iter().map(|r| json!({
            "receiver": r.kind.name(),
            "contexts": opts.rss_contexts,
            "idle_seconds": opts.idle.as_secs_f64(),
            "idle_rss_kib": r.idle.rss_kib,
            "idle_hwm_kib": r.idle.hwm_kib,
            "load_lines_per_s": r.load.lines_per_sec().round(),
            "load_seconds": r.load.elapsed.as_secs_f64(),
            "load_kernel_drops": r.load_kernel_drops,
            "load_cpu_pct": round1(r.cpu_pct_loaded),
            "loaded_rss_kib": r.loaded.rss_kib,
            "loaded_hwm_kib": r.loaded.hwm_kib,
        })).collect::<Vec<_>>(),
    });
    Ok(doc)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_sets() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn human_rates() {
        assert_eq!(human(1_131_000.0), "1.13M");
        assert_eq!(human(283_000.0), "283k");
        assert_eq!(human(12.0), "12");
    }
}
