#!/usr/bin/env bash
# The soak, in release: SOAK_SECONDS (default 600) at RATE_PCT (default 70) % of CheckAccess's
# measured peak, with reports, admin writes and Watch streams beside it. The server on core 1,
# the load (h2load and `posture-bench loadgen writers`) on core 0. Every call's status comes
# from the server's /metrics; memory, threads, open files and tasks are sampled every minute, and
# growth is measured over the second half of the run. The Watch journal keeps RETAINED_EVENTS
# (default 20,000) events, so that it fills during the first half and what the second half
# measures is the steady state, not a buffer filling (at the default 100,000 it would take the
# whole 10 minutes to fill: about 300 bytes an event, measured).
#
#   deploy/reliability/soak.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/loadtest/lib.sh

DEVICES=${DEVICES:-100000}
USERS=${USERS:-100000}
GROUP_COUNT=${GROUP_COUNT:-10000}
SOAK_SECONDS=${SOAK_SECONDS:-600}
RATE_PCT=${RATE_PCT:-70}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-32}
RETAINED_EVENTS=${RETAINED_EVENTS:-20000}
PORT=${PORT:-50691}
METRICS_PORT=${METRICS_PORT:-50692}

command -v h2load >/dev/null || { echo "installing h2load (nghttp2-client)"; apt-get install -y nghttp2-client >/dev/null; }
cargo build --release --quiet -p posture -p posture-bench --bins
BIN="taskset -c 1 ${CARGO_TARGET_DIR:-target}/release/posture"
BENCH="taskset -c 0 ${CARGO_TARGET_DIR:-target}/release/posture-bench"
temporary_work

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); server on core 1, load on core 0"
$BENCH generate --data-dir "$WORK/data" --devices "$DEVICES" --users "$USERS" --groups "$GROUP_COUNT" 2>&1 | grep -v INFO || true
python3 - "$WORK" <<'PY'
import struct, sys
def frame(msg): return b"\0" + struct.pack(">I", len(msg)) + msg
def field(n, s): b = s.encode(); return bytes([n << 3 | 2, len(b)]) + b
open(f"{sys.argv[1]}/check.bin", "wb").write(frame(field(1, "user-0000002") + field(2, "mac-0000002")))
PY
start_server "$WORK/server.log" --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --metrics-listen 127.0.0.1:$METRICS_PORT \
  --watch-retained-events "$RETAINED_EVENTS"
h2() { taskset -c 0 h2load -c "$CLIENTS" -m "$STREAMS" -t 1 -d "$WORK/check.bin" -H 'content-type: application/grpc' \
  -H 'te: trailers' "$@" "http://127.0.0.1:$PORT/posture.v1.ComplianceService/CheckAccess"; }
sample() { echo "$(awk '/VmRSS/{print $2}' "/proc/$SERVER/status") $(awk '/Threads/{print $2}' "/proc/$SERVER/status") $(ls "/proc/$SERVER/fd" | wc -l) $(curl -s "127.0.0.1:$METRICS_PORT/metrics" | awk '/^posture_runtime_tasks/{print $2}')"; }
# calls ok|failed|cancelled: the server's count of calls answered OK, failed, or cancelled by
# their clients (h2load abandons the calls in flight when it stops).
calls() { curl -s "127.0.0.1:$METRICS_PORT/metrics" | awk -v want="$1" '/^posture_calls_total/ {
  kind = ($0 ~ /code="OK"/) ? "ok" : ($0 ~ /code="CANCELLED"/) ? "cancelled" : "failed"
  if (kind == want) n += $NF } END {printf "%d", n}'; }

h2 -n 100000 >/dev/null # warm-up
peak=$(h2 -n 300000 | awk '/^finished in/{gsub(",","");print int($4)}')
rate=$(( peak * RATE_PCT / 100 ))
echo "== peak $peak/s; soak at $RATE_PCT%: $rate/s for ${SOAK_SECONDS}s, with reports, admin writes and 2 Watch streams"
failed_before=$(calls failed)
h2 --rps $(( rate / CLIENTS )) -D "$SOAK_SECONDS" >"$WORK/reads.txt" &
READS=$!
$BENCH loadgen writers --target "http://127.0.0.1:$PORT" --duration "$SOAK_SECONDS" \
  --devices "$DEVICES" --users "$USERS" >"$WORK/writers.txt" &
WRITERS=$!
started=$(date +%s)
first= last=
# The last sample while the load still runs (its connections open), five seconds before the end.
while left=$(( SOAK_SECONDS - 5 - ($(date +%s) - started) )); [ "$left" -gt 0 ]; do
  sleep $(( left < 60 ? left : 60 ))
  now=$(sample); elapsed=$(( $(date +%s) - started ))
  echo "sample at ${elapsed}s: rss_kib threads fds tasks = $now"
  [ -z "$first" ] && [ "$elapsed" -ge $(( SOAK_SECONDS / 2 )) ] && first=$now
  last=$now
done
[ -z "$first" ] && first=$last
wait $READS $WRITERS
read -r rss0 threads0 fds0 tasks0 <<<"$first"
read -r rss1 threads1 fds1 tasks1 <<<"$last"
echo "RESULT reads: $(grep -E '^finished in' "$WORK/reads.txt" | cut -d, -f2 | xargs) $(grep -E '^requests:' "$WORK/reads.txt" | tr -d ',' | awk '{print "done=" $6, "http_failed=" $10}')"
echo "RESULT writers: $(cat "$WORK/writers.txt")"
failed=$(( $(calls failed) - failed_before ))
echo "RESULT calls failed during the soak: $failed; OK $(calls ok); cancelled by their clients $(calls cancelled)"
curl -s "127.0.0.1:$METRICS_PORT/metrics" | grep '^posture_calls_total' | grep -v 'code="OK"' || true
echo "RESULT resident ${rss0} -> ${rss1} kB ($(awk "BEGIN{printf \"%+.1f\", ($rss1 - $rss0) * 100 / $rss0}") %), threads $threads0 -> $threads1, open files $fds0 -> $fds1, tasks $tasks0 -> $tasks1"
# The verdict: nothing failed, and the second half grew less than 5 %.
growth_ok=$(awk "BEGIN{print ($rss1 - $rss0) * 100 / $rss0 < 5 ? 1 : 0}")
writer_errors=$(grep -oE '(report|admin|watch)_errors=[0-9]+' "$WORK/writers.txt" | awk -F= '{n += $2} END {print n + 0}')
if [ "$failed" -eq 0 ] && [ "$writer_errors" -eq 0 ] && [ "$growth_ok" -eq 1 ]; then
  echo "PASS"
else
  echo "FAIL: $failed calls failed, $writer_errors writer errors, growth under 5 %: $growth_ok"; exit 1
fi
