-- The metrics endpoint (--metrics HOST:PORT): GET /metrics answers in the
-- Prometheus text exposition format (version 0.0.4) with the core's
-- per-listener counters and the handler's own luaserv.metrics; every
-- line is checked against the format's grammar, and by promtool when the
-- Debian package prometheus is installed.
local helpers = require "helpers"
local op = require "fixtures.operations_util"

local SCRIPT = "spec/fixtures/operations_handler.lua"
local SLOW = op.SLOW

local sample = op.sample

-- --- the text format ----------------------------------------------------

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"
local TYPES = { counter = true, gauge = true, histogram = true,
                summary = true, untyped = true }

-- A sample value as Go's ParseFloat reads it, or nil.
local function parse_value(s)
    if s == "+Inf" or s == "Inf" then return math.huge end
    if s == "-Inf" then return -math.huge end
    if s == "NaN" then return 0 / 0 end
    if s:match("^[+-]?%d+%.?%d*$") or s:match("^[+-]?%d*%.%d+$")
       or s:match("^[+-]?%d+%.?%d*[eE][+-]?%d+$")
       or s:match("^[+-]?%d*%.%d+[eE][+-]?%d+$") then
        return tonumber(s)
    end
    return nil
end

-- Reads a label set at s[i] == "{"; returns the labels, their canonical
-- text (sorted, le left out) and the index after "}"; or nil, problem.
local function parse_labels(s, i)
    local labels, names = {}, {}
    i = i + 1
    while true do
        if s:sub(i, i) == "}" then break end
        local name, j = s:match("^([a-zA-Z_][a-zA-Z0-9_]*)=\"()", i)
        if not name then return nil, "bad label at column " .. i end
        if labels[name] then return nil, "label " .. name .. " twice" end
        local value = {}
        while true do
            local ch = s:sub(j, j)
            if ch == "" then return nil, "unterminated label value" end
            if ch == '"' then break end
            if ch == "\\" then
                local e = s:sub(j + 1, j + 1)
                if e == "n" then value[#value + 1] = "\n"
                elseif e == "\\" or e == '"' then value[#value + 1] = e
                else return nil, "bad escape \\" .. e .. " in a label value" end
                j = j + 2
            else
                value[#value + 1] = ch
                j = j + 1
            end
        end
        labels[name] = table.concat(value)
        names[#names + 1] = name
        i = j + 1
        local sep = s:sub(i, i)
        if sep == "," then i = i + 1
        elseif sep ~= "}" then return nil, "expected , or } at column " .. i end
    end
    table.sort(names)
    local key = {}
    for _, n in ipairs(names) do
        if n ~= "le" then key[#key + 1] = n .. "=" .. ("%q"):format(labels[n]) end
    end
    return labels, table.concat(key, ","), i + 1
end

-- check(text) -> families, problems. families[name] = { type =, help =,
-- samples = { { name =, labels =, key =, value = }, ... } }; problems lists
-- every way the text breaks the format (empty when it is valid).
local function check(text)
    local problems, families = {}, {}
    local function problem(n, line, msg)
        problems[#problems + 1] = ("line %d: %s: %s"):format(n, msg, line)
    end
    local function family(name)
        local f = families[name]
        if not f then
            f = { name = name, samples = {}, done = false }
            families[name] = f
        end
        return f
    end
    if text:sub(-1) ~= "\n" then problems[#problems + 1] = "no final newline" end
    local current, series, n = nil, {}, 0
    local function switch_to(f, lineno, line)
        if current ~= f then
            if current then current.done = true end
            if f.done then problem(lineno, line, "family " .. f.name .. " is split") end
            current = f
        end
    end
    for line in text:gmatch("([^\n]*)\n?") do
        n = n + 1
        if line == "" then
            goto continue
        end
        if line:sub(1, 1) == "#" then
            local kw, name, rest = line:match("^# (%u+) (%S+) ?(.*)$")
            if kw == "HELP" or kw == "TYPE" then
                if not name:match(NAME) then problem(n, line, "bad metric name") end
                local f = family(name)
                switch_to(f, n, line)
                if kw == "HELP" then
                    if f.help then problem(n, line, "second HELP") end
                    if rest:gsub("\\[\\n]", ""):find("\\", 1, true) then
                        problem(n, line, "bad escape in HELP")
                    end
                    f.help = rest
                else
                    if f.type then problem(n, line, "second TYPE") end
                    if #f.samples > 0 then problem(n, line, "TYPE after samples") end
                    if not TYPES[rest] then problem(n, line, "unknown type") end
                    f.type = rest
                end
            end
            goto continue
        end
        do
            local name, i = line:match("^([a-zA-Z_:][a-zA-Z0-9_:]*)()")
            if not name then
                problem(n, line, "bad metric name")
                goto continue
            end
            local labels, key = {}, ""
            if line:sub(i, i) == "{" then
                labels, key, i = parse_labels(line, i)
                if not labels then
                    problem(n, line, key)
                    goto continue
                end
                for k in pairs(labels) do
                    if not k:match(LABEL) then problem(n, line, "bad label name") end
                end
            end
            local vtext, ts = line:sub(i):match("^ (%S+) ?(%-?%d*)$")
            local value = vtext and parse_value(vtext)
            if not value then
                problem(n, line, "bad value")
                goto continue
            end
            if ts ~= "" and not ts:match("^%-?%d+$") then problem(n, line, "bad timestamp") end
            -- the family: a histogram's or summary's parts belong to it
            local base, suffix = name:match("^(.-)_(%a+)$")
            local f = families[name]
            if base and families[base] and
               (families[base].type == "histogram" and
                    (suffix == "bucket" or suffix == "sum" or suffix == "count")
                or families[base].type == "summary" and
                    (suffix == "sum" or suffix == "count")) then
                f = families[base]
            end
            f = f or family(name)
            switch_to(f, n, line)
            local id = name .. "{" .. key .. (labels.le and (",le=" .. labels.le) or "") .. "}"
            if series[id] then problem(n, line, "duplicate series") end
            series[id] = true
            if f.type == "counter" and value < 0 then
                problem(n, line, "negative counter")
            end
            if f.type == "histogram" and name == f.name .. "_bucket" and not labels.le then
                problem(n, line, "bucket without le")
            end
            f.samples[#f.samples + 1] = { name = name, labels = labels, key = key,
                                          value = value }
        end
        ::continue::
    end
    -- histograms: per label set, increasing le up to +Inf, cumulative
    -- counts, +Inf bucket == _count, and a _sum
    for fname, f in pairs(families) do
        if f.type == "histogram" then
            local sets = {}
            for _, s in ipairs(f.samples) do
                local set = sets[s.key] or { buckets = {} }
                sets[s.key] = set
                if s.name == fname .. "_bucket" then
                    set.buckets[#set.buckets + 1] = { le = parse_value(s.labels.le or ""),
                                                      count = s.value }
                elseif s.name == fname .. "_sum" then set.sum = s.value
                elseif s.name == fname .. "_count" then set.count = s.value end
            end
            for key, set in pairs(sets) do
                local where = fname .. "{" .. key .. "}"
                local b = set.buckets
                if #b == 0 then problems[#problems + 1] = where .. ": no buckets" end
                for k, bk in ipairs(b) do
                    if not bk.le then
                        problems[#problems + 1] = where .. ": bad le"
                    elseif k > 1 and b[k - 1].le and bk.le <= b[k - 1].le then
                        problems[#problems + 1] = where .. ": le not increasing"
                    end
                    if k > 1 and bk.count < b[k - 1].count then
                        problems[#problems + 1] = where .. ": counts not cumulative"
                    end
                end
                if #b > 0 and b[#b].le ~= math.huge then
                    problems[#problems + 1] = where .. ": no +Inf bucket"
                end
                if set.count == nil then problems[#problems + 1] = where .. ": no _count" end
                if set.sum == nil then problems[#problems + 1] = where .. ": no _sum" end
                if #b > 0 and set.count and b[#b].count ~= set.count then
                    problems[#problems + 1] = where .. ": +Inf bucket ~= _count"
                end
            end
        end
    end
    return families, problems
end

-- --- the server ---------------------------------------------------------

-- Starts the fixture on TCP and UDP with a metrics endpoint; returns the
-- server, the TCP port, the UDP port and the metrics port.
local function start(extra)
    local args = { "--metrics", "127.0.0.1:0" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local srv = op.start{ script = SCRIPT, args = args, announce = 3,
                          listen = { "127.0.0.1:0", "udp://127.0.0.1:0" } }
    local l = srv.listening
    return srv, op.find(l, "tcp").port, op.find(l, "udp").port,
           op.find(l, "tcp", 1).port
end

local function scrape(port)
    local code, ctype, body = op.http_get(port, "/metrics")
    assert.equal(200, code)
    return body, ctype
end

local function assert_valid(body)
    local _, problems = check(body)
    assert.same({}, problems, body)
end

-- Sends each line on a connection of its own (or all on one, when one is
-- true), reading every reply.
local function send_lines(port, lines, one)
    local c
    for _, line in ipairs(lines) do
        c = (one and c) or helpers.connect(port, 10 * SLOW)
        assert(c:send(line .. "\n"))
        assert.equal("echo " .. line, c:receive("*l"))
        if not one then c:close() end
    end
    if one then c:close() end
end

describe("metrics endpoint", function()
    it("checks its own grammar checker against broken exposition", function()
        -- the checker must catch what it is there to catch
        local bad = {
            "x 1",                                         -- no final newline
            "x{a=\"1\" 1\n",                               -- unterminated
            "x{a=\"\\t\"} 1\n",                            -- bad escape
            "x one\n",                                     -- bad value
            "1x 1\n",                                      -- bad name
            "# TYPE x counter\nx -1\n",                    -- negative counter
            "x 1\ny 1\nx 2\n",                             -- split family
            "x 1\nx 2\n",                                  -- duplicate
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                .. "h_sum 1\nh_count 1\n",                 -- not cumulative
            "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
                .. "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",  -- le order
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
        }
        for _, text in ipairs(bad) do
            local _, problems = check(text)
            assert.is_true(#problems > 0, "accepted: " .. text)
        end
        local _, problems = check('# HELP x X \\\\ \\n.\n# TYPE x gauge\n'
            .. 'x{a="\\"\\\\\\n",b="2",} 1.5e3\nx{a="z"} +Inf 123\n'
            .. '# TYPE h histogram\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\n'
            .. 'h_sum 3\nh_count 2\n')
        assert.same({}, problems)
    end)

    it("serves valid text exposition at GET /metrics", function()
        local _, port, uport, mport = start()
        send_lines(port, { "hello", "escape", "a" })
        assert.truthy(op.ask_udp(uport, "ping"))
        local body, ctype = scrape(mport)
        assert.truthy(ctype:find("^text/plain; version=0.0.4"), ctype)
        local families, problems = check(body)
        assert.same({}, problems, body)
        for _, name in ipairs({ "luaserv_connections_active", "luaserv_connections_total",
                                "luaserv_messages_total", "luaserv_bytes_received_total",
                                "luaserv_bytes_sent_total", "luaserv_handler_errors_total",
                                "luaserv_reloads_total", "luaserv_reload_failures_total",
                                "luaserv_handler_duration_seconds", "luaserv_tasks_active",
                                "op_lines_total", "op_kinds_total",
                                "op_last_line_bytes", "op_line_bytes" }) do
            local f = families[name]
            assert.truthy(f, "no family " .. name)
            assert.truthy(f.type, "no TYPE for " .. name)
            assert.truthy(f.help, "no HELP for " .. name)
            assert.is_true(#f.samples > 0, "no samples for " .. name)
        end
        assert.equal("histogram", families.luaserv_handler_duration_seconds.type)
        assert.equal("histogram", families.op_line_bytes.type)
    end)

    local has_promtool = os.execute("command -v promtool >/dev/null 2>&1") == true
    local it_promtool = has_promtool and it or pending
    it_promtool("passes promtool check metrics (Debian package prometheus)", function()
        local _, port, uport, mport = start()
        send_lines(port, { "hello", "escape", "boom?" })
        assert.truthy(op.ask_udp(uport, "ping"))
        local file = helpers.write_file(helpers.tmpname(".prom"), scrape(mport))
        local out = helpers.tmpname(".out")
        local ok = os.execute("promtool check metrics <" .. helpers.shell_quote(file)
                              .. " >" .. helpers.shell_quote(out) .. " 2>&1")
        local said = helpers.read_file(out)
        os.remove(out)
        os.remove(file)
        assert.is_true(ok == true, said)
        assert.equal("", said)
    end)

    it("counts the connections, messages and bytes it was sent", function()
        local _, port, uport, mport = start()
        local tcp = 'listener="tcp://127.0.0.1:' .. port .. '"'
        local udp = 'listener="udp://127.0.0.1:' .. uport .. '"'
        -- 3 connections, 2 lines each: 6 lines of 6 bytes, 6 replies of 11
        for _ = 1, 3 do send_lines(port, { "hello", "world" }, true) end
        for _ = 1, 2 do assert.equal("echo ping", op.ask_udp(uport, "ping")) end
        local body
        assert.truthy(helpers.wait_for(function()
            body = scrape(mport)
            return sample(body, "luaserv_connections_active", tcp) == 0
        end, 10 * SLOW), "connections still open:\n" .. tostring(body))
        assert_valid(body)
        assert.equal(3, sample(body, "luaserv_connections_total", tcp))
        assert.equal(6, sample(body, "luaserv_messages_total", tcp))
        assert.equal(36, sample(body, "luaserv_bytes_received_total", tcp))
        assert.equal(66, sample(body, "luaserv_bytes_sent_total", tcp))
        assert.equal(0, sample(body, "luaserv_handler_errors_total", tcp))
        assert.equal(6, sample(body, "luaserv_handler_duration_seconds_count", tcp))
        assert.equal(6, sample(body, "luaserv_handler_duration_seconds_bucket",
                               tcp .. ',le="+Inf"'))
        assert.equal(0, sample(body, "luaserv_connections_total", udp))
        assert.equal(2, sample(body, "luaserv_messages_total", udp))
        assert.equal(8, sample(body, "luaserv_bytes_received_total", udp))
        assert.equal(18, sample(body, "luaserv_bytes_sent_total", udp))
        -- a second scrape sees its own first one on the metrics listener
        local metrics = 'listener="tcp://127.0.0.1:' .. mport .. '"'
        assert.is_true(sample(scrape(mport), "luaserv_connections_total", metrics) >= 2)
    end)

    it("counts a handler error in luaserv_handler_errors_total", function()
        local _, port, uport, mport = start()
        local tcp = 'listener="tcp://127.0.0.1:' .. port .. '"'
        local udp = 'listener="udp://127.0.0.1:' .. uport .. '"'
        assert.is_nil(op.ask(port, "boom"))   -- the connection closes
        send_lines(port, { "fine" })
        op.ask_udp(uport, "boom", 0.5 * SLOW)   -- no reply: the datagram is lost
        assert.equal("echo fine", op.ask_udp(uport, "fine"))
        local body = scrape(mport)
        assert_valid(body)
        assert.equal(1, sample(body, "luaserv_handler_errors_total", tcp))
        assert.equal(1, sample(body, "luaserv_handler_errors_total", udp))
        assert.equal(2, sample(body, "luaserv_connections_total", tcp))
    end)

    it("serves the handler's own counters, gauges and histograms", function()
        local _, port, _, mport = start()
        local fifty, long = ("x"):rep(50), ("y"):rep(200)
        send_lines(port, { "a", "hello", fifty, long, "hello" }, true)
        send_lines(port, { "escape" })
        local body = scrape(mport)
        assert_valid(body)
        assert.truthy(body:find("# TYPE op_lines_total counter\n", 1, true))
        assert.truthy(body:find("# HELP op_lines_total Lines handled.\n", 1, true))
        assert.truthy(body:find("# TYPE op_last_line_bytes gauge\n", 1, true))
        assert.truthy(body:find("# TYPE op_line_bytes histogram\n", 1, true))
        assert.equal(6, sample(body, "op_lines_total"))
        assert.equal(2, sample(body, "op_kinds_total", 'kind="hello"'))
        assert.equal(1, sample(body, "op_kinds_total", 'kind="a"'))
        assert.equal(1, sample(body, "op_kinds_total", 'kind="' .. fifty .. '"'))
        -- the label value a"b\c<newline>d, escaped
        assert.equal(1, sample(body, "op_kinds_total", 'kind="a\\"b\\\\c\\nd"'))
        assert.equal(6, sample(body, "op_last_line_bytes"))   -- "escape"
        -- lengths 1, 5, 50, 200, 5, 6 in buckets 1, 10, 100
        assert.equal(1, sample(body, "op_line_bytes_bucket", 'le="1"'))
        assert.equal(4, sample(body, "op_line_bytes_bucket", 'le="10"'))
        assert.equal(5, sample(body, "op_line_bytes_bucket", 'le="100"'))
        assert.equal(6, sample(body, "op_line_bytes_bucket", 'le="+Inf"'))
        assert.equal(6, sample(body, "op_line_bytes_count"))
        assert.equal(267, sample(body, "op_line_bytes_sum"))
    end)

    it("keeps the handler's metrics across a reload", function()
        local srv, port, _, mport = start()
        local tcp = 'listener="tcp://127.0.0.1:' .. port .. '"'
        send_lines(port, { "one", "two" })
        os.execute("kill -HUP " .. srv.pid)
        assert.truthy(helpers.wait_for(function()
            return sample(scrape(mport), "luaserv_reloads_total", tcp) == 1
        end, 10 * SLOW), "no reload counted")
        send_lines(port, { "three" })
        local body = scrape(mport)
        assert_valid(body)
        assert.equal(3, sample(body, "op_lines_total"))
        assert.equal(0, sample(body, "luaserv_reload_failures_total", tcp))
    end)

    it("answers 404 for other paths and 405 for other methods", function()
        local _, _, _, mport = start()
        for _, path in ipairs({ "/", "/metric", "/favicon.ico" }) do
            local code = op.http_get(mport, path)
            assert.equal(404, code, path)
        end
        assert.equal(405, (op.http_get(mport, "/metrics", "POST")))
        assert.equal(200, (op.http_get(mport, "/metrics")))
        assert.equal(200, (op.http_get(mport, "/metrics?x=1")))
    end)

    it("answers 404 for a path that only starts with /metrics", function()
        local _, _, _, mport = start()
        for _, path in ipairs({ "/metricsz", "/metrics.txt", "/metrics/x" }) do
            local code = op.http_get(mport, path)
            assert.equal(404, code, path)
        end
    end)

    it("is refused on a non-TCP address", function()
        local status, out = helpers.run(helpers.luaserv,
            "-l 127.0.0.1:0 --metrics udp://127.0.0.1:0 " .. SCRIPT)
        assert.equal(2, status, out)
        assert.truthy(out:find("--metrics must be a TCP address", 1, true), out)
    end)
end)
