-- wrk script: send prebuilt CRM calls in rotation and count the response statuses.
--
--   wrk -t1 -c16 -d10s -s bench/crm_calls.lua http://127.0.0.1:5000 -- calls.tsv
--
-- calls.tsv holds one call per line, "METHOD<TAB>PATH<TAB>BODY" (bench/crm.py
-- writes it: the replacement calls Herald made, which answer 200 once the CRM
-- holds those users and trips). done() prints "STATUS <code> <count>" lines.

local threads = {}
local requests = {}
local index = 0
statuses = {} -- a global, so that done() can read each thread's with thread:get

function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = assert(args[1], "usage: wrk ... -s crm_calls.lua URL -- CALLS_FILE")
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(path) do
    local method, target, body = line:match("^(%u+)\t([^\t]+)\t(.*)$")
    if method then
      requests[#requests + 1] = wrk.format(method, target, headers, body)
    end
  end
  assert(#requests > 0, "no calls in " .. path)
  index = (offset * 7919) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, reqs)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("STATUS %d %d\n", status, count))
  end
end
