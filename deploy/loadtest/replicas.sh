#!/usr/bin/env bash
# Replica lag: two `posture serve` on one PostgreSQL database; writes through A, reads through
# B without min_revision, and reports how long until B serves each write.
#
#   STORE_PG=postgres://postgres@127.0.0.1:5432/test deploy/loadtest/replicas.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/loadtest/lib.sh
STORE_PG=${STORE_PG:-postgres://postgres@127.0.0.1:5432/test}
WRITES=${WRITES:-500}
cargo build --release --quiet --workspace
BIN=target/release/posture
BENCH=target/release/posture-bench
WORK=$(mktemp -d)
schema="posture_lag_$$"
sep='?'; case "$STORE_PG" in *\?*) sep='&';; esac
STORE="${STORE_PG}${sep}posture_schema=$schema"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; psql "$STORE_PG" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

$BENCH generate --store "$STORE" --devices 1000 --users 1000 --groups 100 2>&1 | grep -v INFO || true
for port in 50601 50602; do
  start_server "$WORK/$port.log" --listen 127.0.0.1:$port --store "$STORE"
  PIDS+=("$SERVER")
done
echo "== $WRITES writes through A (50601), read through B (50602)"
$BENCH loadgen lag --writer http://127.0.0.1:50601 --reader http://127.0.0.1:50602 --writes "$WRITES" | sed 's/^/RESULT /'
