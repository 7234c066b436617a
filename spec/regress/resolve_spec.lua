-- Name lookups run on a pool of threads: names whose nameserver never
-- answers (each holds a thread in getaddrinfo for the resolver's whole
-- timeout) do not delay another lookup, a lookup that timed out stops
-- holding a slot, and threads stuck in getaddrinfo do not hold up exit.
--
-- The server runs in its own mount namespace (unshare -m) with a
-- resolv.conf naming a nameserver on 127.53.x.y:53: a UDP socket this
-- spec binds and never reads, so every query there goes unanswered.
local helpers = require "helpers"
local socket = require "socket"

local q = helpers.shell_quote

local DRIVER = [==[
local luaserv = require "luaserv"
return {
    -- One line per connection: "HOST PORT TIMEOUT"; answers how the
    -- luaserv.connect() ended.
    handle = function(conn)
        local line = conn:readline()
        if not line then return end
        local host, port, timeout = line:match("^(%S+) (%d+) (%S+)$")
        local up, err = luaserv.connect(host, tonumber(port),
                                        { timeout = tonumber(timeout) })
        if up then up:close() end
        conn:write(up and "OK" or ("ERR " .. err), "\n")
    end,
}
]==]

local function can_unshare()
    return os.execute("unshare -m true >/dev/null 2>&1") == true
end

-- A nameserver that never answers, and a server that asks only it.
local function start(extra_args)
    local addr = ("127.53.%d.%d"):format(math.random(0, 250),
                                         1 + helpers.now() * 1000 % 250 // 1)
    local hole = assert(socket.udp())
    assert(hole:setsockname(addr, 53))
    helpers.defer(function() hole:close() end)
    local conf = helpers.write_file(helpers.tmpname(".resolv.conf"),
        "nameserver " .. addr .. "\noptions timeout:5 attempts:2\n")
    local wrap = "unshare -m sh -c " ..
        q("mount --bind " .. q(conf) .. " /etc/resolv.conf && " ..
          'exec "$0" "$@"') .. " "
    -- tasks still waiting on a lookup are aborted after 0.5 s at stop
    local args = { "--shutdown-timeout", "0.5" }
    for _, a in ipairs(extra_args or {}) do args[#args + 1] = a end
    local srv = helpers.start_server{ source = DRIVER, shell = wrap,
                                      args = args }
    return srv
end

local function ask(srv, line)
    local c = assert(helpers.connect(srv.port, 30))
    assert(c:send(line .. "\n"))
    return c
end

local function answer(c)
    local l, err = c:receive("*l")
    c:close()
    return l or ("(no answer: " .. tostring(err) .. ")")
end

-- "localhost" resolves; connecting may then be refused on ::1, which is
-- fine: the name was looked up.
local function resolved(reply)
    return reply == "OK" or reply:find("refused", 1, true) ~= nil
end

describe("name lookups", function()
    local limit = helpers.sanitize and 0.25 or 0.1

    it("resolve localhost at once while five names hang", function()
        if not can_unshare() then pending("needs unshare -m (root)") return end
        local srv = start()
        local hung = {}
        for i = 1, 5 do
            hung[i] = ask(srv, ("hang%d.example 80 30"):format(i))
        end
        -- all five lines read, so all five lookups have started
        helpers.wait_read(srv.port)
        local t0 = helpers.now()
        local reply = answer(ask(srv, "localhost " .. srv.port .. " 5"))
        local took = helpers.now() - t0
        assert.truthy(resolved(reply), reply)
        assert.is_true(took < limit, ("localhost took %.3f s"):format(took))
        for i = 1, 5 do hung[i]:close() end
        assert.equal(0, srv:stop())
    end)

    it("frees the slot of a lookup that timed out", function()
        if not can_unshare() then pending("needs unshare -m (root)") return end
        local srv = start()
        local hung = {}
        for i = 1, 24 do
            hung[i] = ask(srv, ("stuck%d.example 80 0.3"):format(i))
        end
        for i = 1, 24 do
            assert.equal("ERR timeout", answer(hung[i]))
        end
        -- 16 threads are still inside getaddrinfo, for nobody
        local t0 = helpers.now()
        local reply = answer(ask(srv, "localhost " .. srv.port .. " 5"))
        local took = helpers.now() - t0
        assert.truthy(resolved(reply), reply)
        assert.is_true(took < limit, ("localhost took %.3f s"):format(took))
        assert.equal(0, srv:stop())
    end)

    it("exits promptly and cleanly with lookups stuck in getaddrinfo", function()
        if not can_unshare() then pending("needs unshare -m (root)") return end
        local srv = start()
        local hung = {}
        for i = 1, 5 do
            hung[i] = ask(srv, ("exit%d.example 80 30"):format(i))
        end
        helpers.wait_read(srv.port)
        for i = 1, 5 do hung[i]:close() end
        local t0 = helpers.now()
        assert.equal(0, srv:stop("TERM", 5))
        local took = helpers.now() - t0
        assert.is_true(took < 2, ("exit took %.1f s"):format(took))
    end)
end)
