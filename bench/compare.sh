#!/usr/bin/env bash
# The whole comparison in one go, so every ratio is measured side by side on one machine:
# Strata RF=1 (`strata start`, one node), Strata RF=3 (`strata dev`: 3 nodes in 3 zones),
# VictoriaMetrics and Prometheus, each started on loopback with a fresh data directory
# (flags in bench/lib.sh), one after the other:
#
#   1. bench/ingest.sh: remote-write ingest at saturation (median of --runs fresh starts),
#      CPU-seconds per million samples at saturation and at a fixed rate, and resident memory
#      per active series after the fixed-rate load;
#   2. bench/query.sh: the TSBS devops dataset loaded into each, the TSBS query types' median
#      and p99 latency, the answers compared, and the bytes on disk after a graceful stop.
#
# Installs Debian's victoria-metrics and prometheus first if they are missing. Prints a
# header (commit, machine, date, versions) and the tables, and keeps them in --out.
# Method, caveats and the published figures: docs/BENCHMARKS.md, "Comparison".
#
# usage: bench/compare.sh [--runs N] [--points P] [--systems "strata-rf1 strata-rf3 vm prometheus"]
#                         [--out FILE] [--no-build] [--quick]
#
#   --runs N   ingest runs per system at saturation (default 3)
#   --points P points per series of each saturation run (default 1500: 15 M samples)
#   --out F    where the report goes as well as stdout (default bench-results-<date>.md in
#              the current directory)
#   --quick    a functional check of the whole pipeline, not a measurement
# Environment: CARGO_TARGET_DIR, VM_BIN, PROM_BIN as in bench/ingest.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3
POINTS=1500
SYSTEMS="strata-rf1 strata-rf3 vm prometheus"
OUT=""
BUILD=1
QUICK=()

die() { echo "compare.sh: $*" >&2; exit 1; }
say() { echo "compare.sh: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --points) POINTS=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --quick) QUICK=(--quick); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
OUT=${OUT:-bench-results-$(date -u +%Y%m%d-%H%M%S).md}

if ! command -v victoria-metrics >/dev/null || ! command -v prometheus >/dev/null; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  say "installing Debian's victoria-metrics and prometheus"
  $sudo apt-get update -q >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    victoria-metrics prometheus >&2
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BUILD" = 1 ]; then
  say "building release binaries (strata, strata-bench) into $TARGET_DIR"
  (cd "$ROOT" && cargo build --release -p strata-node -p strata-bench --bin strata --bin strata-bench) >&2
fi

vm_version=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo unknown)
prom_version=$(dpkg-query -W -f='${Version}' prometheus 2>/dev/null || echo unknown)
{
  echo "Comparison run of $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo
  echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), load average before $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- Debian packages: victoria-metrics $vm_version, prometheus $prom_version"
  echo "- systems, in order: $SYSTEMS"
  echo
  "$ROOT/bench/ingest.sh" --no-build --runs "$RUNS" --points "$POINTS" --systems "$SYSTEMS" "${QUICK[@]}"
  echo
  "$ROOT/bench/query.sh" --no-build --systems "$SYSTEMS" "${QUICK[@]}"
} | tee "$OUT"
say "report in $OUT"
