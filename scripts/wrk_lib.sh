# Shared by the load scripts (sourced, not run).
#
# wrk_run NAME URL [PID...]: one wrk run (THREADS, CONNECTIONS, DURATION,
# the Lua script in $lua; KEYS_FILE from the environment) appending
# "NAME req/s p50 p99 non-2xx cpu-us-per-request" to $tmp/results. The CPU
# figure is the user + system time the given processes (all their threads)
# used during the run, divided by the requests wrk completed: what the
# target itself spends per request, whatever else shares the machine.
# Without PIDs it is 0.
cpu_ticks() {
  local t=0 p
  for p in "$@"; do
    # Fields 14 and 15 of /proc/PID/stat: utime and stime of the whole process.
    set -- $(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null || echo "0 0")
    t=$((t + $1 + $2))
  done
  echo "$t"
}

wrk_run() {
  local name=$1 url=$2 out before after
  shift 2
  before=$(cpu_ticks "$@")
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$lua" "$url")"
  after=$(cpu_ticks "$@")
  local requests hz
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  hz=$(getconf CLK_TCK)
  echo "$name $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out") $(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0) $(python3 -c "print(f'{($after - $before) / $hz / max($requests, 1) * 1e6:.1f}')")" >>"$tmp/results"
}

# The worker processes of an nginx master (their CPU is nginx's work).
nginx_workers() { pgrep -P "$1" | tr '\n' ' '; }
