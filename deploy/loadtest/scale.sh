#!/usr/bin/env bash
# Scale: generate an organisation into SQLite (and PostgreSQL if STORE_PG is set), start
# `posture serve` on it, and report start-up time, resident memory, PreviewTargeting and ingest.
#
#   deploy/loadtest/scale.sh                                  # 1M devices, 1M users, 100k groups
#   DEVICES=100000 USERS=100000 GROUP_COUNT=10000 deploy/loadtest/scale.sh
#   STORE_PG=postgres://postgres@127.0.0.1:5432/test deploy/loadtest/scale.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DEVICES=${DEVICES:-1000000}
USERS=${USERS:-1000000}
GROUP_COUNT=${GROUP_COUNT:-100000}
INGEST_SECONDS=${INGEST_SECONDS:-15}
PORT=${PORT:-50591}

cargo build --release --quiet
BIN=target/release/posture
WORK=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

measure() { # $1 label, $2 store URL
  local label=$1 store=$2
  echo "== [$label] generating $DEVICES devices, $USERS users, $GROUP_COUNT groups"
  /usr/bin/time -f "[$label] generate: %e s, %M KiB max RSS" \
    $BIN generate --store "$store" --devices "$DEVICES" --users "$USERS" --groups "$GROUP_COUNT" 2>&1 | grep -v INFO
  local started ready rss
  started=$(date +%s.%N)
  $BIN serve --listen 127.0.0.1:$PORT --store "$store" >"$WORK/server.log" 2>&1 &
  SERVER=$!
  until grep -q "posture serving" "$WORK/server.log"; do
    kill -0 $SERVER 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
    sleep 0.05
  done
  ready=$(date +%s.%N)
  rss=$(awk '/VmRSS/{print $2}' /proc/$SERVER/status)
  echo "RESULT [$label] startup_s=$(awk "BEGIN{printf \"%.2f\", $ready - $started}") rss_mib=$((rss / 1024))"
  echo "== [$label] ingest: batches of 1000 for ${INGEST_SECONDS}s"
  $BIN loadgen ingest --target "http://127.0.0.1:$PORT" --duration "$INGEST_SECONDS" \
    --devices "$DEVICES" --users "$USERS" --batch 1000 --concurrency 4 | sed "s/^/RESULT [$label] /"
  rss=$(awk '/VmRSS/{print $2}' /proc/$SERVER/status)
  echo "RESULT [$label] rss_after_ingest_mib=$((rss / 1024))"
  kill $SERVER; wait $SERVER 2>/dev/null || true; SERVER=
}

measure sqlite "sqlite://$WORK/data/posture.db"
if [ -n "${STORE_PG:-}" ]; then
  schema="posture_scale_$$"
  sep='?'; case "$STORE_PG" in *\?*) sep='&';; esac
  measure postgres "${STORE_PG}${sep}posture_schema=$schema"
  psql "$STORE_PG" -q -c "DROP SCHEMA $schema CASCADE" 2>/dev/null || true
fi
