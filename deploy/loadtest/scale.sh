#!/usr/bin/env bash
# Scale: generate an organisation into SQLite (and PostgreSQL if STORE_PG is set), start
# `posture serve` on it, and report start-up time, resident memory, PreviewTargeting and ingest.
#
#   deploy/loadtest/scale.sh                                  # 1M devices, 1M users, 100k groups
#   DEVICES=100000 USERS=100000 GROUP_COUNT=10000 deploy/loadtest/scale.sh
#   STORE_PG=postgres://postgres@127.0.0.1:5432/test deploy/loadtest/scale.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/loadtest/lib.sh

DEVICES=${DEVICES:-1000000}
USERS=${USERS:-1000000}
GROUP_COUNT=${GROUP_COUNT:-100000}
INGEST_SECONDS=${INGEST_SECONDS:-15}
# Ingest run first and not counted: a database (and server) just given a million rows is still
# settling, and the first seconds of ingest into it measured that, not the build.
INGEST_WARMUP=${INGEST_WARMUP:-5}
# Macs whose reports that only check in are measured, after a warm-up that stores their facts
# (long enough to report each once). A check-in time counts whole seconds, so a Mac changes at
# most once a second: the window bounds the rate measured (200,000 a second by default).
CHECK_IN_WINDOW=${CHECK_IN_WINDOW:-200000}
CHECK_IN_WARMUP=${CHECK_IN_WARMUP:-20}
# The change log's retention while measuring: short, so that the generated log is compacted
# (and, on SQLite, its pages released) within the run.
RETAIN=${RETAIN:-5s}
PORT=${PORT:-50591}

cargo build --release --quiet --workspace
BIN=target/release/posture
BENCH=target/release/posture-bench
temporary_work

# settled_bytes FILES...: their total size once it has not changed for 10 s (at most 5 minutes).
settled_bytes() {
  local prev=-1 now stable=0
  for _ in $(seq 300); do
    now=$(du -cb "$@" | tail -1 | cut -f1)
    if [ "$now" = "$prev" ]; then stable=$((stable + 1)); [ $stable -ge 10 ] && break; else stable=0; fi
    prev=$now; sleep 1
  done
  echo "$now"
}

measure() { # $1 label, $2 store URL
  local label=$1 store=$2
  echo "== [$label] generating $DEVICES devices, $USERS users, $GROUP_COUNT groups"
  /usr/bin/time -f "[$label] generate: %e s, %M KiB max RSS" \
    $BENCH generate --store "$store" --devices "$DEVICES" --users "$USERS" --groups "$GROUP_COUNT" 2>&1 | grep -v INFO
  if [ "$label" = sqlite ]; then
    # The file as generated: the tables and the change log of the writes that made them.
    bytes=$(du -cb "$WORK"/data/posture.db* | tail -1 | cut -f1)
    echo "RESULT [$label] disk_bytes_per_device_as_generated=$((bytes / DEVICES))"
  fi
  start_server "$WORK/server.log" --listen 127.0.0.1:$PORT --store "$store" --log-retain-age "$RETAIN"
  echo "RESULT [$label] startup_s=$STARTUP_S (goal <= 10) rss_mib_at_serving=$RSS_MIB"
  wait_watching "$WORK/server.log"
  echo "RESULT [$label] watching_after_s=$WATCHING_S rss_mib=$RSS_MIB (goal <= 1024)"
  if [ "$label" = sqlite ]; then
    # Once the server has compacted the log and released its pages: the organisation's state.
    bytes=$(settled_bytes "$WORK"/data/posture.db*)
    echo "RESULT [$label] disk_bytes_per_device=$((bytes / DEVICES)) (goal <= 1024)"
  fi
  if [ "$label" = postgres ]; then
    # Autovacuum would otherwise visit the million fresh rows during the measured ingest.
    psql "$STORE_PG" -q -c "VACUUM ANALYZE $schema.devices, $schema.users, $schema.groups, $schema.failing, $schema.change_log"
  fi
  echo "== [$label] ingest: ${INGEST_WARMUP}s not counted, then batches of 1000 for ${INGEST_SECONDS}s"
  $BENCH loadgen ingest --target "http://127.0.0.1:$PORT" --duration "$INGEST_WARMUP" \
    --devices "$DEVICES" --users "$USERS" --batch 1000 --concurrency 4 >/dev/null
  $BENCH loadgen ingest --target "http://127.0.0.1:$PORT" --duration "$INGEST_SECONDS" \
    --devices "$DEVICES" --users "$USERS" --batch 1000 --concurrency 4 | sed "s/^/RESULT [$label] /"
  echo "== [$label] $CHECK_IN_WINDOW Macs: reports that only check in, then full reports, ${INGEST_SECONDS}s each"
  $BENCH loadgen ingest --target "http://127.0.0.1:$PORT" --duration "$CHECK_IN_WARMUP" --check-ins \
    --devices "$CHECK_IN_WINDOW" --users "$USERS" --batch 1000 --concurrency 4 >/dev/null
  $BENCH loadgen ingest --target "http://127.0.0.1:$PORT" --duration "$INGEST_SECONDS" --check-ins \
    --devices "$CHECK_IN_WINDOW" --users "$USERS" --batch 1000 --concurrency 4 | sed "s/^/RESULT [$label] check_ins: /"
  $BENCH loadgen ingest --target "http://127.0.0.1:$PORT" --duration "$INGEST_SECONDS" \
    --devices "$CHECK_IN_WINDOW" --users "$USERS" --batch 1000 --concurrency 4 | sed "s/^/RESULT [$label] full_reports_of_the_same_macs: /"
  echo "RESULT [$label] rss_after_ingest_mib=$(rss_mib $SERVER)"
  kill $SERVER; wait $SERVER 2>/dev/null || true; SERVER=
}

measure sqlite "sqlite://$WORK/data/posture.db"
if [ -n "${STORE_PG:-}" ]; then
  schema="posture_scale_$$"
  sep='?'; case "$STORE_PG" in *\?*) sep='&';; esac
  measure postgres "${STORE_PG}${sep}posture_schema=$schema"
  psql "$STORE_PG" -q -c "DROP SCHEMA $schema CASCADE" 2>/dev/null || true
fi
