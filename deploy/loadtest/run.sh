#!/usr/bin/env bash
# Load benchmark: CheckAccess (an allowed Mac, and one denied by 4 policies) against
# grpc.health.v1.Health/Check (the framework's floor), with h2load in the same run and the same
# settings; then CheckAccess and Health/Check at the same fixed rates (h2load --rps, 50% and
# 80% of CheckAccess's peak, TAIL_ROUNDS rounds of both in turn) with a per-request log for p50,
# p99 and p99.9, each round's p99.9 ratio and their median. The server runs on
# core 1, h2load on core 0. Everything listens on 127.0.0.1 and stops by itself.
#
#   deploy/loadtest/run.sh                      # defaults below
#   DEVICES=1000000 USERS=1000000 GROUP_COUNT=100000 REQUESTS=1000000 deploy/loadtest/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/loadtest/lib.sh

DEVICES=${DEVICES:-100000}
USERS=${USERS:-100000}
GROUP_COUNT=${GROUP_COUNT:-10000}
REQUESTS=${REQUESTS:-400000}     # per h2load run
CLIENTS=${CLIENTS:-16}           # h2load -c
STREAMS=${STREAMS:-32}           # h2load -m (concurrent streams per connection)
RATE_SECONDS=${RATE_SECONDS:-20} # per fixed-rate run
TAIL_ROUNDS=${TAIL_ROUNDS:-3}    # fixed-rate runs per rate, CheckAccess and Health/Check in turn
PORT=${PORT:-50561}
SECRET=load-gateway

command -v h2load >/dev/null || { echo "installing h2load (nghttp2-client)"; apt-get install -y nghttp2-client >/dev/null; }
cargo build --release --quiet --workspace
BIN="taskset -c 1 target/release/posture"
BENCH=target/release/posture-bench
temporary_work

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); server on core 1, h2load on core 0"
echo "== generating $DEVICES devices, $USERS users, $GROUP_COUNT groups"
/usr/bin/time -f "generate: %e s, %M KiB max RSS" \
  $BENCH generate --data-dir "$WORK/data" --devices "$DEVICES" --users "$USERS" --groups "$GROUP_COUNT" 2>&1 | grep -v INFO

cat > "$WORK/posture.toml" <<TOML
[[credentials]]
id = "load-gateway"
role = "gateway"
secret_sha256 = ["$(printf %s "$SECRET" | $BIN hash-secret)"]
TOML

start_server "$WORK/server.log" --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --config "$WORK/posture.toml"
echo "== start-up from SQLite: $STARTUP_S s; resident after load: $RSS_MIB MiB"

# gRPC frames: 1 byte flag, 4 bytes length, then the protobuf message.
python3 - "$WORK" <<'PY'
import struct, sys
def frame(msg): return b"\0" + struct.pack(">I", len(msg)) + msg
def field(n, s): b = s.encode(); return bytes([n << 3 | 2, len(b)]) + b
work = sys.argv[1]
# mac-0000002 is allowed (a short answer); mac-0000001 is denied by 4 policies (a long one).
open(f"{work}/check.bin", "wb").write(frame(field(1, "user-0000002") + field(2, "mac-0000002")))
open(f"{work}/denied.bin", "wb").write(frame(field(1, "user-0000001") + field(2, "mac-0000001")))
open(f"{work}/health.bin", "wb").write(frame(b""))
PY

h2() { # $1 path, $2 body, extra h2load options follow (-n REQUESTS unless a rate is given)
  local path=$1 body=$2; shift 2
  taskset -c 0 h2load -c "$CLIENTS" -m "$STREAMS" -t 1 -d "$body" \
    -H 'content-type: application/grpc' -H 'te: trailers' "$@" "http://127.0.0.1:$PORT$path"
}

echo "== warm-up"
h2 /posture.v1.ComplianceService/CheckAccess "$WORK/check.bin" -n "$REQUESTS" -H "authorization: Bearer $SECRET" >/dev/null
echo "== h2load: -n $REQUESTS -c $CLIENTS -m $STREAMS -t 1"
h2 /grpc.health.v1.Health/Check "$WORK/health.bin" -n "$REQUESTS" | tee "$WORK/health.txt" | grep -E "^(finished|requests|time for request)"
h2 /posture.v1.ComplianceService/CheckAccess "$WORK/check.bin" -n "$REQUESTS" -H "authorization: Bearer $SECRET" \
  | tee "$WORK/check.txt" | grep -E "^(finished|requests|time for request)"
h2 /posture.v1.ComplianceService/CheckAccess "$WORK/denied.bin" -n "$REQUESTS" -H "authorization: Bearer $SECRET" \
  | tee "$WORK/denied.txt" | grep -E "^(finished|requests|time for request)"
health=$(rps "$WORK/health.txt"); check=$(rps "$WORK/check.txt"); denied=$(rps "$WORK/denied.txt")
echo "RESULT health_rps=$health check_access_rps=$check ratio=$(awk "BEGIN{printf \"%.3f\", $check / $health}")"
echo "RESULT check_access_denied_rps=$denied ratio=$(awk "BEGIN{printf \"%.3f\", $denied / $health}")"

# Tail latency at fixed rates: CheckAccess and Health/Check each at the same rate, in turn.
for pct in 50 80; do
  rate=$(awk "BEGIN{printf \"%d\", $check * $pct / 100}")
  per_client=$(( rate / CLIENTS ))
  echo "== $pct% of CheckAccess's peak: $rate/s (--rps $per_client per connection), $TAIL_ROUNDS rounds of ${RATE_SECONDS}s each"
  ratios=()
  for round in $(seq "$TAIL_ROUNDS"); do
    h2 /posture.v1.ComplianceService/CheckAccess "$WORK/check.bin" -H "authorization: Bearer $SECRET" \
      --rps "$per_client" -D "$RATE_SECONDS" --log-file "$WORK/check-$pct-$round.log" >"$WORK/check-$pct.txt"
    h2 /grpc.health.v1.Health/Check "$WORK/health.bin" \
      --rps "$per_client" -D "$RATE_SECONDS" --log-file "$WORK/health-$pct-$round.log" >"$WORK/health-$pct.txt"
    ratios+=("$(p999_ratio "$WORK/check-$pct-$round.log" "$WORK/health-$pct-$round.log")")
    echo "RESULT rate=$pct% round $round check_access $(rps "$WORK/check-$pct.txt")/s $(percentiles "$WORK/check-$pct-$round.log")"
    echo "RESULT rate=$pct% round $round health       $(rps "$WORK/health-$pct.txt")/s $(percentiles "$WORK/health-$pct-$round.log")"
  done
  # Over every round's requests together, and each round's ratio (the tail moves from run to run).
  cat "$WORK"/check-$pct-*.log >"$WORK/check-$pct.log"; cat "$WORK"/health-$pct-*.log >"$WORK/health-$pct.log"
  echo "RESULT rate=$pct% all rounds check_access $(percentiles "$WORK/check-$pct.log")"
  echo "RESULT rate=$pct% all rounds health       $(percentiles "$WORK/health-$pct.log")"
  echo "RESULT rate=$pct% p99.9 ratio check_access/health: all rounds=$(p999_ratio "$WORK/check-$pct.log" "$WORK/health-$pct.log")" \
    "per round=${ratios[*]} median=$(printf '%s\n' "${ratios[@]}" | median) (goal <= 1.10)"
done
echo "== resident at the end: $(rss_mib $SERVER) MiB"
