//! `warden-bench`: load generator and side-by-side benchmark driver for the DogStatsD intake.
//!
//! Not part of CI: a benchmark is a measurement on a known machine, not a test. The method is
//! the one of agent spec §9.2 (pre-built datagrams, `sendmmsg` batches, kernel drop counters,
//! pinned CPUs, medians of repeated runs) so that numbers can be compared with the published
//! anchors; `docs/benchmarks.md` records how to run it and what it measured.
//!
//! Subcommands:
//! * `dogstatsd`: the full benchmark (warden agent vs statsdproxy, packed and single-line
//!   framing, plus RSS idle and at 10k contexts), table on stdout, JSON to a file.
//! * `gen`: the generator alone, to point at any receiver.
//! * `sink`: the minimal `recvmmsg` count receiver (used as the `sink` baseline receiver).

mod driver;
mod generator;
mod intake;
mod payload;
mod procfs;
mod receivers;
mod sys;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::payload::Mode;
use crate::receivers::Kind;

#[derive(Parser, Debug)]
#[command(
    name = "warden-bench",
    about = "DogStatsD intake benchmark (agent spec §9.2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Side-by-side benchmark: sustained lines/s at <= 0.05 % loss, and RSS.
    Dogstatsd(Box<BenchArgs>),
    /// Offer a fixed rate to 127.0.0.1:PORT and print what was sent.
    Gen(GenArgs),
    /// Minimal receiver: recvmmsg x 64, count only (runs until killed).
    Sink {
        #[arg(long)]
        port: u16,
    },
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Receivers, in order: warden, statsdproxy, sink.
    #[arg(long, value_delimiter = ',', default_value = "warden,statsdproxy")]
    receivers: Vec<String>,
    /// Framing modes: packed (~23 lines per 1432 B datagram), single (1 line per datagram).
    #[arg(long, value_delimiter = ',', default_value = "packed,single")]
    modes: Vec<String>,
    /// Offered line rates for `single`, lines/s: a ladder climbed until two steps in a row
    /// fail, loss passes 5 %, or the generator cannot offer the rate (steps of ~19 % near the
    /// interesting range, so ratios are resolved to about that).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "25000,50000,71000,100000,120000,141000,170000,200000,240000,283000,340000,400000,480000,566000,670000,800000"
    )]
    single_rates: Vec<f64>,
    /// Offered line rates for `packed`, lines/s.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "200000,400000,566000,800000,950000,1130000,1350000,1600000,1900000,2260000,2700000,3200000,3800000,4500000,5400000,6400000"
    )]
    packed_rates: Vec<f64>,
    /// Seconds per step.
    #[arg(long, default_value_t = 8.0)]
    step_secs: f64,
    /// Repeats of every (receiver, mode) ladder; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Distinct contexts in the throughput traffic.
    #[arg(long, default_value_t = 1000)]
    contexts: usize,
    /// Loss threshold for "sustained", percent.
    #[arg(long, default_value_t = 0.05)]
    max_loss_pct: f64,
    /// Largest time a receiver may keep working after a step ends (its lag behind the offered
    /// load) for the step to count as sustained.
    #[arg(long, default_value_t = 0.5)]
    max_lag_secs: f64,
    /// Receive buffer for every receiver, bytes, applied through net.core.rmem_default while
    /// each receiver binds (needs root; restored at once). 0 = leave the system default.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    rcvbuf: u64,
    /// CPU for the generator (and the bench's intake); "none" to not pin.
    #[arg(long, default_value = "0")]
    generator_cpu: String,
    /// CPU for the receiver process (all its threads); "none" to not pin.
    #[arg(long, default_value = "1")]
    receiver_cpu: String,
    /// Nice value for the receivers and the generator (same for all; negative needs root),
    /// so that other work on a shared machine does not steal their CPU. "none" to leave it.
    #[arg(long, default_value = "-10", allow_hyphen_values = true)]
    nice: String,
    /// Limit every receiver to this percentage of one CPU (cgroup v1 cpu quota, 10 ms
    /// period), for when the generator cannot saturate a receiver on a whole core.
    #[arg(long)]
    receiver_cpu_quota: Option<f64>,
    /// The warden binary (default: `warden` next to this executable).
    #[arg(long)]
    warden_bin: Option<PathBuf>,
    /// The statsdproxy binary (default: ~/.cargo/bin/statsdproxy).
    #[arg(long)]
    statsdproxy_bin: Option<PathBuf>,
    /// statsdproxy aggregate-metrics flush interval, ms.
    #[arg(long, default_value_t = 1000)]
    statsdproxy_flush_ms: u64,
    /// Where the agent ships: testkit (HTTPS, decodes, gives agent counters) or http.
    #[arg(long, default_value = "testkit")]
    intake: String,
    /// Write the JSON result here.
    #[arg(long, default_value = "target/bench-dogstatsd.json")]
    json: PathBuf,
    /// Skip the throughput ladders (RSS only).
    #[arg(long)]
    no_throughput: bool,
    /// Skip the RSS measurement.
    #[arg(long)]
    no_rss: bool,
    /// Seconds of idle before reading idle RSS.
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Distinct contexts for the loaded RSS reading.
    #[arg(long, default_value_t = 10_000)]
    rss_contexts: usize,
    /// Offered lines/s (packed) while measuring loaded RSS.
    #[arg(long, default_value_t = 200_000.0)]
    rss_rate: f64,
    /// Seconds of load before reading loaded RSS.
    #[arg(long, default_value_t = 20.0)]
    rss_secs: f64,
}

#[derive(clap::Args, Debug)]
struct GenArgs {
    #[arg(long)]
    port: u16,
    #[arg(long, default_value = "packed")]
    mode: String,
    /// Lines per second.
    #[arg(long, default_value_t = 100_000.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    #[arg(long, default_value_t = 1000)]
    contexts: usize,
    /// Pin the generator to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

fn secs(name: &str, s: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        s.is_finite() && (0.0..=3600.0).contains(&s),
        "--{name} must be between 0 and 3600 seconds, got {s}"
    );
    Ok(Duration::from_secs_f64(s))
}

fn cpu_arg(name: &str, s: &str) -> anyhow::Result<Option<usize>> {
    if s == "none" {
        return Ok(None);
    }
    let cpu: usize = s
        .parse()
        .with_context(|| format!("--{name} must be a CPU index or `none`, got {s:?}"))?;
    let n = sys::online_cpus();
    anyhow::ensure!(cpu < n, "--{name} {cpu}: this machine has {n} CPU(s)");
    Ok(Some(cpu))
}

fn rates(name: &str, v: &[f64]) -> anyhow::Result<Vec<f64>> {
    anyhow::ensure!(!v.is_empty(), "--{name} needs at least one rate");
    for &r in v {
        anyhow::ensure!(
            r.is_finite() && r > 0.0,
            "--{name}: rate {r} must be positive"
        );
    }
    Ok(v.to_vec())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let receivers = args
        .receivers
        .iter()
        .map(|s| Kind::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let modes = args
        .modes
        .iter()
        .map(|s| Mode::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    anyhow::ensure!(
        (0.0..100.0).contains(&args.max_loss_pct),
        "--max-loss-pct must be in [0, 100)"
    );
    let generator_cpu = cpu_arg("generator-cpu", &args.generator_cpu)?;
    let receiver_cpu = cpu_arg("receiver-cpu", &args.receiver_cpu)?;
    if generator_cpu.is_some() && generator_cpu == receiver_cpu {
        eprintln!("warning: generator and receiver share CPU {generator_cpu:?}");
    }
    let exe = std::env::current_exe().context("locating own executable")?;
    let warden_bin = args.warden_bin.unwrap_or_else(|| {
        exe.parent()
            .map(|d| d.join("warden"))
            .unwrap_or_else(|| PathBuf::from("warden"))
    });
    let statsdproxy_bin = args.statsdproxy_bin.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/statsdproxy"))
            .unwrap_or_else(|| PathBuf::from("statsdproxy"))
    });
    if receivers.contains(&Kind::Warden) {
        anyhow::ensure!(
            warden_bin.exists(),
            "warden binary not found at {} (build it: cargo build --release -p warden, or pass --warden-bin)",
            warden_bin.display()
        );
    }
    if receivers.contains(&Kind::Statsdproxy) {
        anyhow::ensure!(
            statsdproxy_bin.exists(),
            "statsdproxy not found at {} (cargo install statsdproxy --version 0.4.1, or pass --statsdproxy-bin)",
            statsdproxy_bin.display()
        );
    }

    // Pin the whole bench (intake threads included) away from the receiving core: threads
    // inherit the mask of the thread that creates them, so pin before the runtime exists.
    if let Some(cpu) = generator_cpu {
        sys::pin_current_thread(cpu)?;
    }
    let nice = match args.nice.as_str() {
        "none" => None,
        n => {
            let v: i32 = n
                .parse()
                .ok()
                .filter(|v| (-20..=19).contains(v))
                .with_context(|| format!("--nice must be -20..19 or `none`, got {n:?}"))?;
            sys::set_nice(v).with_context(|| format!("setting nice {v} (needs root when < 0)"))?;
            Some(v)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("bench-intake")
        .build()?;
    anyhow::ensure!(
        ["testkit", "http"].contains(&args.intake.as_str()),
        "unknown --intake {:?} (testkit or http)",
        args.intake
    );
    let cgroup = args
        .receiver_cpu_quota
        .map(receivers::CpuCgroup::create)
        .transpose()?;
    let work_dir = std::env::temp_dir().join(format!("warden-bench-{}", std::process::id()));
    let setup = receivers::Setup {
        warden_bin,
        statsdproxy_bin,
        rcvbuf: args.rcvbuf,
        receiver_cpu,
        nice,
        server_url: String::new(),
        ca_file: None,
        api_key: intake::API_KEY.to_owned(),
        statsdproxy_flush_ms: args.statsdproxy_flush_ms,
        work_dir: work_dir.clone(),
        cgroup: cgroup.as_ref().map(|c| c.dir.clone()),
    };
    let opts = driver::Opts {
        receivers,
        modes,
        single_rates: rates("single-rates", &args.single_rates)?,
        packed_rates: rates("packed-rates", &args.packed_rates)?,
        step: secs("step-secs", args.step_secs)?,
        repeats: args.repeats,
        contexts: args.contexts,
        max_loss: args.max_loss_pct / 100.0,
        generator_cpu,
        warmup: Duration::from_secs(2),
        drain: Duration::from_secs_f64(
            3.0f64.max(1.0 + 0.1 * 100.0 / args.receiver_cpu_quota.unwrap_or(100.0)),
        ),
        max_lag: secs("max-lag-secs", args.max_lag_secs)?,
        gap: Duration::from_millis(500),
        throughput: !args.no_throughput,
        rss: !args.no_rss,
        idle: secs("idle-secs", args.idle_secs)?,
        rss_contexts: args.rss_contexts,
        rss_rate: args.rss_rate,
        rss_load: secs("rss-secs", args.rss_secs)?,
        intake: args.intake.clone(),
        receiver_cpu_quota_pct: args.receiver_cpu_quota,
    };
    let result = driver::run(&opts, &setup, &rt);
    receivers::cleanup(&work_dir);
    drop(cgroup);
    let doc = result?;
    if let Some(dir) = args.json.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("JSON: {}", args.json.display());
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn gen_cmd(args: GenArgs) -> anyhow::Result<()> {
    let mode = Mode::parse(&args.mode)?;
    if let Some(cpu) = args.cpu {
        sys::pin_current_thread(cpu)?;
    }
    let p = payload::build(mode, args.contexts, 0x5eed)?;
    let mut g = generator::Generator::new(args.port, &p)?;
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let st = g.run(args.rate, secs("secs", args.secs)?);
    println!(
        "sent {} datagrams, {} lines, {} bytes in {:.2} s: {} lines/s, {:.0} datagrams/s, {} send errors",
        st.datagrams,
        st.lines,
        st.bytes,
        st.elapsed.as_secs_f64(),
        driver::human(st.lines_per_sec()),
        st.datagrams_per_sec(),
        st.errors
    );
    Ok(())
}

fn sink_cmd(port: u16) -> anyhow::Result<()> {
    let sock = std::net::UdpSocket::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    sys::sink_count(&sock).context("recvmmsg")?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Dogstatsd(a) => bench(*a),
        Cmd::Gen(a) => gen_cmd(a),
        Cmd::Sink { port } => sink_cmd(port),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
