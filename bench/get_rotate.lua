-- wrk script: GET prebuilt paths in rotation, each request's query string made unique.
--
--   wrk -t1 -c32 -d10s -s bench/get_rotate.lua http://127.0.0.1:8000/ -- paths.txt [FIRST]
--
-- paths.txt holds one path a line. A line "PREFIX<TAB>SUFFIX" is sent as
-- PREFIX .. N .. SUFFIX with N counting up, so that no two requests carry the
-- same query string (bench/marketplace.py puts N in a bound's fraction of a
-- second, which the server truncates: the same window, never the same key of
-- an answer store). A line without a tab is sent as it is (a repeated path).
-- Each thread starts at its own place in the rotation and its own range of N.
-- FIRST (default 0) moves every range on, so that runs after each other send
-- different query strings too (bench/search_front.py: a cache in front).

local threads = {}
local paths = {}
local index = 0
local counter = 0

function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(args[1], "usage: wrk ... -s get_rotate.lua URL -- PATHS_FILE")
  for line in io.lines(file) do
    if #line > 0 then
      local prefix, suffix = line:match("^([^\t]*)\t(.*)$")
      paths[#paths + 1] = prefix and { prefix, suffix } or line
    end
  end
  assert(#paths > 0, "no paths in " .. file)
  index = (offset * 7919) % #paths
  counter = (tonumber(args[2]) or 0) + offset * 100000000
end

function request()
  index = index % #paths + 1
  local path = paths[index]
  if type(path) == "table" then
    counter = counter + 1
    path = path[1] .. counter .. path[2]
  end
  return wrk.format("GET", path)
end
