#!/usr/bin/env bash
# Load benchmark: CheckAccess against grpc.health.v1.Health/Check (the framework's floor),
# with h2load in the same run and the same settings, then an open-loop run of CheckAccess at
# 50% and 80% of the measured peak. Everything listens on 127.0.0.1 and stops by itself.
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
OPEN_SECONDS=${OPEN_SECONDS:-20} # per open-loop run
PORT=${PORT:-50561}
SECRET=load-gateway

command -v h2load >/dev/null || { echo "installing h2load (nghttp2-client)"; apt-get install -y nghttp2-client >/dev/null; }
cargo build --release --quiet --workspace
BIN=target/release/posture
BENCH=target/release/posture-bench
WORK=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
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

h2() { # $1 path, $2 body, extra headers follow
  local path=$1 body=$2; shift 2
  h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -t 1 -d "$body" \
    -H 'content-type: application/grpc' -H 'te: trailers' "$@" "http://127.0.0.1:$PORT$path"
}
rps() { awk '/^finished in/{gsub(",","");print $4}' "$1"; }

echo "== warm-up"
h2 /posture.v1.ComplianceService/CheckAccess "$WORK/check.bin" -H "authorization: Bearer $SECRET" >/dev/null
echo "== h2load: -n $REQUESTS -c $CLIENTS -m $STREAMS -t 1"
h2 /grpc.health.v1.Health/Check "$WORK/health.bin" | tee "$WORK/health.txt" | grep -E "^(finished|requests|time for request)"
h2 /posture.v1.ComplianceService/CheckAccess "$WORK/check.bin" -H "authorization: Bearer $SECRET" \
  | tee "$WORK/check.txt" | grep -E "^(finished|requests|time for request)"
h2 /posture.v1.ComplianceService/CheckAccess "$WORK/denied.bin" -H "authorization: Bearer $SECRET" \
  | tee "$WORK/denied.txt" | grep -E "^(finished|requests|time for request)"
health=$(rps "$WORK/health.txt"); check=$(rps "$WORK/check.txt"); denied=$(rps "$WORK/denied.txt")
echo "RESULT health_rps=$health check_access_rps=$check ratio=$(awk "BEGIN{printf \"%.3f\", $check / $health}")"
echo "RESULT check_access_denied_rps=$denied ratio=$(awk "BEGIN{printf \"%.3f\", $denied / $health}")"

# The open loop uses posture's own tonic client, which shares the 2 cores with the server, so
# its rates are fractions of the peak *this client* reaches (closed loop), measured here.
echo "== closed loop (tonic client, 64 callers, ${OPEN_SECONDS}s): this client's peak"
peak_line=$($BENCH loadgen check --target "http://127.0.0.1:$PORT" --rate 0 --concurrency 64 --duration "$OPEN_SECONDS" \
  --devices "$DEVICES" --users "$USERS" --token "$SECRET" --connections 4)
echo "$peak_line"
peak=$(echo "$peak_line" | sed -n 's/.*achieved=\([0-9]*\).*/\1/p')
for pct in 50 80; do
  rate=$(awk "BEGIN{printf \"%d\", $peak * $pct / 100}")
  echo "== open loop at $pct% of the client's peak ($rate/s for ${OPEN_SECONDS}s)"
  $BENCH loadgen check --target "http://127.0.0.1:$PORT" --rate "$rate" --duration "$OPEN_SECONDS" \
    --devices "$DEVICES" --users "$USERS" --token "$SECRET" --connections 4
done
echo "== resident at the end: $(rss_mib $SERVER) MiB"
