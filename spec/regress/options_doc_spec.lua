-- The options table in the docs, issue 9: one table in src/ops/options.c
-- describes every option, and `luaserv --list-options` prints it. The
-- README's table (under "Running it") must list every flag, and the table
-- in docs/operations.md (under "Configuration file") every config key
-- with its flag, so a new option cannot land undocumented.
local helpers = require "helpers"

-- The rows of `luaserv --list-options`: { flag =, short =, key =, ... },
-- "-" read as nil.
local function options()
    local status, out = helpers.run(helpers.luaserv, "--list-options")
    assert.equal(0, status, out)
    local rows = {}
    for line in out:gmatch("[^\n]+") do
        local f, n = {}, 0
        for field in (line .. "\t"):gmatch("([^\t]*)\t") do
            n = n + 1
            f[n] = field ~= "-" and field or nil
        end
        assert.equal(6, select(2, line:gsub("\t", "")), line)
        rows[#rows + 1] = { flag = f[1], short = f[2], key = f[3], where = f[4],
                            type = f[5], line = line }
    end
    return rows
end

-- The table lines ("| ... |") of the section of the markdown file at path
-- whose "## " heading is title, joined by newlines.
local function table_of(path, title)
    local text = assert(helpers.read_file(path))
    local body = text:match("\n## " .. title .. "\n(.-)\n## ") or
                 text:match("\n## " .. title .. "\n(.*)$")
    assert.truthy(body, path .. " has no section " .. title)
    local lines = {}
    for line in body:gmatch("[^\n]+") do
        if line:match("^|") then lines[#lines + 1] = line end
    end
    assert.truthy(#lines > 2, path .. ": no table under " .. title)
    return table.concat(lines, "\n")
end

-- Whether word occurs in text with no word character (nor "-" or "_")
-- right before or after it.
local function has_word(text, word)
    local from = 1
    while true do
        local s, e = text:find(word, from, true)
        if not s then return false end
        local before, after = text:sub(s - 1, s - 1), text:sub(e + 1, e + 1)
        if not before:match("[%w_%-]") and not after:match("[%w_%-]") then
            return true
        end
        from = e + 1
    end
end

local README = "README.md"
local OPERATIONS = "docs/operations.md"

describe("the options table", function()
    local rows = options()

    it("lists the options luaserv has", function()
        assert.is_true(#rows >= 20, #rows .. " rows")
        local seen = {}
        for _, r in ipairs(rows) do
            if r.flag then seen[r.flag] = true end
        end
        for _, flag in ipairs({ "--listen", "--config", "--idle-timeout",
                                "--log-level", "--help", "--list-options" }) do
            assert.is_true(seen[flag], flag .. " is not in --list-options")
        end
    end)

    it("has every flag in the README's option table", function()
        local doc = table_of(README, "Running it")
        for _, r in ipairs(rows) do
            if r.flag then
                assert.is_true(has_word(doc, r.flag), README .. " lacks "
                               .. r.flag .. " (" .. r.line .. ")")
            end
            if r.short then
                assert.is_true(has_word(doc, r.short), README .. " lacks "
                               .. r.short .. " (" .. r.line .. ")")
            end
        end
    end)

    it("has no flag in the README that luaserv does not know", function()
        local known = {}
        for _, r in ipairs(rows) do
            if r.flag then known[r.flag] = true end
        end
        for flag in table_of(README, "Running it"):gmatch("%-%-%a[%w%-]*") do
            assert.is_true(known[flag], README .. " documents " .. flag
                           .. ", which --list-options does not list")
        end
    end)

    it("has every config key and its flag in docs/operations.md", function()
        local doc = table_of(OPERATIONS, "Configuration file")
        for _, r in ipairs(rows) do
            if r.key then
                assert.is_true(has_word(doc, r.key), OPERATIONS .. " lacks "
                               .. r.key .. " (" .. r.line .. ")")
                local flag = r.flag and has_word(doc, r.flag) or
                             r.short and has_word(doc, r.short)
                assert.is_true(not r.flag or flag,
                               OPERATIONS .. " lacks the flag of " .. r.key)
            end
        end
    end)
end)
