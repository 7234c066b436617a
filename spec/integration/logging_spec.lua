-- Logging: --log-format json writes one JSON object a line (ts, level, msg,
-- and listener, peer and conn on a connection's lines); --access-log adds
-- a line per closed connection with its peer, duration, bytes, messages
-- and close reason; --log-level hides the levels below it.
local helpers = require "helpers"
local json = require "dkjson"
local op = require "fixtures.operations_util"

local SCRIPT = "spec/fixtures/operations_handler.lua"
local SLOW = op.SLOW

local TS = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"
local LEVELS = { debug = true, info = true, warn = true, error = true }
local READY = "^luaserv: listening on "

-- --- strict JSON ----------------------------------------------------------
-- dkjson forgives raw control bytes and unknown escapes; a log shipper may
-- not, so every line is first checked against RFC 8259 here.

-- Returns true, or nil and what is wrong with s as one JSON object.
local function strict_object(s)
    local i = 1
    local function fail(msg) error(("%s at byte %d"):format(msg, i), 0) end
    local function ws() i = s:find("[^ \t\r\n]", i) or #s + 1 end
    local value
    local function str()
        i = i + 1
        local start = i
        while true do
            local c = s:sub(i, i)
            if c == "" then fail("unterminated string") end
            if c:byte() < 0x20 then fail("raw control byte in a string") end
            if c == '"' then
                i = i + 1
                return s:sub(start, i - 2)
            end
            if c == "\\" then
                local e = s:sub(i + 1, i + 1)
                if e == "u" then
                    if not s:sub(i + 2, i + 5):match("^%x%x%x%x$") then fail("bad \\u") end
                    i = i + 6
                elseif e:match('^["\\/bfnrt]$') then
                    i = i + 2
                else
                    fail("bad escape \\" .. e)
                end
            else
                i = i + 1
            end
        end
    end
    local function num()
        local j = i
        if s:sub(j, j) == "-" then j = j + 1 end
        if s:sub(j, j) == "0" then
            j = j + 1
        else
            local d = s:match("^[1-9]%d*", j)
            if not d then fail("bad number") end
            j = j + #d
        end
        if s:sub(j, j) == "." then
            local d = s:match("^%d+", j + 1)
            if not d then fail("bad fraction") end
            j = j + 1 + #d
        end
        if s:sub(j, j):match("^[eE]$") then
            j = j + 1
            if s:sub(j, j):match("^[+-]$") then j = j + 1 end
            local d = s:match("^%d+", j)
            if not d then fail("bad exponent") end
            j = j + #d
        end
        i = j
    end
    local function object()
        i = i + 1
        ws()
        local seen = {}
        if s:sub(i, i) == "}" then
            i = i + 1
            return
        end
        while true do
            if s:sub(i, i) ~= '"' then fail("expected a key") end
            local key = str()
            if seen[key] then fail("key " .. key .. " twice") end
            seen[key] = true
            ws()
            if s:sub(i, i) ~= ":" then fail("expected :") end
            i = i + 1
            ws()
            value()
            ws()
            local c = s:sub(i, i)
            i = i + 1
            if c == "}" then return end
            if c ~= "," then fail("expected , or }") end
            ws()
        end
    end
    local function array()
        i = i + 1
        ws()
        if s:sub(i, i) == "]" then
            i = i + 1
            return
        end
        while true do
            value()
            ws()
            local c = s:sub(i, i)
            i = i + 1
            if c == "]" then return end
            if c ~= "," then fail("expected , or ]") end
            ws()
        end
    end
    function value()
        local c = s:sub(i, i)
        if c == "{" then object()
        elseif c == "[" then array()
        elseif c == '"' then str()
        elseif c == "-" or c:match("^%d$") then num()
        else
            local lit = s:match("^true", i) or s:match("^false", i) or s:match("^null", i)
            if not lit then fail("unexpected " .. (c == "" and "end" or c)) end
            i = i + #lit
        end
    end
    local ok, err = pcall(function()
        if not utf8.len(s) then fail("not UTF-8") end
        if s:sub(1, 1) ~= "{" then fail("not an object") end
        object()
        if i ~= #s + 1 then fail("more after the object") end
    end)
    if ok then return true end
    return nil, err
end

-- The log's lines (stdout and stderr), less the text ready lines. With
-- --log-format json the ready lines are JSON too (msg "listening", level
-- info whatever --log-level says), so 2>&1 | jq reads every line: they
-- stay in, and json_lines checks them.
local function log_lines(srv)
    local out = {}
    for line in srv:log():gmatch("([^\n]*)\n") do
        if not line:find(READY) then out[#out + 1] = line end
    end
    return out
end

-- Every line of srv's log as a decoded object; fails on any that is not
-- exactly one valid JSON object.
local function json_lines(srv)
    local out = {}
    for n, line in ipairs(log_lines(srv)) do
        local ok, err = strict_object(line)
        assert(ok, ("line %d is not one JSON object (%s): %s"):format(n, tostring(err),
               (line:gsub("[\128-\255]", function(c) return ("\\x%02x"):format(c:byte()) end))))
        local obj = json.decode(line)
        assert.equal("string", type(obj.ts), line)
        assert.truthy(obj.ts:match(TS), line)
        assert.truthy(LEVELS[obj.level], line)
        assert.equal("string", type(obj.msg), line)
        out[#out + 1] = obj
    end
    return out
end

-- The objects whose msg matches the Lua pattern pat.
local function find_json(objs, pat)
    local out = {}
    for _, o in ipairs(objs) do
        if o.msg:find(pat) then out[#out + 1] = o end
    end
    return out
end

local function start(args)
    return op.start{ script = SCRIPT, args = args }
end

-- Connects, sends each line, reads the replies (a nil one ends it), and
-- closes. Returns the client's port.
local function session(port, lines, wait_close)
    local c = helpers.connect(port, 10 * SLOW)
    local _, cport = c:getsockname()
    for _, line in ipairs(lines) do
        assert(c:send(line .. "\n"))
        if not c:receive("*l") then break end
    end
    if wait_close then c:receive("*a") end
    c:close()
    return tonumber(cport)
end

-- Stops srv with SIGTERM and asserts a clean exit.
local function stop(srv)
    assert.equal(0, srv:stop("TERM", 30 * SLOW), srv:log())
end

describe("--log-format json", function()
    it("checks its own JSON checker", function()
        for _, bad in ipairs({ '{"a":"x\ty"}', '{"a":"\\x"}', '{"a":1} x', '{"a":01}',
                               '{"a":1,}', '["a"]', '{"a":1,"a":2}', '{"a":"\255"}',
                               '{"a":.5}', '{"a":tru}', '{"a"}' }) do
            assert.is_nil(strict_object(bad), bad)
        end
        assert.is_true(strict_object('{"a":"x\\ty\\u0001\\"","b":-1.5e3,"c":[true,null,{}]}'))
    end)

    it("writes one JSON object a line with ts, level and msg", function()
        local srv = start({ "--log-format", "json", "--access-log", "--log-level", "debug" })
        session(srv.port, { "hello" })
        session(srv.port, { "boom" })
        stop(srv)
        local objs = json_lines(srv)
        assert.is_true(#objs >= 5, srv:log())
        assert.equal(1, #find_json(objs, "^serving "), srv:log())
        assert.equal(1, #find_json(objs, "^stopped$"), srv:log())
        assert.equal(2, #find_json(objs, "^access$"), srv:log())
        local levels = {}
        for _, o in ipairs(objs) do levels[o.level] = true end
        assert.same({ debug = true, info = true, error = true }, levels)
    end)

    it("gives a connection's handler error its listener, peer and conn", function()
        local srv = start({ "--log-format", "json" })
        local cport = session(srv.port, { "boom" })
        stop(srv)
        local errors = find_json(json_lines(srv), "boom requested")
        assert.equal(1, #errors, srv:log())
        local e = errors[1]
        assert.equal("error", e.level)
        assert.truthy(e.msg:find("^handler error in on_message: "), e.msg)
        assert.truthy(e.msg:find("operations_handler.lua:%d+: boom requested\n"
                                 .. "stack traceback:\n"), e.msg)
        assert.equal("tcp://127.0.0.1:" .. srv.port, e.listener)
        assert.equal("127.0.0.1:" .. cport, e.peer)
        assert.equal("integer", math.type(e.conn))
        assert.is_true(e.conn > 0)
    end)

    it("escapes quotes, backslashes, tabs and control bytes", function()
        local srv = start({ "--log-format", "json" })
        session(srv.port, { "quoted" })
        stop(srv)
        local errors = find_json(json_lines(srv), "quoted", 1, true)
        assert.equal(1, #errors, srv:log())
        assert.truthy(errors[1].msg:find('a "quoted" \\ back\tslash \1 error', 1, true),
                      errors[1].msg)
    end)

    it("keeps a line one valid JSON object when the message is too long", function()
        local srv = start({ "--log-format", "json" })
        session(srv.port, { "long 30000" })
        stop(srv)
        local errors = find_json(json_lines(srv), "^handler error")
        assert.equal(1, #errors, srv:log())
        assert.truthy(errors[1].msg:find('^handler error in on_message: "\n"\n'), errors[1].msg)
        -- the connection's fields survive the cut
        assert.equal("tcp://127.0.0.1:" .. srv.port, errors[1].listener)
    end)

    it("keeps a line valid JSON when a peer's bytes are not UTF-8", function()
        local srv = start({ "--log-format", "json" })
        session(srv.port, { "fail \255\254 caf\195" })
        stop(srv)
        local errors = find_json(json_lines(srv), "fail: ")
        assert.equal(1, #errors, srv:log())
    end)

    it("writes access lines with numbers for numbers", function()
        local srv = start({ "--log-format", "json", "--access-log" })
        local cport = session(srv.port, { "hello", "world" })
        stop(srv)
        local access = find_json(json_lines(srv), "^access$")
        assert.equal(1, #access, srv:log())
        local a = access[1]
        assert.equal("info", a.level)
        assert.equal("tcp://127.0.0.1:" .. srv.port, a.listener)
        assert.equal("127.0.0.1:" .. cport, a.peer)
        assert.equal("integer", math.type(a.conn))
        assert.equal("number", type(a.duration))
        assert.is_true(a.duration >= 0 and a.duration < 30 * SLOW)
        assert.equal(12, a.bytes_in)
        assert.equal(22, a.bytes_out)
        assert.equal(2, a.messages)
        assert.equal("eof", a.reason)
    end)
end)

describe("--access-log", function()
    -- The access lines of a text log, by client port.
    local function access_lines(srv)
        local out, n = {}, 0
        for _, line in ipairs(log_lines(srv)) do
            if line:find(": access ", 1, true) then
                n = n + 1
                local port = tonumber(line:match("%(peer 127%.0%.0%.1:(%d+), "))
                assert(port, "no peer in: " .. line)
                out[port] = line
            end
        end
        return out, n
    end

    it("writes a line per closed connection with peer, duration, bytes, "
       .. "messages and reason", function()
        local srv = start({ "--access-log", "--idle-timeout", "0.3" })
        local eof = session(srv.port, { "hello" })                 -- client hangs up
        local err = session(srv.port, { "boom" }, true)            -- handler error
        local bye = session(srv.port, { "bye" }, true)             -- server closes
        local idle = session(srv.port, {}, true)                   -- idle timeout
        stop(srv)
        local lines, n = access_lines(srv)
        assert.equal(4, n, srv:log())
        local listener = "tcp://127.0.0.1:" .. srv.port
        local pat = "^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z info conn (%d+) %(peer 127%.0%.0%.1:%d+, "
                    .. listener:gsub("%p", "%%%0") .. "%): access duration=([%d.]+) "
                    .. "bytes_in=(%d+) bytes_out=(%d+) messages=(%d+) reason=(%S+)$"
        local function fields(port)
            local line = lines[port]
            assert(line, "no access line for port " .. port .. ":\n" .. srv:log())
            local id, dur, bin, bout, msgs, reason = line:match(pat)
            assert(id, "access line not as expected: " .. line)
            return { id = tonumber(id), duration = tonumber(dur), bytes_in = tonumber(bin),
                     bytes_out = tonumber(bout), messages = tonumber(msgs), reason = reason }
        end
        local f = fields(eof)
        assert.same({ 6, 11, 1, "eof" }, { f.bytes_in, f.bytes_out, f.messages, f.reason })
        f = fields(err)
        assert.same({ 5, 0, 1, "error" }, { f.bytes_in, f.bytes_out, f.messages, f.reason })
        f = fields(bye)
        assert.same({ 4, 4, 1, "closed" }, { f.bytes_in, f.bytes_out, f.messages, f.reason })
        f = fields(idle)
        assert.same({ 0, 0, 0, "timeout" }, { f.bytes_in, f.bytes_out, f.messages, f.reason })
        assert.is_true(f.duration >= 0.25, "timed out after " .. f.duration)
        local ids = {}
        for _, port in ipairs({ eof, err, bye, idle }) do ids[fields(port).id] = true end
        local count = 0
        for _ in pairs(ids) do count = count + 1 end
        assert.equal(4, count)
    end)

    it("writes none without the flag", function()
        local srv = start({})
        session(srv.port, { "hello" })
        stop(srv)
        local _, n = access_lines(srv)
        assert.equal(0, n, srv:log())
    end)
end)

describe("--log-level", function()
    -- Traffic that logs at warn (a line over the frame max) and at error
    -- (a handler error).
    local function noisy(srv)
        local c = helpers.connect(srv.port, 10 * SLOW)
        c:send(("z"):rep(70000) .. "\n")   -- the server may hang up midway
        c:receive("*a")
        c:close()
        session(srv.port, { "boom" }, true)
    end

    it("warn hides info lines and keeps warnings and errors", function()
        local srv = start({ "--log-level", "warn" })
        noisy(srv)
        stop(srv)
        local log = srv:log()
        assert.is_nil(log:find(" info ", 1, true), log)
        assert.truthy(log:find(" warn ", 1, true), log)
        assert.truthy(log:find(" error ", 1, true), log)
    end)

    it("error hides warnings too", function()
        local srv = start({ "--log-level", "error", "--log-format", "json" })
        noisy(srv)
        stop(srv)
        local objs = json_lines(srv)
        assert.is_true(#objs >= 1, srv:log())
        for _, o in ipairs(objs) do
            if o.msg ~= "listening" then assert.equal("error", o.level, srv:log()) end
        end
    end)

    it("info, the default, logs start and stop in text as TS LEVEL msg", function()
        local srv = start({})
        noisy(srv)
        stop(srv)
        local lines = log_lines(srv)
        local TSL = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ "
        assert.truthy(lines[1]:match(TSL .. "info serving "), lines[1])
        assert.truthy(lines[#lines]:match(TSL .. "info stopped$"), lines[#lines])
        assert.truthy(srv:log():match("\n[^\n]+Z warn conn %d+ %(peer [^\n]*frame too long"),
                      srv:log())
        assert.truthy(srv:log():match("\n[^\n]+Z error conn %d+ %(peer [^\n]*boom requested"),
                      srv:log())
        assert.is_nil(srv:log():find(" debug ", 1, true))
    end)

    it("refuses an unknown level with exit status 2", function()
        local status, out = helpers.run(helpers.luaserv,
                                        "--log-level loud -l 127.0.0.1:0 " .. SCRIPT)
        assert.equal(2, status)
        assert.truthy(out:find("unknown log level 'loud'", 1, true), out)
        status, out = helpers.run(helpers.luaserv,
                                  "--log-format xml -l 127.0.0.1:0 " .. SCRIPT)
        assert.equal(2, status)
        assert.truthy(out:find("unknown log format 'xml'", 1, true), out)
    end)
end)
