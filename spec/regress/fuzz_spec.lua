-- Fuzzing kept in the repository, issue 8: `make fuzz` builds libFuzzer
-- targets for the framer, the address parser and (issue 11) the RESP,
-- HTTP and WebSocket framers (issue 12: the PROXY header), and runs each for
-- FUZZ_SECONDS. These checks build them, replay the seed corpora, run
-- fuzz/run briefly, and prove the harness catches a real bug: the framer
-- with a one-byte over-read planted in it must be caught.
local helpers = require "helpers"

local q = helpers.shell_quote

local sh = helpers.sh

local TARGETS = { "frame_fuzz", "addr_fuzz", "http_fuzz", "ws_fuzz",
                  "resp_fuzz" }
TARGETS[#TARGETS + 1] = "proxy_fuzz"

local HAVE_CLANG = os.execute("command -v clang >/dev/null 2>&1") == true

-- Plants a one-byte over-read in a copy of src/core/<file> (the one match
-- of the gsub pattern, replaced by repl), builds fuzz target with it and
-- the untouched src/core files in others, and runs fuzz/run on it for 20
-- s in a scratch tree: the run must fail and ASan report the overflow.
-- Returns fuzz/run's output, for more checks.
local function assert_catches(target, file, pattern, repl, others)
    local tmp = helpers.tmpname(".fuzz")
    helpers.defer(function() os.execute("rm -rf " .. q(tmp)) end)
    assert(os.execute("mkdir -p " .. q(tmp .. "/fuzz") .. " " ..
                      q(tmp .. "/src")))
    local pwd = os.getenv("PWD")
    local src = helpers.read_file("src/core/" .. file)
    local bad, n = src:gsub(pattern, repl)
    assert.equal(1, n, "the line to plant the bug in moved")
    helpers.write_file(tmp .. "/src/" .. file, bad)
    local rest = {}
    for i, o in ipairs(others or {}) do
        rest[i] = " " .. q(pwd .. "/src/core/" .. o)
    end
    local status, out = sh("cd " .. q(tmp) .. " && cp " ..
                           q(pwd .. "/src/core/") .. "*.h src/ && " ..
                           "clang -std=c11 -g -O1 -Isrc " ..
                           "-fsanitize=fuzzer,address,undefined " ..
                           "-o fuzz/" .. target .. " " ..
                           q(pwd .. "/fuzz/" .. target .. ".c") ..
                           " src/" .. file .. table.concat(rest))
    assert.equal(0, status, out)
    status, out = sh("cd " .. q(tmp) .. " && mkdir build && cp -r " ..
                     q(pwd .. "/fuzz/corpus") .. " fuzz/ && " ..
                     "sh " .. q(pwd .. "/fuzz/run") .. " 20 fuzz/" .. target)
    assert.is_false(status == 0, out)
    assert.truthy(out:find("not ok 1 - fuzz " .. target, 1, true), out)
    local log = helpers.read_file(tmp .. "/fuzz/" .. target .. ".log") or ""
    assert.truthy(log:find("heap-buffer-overflow", 1, true), log)
    return out
end

describe("make fuzz", function()
    if not HAVE_CLANG then
        pending("needs clang and libFuzzer (sh .ci/deps fuzz)")
        return
    end

    it("builds every target, and each passes its seeds", function()
        local status, out = sh("make -s fuzz-build")
        assert.equal(0, status, out)
        for _, t in ipairs(TARGETS) do
            local _, n = select(2, sh("ls fuzz/corpus/" .. t)):gsub("\n", "")
            assert.is_true(n >= 5, t .. " has " .. n .. " seeds")
            -- libFuzzer given files runs each once
            status, out = sh("build/fuzz/" .. t .. " fuzz/corpus/" .. t .. "/*")
            assert.equal(0, status, out)
            assert.truthy(out:find("Executed fuzz/corpus/" .. t .. "/", 1, true), out)
        end
    end)

    it("runs each target for FUZZ_SECONDS and ends with N passed, N failed", function()
        local t0 = helpers.now()
        local status, out = sh("make -s fuzz FUZZ_SECONDS=2")
        assert.equal(0, status, out)
        for i, t in ipairs(TARGETS) do
            assert.truthy(out:find("\nok " .. i .. " %- fuzz " .. t ..
                                   ": %d+ runs in 2 s"), out)
        end
        assert.truthy(out:find("\n" .. #TARGETS .. " passed, 0 failed\n$"),
                      out)
        assert.is_true(helpers.now() - t0 < 60, "took too long")
    end)

    it("catches a framer that reads one byte past its input", function()
        local out = assert_catches("frame_fuzz", "frame.c",
            "memchr%(data %+ %*hint, '\\n', len %- %*hint%)",
            "memchr(data + *hint, '\\n', len - *hint + 1)",
            { "resp.c", "http.c", "ws.c" })
        assert.truthy(out:find("\n0 passed, 1 failed\n$"), out)
    end)

    it("catches a PROXY header parser that reads one byte past its input",
       function()
        -- v1 UNKNOWN's CR checked for its LF one byte too far
        assert_catches("proxy_fuzz", "proxy.c",
                       "if %(i %+ 1 >= lim%) return LSV_PROXY_PARTIAL;",
                       "if (i + 1 > lim) return LSV_PROXY_PARTIAL;")
    end)
end)
