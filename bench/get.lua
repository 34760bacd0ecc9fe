-- bench/get.lua: plain GET of the URL given to wrk (a static 1 KiB file).
-- Only adds the RESULT line of report.lua.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")
