# Shared by the load scripts (sourced, not run).
#
# wrk_run NAME URL: one wrk run (THREADS, CONNECTIONS, DURATION, the Lua
# script in $lua; KEYS_FILE from the environment) appending
# "NAME req/s p50 p99 non-2xx" to $tmp/results.
wrk_run() {
  local out
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$lua" "$2")"
  echo "$1 $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out") $(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0)" >>"$tmp/results"
}
