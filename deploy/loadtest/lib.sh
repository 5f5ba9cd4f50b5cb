# Shared by the load scripts (sourced, not run).

# temporary_work: sets WORK, a new temporary directory, and at exit stops the server of
# start_server (SERVER, if any) and removes WORK.
temporary_work() {
  WORK=$(mktemp -d)
  SERVER=
  trap '[ -z "$SERVER" ] || kill $SERVER 2>/dev/null || true; wait 2>/dev/null; rm -rf "$WORK"' EXIT
}

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

# wait_watching LOG: waits until the server of start_server has decided every device once for
# WatchCompliance (it starts that after it serves; its journal is part of the steady state),
# and sets WATCHING_S (seconds from serving) and RSS_MIB (resident memory then).
wait_watching() {
  local log=$1 from
  from=$(date +%s.%N)
  until grep -q "watching decisions" "$log"; do
    kill -0 "$SERVER" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.05
  done
  WATCHING_S=$(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $from}")
  RSS_MIB=$(rss_mib "$SERVER")
}

# rps H2LOAD_OUTPUT: the requests per second h2load reports ("finished in …, N req/s").
rps() { awk '/^finished in/{gsub(",","");print $4}' "$1"; }

# percentiles LOG: p50 p99 p99.9 and the maximum of the durations (µs, third column) in an
# h2load --log-file, and how many requests it holds.
percentiles() {
  sort -n -k3 "$1" | awk '{d[NR]=$3} END{printf "p50=%dus p99=%dus p99.9=%dus max=%dus n=%d", d[int(NR*0.5)], d[int(NR*0.99)], d[int(NR*0.999)], d[NR], NR}'
}

# p999 LOG: the p99.9 duration alone (µs).
p999() { sort -n -k3 "$1" | awk '{d[NR]=$3} END{print d[int(NR*0.999)]}'; }

# p999_ratio LOG LOG: the first log's p99.9 over the second's, to two places.
p999_ratio() { awk "BEGIN{printf \"%.2f\", $(p999 "$1") / $(p999 "$2")}"; }

# median: the median of the numbers on standard input, one a line.
median() { sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
