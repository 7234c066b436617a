-- conn:sendfile(path, offset, count): file bytes straight from the kernel
-- to a plain TCP peer, past the output queue (which must be empty).
local helpers = require "helpers"

-- A stream-style handler: a line "PATH OFFSET COUNT" asks for that part
-- of the file. It first tries sendfile with "ok\n" still queued (and
-- reports what that gave), flushes, then sends the range: sendfile while
-- the socket takes it, one chunk through conn:write when it is full.
local SCRIPT = [[
local luaserv = require "luaserv"
return { handle = function(conn)
    local line = conn:readline()
    local path, off, count = line:match("^(%S+) (%d+) (%d+)$")
    off, count = tonumber(off), tonumber(count)
    conn:write("ok\n")
    local n, err = conn:sendfile(path, off, count)
    conn:write(tostring(n), " ", tostring(err), "\n")
    conn:flush()
    local last = off + count
    local f = assert(io.open(path, "rb"))
    while off < last do
        n, err = conn:sendfile(path, off, last - off)
        if not n then conn:write("error ", err, "\n") break end
        off = off + n
        if err == "eof" then break end
        if err == "again" and off < last then
            f:seek("set", off)
            local data = f:read(math.min(65536, last - off))
            conn:write(data)
            conn:flush()
            off = off + #data
        end
    end
    f:close()
    luaserv.log.info("sent up to %d", off)
end }
]]

-- A file of n varied bytes, removed when the test ends.
local function temp_file(n)
    local unit = ("0123456789abcdefghijklmnopqrstuvwxyz\n"):rep(1000)
    local data = unit:rep(n // #unit + 1):sub(1, n)
    local path = helpers.write_file(helpers.tmpname(".bin"), data)
    helpers.defer(function() os.remove(path) end)
    return path, data
end

describe("conn:sendfile", function()
    it("sends a 5 MB file range whole, after the queue was flushed", function()
        local path, data = temp_file(5 * 1000 * 1000)
        local srv, c = helpers.start_and_connect({ source = SCRIPT }, 20)
        assert(c:send(path .. " 1000 4990000\n"))
        local got = helpers.read_to_close(c)
        assert.equal("ok\nnil pending\n", got:sub(1, 15))
        assert.equal(4990000, #got - 15)
        assert.is_true(data:sub(1001, 4991000) == got:sub(16),
                       "the bytes differ")
        assert.matches("sent up to 4991000", srv:log(), 1, true)
    end)

    it("keeps up with a slow reader", function()
        local path, data = temp_file(3 * 1000 * 1000)
        local _, c = helpers.start_and_connect({ source = SCRIPT }, 20)
        assert(c:send(path .. " 0 3000000\n"))
        helpers.sleep(0.5)          -- the socket fills; the task waits
        local got = helpers.read_to_close(c)
        assert.is_true(got:sub(16) == data, "the bytes differ")
    end)

    it("stops at the end of a shorter file, and fails on a missing one", function()
        local path, data = temp_file(1000)
        local _, c = helpers.start_and_connect({ source = SCRIPT }, 10)
        assert(c:send(path .. " 10 5000\n"))
        local got = helpers.read_to_close(c)
        assert.equal("ok\nnil pending\n" .. data:sub(11), got)
        _, c = helpers.start_and_connect({ source = SCRIPT }, 10)
        assert(c:send("/nonexistent/x 0 10\n"))
        got = helpers.read_to_close(c)
        assert.matches("^ok\nnil /nonexistent/x: No such file or directory\n", got)
    end)
end)
