#!/usr/bin/env bash
# Side-by-side WAF benchmark: warden-waf vs the real libddwaf 2.1.0 (issue 4).
#
# Both engines run as children of this one script, interleaved round by round (the order within
# a round alternates: W L, L W, ...), on the same ruleset file, the same corpora, the same
# timeout, with one fresh context per evaluation, the same loop (1 untimed warm-up pass, then each
# request evaluated --repeat times back to back) and the same statistics (all samples, and
# best-of-N per request; nearest-rank percentiles). The timed quantity is each engine's own
# per-eval duration: libddwaf's `duration`, warden's `duration_ns` (input handed over by value,
# like libddwaf taking ownership of a ddwaf_object). The table gives the median over rounds of
# each statistic and the ratio warden/libddwaf; interleaving exposes both engines to the same
# machine load, which is what makes the ratio meaningful on a shared host.
#
#   scripts/bench-waf.sh [--rounds 5] [--repeat 5] [--warmup 1] [--out DIR]
#
# libddwaf comes from the reference runner in ../shared/tools/libddwaf-reference, set up (once)
# in a scratch copy outside the repository: $DDREF_DIR (default /tmp/ddref-bench), whose
# setup.sh installs ddtrace 4.16.0 from PyPI into its own .venv. Raw outputs go to --out.
# Results and method: docs/benchmarks.md, "WAF engine vs libddwaf".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

rounds=5 repeat=5 warmup=1 timeout_us=1000000
out=${TMPDIR:-/tmp}/bench-waf-$(date -u +%Y%m%dT%H%M%SZ)
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --timeout-us) timeout_us=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench-waf: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in rounds repeat warmup timeout_us; do
  case ${!v} in ''|*[!0-9]*) echo "bench-waf: --${v//_/-} needs a whole number, got '${!v}'" >&2; exit 2 ;; esac
done
[ "$rounds" -ge 1 ] && [ "$repeat" -ge 1 ] || { echo "bench-waf: --rounds and --repeat must be >= 1" >&2; exit 2; }

SHARED=$ROOT/../shared
RULES=$SHARED/waf/datadog-rules-1.18.2.json
CORPORA=(crs:$SHARED/waf/crs-regression.jsonl benign:$SHARED/waf/benign-faker.jsonl)
TOOL=$SHARED/tools/libddwaf-reference
DDREF_DIR=${DDREF_DIR:-/tmp/ddref-bench}
for f in "$RULES" "$TOOL/ddwaf_reference.py" "${CORPORA[@]#*:}"; do
  [ -e "$f" ] || { echo "bench-waf: missing $f (needs the shared reference material next to the repo)" >&2; exit 1; }
done

# libddwaf reference runner in a scratch copy (never inside the repository).
if [ ! -x "$DDREF_DIR/.venv/bin/python" ]; then
  echo "==> setting up the libddwaf reference runner in $DDREF_DIR (ddtrace 4.16.0 from PyPI)"
  mkdir -p "$DDREF_DIR"
  cp "$TOOL"/* "$DDREF_DIR"/
  chmod u+w "$DDREF_DIR"/*
  "$DDREF_DIR/setup.sh"
fi
PY=$DDREF_DIR/.venv/bin/python
REF=$DDREF_DIR/ddwaf_reference.py
cmp -s "$REF" "$TOOL/ddwaf_reference.py" || { echo "bench-waf: $REF differs from $TOOL/ddwaf_reference.py" >&2; exit 1; }

# Build the warden side once, before any timing.
echo "==> cargo build --release -p warden-waf --example waf_bench"
cargo build --release --quiet -p warden-waf --example waf_bench
BENCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/waf_bench
[ -x "$BENCH" ] || { echo "bench-waf: $BENCH not built" >&2; exit 1; }

mkdir -p "$out"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- crates/waf 2>/dev/null || echo ' (crates/waf modified)')"
  echo "rustc: $(rustc --version)"
  echo "libddwaf: $("$PY" "$REF" --rules "$RULES" --info /dev/null 2>&1 | head -1)"
  echo "params: rounds=$rounds repeat=$repeat warmup=$warmup timeout_us=$timeout_us"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/meta.txt"

run_warden() { "$BENCH" "$RULES" "$2" --repeat "$repeat" --warmup "$warmup" --timeout-us "$timeout_us" >"$out/$1.warden.txt"; }
run_ddwaf() { "$PY" "$REF" --rules "$RULES" --summary-only --repeat "$repeat" --warmup "$warmup" --timeout-us "$timeout_us" "$2" >"$out/$1.libddwaf.txt" 2>"$out/$1.libddwaf.err"; }

for ((r = 1; r <= rounds; r++)); do
  for c in "${CORPORA[@]}"; do
    name=${c%%:*} file=${c#*:}
    if ((r % 2)); then
      run_warden "r$r.$name" "$file"; run_ddwaf "r$r.$name" "$file"
    else
      run_ddwaf "r$r.$name" "$file"; run_warden "r$r.$name" "$file"
    fi
  done
  echo "round $r/$rounds done (load $(cut -d' ' -f1-3 /proc/loadavg))"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/meta.txt"

python3 - "$out" "$rounds" "$repeat" <<'EOF'
import re, statistics, sys
out, rounds, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
STAT = re.compile(r"mean=\s*([\d.]+)\s+p50=\s*([\d.]+)\s+p99=\s*([\d.]+)")

def grab(path, prefixes):
    text = open(path, encoding="utf-8").read()
    found = {}
    for key, prefix in prefixes.items():
        line = next((l for l in text.splitlines() if l.startswith(prefix)), None)
        m = STAT.search(line or "")
        if not m:
            sys.exit("bench-waf: no '%s' statistics in %s" % (prefix, path))
        found[key] = tuple(float(x) for x in m.groups())
    if path.endswith(".warden.txt"):
        found["flagged"] = int(re.search(r"flagged (\d+) /", text).group(1))
    else:
        found["flagged"] = sum(int(x) for x in re.findall(r"flagged=(\d+)", text))
    return found

W = {"all": "engine ", "best": "engine best"}
L = {"all": "   waf  us (libddwaf duration)", "best": "   waf  us best-of-%d per req" % repeat}
if repeat == 1:
    del W["best"], L["best"]
rows, verdict = [], []
for corpus in ("crs", "benign"):
    w = [grab("%s/r%d.%s.warden.txt" % (out, r, corpus), W) for r in range(1, rounds + 1)]
    l = [grab("%s/r%d.%s.libddwaf.txt" % (out, r, corpus), L) for r in range(1, rounds + 1)]
    fw, fl = w[0]["flagged"], l[0]["flagged"]
    print("%-6s flagged: warden %d, libddwaf %d" % (corpus, fw, fl))
    for pol in W:
        med = lambda runs, i: statistics.median(x[pol][i] for x in runs)
        wm, lm = [med(w, i) for i in range(3)], [med(l, i) for i in range(3)]
        ratio = [a / b if b else float("inf") for a, b in zip(wm, lm)]
        spread = [min(x[pol][i] / y[pol][i] for x, y in zip(w, l)) for i in (0, 2)], \
                 [max(x[pol][i] / y[pol][i] for x, y in zip(w, l)) for i in (0, 2)]
        label = "all samples" if pol == "all" else "best-of-%d" % repeat
        rows.append((corpus, label, wm, lm, ratio, spread))
        verdict.append((corpus, label, ratio[0] <= 0.5 and ratio[2] <= 0.5))

print()
print("median of %d rounds, µs per eval (engine duration), ratio = warden / libddwaf" % rounds)
print("| corpus | samples | warden mean | p50 | p99 | libddwaf mean | p50 | p99 | ratio mean | p50 | p99 | per-round ratio mean / p99 |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
for corpus, label, wm, lm, ratio, (lo, hi) in rows:
    print("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f× | %.2f× | %.2f× | %.2f–%.2f / %.2f–%.2f |" % (
        (corpus, label) + tuple(wm) + tuple(lm) + tuple(ratio) + (lo[0], hi[0], lo[1], hi[1])))
print()
for corpus, label, ok in verdict:
    print("goal (mean and p99 <= 0.5x libddwaf) on %s, %s: %s" % (corpus, label, "MET" if ok else "NOT met"))
EOF
echo "raw outputs: $out"
