-- luaserv.config: reads a luaserv configuration file (luaserv -c FILE).
-- The file is Lua: settings are assignments, listeners, the admin socket
-- and the metrics endpoint are calls.
--
--   workers = "auto"
--   log_level = "info"
--   listen { "tcp://0.0.0.0:21567", handler = "scripts/handle.lua" }
--   listen { "tcp://127.0.0.1:8080", handler = "examples/http.lua",
--            idle_timeout = 30 }
--   admin "unix:/run/luaserv.sock"
--   metrics "127.0.0.1:9145"
--
-- An unknown name or a value of the wrong type is an error that names the
-- file and line. load() returns a plain table for the C core.
local debug = require "debug"
local error = error
local format = string.format
local loadfile = loadfile
local math_type = math.type
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local tostring = tostring
local type = type

local _M = {}

local LEVELS = { debug = true, info = true, warn = true, error = true }

local function seconds(v)
    return type(v) == "number" and v >= 0, "a number of seconds >= 0"
end
local function bytes(v)
    return math_type(v) == "integer" and v >= 1024, "a whole number of bytes >= 1024"
end
local function count(v) return math_type(v) == "integer" and v >= 1, "a whole number >= 1" end
local function str(v) return type(v) == "string" and v ~= "", "a non-empty string" end
local function bool(v) return type(v) == "boolean", "true or false" end
local function level(v) return LEVELS[v] ~= nil, '"debug", "info", "warn" or "error"' end
local function log_format(v) return v == "text" or v == "json", '"text" or "json"' end
local function workers(v)
    return v == "auto" or (math_type(v) == "integer" and v >= 1), '"auto" or a whole number >= 1'
end
local function framing(v)
    return type(v) == "string" or type(v) == "table", "a framing spec (a string or a table)"
end

-- Top-level settings: name -> checker.
local SETTINGS = {
    workers = workers,
    log_level = level,
    log_format = log_format,
    access_log = bool,
    watch = bool,
    idle_timeout = seconds,
    shutdown_timeout = seconds,
    high_water = bytes,
    backlog = count,
    handler = str,
    handler_timeout = seconds,
    lua_memory = bytes,
    load_timeout = seconds,
    max_output = function(v)
        return math_type(v) == "integer" and v >= 65536 and v <= 3 << 30,
               "a whole number of bytes from 65536 to 3221225472"
    end,
    task_slice = function(v)
        return math_type(v) == "integer" and v >= 0 and v <= 1 << 30,
               "a whole number from 0 to 1073741824"
    end,
}

-- Keys of a listen { ... } table.
local LISTEN = {
    handler = str,
    framing = framing,
    idle_timeout = seconds,
    max_frame = count,
    high_water = bytes,
    rcvbuf = bytes,
    sndbuf = bytes,
}

local function check(checker, name, v, level_)
    local ok, want = checker(v)
    if not ok then
        error(format("%s must be %s, not %s", name, want,
                     type(v) == "string" and format("%q", v) or tostring(v)),
              level_)
    end
end

-- load(path) -> config table | nil, "file:line: message"
function _M.load(path)
    local cfg = { listen = {} }
    local api = {}

    function api.listen(t)
        if type(t) == "string" then t = { t } end
        if type(t) ~= "table" or type(t[1]) ~= "string" then
            error('listen needs a table starting with an address, as in '
                  .. 'listen { "tcp://0.0.0.0:21567", handler = "x.lua" }', 2)
        end
        local l = { addr = t[1], line = debug.getinfo(2, "l").currentline }
        for k, v in pairs(t) do
            if k ~= 1 then
                local checker = LISTEN[k]
                if not checker then
                    error(format("listen: unknown key %s (known: handler, "
                                 .. "framing, idle_timeout, max_frame, "
                                 .. "high_water, rcvbuf, sndbuf)",
                                 tostring(k)), 2)
                end
                check(checker, "listen." .. k, v, 3)
                l[k] = v
            end
        end
        cfg.listen[#cfg.listen + 1] = l
    end

    function api.admin(addr)
        check(str, "admin", addr, 3)
        if not addr:match("^unix:") then
            error("admin must be a unix:/path address: eval over the "
                  .. "network would give anyone the server", 2)
        end
        cfg.admin = addr
    end

    function api.metrics(addr)
        check(str, "metrics", addr, 3)
        cfg.metrics = addr
    end

    local env = setmetatable({}, {
        __index = function(_, k)
            if api[k] then return api[k] end
            if SETTINGS[k] then return cfg[k] end
            error(format("unknown name %s in the configuration",
                         tostring(k)), 2)
        end,
        __newindex = function(_, k, v)
            local checker = SETTINGS[k]
            if not checker then
                local known = {}
                for name in pairs(SETTINGS) do known[#known + 1] = name end
                table.sort(known)
                error(format("unknown setting %s (known: %s)", tostring(k),
                             table.concat(known, ", ")), 2)
            end
            check(checker, k, v, 3)
            cfg[k] = v
        end,
    })
    local chunk, err = loadfile(path, "t", env)
    if not chunk then return nil, err end
    local ok, rerr = pcall(chunk)
    if not ok then return nil, rerr end
    return cfg
end

return _M
