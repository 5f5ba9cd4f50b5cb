# Shared by the client scripts: starts a real `posture serve --demo` on a free loopback port,
# with its data in a temp dir, and stops it (and removes the dir) when the script exits.
# After `start_demo_server`: ADDR is host:port, WORK a temp dir for the script's own files.
# POSTURE_BIN names the binary; by default the workspace's debug build, built if need be.

CLIENTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$CLIENTS_DIR/../.." && pwd)"

start_demo_server() {
  if [ -z "${POSTURE_BIN:-}" ]; then
    (cd "$REPO_DIR" && cargo build --quiet --bin posture)
    POSTURE_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug/posture"
  fi
  WORK="$(mktemp -d)"
  trap stop_demo_server EXIT
  # Port 0: the kernel picks a free port and the server logs it, so two runs never collide.
  # The caller's POSTURE_* settings stay out: a config file's credentials would replace the
  # demo ones, and reflection might need a credential.
  local unset=()
  for name in $(env | sed -n 's/^\(POSTURE_[A-Z_]*\)=.*/\1/p'); do unset+=(-u "$name"); done
  env "${unset[@]}" NO_COLOR=1 \
    "$POSTURE_BIN" serve --demo --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  ADDR=""
  for _ in $(seq 1 200); do
    ADDR="$(sed -e 's/\x1b\[[0-9;]*m//g' -n -e 's/.*posture serving addr=\([0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n 1)"
    [ -n "$ADDR" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "posture serve --demo stopped while starting:" >&2
      cat "$WORK/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "posture serve --demo did not start within 20 s" >&2; exit 1; }
  "$POSTURE_BIN" probe --addr "$ADDR" --timeout 5s >/dev/null
}

stop_demo_server() {
  local status=$?
  if [ -n "${SERVER_PID:-}" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
  if [ "$status" -ne 0 ] && [ -f "${WORK:-}/server.log" ]; then
    echo "--- the server's log ---" >&2
    tail -n 50 "$WORK/server.log" >&2
  fi
  rm -rf "${WORK:-}"
  return "$status"
}

# Tallies for the closing line: `pass NAME`, `fail NAME WHY…`, then `summary LABEL`.
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); }
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL $*" >&2
}
summary() {
  echo "$1: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}
