/* config.h: what to serve: the flags, the configuration file (-c) and the
 * script's own `listen`, merged into one plan of listeners. */
#ifndef LSV_CONFIG_H
#define LSV_CONFIG_H

#include "lsv.h"
#include "listener.h"
#include "net.h"
#include "options.h"
#include "server.h"

#include <lua.h>

/* One listener to open. */
typedef struct lsv_plan_entry {
    lsv_addr_t addr;
    const char *spec;        /* as written, for messages */
    const char *script;      /* handler script path */
    int builtin;             /* luaserv's own handler (admin, metrics) */
    int optional;            /* a default IPv6 listener: skip if no IPv6 */
    int private_socket;      /* the admin socket: mode 0600 */
    int internal;            /* a worker's channel to its master */
    int health;              /* serves /healthz: kept open in a stop */
    int cfg_index;           /* its listen{} in the config, or 0 */
    int proxy_protocol;      /* a -l stream listener with --proxy-protocol */
    int fd;                  /* a socket systemd passed for it, or -1 */
    lsv_tls_opts_t tls;      /* a tls:// one's: flags and listen{} keys,
                              * resolved by lsv_config_tls_plan */
    struct lsv_tls_ctx *tls_loaded;  /* --workers: the context the master
                              * built from them at start, which a worker
                              * whose files no longer load serves */
} lsv_plan_entry_t;

typedef struct lsv_plan {
    lsv_plan_entry_t e[LSV_MAX_LISTEN + 6];
    int n;
    int cfg_ref;             /* registry ref to the config table, or NOREF */
    const char *main_script; /* the script named in messages */
    const char *config;      /* the configuration file, or NULL */
} lsv_plan_t;

/* Runs the configuration file, checking each setting, call and listen{}
 * key against the options table as it runs; then copies each setting no
 * flag gave (f->given) into srv->opt and keeps the file's table for
 * lsv_config_plan. Returns LSV_ERR after printing
 * "luaserv: FILE:LINE: message". */
int lsv_config_load(lsv_server_t *srv, const lsv_flags_t *f, lsv_plan_t *p);

/* Declares the shared dicts: each --shared NAME=SIZE, then each of the
 * config's shared = { NAME = SIZE } that no flag named. Their regions are
 * mapped now, so call it before any script runs or any fork. Returns
 * LSV_ERR after printing the problem. */
int lsv_config_shared(lsv_server_t *srv, const lsv_flags_t *f,
                      const lsv_plan_t *p);

/* Fills p with the listeners to open. Scripts are not loaded yet, except
 * to read a script's `listen` when nothing else names addresses. Returns
 * LSV_ERR after printing the problem. */
int lsv_config_plan(lsv_server_t *srv, const lsv_flags_t *f, lsv_plan_t *p);

/* The file of luaserv's own Lua module name ("luaserv.admin"), found
 * by package.path, or NULL after printing why. The string lives until
 * exit; at most a few such files are kept. */
const char *lsv_config_module_file(lua_State *L, const char *name);

/* Applies the config's listen{} keys of entry e (the options table's
 * LSV_OPT_LISTEN rows, and framing) to l. Returns LSV_ERR after printing. */
int lsv_config_apply(lsv_server_t *srv, const lsv_plan_t *p,
                     const lsv_plan_entry_t *e, lsv_listener_t *l);

/* config_tls.c: resolves each tls:// entry's settings (the --tls-*
 * flags, then its listen{} keys) into e->tls and checks them: a cert and
 * a key, verify only with a client CA, no TLS key on another listener,
 * no --tls-* flag without a tls:// listener. lsv_config_plan calls it.
 * Returns LSV_ERR after printing the problem. */
int lsv_config_tls_plan(lsv_server_t *srv, const lsv_flags_t *f,
                        lsv_plan_t *p);

/* Gives l, opened for e, its TLS (a no-op unless tls://): e->tls into
 * l->opt.tls, then lsv_tls_listener_setup, which builds the context and
 * the handshake stage (after the PROXY stage, so call it after
 * lsv_handshake_attach). Returns LSV_ERR after printing the problem. */
int lsv_config_tls_setup(const lsv_plan_entry_t *e, lsv_listener_t *l);

#endif
