//! Pre-built DogStatsD traffic (agent spec §9.2).
//!
//! Why pre-built: the generator must not spend its CPU formatting lines while it is trying to
//! offer hundreds of thousands of datagrams per second; building a fixed ring of datagrams up
//! front makes the sender a tight `sendmmsg` loop and makes every run offer identical bytes to
//! every receiver.
//!
//! Shape of the traffic: `contexts` distinct (name, tags) pairs, four tags each, the metric
//! type fixed per name with the mix count 60 % / gauge 25 % / distribution 10 % /
//! histogram 5 %. Lines are ~60 bytes, like a typical tagged client line. Every line is
//! newline-terminated, as the official clients do.

use std::fmt::Write as _;

/// How lines are framed into datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One line per datagram (an unbuffered client).
    Single,
    /// As many lines as fit in [`PACKED_MAX_BYTES`] (a buffering client, ~23 lines).
    Packed,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Packed => "packed",
        }
    }

    pub(crate) fn parse(s: &str) -> anyhow::Result<Mode> {
        match s {
            "single" => Ok(Mode::Single),
            "packed" => Ok(Mode::Packed),
            other => anyhow::bail!("unknown mode `{other}` (expected `single` or `packed`)"),
        }
    }
}

/// Largest packed datagram: the official clients' `OptimalUDPPayloadSize` (MTU 1500).
pub(crate) const PACKED_MAX_BYTES: usize = 1432;

/// Datagrams in the pre-built ring (spec §9.2).
pub(crate) const RING_DATAGRAMS: usize = 4096;

/// The pre-built ring of datagrams.
#[derive(Debug)]
pub(crate) struct Payload {
    pub(crate) datagrams: Vec<Vec<u8>>,
    /// Lines in each datagram (same index as `datagrams`).
    pub(crate) lines: Vec<u32>,
    /// Contexts the ring actually covers.
    pub(crate) contexts_covered: usize,
}

impl Payload {
    pub(crate) fn total_lines(&self) -> u64 {
        self.lines.iter().map(|&l| u64::from(l)).sum()
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.datagrams.iter().map(|d| d.len() as u64).sum()
    }

    pub(crate) fn avg_lines_per_datagram(&self) -> f64 {
        self.total_lines() as f64 / self.datagrams.len().max(1) as f64
    }

    pub(crate) fn avg_datagram_bytes(&self) -> f64 {
        self.total_bytes() as f64 / self.datagrams.len().max(1) as f64
    }
}

/// Deterministic xorshift64*; reproducible traffic without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Metric type of a name, from its index: 12 of every 20 names are counters, 5 gauges,
/// 2 distributions, 1 histogram (60/25/10/5 %).
fn type_of_name(name_idx: usize) -> &'static str {
    match name_idx % 20 {
        0..=11 => "c",
        12..=16 => "g",
        17..=18 => "d",
        _ => "h",
    }
}

/// Number of distinct metric names for a context count: about 4 contexts per name, a multiple
/// of 20 so the type mix is exact.
fn names_for(contexts: usize) -> usize {
    ((contexts / 4) / 20 * 20).max(20)
}

/// The `(name index, tags)` of context `i`; the `ctx` tag makes every context distinct.
fn context_line_prefix(i: usize, names: usize, out: &mut String) -> &'static str {
    let n = i % names;
    let ty = type_of_name(n);
    // name ~16 B, tags ~33 B: with value and type the line is ~60 B.
    let _ = write!(out, "bench.metric_{n:04}");
    ty
}

fn context_tags(i: usize, out: &mut String) {
    let _ = write!(
        out,
        "|#env:bench,svc:s{},zone:z{:02},ctx:{:05}",
        i % 7,
        i % 13,
        i
    );
}

/// Builds one line for context `i` (newline-terminated) into `out`.
fn build_line(i: usize, names: usize, rng: &mut Rng, out: &mut String) {
    out.clear();
    let ty = context_line_prefix(i, names, out);
    out.push(':');
    match ty {
        "c" => {
            let _ = write!(out, "{}", 1 + rng.below(9));
        }
        "g" => {
            let _ = write!(out, "{}.{:02}", rng.below(1000), rng.below(100));
        }
        _ => {
            let _ = write!(out, "{}.{}", rng.below(500), rng.below(10));
        }
    }
    out.push('|');
    out.push_str(ty);
    context_tags(i, out);
    out.push('\n');
}

/// Builds the ring. The ring holds at least [`RING_DATAGRAMS`] datagrams and, when more lines
/// are needed to mention every context once, as many as that takes. Contexts are visited in a
/// shuffled order, cycling, so every context appears before any repeats.
pub(crate) fn build(mode: Mode, contexts: usize, seed: u64) -> anyhow::Result<Payload> {
    anyhow::ensure!(contexts > 0, "--contexts must be at least 1");
    anyhow::ensure!(
        contexts <= 10_000_000,
        "--contexts {contexts} is unreasonably large (max 10 000 000)"
    );
    let names = names_for(contexts);
    let mut rng = Rng(seed | 1);
    let mut order: Vec<usize> = (0..contexts).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }

    let mut datagrams = Vec::with_capacity(RING_DATAGRAMS);
    let mut lines = Vec::with_capacity(RING_DATAGRAMS);
    let mut line = String::with_capacity(96);
    let mut next_ctx = 0usize;
    let mut placed = 0usize;
    let mut pending: Option<String> = None;
    while datagrams.len() < RING_DATAGRAMS || placed < contexts {
        let mut dgram: Vec<u8> = Vec::with_capacity(PACKED_MAX_BYTES);
        let mut n = 0u32;
        loop {
            let l = match pending.take() {
                Some(l) => l,
                None => {
                    build_line(order[next_ctx % contexts], names, &mut rng, &mut line);
                    next_ctx += 1;
                    line.clone()
                }
            };
            let fits = match mode {
                Mode::Single => n == 0,
                Mode::Packed => dgram.len() + l.len() <= PACKED_MAX_BYTES,
            };
            if !fits {
                pending = Some(l);
                break;
            }
            dgram.extend_from_slice(l.as_bytes());
            placed += 1;
            n += 1;
            if mode == Mode::Single {
                break;
            }
        }
        datagrams.push(dgram);
        lines.push(n);
    }
    Ok(Payload {
        datagrams,
        lines,
        contexts_covered: placed.min(contexts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn all_lines(p: &Payload) -> Vec<String> {
        p.datagrams
            .iter()
            .flat_map(|d| {
                std::str::from_utf8(d)
                    .expect("payload is ASCII")
                    .split_terminator('\n')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn single_mode_is_one_line_of_about_60_bytes_per_datagram() {
        let p = build(Mode::Single, 1000, 7).expect("build");
        assert_eq!(p.datagrams.len(), RING_DATAGRAMS);
        assert!(p.lines.iter().all(|&l| l == 1));
        let avg = p.avg_datagram_bytes();
        assert!((52.0..=68.0).contains(&avg), "avg datagram {avg} B");
        for d in &p.datagrams {
            assert_eq!(d.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(d.last(), Some(&b'\n'));
        }
    }

    #[test]
    fn packed_mode_fits_the_udp_payload_and_holds_about_23_lines() {
        let p = build(Mode::Packed, 1000, 7).expect("build");
        assert_eq!(p.datagrams.len(), RING_DATAGRAMS);
        assert!(p.datagrams.iter().all(|d| d.len() <= PACKED_MAX_BYTES));
        let avg = p.avg_lines_per_datagram();
        assert!((21.0..=26.0).contains(&avg), "avg lines {avg}");
        assert_eq!(all_lines(&p).len() as u64, p.total_lines());
    }

    #[test]
    fn lines_are_well_formed_dogstatsd_with_four_tags() {
        let p = build(Mode::Packed, 1000, 3).expect("build");
        for line in all_lines(&p) {
            let (name, rest) = line.split_once(':').expect("name:value");
            assert!(name.starts_with("bench.metric_"), "{line}");
            let parts: Vec<&str> = rest.split('|').collect();
            assert_eq!(parts.len(), 3, "{line}");
            parts[0].parse::<f64>().expect("numeric value");
            assert!(["c", "g", "d", "h"].contains(&parts[1]), "{line}");
            let tags = parts[2].strip_prefix('#').expect("tags");
            assert_eq!(tags.split(',').count(), 4, "{line}");
        }
    }

    #[test]
    fn type_mix_is_60_25_10_5_percent() {
        let p = build(Mode::Packed, 1000, 11).expect("build");
        let lines = all_lines(&p);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for l in &lines {
            let ty = l.split('|').nth(1).expect("type").to_owned();
            *counts.entry(ty).or_default() += 1;
        }
        let total = lines.len() as f64;
        for (ty, want) in [("c", 0.60), ("g", 0.25), ("d", 0.10), ("h", 0.05)] {
            let got = counts.get(ty).copied().unwrap_or(0) as f64 / total;
            assert!((got - want).abs() < 0.02, "{ty}: {got} vs {want}");
        }
    }

    #[test]
    fn every_context_appears_and_a_name_has_one_type() {
        for (mode, contexts) in [(Mode::Packed, 10_000), (Mode::Single, 10_000)] {
            let p = build(mode, contexts, 5).expect("build");
            assert_eq!(p.contexts_covered, contexts);
            let lines = all_lines(&p);
            let mut ctx = HashSet::new();
            let mut types: HashMap<String, String> = HashMap::new();
            for l in &lines {
                let (name, rest) = l.split_once(':').expect("name");
                let mut parts = rest.split('|');
                let ty = parts.nth(1).expect("type").to_owned();
                let tags = parts.next().expect("tags").to_owned();
                ctx.insert(format!("{name}{tags}"));
                let prev = types.entry(name.to_owned()).or_insert_with(|| ty.clone());
                assert_eq!(*prev, ty, "{name} has two types");
            }
            assert_eq!(ctx.len(), contexts, "{mode:?}");
        }
    }

    #[test]
    fn zero_contexts_is_rejected() {
        let err = build(Mode::Single, 0, 1).expect_err("must fail");
        assert!(err.to_string().contains("--contexts"));
    }
}
