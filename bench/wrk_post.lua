-- wrk script for bench/ingest.py: POST one JSON body on every request.
--
--   wrk -t1 -c32 -d10s -s bench/wrk_post.lua URL -- BODY_FILE AUTH_HEADER [ID_PREFIX]
--
-- With BENCH_MESSAGE_IDS=1 in the environment, every "__MSGID__" in the body is
-- replaced by a fresh id on every request ("<ID_PREFIX>-<thread>-<n>"), so each
-- event has its own messageId. Without it the body is sent as is and wrk builds
-- the request once (the cheapest load generator).
--
-- done() prints one line "WRK_JSON {...}" for the harness; latencies are in µs.

local dynamic = os.getenv("BENCH_MESSAGE_IDS") == "1"
local next_thread_id = 0
local id_prefix = "bench-0-"
local sequence = 0
-- The body cut at each placeholder; pieces interleaves them with the ids:
-- parts[1], id, parts[2], id, ..., parts[n]. table.concat of the pieces costs a
-- fraction of a gsub over a 50 KB batch body.
local parts = {}
local pieces = {}

local function split_template(template)
   local start = 1
   while true do
      local first, last = template:find("__MSGID__", start, true)
      if not first then break end
      parts[#parts + 1] = template:sub(start, first - 1)
      start = last + 1
   end
   parts[#parts + 1] = template:sub(start)
   for i, part in ipairs(parts) do
      pieces[2 * i - 1] = part
   end
end

function setup(thread)
   next_thread_id = next_thread_id + 1
   thread:set("thread_id", next_thread_id)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local template = file:read("*a")
   file:close()
   wrk.method = "POST"
   wrk.body = template
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = args[2]
   id_prefix = (args[3] or "bench") .. "-" .. tostring(thread_id or 0) .. "-"
   split_template(template)
end

-- wrk decides between a fixed and a per-request body by whether request() exists
-- once the script is loaded, so it is defined only when ids are wanted.
if dynamic then
   function request()
      for i = 1, #parts - 1 do
         sequence = sequence + 1
         pieces[2 * i] = id_prefix .. sequence
      end
      return wrk.format(nil, nil, nil, table.concat(pieces))
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
