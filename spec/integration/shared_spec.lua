-- Shared dicts (issue 10): --shared NAME=SIZE and the config's shared = {}
-- declare them, luaserv.shared.NAME is one in every worker, with
-- ngx.shared.DICT's methods and return conventions. The fixture
-- (spec/fixtures/shared_ops.lua) runs each line as Lua and answers with
-- what it returned: strings quoted, floats as 1.0, tables sorted.
local helpers = require "helpers"

local FIXTURE = "spec/fixtures/shared_ops.lua"

-- A server with the dicts cache (1 MiB) and small (16 KiB), and a client.
local function start(extra)
    local args = { "--shared", "cache=1m", "--shared", "small=16k" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local srv = helpers.serve({ script = FIXTURE, args = args })
    local c = helpers.connect(srv.port)
    helpers.close_at_end({ c })
    return srv, function(line) return helpers.command(c, line) end
end

describe("luaserv.shared", function()
    it("has a dict per declared name, and nil for any other", function()
        local _, run = start()
        assert.equal("luaserv.shared.cache", run("cache"))
        assert.equal("luaserv.shared.small", run("shared.small"))
        assert.equal("nil", run("shared.nope"))
        assert.equal("1048576 16384", run("cache:capacity(), small:capacity()"))
    end)

    it("sets and gets strings, numbers and booleans with flags", function()
        local _, run = start()
        assert.equal("true nil false", run('cache:set("s", "hello", 0, 7)'))
        assert.equal('"hello" 7', run('cache:get("s")'))
        assert.equal("true nil false", run('cache:set("i", 42)'))
        assert.equal("42", run('cache:get("i")'))
        assert.equal("true nil false", run('cache:set("f", 2.5)'))
        assert.equal("2.5", run('cache:get("f")'))
        assert.equal("true nil false", run('cache:set("b", false)'))
        assert.equal("false", run('cache:get("b")'))
        assert.equal("nil", run('cache:get("missing")'))
        assert.equal('"\\0binary\\n"', run('(cache:set("z", "\\0binary\\n")) '
                                           .. 'and cache:get("z")'))
        assert.equal("true nil false", run('cache:set("s", nil)'))
        assert.equal("nil", run('cache:get("s")'))
        assert.matches("^error: .*string, number, boolean or nil expected",
                       run('cache:set("t", {})'))
        assert.equal('nil "empty key"', run('cache:get("")'))
        assert.equal('nil "key too long"',
                     run('cache:get(string.rep("k", 65537))'))
        assert.equal("true nil false",
                     run('cache:set(string.rep("k", 65536), 1)'))
    end)

    it("adds only when absent, replaces only when present", function()
        local _, run = start()
        assert.equal("true nil false", run('cache:add("a", 1)'))
        assert.equal('nil "exists" false', run('cache:add("a", 2)'))
        assert.equal('nil "not found" false', run('cache:replace("b", 2)'))
        assert.equal("true nil false", run('cache:replace("a", "two")'))
        assert.equal('"two"', run('cache:get("a")'))
        assert.equal("true nil false", run('cache:safe_set("a", 3)'))
        assert.equal("true", run('cache:delete("a")'))
        assert.equal("nil", run('cache:get("a")'))
        assert.equal("true", run('cache:delete("a")'))
    end)

    it("increments integers and floats, with init and init_ttl", function()
        local _, run = start()
        assert.equal('nil "not found"', run('cache:incr("n", 1)'))
        assert.equal("11 nil false", run('cache:incr("n", 1, 10)'))
        assert.equal("8 nil false", run('cache:incr("n", -3)'))
        assert.equal("8.5 nil false", run('cache:incr("n", 0.5)'))
        assert.equal("true nil false", run('cache:set("s", "x")'))
        assert.equal('nil "not a number"', run('cache:incr("s", 1, 0)'))
        assert.matches("^error: .*number expected", run('cache:incr("n")'))
        assert.equal("1 nil false", run('cache:incr("t", 1, 0, 0.05)'))
        helpers.wait_until(function()
            return run('cache:get("t")') == "nil"
        end, 5, "the incr's init_ttl to pass")
    end)

    it("expires entries after their TTL, and reports and changes it",
       function()
        local _, run = start()
        assert.equal("true nil false", run('cache:set("t", "v", 0.1)'))
        assert.equal("true nil false", run('cache:set("keep", "v")'))
        local ttl = tonumber(run('cache:ttl("t")'))
        assert.is_true(ttl > 0 and ttl <= 0.1, tostring(ttl))
        assert.equal("0.0", run('cache:ttl("keep")'))
        helpers.wait_until(function()
            return run('cache:get("t")') == "nil"
        end, 5, "the TTL to pass")
        assert.equal('nil "not found"', run('cache:ttl("t")'))
        assert.equal('nil "not found"', run('cache:expire("t", 1)'))
        assert.equal("true", run('cache:expire("keep", 100)'))
        assert.is_true(tonumber(run('cache:ttl("keep")')) > 99)
        assert.equal("true", run('cache:expire("keep", 0)'))
        assert.equal("0.0", run('cache:ttl("keep")'))
    end)

    it("lists keys, flushes expired ones and all", function()
        local _, run = start()
        for i = 1, 5 do run(('cache:set("k%d", %d)'):format(i, i)) end
        for i = 1, 3 do run(('cache:set("e%d", 1, 0.01)'):format(i)) end
        helpers.wait_until(function()
            return run("#cache:get_keys(0)") == "6"
        end, 5, "the short TTLs to pass")
        assert.equal('{"k1" "k2" "k3" "k4" "k5" "loads"}',
                     run("cache:get_keys()"))
        assert.equal("2", run("#cache:get_keys(2)"))
        assert.equal("3", run("cache:flush_expired()"))
        assert.equal("0", run("cache:flush_expired()"))
        local before = tonumber(run("cache:free_space()"))
        run("cache:flush_all()")
        assert.equal("{}", run("cache:get_keys()"))
        assert.is_true(tonumber(run("cache:free_space()")) > before)
    end)

    it("keeps list values: push, pop, llen", function()
        local _, run = start()
        assert.equal("1", run('cache:lpush("l", "a")'))
        assert.equal("2", run('cache:rpush("l", 2)'))
        assert.equal("3", run('cache:lpush("l", true)'))
        assert.equal("3", run('cache:llen("l")'))
        assert.equal('nil "value is a list"', run('cache:get("l")'))
        assert.equal("true", run('cache:lpop("l")'))
        assert.equal("2", run('cache:rpop("l")'))
        assert.equal('"a"', run('cache:rpop("l")'))
        assert.equal("nil", run('cache:rpop("l")'))
        assert.equal("0", run('cache:llen("l")'))
        run('cache:set("s", "x")')
        assert.equal('nil "value not a list"', run('cache:lpush("s", 1)'))
        assert.equal('nil "value not a list"', run('cache:llen("s")'))
        assert.equal('nil "value not a list"', run('cache:lpop("s")'))
    end)

    it("evicts the least recently used entry when full (forcible)",
       function()
        local _, run = start()
        -- The first set that evicts: its index.
        local n = tonumber(run('(function() for i = 1, 100 do ' ..
            'local ok, err, forcible = small:set("k" .. i, ' ..
            'string.rep("x", 1000)) assert(ok, err) ' ..
            'if forcible then return i end end end)()'))
        assert.is_true(n and n > 5 and n < 20, tostring(n))
        assert.equal("nil", run('small:get("k1")'))
        assert.equal("1000", run(('#small:get("k%d")'):format(n)))
        -- A get makes an entry recent: the next eviction passes it by.
        assert.equal("1000", run('#small:get("k2")'))
        assert.equal("true nil true",
                     run(('small:set("k%d", string.rep("y", 1000))')
                         :format(n + 1)))
        assert.equal("1000", run('#small:get("k2")'))
        assert.equal("nil", run('small:get("k3")'))
    end)

    it("refuses in safe_set rather than evict, and a value bigger than "
       .. "the dict", function()
        local _, run = start()
        run('(function() for i = 1, 100 do local _, _, f = small:set(' ..
            '"k" .. i, string.rep("x", 1000)) if f then return end end end)()')
        local keys = run("#small:get_keys(0)")
        assert.equal('nil "no memory" false',
                     run('small:safe_set("new", string.rep("z", 1000))'))
        assert.equal(keys, run("#small:get_keys(0)"))
        assert.equal('nil "no memory" false',
                     run('small:set("huge", string.rep("z", 20000))'))
        assert.equal('nil "no memory" false',
                     run('cache:set("huge", string.rep("z", 2 * 1024 * 1024))'))
        assert.equal(keys, run("#small:get_keys(0)"))
        assert.equal("true nil false", run('small:safe_set("k1", 1)'))
    end)

    it("survives a reload (SIGHUP)", function()
        local srv, run = start()
        assert.equal("1", run('cache:get("loads")'))
        assert.equal("true nil false", run('cache:set("kept", "yes")'))
        assert(os.execute("kill -HUP " .. srv.pid))
        helpers.wait_until(function()
            return srv:log():find("reloaded", 1, true)
        end, 5, "the reload")
        assert.equal("2", run('cache:get("loads")'))
        assert.equal('"yes"', run('cache:get("kept")'))
    end)

    it("is declared in the config file too, a flag overriding its size",
       function()
        local cfg = helpers.write_file(helpers.tmpname(".lua"),
            'shared = { cache = "64k", conf = 32768 }\n')
        local srv = helpers.serve({ script = FIXTURE,
                                    args = { "-c", cfg, "--shared",
                                             "cache=1m" } })
        local c = helpers.connect(srv.port)
        helpers.close_at_end({ c })
        assert.equal("1048576 32768",
                     helpers.command(c, "cache:capacity(), conf:capacity()"))
    end)

    it("exits 2 for a bad declaration", function()
        for _, bad in ipairs({ "cache", "cache=", "cache=1x", "9c=1m",
                               "cache=1k", "a-b=1m" }) do
            local status, out = helpers.run(helpers.luaserv,
                                            "--check --shared " .. bad
                                            .. " " .. FIXTURE)
            assert.equal(2, status, out)
            assert.matches("--shared needs NAME=SIZE", out, 1, true)
        end
        local status, out = helpers.run(helpers.luaserv,
            "--check --shared a=1m --shared a=2m " .. FIXTURE)
        assert.equal(2, status, out)
        assert.matches("shared dict a is declared twice", out, 1, true)
        local cfg = helpers.write_file(helpers.tmpname(".lua"),
                                       'shared = { cache = "lots" }\n')
        status, out = helpers.run(helpers.luaserv, "--check -c " .. cfg ..
                                  " " .. FIXTURE)
        assert.equal(2, status, out)
        assert.matches(":1: shared must be a table of NAME = SIZE", out, 1,
                       true)
    end)

    it("runs the example in docs/handler-api.md", function()
        local doc = assert(io.open("docs/handler-api.md")):read("a")
        local section = doc:match("\n### Shared dicts\n(.*)$")
        local code = assert(section:match("```lua\n(.-)```"))
        local srv = helpers.serve({ source = code,
                                    args = { "--shared", "hits=1m" } })
        local c = helpers.connect(srv.port)
        helpers.close_at_end({ c })
        assert.equal("a 1", helpers.command(c, "a"))
        assert.equal("a 2", helpers.command(c, "a"))
        assert.equal("b 1", helpers.command(c, "b"))
        local c2 = helpers.connect(srv.port)
        helpers.close_at_end({ c2 })
        assert.equal("a 3", helpers.command(c2, "a"))
    end)
end)
