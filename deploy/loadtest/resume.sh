#!/usr/bin/env bash
# Resuming a Watch stream after a restart, at scale: generate an organisation into SQLite, start
# `posture serve` on it, report check-ins for a while (a change log of some hundred thousand
# changes), note the revision, report more, restart the server, and time a resume from that
# revision (twice: the first reads the change log) against a snapshot of every device.
#
#   deploy/loadtest/resume.sh                  # 1M devices, 1M users, 100k groups
#   DEVICES=100000 USERS=100000 GROUP_COUNT=10000 WINDOW=20000 deploy/loadtest/resume.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/loadtest/lib.sh

DEVICES=${DEVICES:-1000000}
USERS=${USERS:-1000000}
GROUP_COUNT=${GROUP_COUNT:-100000}
# The Macs that report, and for how long before and after the revision noted (seconds).
WINDOW=${WINDOW:-200000}
BEFORE=${BEFORE:-10}
AFTER=${AFTER:-2}
PORT=${PORT:-50592}
# The change log's retention: long enough to keep the revision noted until the resume, short
# enough that the generated organisation's log (two million changes) is compacted before the
# reports start (the script waits SETTLE seconds for that).
RETAIN=${RETAIN:-60s}
SETTLE=${SETTLE:-75}

cargo build --release --quiet --workspace
BIN=target/release/posture
BENCH=target/release/posture-bench
temporary_work

store="sqlite://$WORK/data/posture.db"
echo "== generating $DEVICES devices, $USERS users, $GROUP_COUNT groups"
$BENCH generate --store "$store" --devices "$DEVICES" --users "$USERS" --groups "$GROUP_COUNT" 2>&1 | { grep -v INFO || true; }
start_server "$WORK/server.log" --listen 127.0.0.1:$PORT --store "$store" --log-retain-age "$RETAIN"
wait_watching "$WORK/server.log"
sleep "$SETTLE"
ingest() { $BENCH loadgen ingest --target "http://127.0.0.1:$PORT" --check-ins --devices "$WINDOW" --users "$USERS" \
  --batch 1000 --concurrency 4 --duration "$1"; }
echo "== $WINDOW Macs report for ${BEFORE}s, the revision is noted, then ${AFTER}s more"
echo "RESULT before: $(ingest "$BEFORE")"
revision=$($BENCH loadgen resume --target "http://127.0.0.1:$PORT" | sed 's/.*latest_revision=\([0-9]*\).*/\1/')
echo "RESULT after: $(ingest "$AFTER")"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
echo "== restarted on the same file; resuming from revision $revision"
start_server "$WORK/server2.log" --listen 127.0.0.1:$PORT --store "$store" --log-retain-age "$RETAIN"
wait_watching "$WORK/server2.log"
echo "RESULT startup_s=$STARTUP_S watching_after_s=$WATCHING_S"
echo "RESULT first resume: $($BENCH loadgen resume --target "http://127.0.0.1:$PORT" --from-revision "$revision")"
echo "RESULT second resume: $($BENCH loadgen resume --target "http://127.0.0.1:$PORT" --from-revision "$revision")"
echo "RESULT every_device: $($BENCH loadgen resume --target "http://127.0.0.1:$PORT" --every-device --timeout 600)"
echo "RESULT rss_mib=$(rss_mib "$SERVER")"
grep -E "WARN|change log" "$WORK/server2.log" | head -5 || true
