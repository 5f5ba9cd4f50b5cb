# Shared by the load scripts (sourced, not run).

# start_server LOG ARGS...: starts `$BIN serve ARGS...` in the background, waits until it
# serves, and sets SERVER (its pid), STARTUP_S (seconds until serving) and RSS_MIB.
start_server() {
  local log=$1; shift
  local started ready
  started=$(date +%s.%N)
  $BIN serve "$@" >"$log" 2>&1 &
  SERVER=$!
  until grep -q "posture serving" "$log"; do
    kill -0 "$SERVER" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.05
  done
  ready=$(date +%s.%N)
  STARTUP_S=$(awk "BEGIN{printf \"%.2f\", $ready - $started}")
  RSS_MIB=$(( $(awk '/VmRSS/{print $2}' "/proc/$SERVER/status") / 1024 ))
}

rss_mib() { echo $(( $(awk '/VmRSS/{print $2}' "/proc/$1/status") / 1024 )); }
