#!/usr/bin/env bash
# The reliability scenarios at full length, through the real binary (see RELIABILITY.md):
# SIGKILL under writers on SQLite and PostgreSQL (20 kills each), a 20-second PostgreSQL
# outage, a full disk, shutdown under load, a minute of overload, a 10-minute soak, then in
# release the 10-minute soak at 70 % of peak (soak.sh) and a flood of decisions (overload.sh).
# CI runs the same tests shorter (5 kills, 30 seconds of overload, no soak). Needs PostgreSQL
# (POSTURE_TEST_DATABASE_URL, default the local one) and root, to mount the small tmpfs of the
# full-disk test and to cap the server's CPU with a cgroup.
set -euo pipefail
cd "$(dirname "$0")/../.."
export POSTURE_TEST_DATABASE_URL="${POSTURE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export POSTURE_CRASH_KILLS="${POSTURE_CRASH_KILLS:-20}"

# One test at a time, printing what each observed.
cargo test --test crash -- --include-ignored --nocapture --test-threads 1
POSTURE_OUTAGE_SECS="${POSTURE_OUTAGE_SECS:-20}" cargo test --test replicas cut_off -- --ignored --nocapture
cargo test --test full_disk -- --include-ignored --nocapture
cargo test --test shutdown -- --nocapture
POSTURE_OVERLOAD_SECS="${POSTURE_OVERLOAD_SECS:-60}" cargo test --test overload overload -- --nocapture
POSTURE_SOAK_SECS="${POSTURE_SOAK_SECS:-600}" cargo test --test overload soak -- --ignored --nocapture
deploy/reliability/soak.sh
deploy/reliability/overload.sh
