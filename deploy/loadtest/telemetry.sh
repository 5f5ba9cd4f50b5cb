#!/usr/bin/env bash
# Telemetry's cost over gRPC. The server is pinned to core 1, h2load (and the trace sink) to
# core 0. For each set-up — telemetry off; then OTLP spans exported to a local sink (every span
# sampled) with the metrics listener on — h2load measures in the same run, with the same
# settings: Health/Check and CheckAccess (an allowed Mac) at saturation, then both at one
# fixed rate (--rps) with a per-request log for percentiles.
#
#   deploy/loadtest/telemetry.sh                  # defaults below
#   SAMPLER=parentbased_traceidratio SAMPLER_ARG=0.01 deploy/loadtest/telemetry.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/loadtest/lib.sh

DEVICES=${DEVICES:-100000}
USERS=${USERS:-100000}
GROUP_COUNT=${GROUP_COUNT:-10000}
REQUESTS=${REQUESTS:-300000}      # per saturating h2load run
CLIENTS=${CLIENTS:-16}            # h2load -c
STREAMS=${STREAMS:-32}            # h2load -m
RATE=${RATE:-20000}               # requests/s of the fixed-rate runs
RATE_SECONDS=${RATE_SECONDS:-15}
SAMPLER=${SAMPLER:-parentbased_always_on}
SAMPLER_ARG=${SAMPLER_ARG:-}
PORT=${PORT:-50571}
SINK_PORT=${SINK_PORT:-4327}
METRICS_PORT=${METRICS_PORT:-9471}
SECRET=load-gateway

command -v h2load >/dev/null || { echo "installing h2load (nghttp2-client)"; apt-get install -y nghttp2-client >/dev/null; }
cargo build --release --quiet --workspace
TARGET=${CARGO_TARGET_DIR:-target}
BIN="taskset -c 1 $TARGET/release/posture"
BENCH=$TARGET/release/posture-bench
WORK=$(mktemp -d)
SERVER= SINK=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  [ -n "$SINK" ] && kill "$SINK" 2>/dev/null
  wait 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); server on core 1, h2load on core 0"
echo "== generating $DEVICES devices, $USERS users, $GROUP_COUNT groups"
$BENCH generate --data-dir "$WORK/data" --devices "$DEVICES" --users "$USERS" --groups "$GROUP_COUNT" 2>&1 | grep -v INFO || true
cat > "$WORK/posture.toml" <<TOML
[[credentials]]
id = "load-gateway"
role = "gateway"
secret_sha256 = ["$(printf %s "$SECRET" | $BIN hash-secret)"]
TOML

python3 - "$WORK" <<'PY'
import struct, sys
def frame(msg): return b"\0" + struct.pack(">I", len(msg)) + msg
def field(n, s): b = s.encode(); return bytes([n << 3 | 2, len(b)]) + b
work = sys.argv[1]
open(f"{work}/check.bin", "wb").write(frame(field(1, "user-0000002") + field(2, "mac-0000002")))
open(f"{work}/health.bin", "wb").write(frame(b""))
PY

h2() { # $1 path, $2 body, extra h2load options follow
  local path=$1 body=$2; shift 2
  taskset -c 0 h2load -c "$CLIENTS" -m "$STREAMS" -t 1 -d "$body" \
    -H 'content-type: application/grpc' -H 'te: trailers' "$@" "http://127.0.0.1:$PORT$path"
}
rps() { awk '/^finished in/{gsub(",","");print $4}' "$1"; }
# p50 p99 p99.9 of the durations (µs, third column) in an h2load --log-file.
percentiles() { sort -n -k3 "$1" | awk '{d[NR]=$3} END{printf "p50=%dus p99=%dus p99.9=%dus n=%d", d[int(NR*0.5)], d[int(NR*0.99)], d[int(NR*0.999)], NR}'; }

measure() { # $1 label
  local label=$1 auth="authorization: Bearer $SECRET"
  h2 /posture.v1.ComplianceService/CheckAccess "$WORK/check.bin" -n 50000 -H "$auth" >/dev/null # warm-up
  h2 /grpc.health.v1.Health/Check "$WORK/health.bin" -n "$REQUESTS" >"$WORK/$label-health.txt"
  h2 /posture.v1.ComplianceService/CheckAccess "$WORK/check.bin" -n "$REQUESTS" -H "$auth" >"$WORK/$label-check.txt"
  local health check
  health=$(rps "$WORK/$label-health.txt"); check=$(rps "$WORK/$label-check.txt")
  grep -h "^requests:" "$WORK/$label-health.txt" "$WORK/$label-check.txt"
  echo "RESULT $label saturation health_rps=$health check_access_rps=$check ratio=$(awk "BEGIN{printf \"%.3f\", $check / $health}")"
  local per_client=$(( RATE / CLIENTS ))
  h2 /grpc.health.v1.Health/Check "$WORK/health.bin" --rps "$per_client" -D "$RATE_SECONDS" --log-file "$WORK/$label-health.log" >"$WORK/$label-health-rate.txt"
  h2 /posture.v1.ComplianceService/CheckAccess "$WORK/check.bin" --rps "$per_client" -D "$RATE_SECONDS" -H "$auth" --log-file "$WORK/$label-check.log" >"$WORK/$label-check-rate.txt"
  echo "RESULT $label rate=$RATE/s health $(rps "$WORK/$label-health-rate.txt")/s $(percentiles "$WORK/$label-health.log")"
  echo "RESULT $label rate=$RATE/s check_access $(rps "$WORK/$label-check-rate.txt")/s $(percentiles "$WORK/$label-check.log")"
}

echo "== telemetry off"
start_server "$WORK/off.log" --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --config "$WORK/posture.toml"
measure off
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=

echo "== telemetry on: OTLP to a sink on 127.0.0.1:$SINK_PORT (OTEL_TRACES_SAMPLER=$SAMPLER $SAMPLER_ARG), metrics on 127.0.0.1:$METRICS_PORT"
taskset -c 0 $BENCH otlp-sink --listen 127.0.0.1:$SINK_PORT --every 1h >"$WORK/sink.log" 2>&1 &
SINK=$!
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT OTEL_TRACES_SAMPLER=$SAMPLER OTEL_TRACES_SAMPLER_ARG=$SAMPLER_ARG \
  start_server "$WORK/on.log" --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --config "$WORK/posture.toml" \
  --metrics-listen 127.0.0.1:$METRICS_PORT
measure on
calls=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^posture_calls_total/{s+=$2} END{print s}')
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
kill "$SINK"; wait "$SINK" 2>/dev/null || true; SINK=
echo "RESULT on calls_counted=$calls $(tail -1 "$WORK/sink.log")"
on_health=$(rps "$WORK/on-health.txt"); off_health=$(rps "$WORK/off-health.txt"); on_check=$(rps "$WORK/on-check.txt")
echo "RESULT on check_access_rps / off health_rps = $(awk "BEGIN{printf \"%.3f\", $on_check / $off_health}")"
