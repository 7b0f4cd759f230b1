-- wrk script for scripts/bench.sh: the request from the environment
-- (BENCH_METHOD, BENCH_BODY, and BENCH_HEADER, one "Name: value" header),
-- and one JSON line of results. With BENCH_HEADERS (a file of "Name: value"
-- headers, one a line), each request sends the next header of its thread's
-- share of the lines instead of BENCH_HEADER, so that concurrent requests
-- can act for different callers. With BENCH_DELAY_MS, each connection waits
-- that long between its requests (wrk's latencies leave the wait out).
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local header = os.getenv("BENCH_HEADER")
local headers_file = os.getenv("BENCH_HEADERS")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")

wrk.method = method
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
if header and header ~= "" then
  local name, value = header:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end

if headers_file and headers_file ~= "" then
  local threads = 0
  -- Runs in the main state, once a thread: numbers the threads.
  setup = function(thread)
    thread:set("thread_number", threads)
    threads = threads + 1
    thread:set("thread_count", tonumber(os.getenv("BENCH_THREADS_USED")))
  end

  local mine = {}
  local next_line = 0
  init = function(args)
    local n = 0
    for line in io.lines(headers_file) do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      if name then
        if n % thread_count == thread_number then
          mine[#mine + 1] = { name = name, value = value }
        end
        n = n + 1
      end
    end
  end

  -- BENCH_THREADS_USED must be wrk's -t: a thread with no share fails.
  request = function()
    next_line = next_line % #mine + 1
    wrk.headers[mine[next_line].name] = mine[next_line].value
    return wrk.format()
  end
end

if delay_ms then
  delay = function()
    return delay_ms
  end
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"non_2xx":%d,"socket_errors":%d}\n',
    summary.requests,
    summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    errors.status,
    errors.connect + errors.read + errors.write + errors.timeout
  ))
end
