# luaserv: build, run, test, install.
CC ?= cc
CFLAGS ?= -O2 -g
PREFIX ?= /usr/local
DESTDIR ?=
PKG_CONFIG ?= pkg-config

WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
       -Wwrite-strings
LUA_CFLAGS = -I/usr/include/lua5.4
LUA_LIBS = -llua5.4
EV_LIBS = -lev
SSL_LIBS = -lssl -lcrypto

ifeq ($(SANITIZE),1)
BUILD ?= build/asan
SAN = -fsanitize=address,undefined -fno-sanitize-recover=all \
      -fno-omit-frame-pointer
else
BUILD ?= build
SAN =
endif

ALL_CFLAGS = -std=c11 -MMD -MP $(WARN) $(CFLAGS) $(SAN) $(LUA_CFLAGS) \
             -DLSV_PREFIX='"$(PREFIX)"'
ALL_LDFLAGS = $(LDFLAGS) $(SAN)

# Sources by layer (docs/architecture.md): src/core knows no Lua, src/lua
# is the handler layer, src/ops the options, config and operations, tools/
# the client and the load generator. Objects keep the layer's folder.
CORE_SRC = core/log core/conn core/conn_out core/conn_in core/conn_info core/listener \
           core/udp core/net \
           core/server core/loop core/transport \
           core/buf core/frame core/resp core/http core/ws core/util \
           core/resolve \
           core/shdict core/shdict_heap core/shdict_read
CORE_SRC += core/sha1 core/base64
CORE_SRC += core/handshake
CORE_SRC += core/proxy
CORE_SRC += core/tls core/tls_client
CORE_SRC += core/tls_stage
LUA_SRC = lua/vm lua/lua_conn lua/lua_api lua/sched lua/timer lua/stream \
          lua/handler lua/dispatch lua/connect \
          lua/udp_socket lua/script lua/core_module lua/guard lua/procstat \
          lua/shared lua/decode lua/resp_lua lua/http_lua lua/ws_lua
LUA_SRC += lua/proxy_lua
LUA_SRC += lua/tls_lua lua/sni_lua
LUA_SRC += lua/connect_tls
OPS_SRC = ops/notify ops/config ops/options ops/workers ops/upgrade
OPS_SRC += ops/options_table ops/config_tls
SERVER_SRC = main $(CORE_SRC) $(LUA_SRC) $(OPS_SRC)
CLI_SRC = tools/cli tools/args core/net core/buf core/util
BENCH_SRC = tools/bench tools/args tools/bench_args tools/bench_report tools/hist \
            tools/bench_ws tools/bench_conn tools/bench_tls \
            core/net core/buf core/util
INCLUDES = -iquote src/core -iquote src/lua -iquote src/ops
UNIT_TESTS = frame_test buf_test net_test shdict_test
UNIT_TESTS += http_test
UNIT_TESTS += ws_test
UNIT_TESTS += resp_test
UNIT_TESTS += proxy_test

SERVER_OBJ = $(SERVER_SRC:%=$(BUILD)/%.o)
CLI_OBJ = $(CLI_SRC:%=$(BUILD)/%.o)
BENCH_OBJ = $(BENCH_SRC:%=$(BUILD)/%.o)
BINS = $(BUILD)/luaserv $(BUILD)/luaserv-cli $(BUILD)/luaserv-bench

.PHONY: all run test check bench install uninstall clean deps deps-test units \
        FORCE fuzz fuzz-build

all: deps $(BINS)

deps:
	@sh .ci/deps build

$(BUILD)/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(INCLUDES) -c -o $@ $<

$(BUILD)/tools/%.o: tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -iquote src/core -c -o $@ $<

# PREFIX is compiled in (LSV_PREFIX: where an installed luaserv finds its
# scripts and modules), so the objects that use it depend on a stamp that
# holds the last PREFIX and changes only with it: `make install
# PREFIX=/usr` after a plain `make` rebuilds them instead of installing a
# binary that looks in /usr/local.
$(BUILD)/prefix: FORCE
	@mkdir -p $(BUILD)
	@echo '$(PREFIX)' | cmp -s - $@ || echo '$(PREFIX)' > $@
$(BUILD)/main.o $(BUILD)/lua/vm.o: $(BUILD)/prefix

$(BUILD)/unit/%.o: spec/unit/%.c
	@mkdir -p $(BUILD)/unit
	$(CC) $(ALL_CFLAGS) -iquote src/core -c -o $@ $<

$(BUILD)/luaserv: $(SERVER_OBJ)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(LUA_LIBS) $(EV_LIBS) $(SSL_LIBS) -lm -lpthread

$(BUILD)/luaserv-cli: $(CLI_OBJ)
	$(CC) -o $@ $^ $(ALL_LDFLAGS)

$(BUILD)/luaserv-bench: $(BENCH_OBJ)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(EV_LIBS) $(SSL_LIBS) -lm

# The framer and the protocol framers it dispatches to.
FRAME_OBJ = $(BUILD)/core/frame.o $(BUILD)/core/resp.o $(BUILD)/core/http.o \
            $(BUILD)/core/ws.o
FRAME_C = src/core/frame.c src/core/resp.c src/core/http.c src/core/ws.c \
          src/core/frame.h src/core/frame_spec.h src/core/resp.h src/core/http.h src/core/ws.h \
          src/core/lsv.h
# Each framer's checks link the framer with every protocol framer.
FRAME_TESTS = frame_test http_test ws_test resp_test
$(FRAME_TESTS:%=$(BUILD)/unit/%): $(BUILD)/unit/%: $(BUILD)/unit/%.o $(FRAME_OBJ)
	$(CC) -o $@ $^ $(ALL_LDFLAGS)
$(BUILD)/unit/buf_test: $(BUILD)/unit/buf_test.o $(BUILD)/core/buf.o $(BUILD)/core/util.o
	$(CC) -o $@ $^ $(ALL_LDFLAGS)
$(BUILD)/unit/net_test: $(BUILD)/unit/net_test.o $(BUILD)/core/net.o $(BUILD)/core/util.o
	$(CC) -o $@ $^ $(ALL_LDFLAGS)
$(BUILD)/unit/shdict_test: $(BUILD)/unit/shdict_test.o $(BUILD)/core/shdict.o \
                           $(BUILD)/core/shdict_heap.o $(BUILD)/core/shdict_read.o
	$(CC) -o $@ $^ $(ALL_LDFLAGS) -lpthread

$(BUILD)/unit/proxy_test: $(BUILD)/unit/proxy_test.o $(BUILD)/core/proxy.o
	$(CC) -o $@ $^ $(ALL_LDFLAGS)

units: $(UNIT_TESTS:%=$(BUILD)/unit/%)

run: all
	$(BUILD)/luaserv

# The whole suite: C unit checks, then busted specs against the real binary.
# spec/run prints the final "N passed, N failed" line.
test: all units
	@sh .ci/deps test
	@LUASERV_BUILD=$(BUILD) sh spec/run $(UNIT_TESTS:%=$(BUILD)/unit/%)

# The benchmark: luaserv against the bare C and Python reference servers,
# pinned to separate cores; QUICK=1 for a short run, ONLY=protocols (or
# lines, idle, shdict, resp, http, ws) for some parts alone.
bench: all $(BUILD)/ref_libev
	@sh .ci/deps bench
	QUICK=$(QUICK) ONLY=$(ONLY) BUILD=$(BUILD) python3 bench/run.py

$(BUILD)/ref_libev: bench/ref_libev.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 $(WARN) $(CFLAGS) $(SAN) -o $@ $< $(ALL_LDFLAGS) $(EV_LIBS)

# Fuzzing: libFuzzer targets (clang, ASan and UBSan) for the framer and
# the address parser, each run for FUZZ_SECONDS from its seeds in
# fuzz/corpus; a crash fails it. fuzz/run ends "N passed, N failed".
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = frame_fuzz addr_fuzz
FUZZ_TARGETS += http_fuzz
FUZZ_TARGETS += ws_fuzz
FUZZ_TARGETS += resp_fuzz
FUZZ_TARGETS += proxy_fuzz
FUZZ_BIN = $(FUZZ_TARGETS:%=build/fuzz/%)
FUZZ_CFLAGS = -std=c11 -g -O1 $(WARN) -Isrc/core \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

build/fuzz/frame_fuzz: fuzz/frame_fuzz.c $(FRAME_C)
build/fuzz/http_fuzz: fuzz/http_fuzz.c $(FRAME_C)
build/fuzz/ws_fuzz: fuzz/ws_fuzz.c $(FRAME_C)
build/fuzz/resp_fuzz: fuzz/resp_fuzz.c $(FRAME_C)
build/fuzz/proxy_fuzz: fuzz/proxy_fuzz.c src/core/proxy.c src/core/proxy.h src/core/lsv.h
build/fuzz/addr_fuzz: fuzz/addr_fuzz.c src/core/net.c src/core/util.c src/core/net.h src/core/lsv.h
$(FUZZ_BIN):
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^)

fuzz-build: $(FUZZ_BIN)

fuzz:
	@sh .ci/deps fuzz
	@$(MAKE) --no-print-directory fuzz-build
	@sh fuzz/run $(FUZZ_SECONDS) $(FUZZ_BIN)

check: all
	@sh .ci/deps check
	luacheck --no-color -q scripts examples lua spec
	$(MAKE) test
	$(MAKE) test SANITIZE=1

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/luaserv/scripts \
	    $(DESTDIR)$(PREFIX)/share/luaserv/lua/luaserv \
	    $(DESTDIR)$(PREFIX)/share/doc/luaserv/examples
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 scripts/*.lua $(DESTDIR)$(PREFIX)/share/luaserv/scripts/
	install -m 644 lua/luaserv/*.lua $(DESTDIR)$(PREFIX)/share/luaserv/lua/luaserv/
	install -m 644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/luaserv/
	install -m 644 examples/*.lua $(DESTDIR)$(PREFIX)/share/doc/luaserv/examples/
	cp -R examples/static $(DESTDIR)$(PREFIX)/share/doc/luaserv/examples/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/luaserv $(DESTDIR)$(PREFIX)/bin/luaserv-cli \
	    $(DESTDIR)$(PREFIX)/bin/luaserv-bench
	rm -rf $(DESTDIR)$(PREFIX)/share/luaserv $(DESTDIR)$(PREFIX)/share/doc/luaserv

clean:
	rm -rf build

-include $(wildcard $(BUILD)/*.d $(BUILD)/*/*.d)
