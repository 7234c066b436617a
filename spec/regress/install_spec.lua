-- Installing, issue 8: `make install PREFIX=/usr` after a plain `make`
-- installed a binary that still looked for its scripts and modules under
-- /usr/local (PREFIX is compiled in, and nothing rebuilt on its change);
-- and "cannot open" named one path where luaserv had tried two.
local helpers = require "helpers"

local SLOW = helpers.sanitize and 3 or 1
local q = helpers.shell_quote

local sh = helpers.sh

describe("make install PREFIX=...", function()
    it("rebuilds what PREFIX is compiled into, after a plain make", function()
        local tmp = helpers.tmpname(".inst")
        helpers.defer(function() os.execute("rm -rf " .. q(tmp)) end)
        local build, prefix = tmp .. "/build", tmp .. "/usr"
        assert(os.execute("mkdir -p " .. q(build)))
        -- A plain `make` (PREFIX=/usr/local), into a build folder of our
        -- own so the one the other specs use is left alone.
        local status, out = sh("make -s BUILD=" .. q(build) .. " all")
        assert.equal(0, status, out)
        status, out = sh("make -s BUILD=" .. q(build) .. " PREFIX=" .. q(prefix)
                         .. " install")
        assert.equal(0, status, out)
        -- From a folder with no scripts/ of its own, the installed binary
        -- finds its default script and its modules under PREFIX.
        local srv = helpers.start_server{
            bin = prefix .. "/bin/luaserv", shell = "cd / && ",
            args = { "--metrics", "127.0.0.1:0" } }
        assert.truthy(helpers.wait_for(function()
            return #helpers.ready(srv:log()) >= 2
        end, 10 * SLOW), srv:log())
        assert.truthy(srv:log():find("serving " .. prefix
                                     .. "/share/luaserv/scripts/handle.lua", 1, true),
                      srv:log())
        local c = helpers.connect(srv.port, 5 * SLOW)
        assert(c:send("hello\n"))
        assert.truthy((c:receive("*l") or ""):find("hello", 1, true))
        c:close()
        local code = io.popen("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:"
                              .. helpers.ready(srv:log())[2].addr:match(":(%d+)$")
                              .. "/metrics"):read("a")
        assert.equal("200", code)
        assert.equal(0, srv:stop("TERM", 10 * SLOW), srv:log())
    end)

    it("lists every path it tried when no default script is found", function()
        local bin = helpers.luaserv
        if bin:sub(1, 1) ~= "/" then bin = os.getenv("PWD") .. "/" .. bin end
        local status, out = sh("cd / && exec " .. q(bin) .. " -l 127.0.0.1:0")
        assert.equal(2, status, out)
        -- the source tree's path, then the installed one under PREFIX
        assert.truthy(out:find("^luaserv: cannot open the default script; tried "
                               .. "scripts/handle.lua %(No such file or directory%), "
                               .. "/[^ ]*/share/luaserv/scripts/handle.lua "
                               .. "%(No such file or directory%)\n$"), out)
    end)
end)
