-- bench/advance.lua: fenced PUTs of 1 KiB where every request advances the
-- highest token of its resource. Run it with as many threads as connections
-- (wrk -tN -cN): wrk does not tell a script which connection a request goes
-- out on, but with one connection per thread a per-thread counter gives one
-- resource per connection, one request in flight on it, and tokens 1, 2, 3...
-- strictly increasing in the order they reach the proxy. So every request
-- should be accepted and advance the token; any 409 shows up as non2xx.
-- The path is /w/a/TAG/tTHREAD/o; the route uses segments:4, so the resource
-- is /w/a/TAG/tTHREAD. TAG (first script argument, after "--") must differ
-- between runs against the same store, since tokens restart at 1.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

-- setup() runs in wrk's main Lua state once per thread; thread:set() copies
-- the id into that thread's own state as a global.
local next_tid = 0
function setup(thread)
   next_tid = next_tid + 1
   thread:set("tid", next_tid)
end

local path, body, headers
local counter = 0

function init(args)
   path = string.format("/w/a/%s/t%d/o", args[1] or "run", tid)
   body = string.rep("x", 1024)
   headers = { ["Content-Type"] = "application/octet-stream" }
end

function request()
   counter = counter + 1
   headers["Fencing-Token"] = string.format("%d", counter)
   return wrk.format("PUT", path, headers, body)
end
