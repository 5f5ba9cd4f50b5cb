#!/usr/bin/env bash
# Overload in release, measured with h2load: the server on core 1, h2load on core 0. The
# server's CPU is capped (cgroup, CPU_QUOTA percent of a core, default 50) so that one core of
# h2load can offer it twice its peak. Measures the peak of CheckAccess (an allowed Mac) and of
# Health/Check at saturation, then drives each at 1x and 2x CheckAccess's peak for SECONDS
# with a fixed rate (--rps), and at 0.5x after, to see it recover: the rate answered,
# latency percentiles, calls shed (from /metrics), and resident memory.
#
#   deploy/reliability/overload.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/loadtest/lib.sh

SECONDS_EACH=${SECONDS_EACH:-10}
CLIENTS=${CLIENTS:-64}           # h2load -c at fixed rates
STREAMS=${STREAMS:-32}           # h2load -m
CPU_QUOTA=${CPU_QUOTA:-50}
PORT=${PORT:-50681}
METRICS_PORT=${METRICS_PORT:-50682}

command -v h2load >/dev/null || { echo "installing h2load (nghttp2-client)"; apt-get install -y nghttp2-client >/dev/null; }
cargo build --release --quiet --bin posture
BIN=${CARGO_TARGET_DIR:-target}/release/posture
WORK=$(mktemp -d)
CGROUP=/sys/fs/cgroup/cpu/posture-overload-$$
SERVER=
cleanup() {
  [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null
  [ ! -d "$CGROUP" ] || rmdir "$CGROUP" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 - "$WORK" <<'PY'
import struct, sys
def frame(msg): return b"\0" + struct.pack(">I", len(msg)) + msg
def field(n, s): b = s.encode(); return bytes([n << 3 | 2, len(b)]) + b
open(f"{sys.argv[1]}/check.bin", "wb").write(frame(field(1, "ada") + field(2, "mac-ada")))
open(f"{sys.argv[1]}/health.bin", "wb").write(frame(b""))
PY

taskset -c 1 "$BIN" serve --demo --data-dir "$WORK/data" --listen 127.0.0.1:$PORT \
  --metrics-listen 127.0.0.1:$METRICS_PORT >"$WORK/server.log" 2>&1 &
SERVER=$!
until grep -q "posture serving" "$WORK/server.log"; do
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.1
done
capped="uncapped (no cgroup v1 cpu controller here: h2load may not reach 2x)"
if mkdir "$CGROUP" 2>/dev/null; then
  # A short period, so that the cap throttles in slices of milliseconds, not of 50 ms.
  echo 10000 >"$CGROUP/cpu.cfs_period_us"
  echo $((CPU_QUOTA * 100)) >"$CGROUP/cpu.cfs_quota_us"
  echo "$SERVER" >"$CGROUP/cgroup.procs"
  capped="capped at ${CPU_QUOTA}% of core 1"
fi
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
echo "== server $capped, --demo organisation; h2load on core 0"

h2() { # path body, then h2load options
  local path=$1 body=$2; shift 2
  taskset -c 0 h2load -t 1 -d "$body" -H 'content-type: application/grpc' -H 'te: trailers' \
    -H 'authorization: Bearer demo-gateway' "$@" "http://127.0.0.1:$PORT$path"
}
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$SERVER/status"; }
shed() { curl -s "127.0.0.1:$METRICS_PORT/metrics" | awk '/^posture_shed_calls_total/{print $2}'; }
CHECK=/posture.v1.ComplianceService/CheckAccess
HEALTH=/grpc.health.v1.Health/Check

h2 $CHECK "$WORK/check.bin" -n 50000 -c 16 -m 32 >/dev/null # warm-up
h2 $CHECK "$WORK/check.bin" -n 200000 -c 16 -m 32 >"$WORK/peak-check.txt"
h2 $HEALTH "$WORK/health.bin" -n 200000 -c 16 -m 32 >"$WORK/peak-health.txt"
PEAK=$(rps "$WORK/peak-check.txt" | cut -d. -f1)
echo "RESULT peak (saturation, -c 16 -m 32): check_access_rps=$PEAK health_rps=$(rps "$WORK/peak-health.txt")"

run() { # name path body multiple
  local name=$1 path=$2 body=$3 multiple=$4
  local rate per_client before peak shed_before shed_after
  rate=$(awk "BEGIN{print int($PEAK * $multiple)}")
  per_client=$(( rate / CLIENTS ))
  before=$(rss_kib); peak=$before; shed_before=$(shed)
  h2 "$path" "$body" -c "$CLIENTS" -m "$STREAMS" --rps "$per_client" -D "$SECONDS_EACH" \
    --log-file "$WORK/$name.log" >"$WORK/$name.txt" &
  local load=$!
  while kill -0 $load 2>/dev/null; do
    local now; now=$(rss_kib); [ "$now" -gt "$peak" ] && peak=$now; sleep 0.2
  done
  wait $load
  shed_after=$(shed)
  echo "RESULT $name offered=${rate}/s answered=$(rps "$WORK/$name.txt")/s $(grep -E '^requests:' "$WORK/$name.txt" | tr -d ',' | awk '{print "done=" $6, "failed=" $10}') shed=$(awk "BEGIN{print $shed_after - $shed_before}") $(percentiles "$WORK/$name.log") rss_kib=$before->$peak"
}
for multiple in 0.5 1 2; do
  run "check_access@${multiple}x" $CHECK "$WORK/check.bin" $multiple
  run "health@${multiple}x" $HEALTH "$WORK/health.bin" $multiple
done
run "check_access@0.5x_after" $CHECK "$WORK/check.bin" 0.5
