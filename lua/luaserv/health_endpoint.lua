-- luaserv.health_endpoint: the handler --health HOST:PORT serves: GET
-- /healthz alone (luaserv.metrics's endpoint without /metrics).
return require("luaserv.metrics").http_handler({ health_only = true })
