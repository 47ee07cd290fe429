#!/usr/bin/env bash
# Warden server vs VictoriaMetrics, side by side on one generated Datadog workload.
#
#   scripts/bench-server-vs-vm.sh [--hosts 1000] [--hours 1] [--clients 4] [--reps 20] ...
#
# Needs VictoriaMetrics (Debian: `apt-get install victoria-metrics`). Builds `warden` and the
# driver (crates/bench-server/examples/vs_victoriametrics.rs) in release mode in a private
# target dir, then runs both servers on loopback one after the other. Extra arguments go to
# the driver (see its header); SKIP_BUILD=1 reuses binaries already built. Results and server logs: $WORK (default /tmp/warden-vs-vm).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/vmbench}"
WORK="${WORK:-/tmp/warden-vs-vm}"
VM_BIN="${VM_BIN:-$(command -v victoria-metrics || command -v victoriametrics || true)}"
if [ -z "$VM_BIN" ]; then
  echo "victoria-metrics not found (apt-get install victoria-metrics, or set VM_BIN)" >&2
  exit 1
fi
if [ -z "${SKIP_BUILD:-}" ]; then   # SKIP_BUILD=1: reuse the binaries already in $CARGO_TARGET_DIR
  cargo build --release -p warden
  cargo build --release -p warden-bench-server --example vs_victoriametrics
fi
mkdir -p "$WORK"
echo "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "victoria-metrics: $(dpkg-query -W -f '${Version}' victoria-metrics 2>/dev/null || echo "$VM_BIN")"
"$CARGO_TARGET_DIR/release/examples/vs_victoriametrics" \
  --warden "$CARGO_TARGET_DIR/release/warden" --vm "$VM_BIN" --work "$WORK" "$@" \
  2>&1 | tee "$WORK/result.txt"
