#!/usr/bin/env bash
# Remote-write ingest benchmark: Strata RF=3 (`strata dev`, 3 nodes in one process), Strata
# RF=1 (`strata start`, one node) and VictoriaMetrics, each started on loopback with a fresh
# data directory and loaded at saturation by target/release/strata-bench. Per run it measures
# the acknowledged samples/s, the system's CPU seconds during the load (utime + stime of its
# process from /proc/PID/stat) and the generator's own CPU (bash `time`), and prints a markdown
# table of medians over --runs runs. Then, unless --rate 0, one steady run per system on a fresh
# start: --rate-series series sent at a fixed --rate samples/s, for the system's CPU seconds per
# million samples at that rate and its resident memory (VmRSS) per active series afterwards.
# Method and caveats: docs/BENCHMARKS.md, "Ingest (remote write)".
#
# usage: bench/ingest.sh [--runs N] [--systems "vm strata-rf1 strata-rf3 prometheus"] [--series N]
#                        [--points P] [--interval-ms MS] [--batch N] [--concurrency C]
#                        [--shape node_exporter|tsbs-cpu] [--order rounds|pipelined]
#                        [--rate R] [--rate-series N] [--rate-points P]
#                        [--no-build] [--keep] [--quick]
#
#   --rate R         samples/s of the steady run (default 50000; 0: no steady run)
#   --rate-series N  series of the steady run (default 100000), --rate-points P points each
#                    (default 30) every 10 s: the active series that RSS is divided by
#
#   --quick     a functional check, not a measurement: 10 points per series, 1 run
#   --no-build  use the binaries already in $CARGO_TARGET_DIR/release (default target/)
#   --keep      keep the work directory (data, logs, per-run results)
# Environment: VM_BIN (default /usr/bin/victoria-metrics), PROM_BIN (/usr/bin/prometheus),
# CARGO_TARGET_DIR,
# STRATA_START_ARGS (extra flags for `strata start`), WORK_DIR (default a fresh mktemp -d).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3
SYSTEMS="vm strata-rf1 strata-rf3"
SERIES=10000
# 10 000 series x 3 000 points = 30 M samples: >= 30 s of load for a system that takes
# 1 M samples/s; the span (3 000 x 1 s = 50 min) stays inside Strata's 2 h window.
POINTS=3000
INTERVAL_MS=1000
BATCH=2000
# 10 000 series / 2 000 per request = 5 requests per scrape round, so 5 can be in flight.
CONCURRENCY=5
SHAPE=node_exporter
ORDER=rounds
RATE=50000
RATE_SERIES=100000
RATE_POINTS=30
BUILD=1
KEEP=0
VM_BIN=${VM_BIN:-/usr/bin/victoria-metrics}
PROM_BIN=${PROM_BIN:-/usr/bin/prometheus}
STRATA_START_ARGS=${STRATA_START_ARGS:-}
STRATA_CONFIG=${STRATA_CONFIG:-}

die() { echo "ingest.sh: $*" >&2; exit 1; }
say() { echo "ingest.sh: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --series) SERIES=$2; shift 2 ;;
    --points) POINTS=$2; shift 2 ;;
    --interval-ms) INTERVAL_MS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --shape) SHAPE=$2; shift 2 ;;
    --order) ORDER=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --rate-series) RATE_SERIES=$2; shift 2 ;;
    --rate-points) RATE_POINTS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    --quick) POINTS=10; RUNS=1; RATE_SERIES=5000; RATE_POINTS=4; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CLK_TCK=$(getconf CLK_TCK)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
prepare ingest


RESULTS=$WORK_DIR/results.tsv
STEADY=$WORK_DIR/steady.tsv
: >"$RESULTS"
: >"$STEADY"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "work directory $WORK_DIR; $(nproc) CPUs; load average $LOAD_BEFORE"
say "load: $SERIES $SHAPE series x $POINTS points every $INTERVAL_MS ms, batch $BATCH, concurrency $CONCURRENCY, order $ORDER; $RUNS run(s) per system"

RAN=""
for system in $SYSTEMS; do
  if [ "$system" = vm ] && [ ! -x "$VM_BIN" ]; then
    say "SKIP vm: $VM_BIN not found"
    continue
  fi
  if [ "$system" = prometheus ] && [ ! -x "$PROM_BIN" ]; then
    say "SKIP prometheus: $PROM_BIN not found"
    continue
  fi
  RAN="$RAN $system"
  for run in $(seq 1 "$RUNS"); do
    dir=$WORK_DIR/$system-$run
    start_system "$system" "$dir"
    mapfile -t urls <<<"$URLS"
    url_args=()
    for u in "${urls[@]}"; do url_args+=(--url "$u"); done
    before=$(cpu_ticks "$SYS_PID")
    TIMEFORMAT='%U %S'
    { time "$GEN" "${url_args[@]}" --series "$SERIES" --points "$POINTS" \
        --interval-ms "$INTERVAL_MS" --batch "$BATCH" --concurrency "$CONCURRENCY" \
        --shape "$SHAPE" --order "$ORDER" --seed "$run" --progress-s 0 \
        >"$dir.gen.out" 2>"$dir.gen.err"; } 2>"$dir.gen.time" \
      || { cat "$dir.gen.err" >&2; die "$system run $run: the generator failed (see above)"; }
    after=$(cpu_ticks "$SYS_PID")
    stop_system
    result=$(grep '^RESULT ' "$dir.gen.out") || die "$system run $run: no RESULT line in $dir.gen.out"
    samples=$(field "$result" samples)
    rate=$(field "$result" samples_per_s)
    p99=$(field "$result" p99_ms)
    errors=$(field "$result" errors)
    failed=$(field "$result" failed_samples)
    [ "$failed" = 0 ] || say "WARNING: $system run $run: $failed samples were refused or given up on (errors $errors; see $dir.gen.err); samples/s counts acknowledged samples only"
    read -r gen_user gen_sys <"$dir.gen.time"
    sys_cpu=$(awk -v a="$before" -v b="$after" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    per_m=$(awk -v c="$sys_cpu" -v s="$samples" 'BEGIN { printf "%.3f", c / (s / 1e6) }')
    gen_per_m=$(awk -v u="$gen_user" -v y="$gen_sys" -v s="$samples" 'BEGIN { printf "%.3f", (u + y) / (s / 1e6) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$run" "$rate" "$sys_cpu" "$per_m" "$gen_per_m" "$p99" "$errors" >>"$RESULTS"
    say "$system run $run/$RUNS: $rate samples/s, system CPU $sys_cpu s = $per_m CPU-s per M samples, generator $gen_per_m CPU-s per M, p99 $p99 ms, errors $errors"
    rm -rf "$dir"
  done
  [ "$RATE" != 0 ] || continue
  dir=$WORK_DIR/$system-steady
  start_system "$system" "$dir"
  mapfile -t urls <<<"$URLS"
  url_args=()
  for u in "${urls[@]}"; do url_args+=(--url "$u"); done
  rss_idle=$(rss_kb "$SYS_PID")
  before=$(cpu_ticks "$SYS_PID")
  "$GEN" "${url_args[@]}" --series "$RATE_SERIES" --points "$RATE_POINTS" --interval-ms 10000 \
    --batch "$BATCH" --concurrency "$CONCURRENCY" --shape "$SHAPE" --rate "$RATE" --seed 1 \
    --progress-s 0 >"$dir.gen.out" 2>"$dir.gen.err" \
    || { cat "$dir.gen.err" >&2; die "$system steady run: the generator failed (see above)"; }
  after=$(cpu_ticks "$SYS_PID")
  # Memory once the load is over and the system had a moment to settle (a Go runtime's
  # garbage collector, a write buffer's flush).
  sleep 5
  rss_loaded=$(rss_kb "$SYS_PID")
  stop_system
  result=$(grep '^RESULT ' "$dir.gen.out") || die "$system steady run: no RESULT line in $dir.gen.out"
  samples=$(field "$result" samples)
  [ "$(field "$result" failed_samples)" = 0 ] || say "WARNING: $system steady run: samples were refused: $result"
  steady_per_m=$(awk -v a="$before" -v b="$after" -v t="$CLK_TCK" -v s="$samples" 'BEGIN { printf "%.3f", (b - a) / t / (s / 1e6) }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$system" "$(field "$result" samples_per_s)" "$steady_per_m" "$rss_idle" "$rss_loaded" >>"$STEADY"
  say "$system steady run: $(field "$result" samples_per_s) samples/s (asked $RATE), $steady_per_m CPU-s per M samples, RSS idle $((rss_idle / 1024)) MiB, after $RATE_SERIES series $((rss_loaded / 1024)) MiB"
  rm -rf "$dir"
done

[ -n "$RAN" ] || die "no system ran"

col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$RESULTS" | median; }
vm_rate=""; vm_cpu=""
case " $RAN " in *" vm "*) vm_rate=$(col vm 3); vm_cpu=$(col vm 5) ;; esac

echo
echo "Remote-write ingest, medians of $RUNS run(s): $SERIES $SHAPE series x $POINTS points every ${INTERVAL_MS} ms, batch $BATCH, concurrency $CONCURRENCY, order $ORDER; $(nproc) CPUs, load average before $LOAD_BEFORE, $(date -u +%Y-%m-%d), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| system | durability at ack | samples/s | CPU-s per M samples | samples/s vs VM | CPU per sample vs VM | generator CPU-s per M | p99 write | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
for system in $RAN; do
  rate=$(col "$system" 3)
  per_m=$(col "$system" 5)
  gen=$(col "$system" 6)
  p99=$(col "$system" 7)
  errors=$(awk -F'\t' -v s="$system" '$1 == s { print $8 }' "$RESULTS" | sort -u | paste -sd' ')
  if [ -n "$vm_rate" ]; then
    r_rate=$(awk -v a="$rate" -v b="$vm_rate" 'BEGIN { printf "%.2f", a / b }')
    r_cpu=$(awk -v a="$per_m" -v b="$vm_cpu" 'BEGIN { printf "%.2f", a / b }')
  else
    r_rate="n/a"; r_cpu="n/a"
  fi
  printf '| %s | %s | %.0f | %.3f | %s | %s | %.3f | %.1f ms | %s |\n' \
    "$(label "$system")" "$(durability "$system")" "$rate" "$per_m" "$r_rate" "$r_cpu" "$gen" "$p99" "$errors"
done

[ -s "$STEADY" ] || exit 0
steady() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$STEADY"; }
vm_steady=$(steady vm 3)
prom_rss=$(steady prometheus 5)
echo
echo "Steady load: $RATE_SERIES $SHAPE series x $RATE_POINTS points every 10 s sent at $RATE samples/s (one run per system, fresh start); CPU of the system's process during the load; resident memory (VmRSS) 5 s after it, divided by the $RATE_SERIES active series"
echo
echo "| system | samples/s achieved | CPU-s per M samples | vs VM | RSS idle | RSS after load | RSS per active series | vs Prometheus |"
echo "|---|---|---|---|---|---|---|---|"
for system in $RAN; do
  [ -n "$(steady "$system" 1)" ] || continue
  per_m=$(steady "$system" 3)
  idle=$(steady "$system" 4)
  loaded=$(steady "$system" 5)
  r_cpu=$(awk -v a="$per_m" -v b="$vm_steady" 'BEGIN { if (b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }')
  r_rss=$(awk -v a="$loaded" -v b="$prom_rss" 'BEGIN { if (b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }')
  printf '| %s | %.0f | %.3f | %s | %d MiB | %d MiB | %.0f bytes | %s |\n' "$(label "$system")" \
    "$(steady "$system" 2)" "$per_m" "$r_cpu" $((idle / 1024)) $((loaded / 1024)) \
    "$(awk -v k="$loaded" -v n="$RATE_SERIES" 'BEGIN { print k * 1024 / n }')" "$r_rss"
done
