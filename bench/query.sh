#!/usr/bin/env bash
# Query latency benchmark: TSBS' devops query types (PromQL, `strata-bench query`) on the same
# TSBS cpu-only dataset loaded into each system in turn: Prometheus, VictoriaMetrics and Strata
# RF=1 (`strata start`, one node). For each system: start it on loopback with a fresh data
# directory, load the dataset by remote write (`strata-bench --shape tsbs-cpu`, fixed
# timestamps and seed, so every system gets the same bytes), wait until it answers a count of
# every series, run the query types one at a time (a warm-up query, then --runs measured
# ones per type), stop it. Prints a markdown table of median and p99 latency per type and
# system, the ratios of Strata to Prometheus and to VictoriaMetrics, and what each answered
# (series and points over the measured queries) so a difference in results shows. A second
# table gives each system's bytes on disk after a graceful stop (per sample of the dataset) and
# its resident memory after the queries.
# Method and caveats: docs/BENCHMARKS.md, "Query latency (TSBS devops)".
#
# usage: bench/query.sh [--hosts N] [--hours H] [--runs R] [--systems "prometheus vm strata-rf1"]
#                       [--types T,T,...] [--no-build] [--keep] [--quick]
#
#   --hosts N   TSBS hosts (10 cpu series each; default 1000)
#   --hours H   hours of data at a 10 s interval, ending at the start of the run (default 12)
#   --runs R    measured queries per type (default 10)
#   --quick     a functional check, not a measurement: 50 hosts, 2 h, 2 runs
# Environment: VM_BIN, PROM_BIN, CARGO_TARGET_DIR, WORK_DIR as in bench/ingest.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOSTS=1000
HOURS=12
RUNS=10
SYSTEMS="prometheus vm strata-rf1"
TYPES=""
BUILD=1
KEEP=0
INTERVAL_MS=10000
VM_BIN=${VM_BIN:-/usr/bin/victoria-metrics}
PROM_BIN=${PROM_BIN:-/usr/bin/prometheus}
STRATA_START_ARGS=""

die() { echo "query.sh: $*" >&2; exit 1; }
say() { echo "query.sh: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) HOSTS=$2; shift 2 ;;
    --hours) HOURS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    --quick) HOSTS=50; HOURS=2; RUNS=2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
prepare query

# The dataset: HOSTS x 10 series, one sample every 10 s for HOURS hours, the last on a whole
# 10 s just before the run. Strata's router takes samples up to [write] accept_past_ms old (2 h
# by default), so its configuration here lets the whole span in, with an hour to spare.
SERIES=$((HOSTS * 10))
POINTS=$((HOURS * 360))
END_MS=$(( $(date +%s) / 10 * 10 * 1000 ))
START_MS=$((END_MS - (POINTS - 1) * INTERVAL_MS))
SPAN_MAX_MS=$(( (HOURS + 1) * 3600 * 1000 ))
STRATA_CONFIG=$WORK_DIR/strata.toml
printf '[write]\naccept_past_ms = %d\n' "$SPAN_MAX_MS" >"$STRATA_CONFIG"

RESULTS=$WORK_DIR/results.tsv
DISK=$WORK_DIR/disk.tsv
: >"$RESULTS"
: >"$DISK"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "work directory $WORK_DIR; $(nproc) CPUs; load average $LOAD_BEFORE"
say "dataset: $HOSTS hosts x 10 cpu series x $POINTS points every 10 s = $((SERIES * POINTS)) samples, $START_MS..$END_MS; $RUNS measured queries per type"

query_args=(--start-ms "$START_MS" --end-ms "$END_MS" --hosts "$HOSTS" --runs "$RUNS")
[ -z "$TYPES" ] || query_args+=(--types "$TYPES")

# Waits until BASE answers count() of every series with the whole dataset.
wait_queryable() {
  local base=$1 n
  for _ in $(seq 1 600); do
    n=$(curl -sf "$base/api/v1/query" --data-urlencode "query=count({__name__=~'cpu_.+'})" \
      --data-urlencode "time=$((END_MS / 1000))" | sed -n 's/.*"value":\[[^,]*,"\([0-9]*\)"\].*/\1/p')
    [ "$n" = "$SERIES" ] && return
    kill -0 "$SYS_PID" 2>/dev/null || die "the system exited while loading"
    sleep 0.5
  done
  die "$base did not answer count() = $SERIES within 300 s (last answer: ${n:-none})"
}

RAN=""
for system in $SYSTEMS; do
  case "$system" in
    vm) [ -x "$VM_BIN" ] || { say "SKIP vm: $VM_BIN not found"; continue; } ;;
    prometheus) [ -x "$PROM_BIN" ] || { say "SKIP prometheus: $PROM_BIN not found"; continue; } ;;
  esac
  RAN="$RAN $system"
  dir=$WORK_DIR/$system
  start_system "$system" "$dir"
  url=$(head -n1 <<<"$URLS")
  base=${url%/api/v1/write}
  say "$system: loading at $url"
  "$GEN" --url "$url" --shape tsbs-cpu --series "$SERIES" --points "$POINTS" \
    --interval-ms "$INTERVAL_MS" --end-ms "$END_MS" --span-max-ms "$SPAN_MAX_MS" \
    --batch 2000 --concurrency 5 --seed 1 --progress-s 0 >"$dir.load.out" 2>"$dir.load.err" \
    || { cat "$dir.load.err" >&2; die "$system: loading failed"; }
  result=$(grep '^RESULT ' "$dir.load.out")
  [ "$(field "$result" failed_samples)" = 0 ] \
    || die "$system: samples were refused while loading: $result (see $dir.load.err)"
  say "$system: loaded ($(field "$result" samples_per_s) samples/s); waiting until it answers"
  wait_queryable "$base"
  say "$system: querying $base"
  "$GEN" query --url "$base" "${query_args[@]}" >"$dir.query.out" 2>"$dir.query.err" \
    || { cat "$dir.query.err" >&2; die "$system: queries failed"; }
  rss=$(rss_kb "$SYS_PID")
  stop_system
  # Bytes on disk once the system stopped gracefully (each flushes what it buffers on SIGTERM).
  bytes=$(du -sb "$dir" | cut -f1)
  printf '%s\t%s\t%s\n' "$system" "$bytes" "$rss" >>"$DISK"
  while read -r line; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$(field "$line" type)" "$(field "$line" p50_ms)" \
      "$(field "$line" p99_ms)" "$(field "$line" series)" "$(field "$line" points)" \
      "$(field "$line" sum)" >>"$RESULTS"
  done < <(grep '^QUERY ' "$dir.query.out")
  say "$system: done, RSS after the queries $((rss / 1024)) MiB, $bytes bytes on disk after stopping"
  rm -rf "$dir"
done
[ -n "$RAN" ] || die "no system ran"

cell() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t { print $c }' "$RESULTS"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

echo
echo "TSBS devops query latency, $HOSTS hosts x 10 cpu series x ${HOURS} h at 10 s ($((SERIES * POINTS)) samples); $RUNS measured queries per type after one warm-up, one at a time; $(nproc) CPUs, load average before $LOAD_BEFORE, $(date -u +%Y-%m-%d), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
# Answers are compared against Prometheus' (the reference PromQL engine) when it ran, else the
# first system's.
ref=$(awk '{ print $1 }' <<<"$RAN")
case " $RAN " in *" prometheus "*) ref=prometheus ;; esac
ratio_cols=()
for system in $RAN; do
  case "$system" in strata-*)
    for base in prometheus vm; do
      case " $RAN " in *" $base "*) ratio_cols+=("$system/$base") ;; esac
    done ;;
  esac
done
header="| type |"; rule="|---|"
for system in $RAN; do header="$header $(label "$system") p50 / p99 ms |"; rule="$rule---|"; done
for c in "${ratio_cols[@]}"; do header="$header ${c%/*} / ${c#*/} (p50) |"; rule="$rule---|"; done
header="$header series, points answered by $ref; the others' answers alike? |"; rule="$rule---|"
echo "$header"
echo "$rule"
for type in $(awk -F'\t' '{ print $2 }' "$RESULTS" | awk '!seen[$0]++'); do
  row="| $type |"
  for system in $RAN; do row="$row $(cell "$system" "$type" 3) / $(cell "$system" "$type" 4) |"; done
  for c in "${ratio_cols[@]}"; do
    row="$row $(ratio "$(cell "${c%/*}" "$type" 3)" "$(cell "${c#*/}" "$type" 3)") |"
  done
  # Each system's answers against the reference's: alike when the series and point counts are
  # equal and the sums of values within 1e-9 relative.
  answers="$(cell "$ref" "$type" 5), $(cell "$ref" "$type" 6)"
  for system in $RAN; do
    [ "$system" != "$ref" ] || continue
    same=$(awk -F'\t' -v t="$type" -v a="$ref" -v b="$system" '
      $2 == t && $1 == a { s = $5; p = $6; v = $7 }
      $2 == t && $1 == b { s2 = $5; p2 = $6; v2 = $7 }
      END { m = (v > v2 ? v : v2); if (m < 0) m = -m
            print (s == s2 && p == p2 && (v - v2) ^ 2 <= (1e-9 * m) ^ 2) ? "alike" : "differs" }' "$RESULTS")
    if [ "$same" = alike ]; then
      answers="$answers; $system alike"
    else
      answers="$answers; $system DIFFERS ($(cell "$system" "$type" 5), $(cell "$system" "$type" 6), sum $(cell "$system" "$type" 7) vs $(cell "$ref" "$type" 7))"
    fi
  done
  row="$row $answers |"
  echo "$row"
done

echo
echo "Disk and memory after loading the same dataset ($((SERIES * POINTS)) samples, $SERIES series): bytes under the data directory after a graceful stop; resident memory (VmRSS) after the queries"
echo
echo "| system | durability at ack | bytes on disk | bytes per sample | vs VM | RSS after queries |"
echo "|---|---|---|---|---|---|"
vm_bytes=$(awk -F'\t' '$1 == "vm" { print $2 }' "$DISK")
while IFS=$'\t' read -r system bytes rss; do
  printf '| %s | %s | %s | %.2f | %s | %d MiB |\n' "$(label "$system")" "$(durability "$system")" \
    "$bytes" "$(awk -v b="$bytes" -v n=$((SERIES * POINTS)) 'BEGIN { print b / n }')" \
    "$(ratio "$bytes" "$vm_bytes")" $((rss / 1024))
done <"$DISK"
