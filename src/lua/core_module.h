/* core_module.h: luaserv.core, the server's own controls (stats per
 * listener, connections, reload, eval, log level, shutdown, the core
 * metrics) that the admin socket and the metrics endpoint, Lua handlers
 * in lua/luaserv, are written in. */
#ifndef LSV_CORE_MODULE_H
#define LSV_CORE_MODULE_H

#include "server.h"

#include <lua.h>

/* The binary upgrade, which src/ops runs (this layer cannot call it, so
 * ops registers it): start begins one (LSV_OK, or else with why in
 * err); status returns the last one's state, 1 under way, 2 done (the
 * new generation serves), 3 failed, 0 none, with how it ended in msg. */
typedef struct lsv_core_upgrade {
    int (*start)(lsv_server_t *srv, char *err, size_t size);
    int (*status)(char *msg, size_t size);
} lsv_core_upgrade_t;

/* Registers u (static) for core.upgrade and core.upgrade_status. */
void lsv_core_set_upgrade(const lsv_core_upgrade_t *u);

/* Sets the directory core.control() returns: where a master's workers
 * serve their admin channels (src/ops/workers.c; dir must live as long
 * as the process); master says whether
 * this process is the master (core.shutdown then stops it by SIGTERM). */
void lsv_core_set_control(const char *dir, int master);

/* A --workers master, before it forks: maps the flag its stop sets
 * (lsv_core_mark_draining) and every worker's core.draining() reads, so
 * workers see the master's drain from its start, --drain-delay included.
 * Without it (mmap failed, or no workers) core.draining() is the
 * process's own state alone. */
void lsv_core_share_draining(void);
void lsv_core_mark_draining(void);

/* Runs require(module)[fn]() as a task (a master's SIGHUP runs
 * luaserv.control's reload so). Logs an error that stops it starting. */
void lsv_core_spawn(lsv_server_t *srv, const char *module, const char *fn);

/* The module loader, for package.preload["luaserv.core"]. [-0, +1, m] */
int luaopen_luaserv_core(lua_State *L);

#endif
