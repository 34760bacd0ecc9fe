-- bench/report.lua: the done() hook shared by the bench scripts. It prints one
-- machine-readable RESULT line (wrk's own text output rounds the latency
-- percentiles and mixes units), which bench/run.sh parses. Latencies are in
-- microseconds; "non2xx" counts responses outside 2xx/3xx (e.g. 409).

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d " ..
      "non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration, summary.requests / secs,
      latency:percentile(50), latency:percentile(99),
      e.status, e.connect, e.read, e.write, e.timeout))
end
