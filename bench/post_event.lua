-- wrk script: POST prebuilt bodies in rotation and count the response statuses.
--
--   wrk -t1 -c32 -d10s -s bench/post_event.lua http://127.0.0.1:8000/v1/event -- bodies.txt
--
-- bodies.txt holds one request body per line (an event, or a JSON array of
-- events for /v1/events); bench/http.py writes it. Each thread starts at its
-- own place in the rotation. done() prints "STATUS <code> <count>" lines and
-- "DUPLICATES <count>" (answers saying an event id was seen before) so that
-- the caller can check that every answer was a 202 accepting new events.

local threads = {}
local requests = {}
local index = 0
statuses = {} -- globals, so that done() can read each thread's with thread:get
duplicates = 0

function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = assert(args[1], "usage: wrk ... -s post_event.lua URL -- BODIES_FILE [CONTENT_TYPE]")
  local headers = { ["Content-Type"] = args[2] or "application/json" }
  for line in io.lines(path) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  assert(#requests > 0, "no request bodies in " .. path)
  index = (offset * 7919) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if body:find('"duplicate":true', 1, true) or body:find('"duplicates":["', 1, true) then
    duplicates = duplicates + 1
  end
end

function done(summary, latency, reqs)
  local total, dups = {}, 0
  for _, thread in ipairs(threads) do
    dups = dups + thread:get("duplicates")
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("STATUS %d %d\n", status, count))
  end
  io.write(string.format("DUPLICATES %d\n", dups))
end
