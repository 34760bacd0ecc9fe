-- bench/put.lua: PUT of a 1 KiB body with a fixed "Fencing-Token: 1" (or the
-- token in $BENCH_TOKEN: bench/verify.sh passes a held lock's) to the URL
-- given to wrk. The request is the same every time, so wrk builds it once
-- per thread (no request() hook, no per-request Lua cost). On a fenced route
-- the first request advances the resource to 1 and every later one carries an
-- equal token: the steady state of one lock holder writing many times.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

wrk.method = "PUT"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Fencing-Token"] = os.getenv("BENCH_TOKEN") or "1"
