# Shared by bench/ingest.sh and bench/query.sh (sourced, not run): start and stop each
# system on loopback with a fresh data directory, and small helpers. The sourcing script sets
# ROOT, TARGET_DIR, BUILD, KEEP, VM_BIN, PROM_BIN, STRATA_START_ARGS, STRATA_CONFIG, defines
# die and say, and calls `prepare NAME` (binaries, work directory, clean-up on exit).
#
# Systems:
#   vm          Debian's victoria-metrics: -search.latencyOffset=0s -search.disableCache
#   prometheus  Debian's prometheus: --web.enable-remote-write-receiver, no scrape jobs
#   strata-rf1  `strata start`: one node, a cluster of its own (RF=1); with STRATA_CONFIG set,
#               that TOML file is its --config
#   strata-rf3  `strata dev`: 3 nodes in 3 zones in one process, every shard on all three;
#               with STRATA_CONFIG set, that file's shared sections are its --config
# After start_system, URLS holds the remote-write URL(s), one per line; a URL without its
# /api/v1/write suffix is the system's Prometheus HTTP API.

# Sets STRATA and GEN (built first unless BUILD=0) and WORK_DIR (a fresh
# /tmp/strata-NAME.XXXXXX unless set), and on exit stops the running system and removes
# WORK_DIR (kept with KEEP=1). Reads ROOT, TARGET_DIR, BUILD, KEEP.
prepare() {
  STRATA=$TARGET_DIR/release/strata
  GEN=$TARGET_DIR/release/strata-bench
  if [ "$BUILD" = 1 ]; then
    say "building release binaries (strata, strata-bench) into $TARGET_DIR"
    (cd "$ROOT" && cargo build --release -p strata-node -p strata-bench --bin strata --bin strata-bench) >&2
  fi
  [ -x "$STRATA" ] || die "$STRATA missing (build it, or drop --no-build)"
  [ -x "$GEN" ] || die "$GEN missing (build it, or drop --no-build)"
  WORK_DIR=${WORK_DIR:-$(mktemp -d "/tmp/strata-$1.XXXXXX")}
  mkdir -p "$WORK_DIR"
  SYS_PID=""
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

cleanup() {
  if [ -n "$SYS_PID" ] && kill -0 "$SYS_PID" 2>/dev/null; then
    kill -TERM "$SYS_PID" 2>/dev/null || true
    wait "$SYS_PID" 2>/dev/null || true
  fi
  if [ "$KEEP" = 1 ]; then say "kept $WORK_DIR"; else rm -rf "$WORK_DIR"; fi
}

# Waits until URL answers 2xx, or the system (SYS_PID) exited; WHAT names it in errors.
wait_ready() {
  local url=$1 what=$2 log=$3
  for _ in $(seq 1 300); do
    curl -sf "$url" >/dev/null 2>&1 && return
    kill -0 "$SYS_PID" 2>/dev/null || { cat "$log" >&2; die "$what exited"; }
    sleep 0.2
  done
  die "$what not ready at $url within 60 s"
}

# utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat; the
# command name in field 2 may hold spaces, so count from the closing parenthesis).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# Resident memory of a process, in KiB.
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

port_in_use() { ss -Htln "sport = :$1" | grep -q .; }

free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 20000))
    port_in_use "$p" || { echo "$p"; return; }
  done
  die "no free port found"
}

# Waits until FILE has N lines announcing a remote-write URL, or the process died.
wait_for_urls() {
  local file=$1 n=$2 pid=$3 what=$4
  for _ in $(seq 1 600); do
    if [ "$(grep -c 'remote write at http' "$file" 2>/dev/null || true)" -ge "$n" ]; then
      # A URL ends at a space or a comma (`strata start` prints more after it on its line).
      grep -o 'remote write at http://[^ ,;]*' "$file" | sed 's/^remote write at //' | head -n "$n"
      return
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "$what exited while starting"; }
    sleep 0.2
  done
  die "$what did not announce $n remote-write URL(s) within 120 s (log: $file)"
}

stop_system() {
  [ -n "$SYS_PID" ] || return 0
  kill -TERM "$SYS_PID" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$SYS_PID" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$SYS_PID" 2>/dev/null; then
    say "pid $SYS_PID did not stop within 60 s of SIGTERM; killing it"
    kill -KILL "$SYS_PID" 2>/dev/null || true
  fi
  wait "$SYS_PID" 2>/dev/null || true
  SYS_PID=""
}

# Starts SYSTEM with data under DIR; sets SYS_PID and URLS (one URL per line).
start_system() {
  local system=$1 dir=$2 log=$2.log
  mkdir -p "$dir"
  case "$system" in
    vm)
      local port
      port=$(free_port)
      "$VM_BIN" -storageDataPath="$dir" -httpListenAddr="127.0.0.1:$port" \
        -search.latencyOffset=0s -search.disableCache >"$log" 2>&1 &
      SYS_PID=$!
      wait_ready "http://127.0.0.1:$port/health" victoria-metrics "$log"
      URLS="http://127.0.0.1:$port/api/v1/write"
      ;;
    prometheus)
      local port
      port=$(free_port)
      # No scrape jobs: everything it holds came by remote write.
      printf 'global:\n  scrape_interval: 1m\n' >"$dir.yml"
      "$PROM_BIN" --config.file="$dir.yml" --storage.tsdb.path="$dir" \
        --web.listen-address="127.0.0.1:$port" --web.enable-remote-write-receiver >"$log" 2>&1 &
      SYS_PID=$!
      wait_ready "http://127.0.0.1:$port/-/ready" prometheus "$log"
      URLS="http://127.0.0.1:$port/api/v1/write"
      ;;
    strata-rf3)
      local args=(--data-dir "$dir" --base-port 0)
      if [ -n "$STRATA_CONFIG" ]; then args+=(--config "$STRATA_CONFIG"); fi
      "$STRATA" dev "${args[@]}" >"$log" 2>&1 &
      SYS_PID=$!
      URLS=$(wait_for_urls "$log" 3 "$SYS_PID" "strata dev")
      ;;
    strata-rf1)
      # One node, a cluster of its own (RF=1), on free ports.
      local args=(--raft-addr "127.0.0.1:$(free_port)" --http-addr "127.0.0.1:$(free_port)")
      if [ -n "$STRATA_START_ARGS" ]; then
        # shellcheck disable=SC2206 # STRATA_START_ARGS is a list of flags.
        args=($STRATA_START_ARGS)
      fi
      if [ -n "$STRATA_CONFIG" ]; then args+=(--config "$STRATA_CONFIG"); fi
      "$STRATA" start --data-dir "$dir" "${args[@]}" >"$log" 2>&1 &
      SYS_PID=$!
      URLS=$(wait_for_urls "$log" 1 "$SYS_PID" "strata start")
      # `strata start` announces its URL at once; it takes writes once its shards have leaders.
      for _ in $(seq 1 600); do
        grep -q 'running; Ctrl-C or SIGTERM stops it' "$log" && break
        kill -0 "$SYS_PID" 2>/dev/null || { cat "$log" >&2; die "strata start exited"; }
        sleep 0.2
      done
      grep -q 'running; Ctrl-C or SIGTERM stops it' "$log" || die "strata start not ready in 120 s"
      ;;
    *) die "unknown system $system (vm, prometheus, strata-rf1, strata-rf3)" ;;
  esac
}

durability() {
  case "$1" in
    vm) echo "none before ack: rows buffered in memory, flushed to disk every few seconds, no fsync per request" ;;
    prometheus) echo "WAL written (page cache) before ack; fsynced when a segment is full or the head is compacted" ;;
    strata-rf3) echo "WAL fsynced on a quorum (2 of 3 replicas) before ack" ;;
    strata-rf1) echo "WAL fsynced on its one replica before ack" ;;
  esac
}

label() {
  case "$1" in
    vm)
      # Debian's build prints no -version; ask the package manager instead.
      local v
      v=$("$VM_BIN" -version 2>&1 | head -n1)
      [ -n "$v" ] || v=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || true)
      echo "VictoriaMetrics ${v:-(version unknown)}" ;;
    prometheus) echo "Prometheus $("$PROM_BIN" --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p')" ;;
    strata-rf3) echo "Strata RF=3 (strata dev: 3 nodes, 3 zones, 1 process)" ;;
    strata-rf1) echo "Strata RF=1 (strata start: 1 node)" ;;
  esac
}

# RESULT line field.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
