-- Chaos: the shipped examples under pipelined load with random payloads
-- (up to 4 MiB where the protocol allows it), clients that reset in the
-- middle of a batch, and a peer that sends big requests and never reads.
-- Every request a live client sent gets exactly one reply, the right one,
-- and the server's memory stays bounded. The load is
-- spec/fixtures/chaos.py (one thread, non-blocking sockets).
local helpers = require "helpers"

local DRIVER = "spec/fixtures/chaos.py"
-- Seconds of new batches per example; ASan runs slower, so shorter.
local SECONDS = helpers.sanitize and 4 or 8
local CLIENTS = 6
local MAX_SIZE = 4 * 1024 * 1024
-- The server may hold a few MiB per client and the stalled peer's
-- capped output; far below this unless a buffer grows without bound.
local PEAK_RSS_KIB = (helpers.sanitize and 1200 or 600) * 1024

local function run_chaos(proto, example, seed)
    local srv = helpers.serve{ script = "examples/" .. example }
    local status, out = helpers.run("/usr/bin/python3", table.concat({
        DRIVER, proto, srv.port, srv.pid, seed, SECONDS, CLIENTS, MAX_SIZE
    }, " "))
    assert.equal(0, status, out)
    local summary = out:match("summary ([^\n]*)")
    assert(summary, "no summary from the driver:\n" .. out)
    local r = {}
    for k, v in summary:gmatch("([%w_]+)=(%d+)") do r[k] = tonumber(v) end
    assert(srv:alive(), "the server died:\n" .. srv:log())
    -- One fresh request still works.
    assert.is_true(r.sent > 0 and r.answered > 0, out)
    assert.equal(0, r.missing, out)
    assert.equal(0, r.bad, out)
    assert.equal(r.sent, r.answered + r.aborted, out)
    assert.is_true(r.peak_rss_kib < PEAK_RSS_KIB,
                   ("peak RSS %d KiB\n%s"):format(r.peak_rss_kib, out))
    assert.equal(0, srv:stop(), srv:log())
    return r
end

describe("chaos", function()
    it("resp.lua answers every live request, payloads up to 4 MiB", function()
        run_chaos("resp", "resp.lua", 11)
    end)

    it("http.lua answers every live request, bodies up to 1 MiB", function()
        run_chaos("http", "http.lua", 12)
    end)

    it("lenprefix.lua answers every live request", function()
        run_chaos("lenprefix", "lenprefix.lua", 13)
    end)

    it("echo.lua answers every live request", function()
        run_chaos("echo", "echo.lua", 14)
    end)
end)
