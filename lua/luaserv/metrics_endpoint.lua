-- luaserv.metrics_endpoint: the handler --metrics HOST:PORT serves.
return require("luaserv.metrics").http_handler()
