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
        local tmp = helpers.tmpname(".fuzz")
        helpers.defer(function() os.execute("rm -rf " .. q(tmp)) end)
        assert(os.execute("mkdir -p " .. q(tmp .. "/fuzz") .. " " .. q(tmp .. "/src/core")))
        local src = helpers.read_file("src/core/frame.c")
        local bad, n = src:gsub("memchr%(data %+ %*hint, '\\n', len %- %*hint%)",
                                "memchr(data + *hint, '\\n', len - *hint + 1)")
        assert.equal(1, n, "the line to plant the bug in moved")
        helpers.write_file(tmp .. "/src/core/frame.c", bad)
        local status, out = sh("cd " .. q(tmp) .. " && cp " ..
                               q(os.getenv("PWD") .. "/src/core/") .. "*.h src/ && " ..
                               "clang -std=c11 -g -O1 -Isrc " ..
                               "-fsanitize=fuzzer,address,undefined " ..
                               "-o fuzz/frame_fuzz " ..
                               q(os.getenv("PWD") .. "/fuzz/frame_fuzz.c") ..
                               " src/core/frame.c " ..
                               q(os.getenv("PWD") .. "/src/core/resp.c") .. " " ..
                               q(os.getenv("PWD") .. "/src/core/http.c") .. " " ..
                               q(os.getenv("PWD") .. "/src/core/ws.c"))
        assert.equal(0, status, out)
        status, out = sh("cd " .. q(tmp) .. " && mkdir build && cp -r " ..
                         q(os.getenv("PWD") .. "/fuzz/corpus") .. " fuzz/ && " ..
                         "sh " .. q(os.getenv("PWD") .. "/fuzz/run") ..
                         " 20 fuzz/frame_fuzz")
        assert.is_false(status == 0, out)
        assert.truthy(out:find("not ok 1 - fuzz frame_fuzz", 1, true), out)
        assert.truthy(out:find("\n0 passed, 1 failed\n$"), out)
        local log = helpers.read_file(tmp .. "/fuzz/frame_fuzz.log") or ""
        assert.truthy(log:find("heap-buffer-overflow", 1, true), log)
    end)

    it("catches a PROXY header parser that reads one byte past its input",
       function()
        local tmp = helpers.tmpname(".fuzz")
        helpers.defer(function() os.execute("rm -rf " .. q(tmp)) end)
        assert(os.execute("mkdir -p " .. q(tmp .. "/fuzz") .. " " ..
                          q(tmp .. "/src")))
        local pwd = os.getenv("PWD")
        -- v1 UNKNOWN's CR checked for its LF one byte too far
        local src = helpers.read_file("src/core/proxy.c")
        local bad, n = src:gsub("if %(i %+ 1 >= lim%) return LSV_PROXY_PARTIAL;",
                                "if (i + 1 > lim) return LSV_PROXY_PARTIAL;")
        assert.equal(1, n, "the line to plant the bug in moved")
        helpers.write_file(tmp .. "/src/proxy.c", bad)
        local status, out = sh("cd " .. q(tmp) .. " && cp " ..
                               q(pwd .. "/src/core/") .. "*.h src/ && " ..
                               "clang -std=c11 -g -O1 -Isrc " ..
                               "-fsanitize=fuzzer,address,undefined " ..
                               "-o fuzz/proxy_fuzz " ..
                               q(pwd .. "/fuzz/proxy_fuzz.c") .. " src/proxy.c")
        assert.equal(0, status, out)
        status, out = sh("cd " .. q(tmp) .. " && mkdir build && cp -r " ..
                         q(pwd .. "/fuzz/corpus") .. " fuzz/ && " ..
                         "sh " .. q(pwd .. "/fuzz/run") .. " 20 fuzz/proxy_fuzz")
        assert.is_false(status == 0, out)
        assert.truthy(out:find("not ok 1 - fuzz proxy_fuzz", 1, true), out)
        local log = helpers.read_file(tmp .. "/fuzz/proxy_fuzz.log") or ""
        assert.truthy(log:find("heap-buffer-overflow", 1, true), log)
    end)
end)
