#!/usr/bin/env bash
# Telemetry's cost over gRPC. Two servers on the same organisation, both pinned to core 1:
# "off" (no exporter, no metrics listener) and "on" (OTLP spans to a local sink, every span
# sampled unless SAMPLER says otherwise, and the metrics listener); h2load and the sink on
# core 0. ROUNDS rounds, each measuring Health/Check and CheckAccess (an allowed Mac) at
# saturation on both servers with the same settings, and the server's CPU time per call (from
# /proc, every thread: the exporter's too); the medians of the rounds are reported. Then each
# at one fixed rate (--rps) with a per-request log for percentiles.
#
#   deploy/loadtest/telemetry.sh                  # defaults below
#   SAMPLER=parentbased_traceidratio SAMPLER_ARG=0.01 deploy/loadtest/telemetry.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/loadtest/lib.sh

DEVICES=${DEVICES:-100000}
USERS=${USERS:-100000}
GROUP_COUNT=${GROUP_COUNT:-10000}
REQUESTS=${REQUESTS:-200000}      # per saturating h2load run
CLIENTS=${CLIENTS:-16}            # h2load -c
STREAMS=${STREAMS:-32}            # h2load -m
RATE=${RATE:-20000}               # requests/s of the fixed-rate runs
RATE_SECONDS=${RATE_SECONDS:-10}
ROUNDS=${ROUNDS:-5}
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
cleanup() { # every step, whatever failed before it (a dead process, set -e)
  [ -z "$SERVER" ] || kill $SERVER 2>/dev/null || true
  [ -z "$SINK" ] || kill "$SINK" 2>/dev/null || true
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

h2() { # $1 port, $2 path, $3 body, extra h2load options follow
  local port=$1 path=$2 body=$3; shift 3
  taskset -c 0 h2load -c "$CLIENTS" -m "$STREAMS" -t 1 -d "$body" \
    -H 'content-type: application/grpc' -H 'te: trailers' "$@" "http://127.0.0.1:$port$path"
}
# CPU time the process has used, in clock ticks (utime + stime, every thread).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))
AUTH="authorization: Bearer $SECRET"
HEALTH=/grpc.health.v1.Health/Check
CHECK=/posture.v1.ComplianceService/CheckAccess

# Both servers run at once (each alone in its turn under load), so that every round measures
# the four cases within a minute of each other: other load on the machine hits them alike.
cp -r "$WORK/data" "$WORK/data-on"
start_server "$WORK/off.log" --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --config "$WORK/posture.toml"
OFF_SERVER=$SERVER
taskset -c 0 $BENCH otlp-sink --listen 127.0.0.1:$SINK_PORT --every 1h >"$WORK/sink.log" 2>&1 &
SINK=$!
# A sink that cannot listen (another still holds the port) must stop the run, not leave the
# spans to whoever listens there.
for _ in $(seq 20); do grep -q . "$WORK/sink.log" 2>/dev/null && break; kill -0 "$SINK" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SINK" 2>/dev/null || { cat "$WORK/sink.log"; echo "the OTLP sink did not start"; exit 1; }
ON_PORT=$((PORT + 1))
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT OTEL_TRACES_SAMPLER=$SAMPLER OTEL_TRACES_SAMPLER_ARG=$SAMPLER_ARG \
  start_server "$WORK/on.log" --listen 127.0.0.1:$ON_PORT --data-dir "$WORK/data-on" --config "$WORK/posture.toml" \
  --metrics-listen 127.0.0.1:$METRICS_PORT
ON_SERVER=$SERVER
SERVER="$OFF_SERVER $ON_SERVER"
echo "== off: 127.0.0.1:$PORT (no exporter, no metrics); on: 127.0.0.1:$ON_PORT (OTLP to the sink, OTEL_TRACES_SAMPLER=$SAMPLER $SAMPLER_ARG; metrics)"
for port in $PORT $ON_PORT; do h2 $port $CHECK "$WORK/check.bin" -n 50000 -H "$AUTH" >/dev/null; done # warm-up
echo "== $ROUNDS rounds of -n $REQUESTS -c $CLIENTS -m $STREAMS -t 1 (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
for round in $(seq "$ROUNDS"); do
  for set in off on; do
    port=$PORT pid=$OFF_SERVER; [ $set = on ] && port=$ON_PORT pid=$ON_SERVER
    t0=$(ticks $pid)
    h2 $port $HEALTH "$WORK/health.bin" -n "$REQUESTS" >"$WORK/$set-health-$round.txt"
    t1=$(ticks $pid)
    h2 $port $CHECK "$WORK/check.bin" -n "$REQUESTS" -H "$AUTH" >"$WORK/$set-check-$round.txt"
    t2=$(ticks $pid)
    awk "BEGIN{printf \"%.2f\n\", ($t1 - $t0) * $TICK_US / $REQUESTS}" >"$WORK/$set-health-$round.cpu"
    awk "BEGIN{printf \"%.2f\n\", ($t2 - $t1) * $TICK_US / $REQUESTS}" >"$WORK/$set-check-$round.cpu"
    h=$(rps "$WORK/$set-health-$round.txt"); c=$(rps "$WORK/$set-check-$round.txt")
    echo "round $round $set: health_rps=$h check_access_rps=$c ratio=$(awk "BEGIN{printf \"%.3f\", $c / $h}")" \
      "server_cpu_us_per_call: health=$(cat "$WORK/$set-health-$round.cpu") check_access=$(cat "$WORK/$set-check-$round.cpu")"
  done
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for set in off on; do
  h=$(for f in "$WORK"/$set-health-*.txt; do rps "$f"; done | median)
  c=$(for f in "$WORK"/$set-check-*.txt; do rps "$f"; done | median)
  hc=$(cat "$WORK"/$set-health-*.cpu | median); cc=$(cat "$WORK"/$set-check-*.cpu | median)
  eval "${set}_health=$h ${set}_check=$c ${set}_health_cpu=$hc ${set}_check_cpu=$cc"
  echo "RESULT $set saturation (median of $ROUNDS) health_rps=$h check_access_rps=$c ratio=$(awk "BEGIN{printf \"%.3f\", $c / $h}")" \
    "server_cpu_us_per_call: health=$hc check_access=$cc ratio=$(awk "BEGIN{printf \"%.3f\", $hc / $cc}")"
done
echo "RESULT on check_access / off health: rps ratio=$(awk "BEGIN{printf \"%.3f\", $on_check / $off_health}")" \
  "cpu ratio=$(awk "BEGIN{printf \"%.3f\", $off_health_cpu / $on_check_cpu}")"

per_client=$(( RATE / CLIENTS ))
for set in off on; do
  port=$PORT; [ $set = on ] && port=$ON_PORT
  for what in health check; do
    path=$HEALTH body=health.bin extra=()
    [ $what = check ] && path=$CHECK body=check.bin extra=(-H "$AUTH")
    h2 $port $path "$WORK/$body" --rps "$per_client" -D "$RATE_SECONDS" --log-file "$WORK/$set-$what.log" "${extra[@]}" \
      >"$WORK/$set-$what-rate.txt"
    echo "RESULT $set rate=$RATE/s $what $(rps "$WORK/$set-$what-rate.txt")/s $(percentiles "$WORK/$set-$what.log")"
  done
done
calls=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^posture_calls_total/{s+=$2} END{print s}')
kill $ON_SERVER; wait $ON_SERVER 2>/dev/null || true
kill "$SINK"; wait "$SINK" 2>/dev/null || true; SINK=
echo "RESULT on calls_counted=$calls $(tail -1 "$WORK/sink.log") (spans the sink received, after the server's shutdown flush)"
