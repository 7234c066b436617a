-- A shared dict of a few MiB is split into shards (one per MiB, each
-- with its own lock, LRU and heap): filling one past full still evicts
-- least recently used entries and says so (forcible), a recent read
-- keeps an entry, safe_set refuses, and a value has to fit in one shard.
local helpers = require "helpers"

local FIXTURE = "spec/fixtures/shared_ops.lua"

local function start()
    local srv = helpers.serve({ script = FIXTURE,
                                args = { "--shared", "big=4m" } })
    local c = helpers.connect(srv.port)
    helpers.close_at_end({ c })
    return function(line) return helpers.command(c, line) end
end

-- Lua that sets keys PREFIX FROM..TO to 1000-byte values and returns
-- how many of those sets reported forcible.
local function fill(prefix, from, to)
    return ('(function() local f = 0 for i = %d, %d do ' ..
            'local ok, err, forced = big:set("%s" .. i, ' ..
            'string.rep("x", 1000)) assert(ok, err) ' ..
            'if forced then f = f + 1 end end return f end)()')
        :format(from, to, prefix)
end

describe("a shared dict in shards", function()
    it("evicts least recently used entries, a recent read kept", function()
        local run = start()
        assert.equal("4194304", run("big:capacity()"))
        assert.equal("true nil false", run('big:set("keep", "me")'))
        -- about 75% of the dict: nothing evicted yet
        assert.equal("0", run(fill("a", 1, 2800)))
        assert.equal("2801", run("#big:get_keys(0)"))
        helpers.sleep(0.15)           -- past the LRU's 100 ms hold
        assert.equal('"me"', run('big:get("keep")'))
        -- as much again: the oldest go, and the sets say so
        local forced = tonumber(run(fill("b", 1, 2800)))
        assert.is_true(forced > 1000, tostring(forced))
        assert.equal('"me"', run('big:get("keep")'))
        assert.equal("nil", run('big:get("a1")'))
        assert.equal("nil", run('big:get("a2")'))
        assert.equal("1000", run('#big:get("b2800")'))
        assert.equal("1000", run('#big:get("b1")'))
        local keys = tonumber(run("#big:get_keys(0)"))
        assert.is_true(keys > 2800 and keys < 4000, tostring(keys))
        -- full: safe_set refuses rather than evict
        run(fill("c", 1, 1000))
        assert.equal('nil "no memory" false',
                     run('big:safe_set("new", string.rep("z", 2000))'))
        -- flush_all empties every shard
        run("big:flush_all()")
        assert.equal("{}", run("big:get_keys()"))
        assert.is_true(tonumber(run("big:free_space()")) > 3900000)
    end)

    it("takes a value up to a shard's size, not the dict's", function()
        local run = start()
        assert.equal("true nil false", run('big:set("k", 1)'))
        assert.equal("true nil false",
                     run('big:set("k", string.rep("v", 900 * 1024))'))
        assert.equal("921600", run('#big:get("k")'))
        -- bigger than a shard (1 MiB), smaller than the dict: no memory,
        -- and the old value stays
        assert.equal('nil "no memory" false',
                     run('big:set("k", string.rep("v", 1100 * 1024))'))
        assert.equal("921600", run('#big:get("k")'))
        assert.equal('nil "no memory" false',
                     run('big:set("k", string.rep("v", 5 * 1024 * 1024))'))
    end)
end)
