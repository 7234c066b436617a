-- The docs' links, issue 8: docs/examples.md linked to a missing
-- examples-part1.md. Every relative link in README.md and docs/*.md must
-- name a file in the repository, and a #fragment must name a heading of
-- the page it points to (GitHub's anchors: lower case, punctuation but
-- "-" and "_" dropped, spaces as "-", "-1", "-2" for repeats).
local helpers = require "helpers"

-- The anchors of the markdown file at path, as a set; headings inside
-- fenced code blocks do not count.
local function anchors(path)
    local set, seen, fenced = {}, {}, false
    for line in io.lines(path) do
        if line:match("^%s*```") then
            fenced = not fenced
        elseif not fenced then
            local title = line:match("^#+%s+(.-)%s*$")
            if title then
                local slug = title:lower():gsub("[%p]", function(c)
                    return (c == "-" or c == "_") and c or ""
                end):gsub(" ", "-")
                local n = seen[slug]
                seen[slug] = (n or -1) + 1
                set[n and (slug .. "-" .. (n + 1)) or slug] = true
            end
        end
    end
    return set
end

local function docs()
    local list = { "README.md" }
    for f in io.popen("ls docs/*.md"):lines() do list[#list + 1] = f end
    return list
end

describe("the docs' links", function()
    it("all lead to a file and a heading that exist", function()
        local broken, checked = {}, 0
        for _, doc in ipairs(docs()) do
            local dir = doc:match("^(.*)/") or "."
            local text = helpers.read_file(doc)
            -- drop fenced code, where "](x)" is not a link
            text = text:gsub("\n%s*```.-\n%s*```", "\n")
            for target in text:gmatch("%]%(([^)%s]+)%)") do
                if not target:match("^%a[%w+.-]*:") then
                    checked = checked + 1
                    local file, frag = target:match("^([^#]*)#?(.*)$")
                    local path = file == "" and doc or (dir .. "/" .. file)
                    local f = io.open(path, "r")
                    if not f then
                        broken[#broken + 1] = doc .. ": " .. target .. " (no such file)"
                    else
                        f:close()
                        if frag ~= "" and path:match("%.md$")
                                and not anchors(path)[frag] then
                            broken[#broken + 1] = doc .. ": " .. target .. " (no such heading)"
                        end
                    end
                end
            end
        end
        assert.is_true(checked > 10, "found only " .. checked .. " links")
        assert.same({}, broken)
    end)
end)
