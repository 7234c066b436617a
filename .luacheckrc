-- luacheck configuration: handler scripts and modules use no globals.
std = "lua54"
max_line_length = 100
files["spec/"] = { std = "+busted" }
