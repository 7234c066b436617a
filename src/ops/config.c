/* config.c: the configuration file, the flags and the script's `listen`,
 * merged into the plan of listeners main() opens. */
#include "lsv.h"
#include "config.h"
#include "handshake.h"
#include "log.h"
#include "notify.h"
#include "options.h"
#include "script.h"
#include "shared.h"
#include "upgrade.h"
#include "vm.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* Reads cfg[key] if it is set; pushes it and returns its type, or pushes
 * nothing and returns LUA_TNIL. */
static int cfg_get(lua_State *L, const lsv_plan_t *p, const char *key)
{
    if (p->cfg_ref == LUA_NOREF) return LUA_TNIL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->cfg_ref);
    int t = lua_getfield(L, -1, key);
    lua_remove(L, -2);
    if (t == LUA_TNIL) lua_pop(L, 1);
    return t;
}

/* A string of the config (anchored by cfg_ref), or NULL. */
static const char *cfg_string(lua_State *L, const lsv_plan_t *p,
                              const char *key)
{
    if (cfg_get(L, p, key) == LUA_TNIL) return NULL;
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);
    return s;
}

/* --- the file ------------------------------------------------------------
 * The configuration file is a Lua chunk run in an environment of its own:
 * an assignment is a setting, listen/admin/metrics are calls, and every
 * name, key and value is checked against the options table as the chunk
 * runs, so a mistake raises at its own line. The messages come from here
 * and options.c only. */

/* Raises err at the line of the chunk that called the running C function
 * (level 1). [-0, +0, v] */
static int raise_at_caller(lua_State *L, const char *err)
{
    return luaL_error(L, "%s", err);
}

/* env.__index(env, k): an API function, or a setting read back; anything
 * else is a misspelt name. Upvalues: cfg, api. [-0, +1, v] */
static int env_index(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        if (lua_getfield(L, lua_upvalueindex(2), k) != LUA_TNIL) return 1;
        if (lsv_option_find(k, LSV_OPT_SETTING)) {
            lua_getfield(L, lua_upvalueindex(1), k);
            return 1;
        }
    }
    return luaL_error(L, "unknown name %s in the configuration",
                      luaL_tolstring(L, 2, NULL));
}

/* env.__newindex(env, k, v): a setting, checked, into cfg. Upvalue: cfg.
 * [-0, +0, v] */
static int env_newindex(lua_State *L)
{
    char err[1024];
    const lsv_option_t *o = NULL;
    if (lua_type(L, 2) == LUA_TSTRING)
        o = lsv_option_find(lua_tostring(L, 2), LSV_OPT_SETTING);
    if (o == NULL) {
        lsv_option_known(LSV_OPT_SETTING, err, sizeof err);
        return luaL_error(L, "unknown setting %s (known: %s)",
                          luaL_tolstring(L, 2, NULL), err);
    }
    if (!lsv_option_check_lua(o, L, 3, "", err, sizeof err))
        return raise_at_caller(L, err);
    lua_settop(L, 3);
    lua_setfield(L, lua_upvalueindex(1), o->key);
    return 0;
}

/* admin "unix:/path", metrics "HOST:PORT": cfg[key] = the checked
 * argument. Upvalues: cfg, the option's row. [-0, +0, v] */
static int api_call(lua_State *L)
{
    char err[1024];
    const lsv_option_t *o = lua_touserdata(L, lua_upvalueindex(2));
    lua_settop(L, 1);
    if (!lsv_option_check_lua(o, L, 1, "", err, sizeof err))
        return raise_at_caller(L, err);
    lua_setfield(L, lua_upvalueindex(1), o->key);
    return 0;
}

/* listen { ADDR, key = value, ... } or listen "ADDR": appends
 * { addr =, line =, key = value ... } to cfg.listen, each key checked.
 * Upvalue: cfg. [-0, +0, v] */
static int api_listen(lua_State *L)
{
    char err[1024];
    lua_settop(L, 1);
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, 1);
        lua_rawseti(L, 1, 1);
    }
    if (!lua_istable(L, 1) || lua_geti(L, 1, 1) != LUA_TSTRING)
        return luaL_error(L, "listen needs a table starting with an "
                          "address, as in listen { \"tcp://0.0.0.0:21567\", "
                          "handler = \"x.lua\" }");
    lua_Debug ar;
    int line = lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar)
               ? ar.currentline : 0;
    lua_createtable(L, 0, 4);                     /* 3: the listener */
    lua_pushvalue(L, 2);
    lua_setfield(L, 3, "addr");
    lua_pushinteger(L, line);
    lua_setfield(L, 3, "line");
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_isinteger(L, -2) && lua_tointeger(L, -2) == 1) {
            lua_pop(L, 1);
            continue;
        }
        const lsv_option_t *o = NULL;
        if (lua_type(L, -2) == LUA_TSTRING)
            o = lsv_option_find(lua_tostring(L, -2), LSV_OPT_LISTEN);
        if (o == NULL) {
            lsv_option_known(LSV_OPT_LISTEN, err, sizeof err);
            return luaL_error(L, "listen: unknown key %s (known: %s)",
                              luaL_tolstring(L, -2, NULL), err);
        }
        if (!lsv_option_check_lua(o, L, -1, "listen.", err, sizeof err))
            return raise_at_caller(L, err);
        lua_setfield(L, 3, o->key);
    }
    lua_getfield(L, lua_upvalueindex(1), "listen");
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* Loads and runs the file at arg 1; returns its cfg table:
 * { listen = { {addr =, line =, ...}, ... }, setting = value ... }.
 * [-0, +1, e] */
static int run_file(lua_State *L)
{
    if (luaL_loadfilex(L, lua_tostring(L, 1), "t") != LUA_OK)
        return lua_error(L);
    lua_createtable(L, 0, 8);                     /* 3: cfg */
    lua_newtable(L);
    lua_setfield(L, 3, "listen");
    lua_newtable(L);                              /* 4: env */
    lua_createtable(L, 0, 2);                     /* 5: its metatable */
    lua_newtable(L);                              /* 6: api */
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if (!(o->where & LSV_OPT_CALL)) continue;
        lua_pushvalue(L, 3);
        if (o->type == LSV_OPT_ACTION) {          /* listen */
            lua_pushcclosure(L, api_listen, 1);
        } else {
            lua_pushlightuserdata(L, (void *)o);
            lua_pushcclosure(L, api_call, 2);
        }
        lua_setfield(L, 6, o->key);
    }
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 6);
    lua_pushcclosure(L, env_index, 2);
    lua_setfield(L, 5, "__index");
    lua_pushvalue(L, 3);
    lua_pushcclosure(L, env_newindex, 1);
    lua_setfield(L, 5, "__newindex");
    lua_settop(L, 5);
    lua_setmetatable(L, 4);
    lua_setupvalue(L, 2, 1);                      /* the chunk's _ENV */
    lua_pushvalue(L, 2);
    lua_call(L, 0, 0);
    lua_pushvalue(L, 3);
    return 1;
}

int lsv_config_load(lsv_server_t *srv, const lsv_flags_t *f, lsv_plan_t *p)
{
    lua_State *L = srv->vm->L;
    p->cfg_ref = LUA_NOREF;
    if (f->config == NULL) return LSV_OK;
    lua_pushcfunction(L, run_file);
    lua_pushstring(L, f->config);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "luaserv: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return LSV_ERR;
    }
    p->cfg_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* Each setting no flag gave, through the table. */
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if (!(o->where & LSV_OPT_SETTING) || (f->given & lsv_option_bit(o)))
            continue;
        if (cfg_get(L, p, o->key) == LUA_TNIL) continue;
        lsv_option_store_lua(o, L, -1, &srv->opt, NULL);
        lua_pop(L, 1);
    }
    /* The one setting kept outside srv->opt (the flag's is in f); a copy,
     * as the exit removes the file after the Lua state is closed. */
    const char *pid_file = cfg_string(L, p, "pid_file");
    if (pid_file && !f->pid_file && !f->check) {
        char *copy = strdup(pid_file);
        if (copy == NULL) {
            fprintf(stderr, "luaserv: out of memory\n");
            return LSV_ERR;
        }
        lsv_upgrade_pid_file(copy);
    }
    srv->opt.low_water = srv->opt.high_water / 4;
    return LSV_OK;
}

/* Whether a --shared flag declared name. */
static int flag_declared(const lsv_flags_t *f, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < f->nshared; i++)
        if (strncmp(f->shared[i], name, n) == 0 && f->shared[i][n] == '=')
            return 1;
    return 0;
}

int lsv_config_shared(lsv_server_t *srv, const lsv_flags_t *f,
                      const lsv_plan_t *p)
{
    lua_State *L = srv->vm->L;
    char name[LSV_SHARED_NAME_MAX + 1], err[LSV_ERRLEN];
    uint64_t size;
    for (int i = 0; i < f->nshared; i++) {
        lsv_option_shared(f->shared[i], name, sizeof name, &size);
        if (lsv_shared_create(name, (size_t)size, err) != LSV_OK) {
            fprintf(stderr, "luaserv: --shared: %s\n", err);
            return LSV_ERR;
        }
    }
    if (cfg_get(L, p, "shared") == LUA_TNIL) return LSV_OK;
    int rc = LSV_OK;
    lua_pushnil(L);                   /* the table's pairs, checked as read */
    while (rc == LSV_OK && lua_next(L, -2)) {
        const char *k = lua_tostring(L, -2);
        if (lua_isinteger(L, -1)) size = (uint64_t)lua_tointeger(L, -1);
        else lsv_option_parse_size(lua_tostring(L, -1), &size);
        if (!flag_declared(f, k) &&
            lsv_shared_create(k, (size_t)size, err) != LSV_OK) {
            fprintf(stderr, "luaserv: %s: %s\n", p->config, err);
            rc = LSV_ERR;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, lua_gettop(L) - (rc == LSV_OK ? 1 : 2));
    return rc;
}

/* Adds an entry; returns it, or NULL (printed) when the spec is bad. */
static lsv_plan_entry_t *add(lsv_plan_t *p, const char *spec,
                             const char *script, const char *where)
{
    char err[LSV_ERRLEN];
    if (p->n == LSV_MAX_LISTEN) {
        fprintf(stderr, "luaserv: too many listeners (at most %d)\n",
                LSV_MAX_LISTEN);
        return NULL;
    }
    lsv_plan_entry_t *e = &p->e[p->n];
    memset(e, 0, sizeof *e);
    e->fd = -1;
    if (lsv_net_parse(spec, &e->addr, err) != LSV_OK) {
        fprintf(stderr, "luaserv: %s%s\n", where, err);
        return NULL;
    }
    e->spec = spec;
    e->script = script;
    p->n++;
    return e;
}

/* The file of one of luaserv's own Lua modules (for builtin handlers). */
const char *lsv_config_module_file(lua_State *L, const char *name)
{
    static char *files[8];
    static int nfiles;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushstring(L, name);
    lua_getfield(L, -3, "path");
    lua_call(L, 2, 2);
    const char *f = lua_tostring(L, -2);
    char *copy = f && nfiles < 8 ? (files[nfiles++] = lsv_strdup(f)) : NULL;
    if (copy == NULL)
        fprintf(stderr, "luaserv: cannot find luaserv's module %s: %s\n", name,
                lua_tostring(L, -1));
    lua_pop(L, 3);
    return copy;
}

/* The script's handler.listen (a string or a list), added to the plan. */
static int script_listen(lsv_server_t *srv, lsv_plan_t *p)
{
    lua_State *L = srv->vm->L;
    char err[4096];
    lsv_script_t *s = lsv_script_load(srv, p->main_script, err, sizeof err);
    if (s == NULL) {
        fprintf(stderr, "luaserv: %s\n", err);
        return LSV_ERR;
    }
    int rc = LSV_OK;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    int t = lua_getfield(L, -1, "listen");
    if (t == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    } else if (t != LUA_TTABLE && t != LUA_TNIL) {
        fprintf(stderr, "luaserv: %s: handler.listen must be an address or "
                "a list of addresses, not a %s\n", p->main_script,
                lua_typename(L, t));
        rc = LSV_ERR;
    }
    if (rc == LSV_OK && lua_istable(L, -1)) {
        /* Keep the list: entries point at its strings. */
        lua_pushvalue(L, -1);
        luaL_ref(L, LUA_REGISTRYINDEX);
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n && rc == LSV_OK; i++) {
            lua_rawgeti(L, -1, i);
            const char *spec = lua_tostring(L, -1);
            if (spec == NULL ||
                add(p, spec, p->main_script, "handler.listen: ") == NULL)
                rc = LSV_ERR;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 2);
    return rc;
}

/* The config file's listen{} entries, each with its own handler and a
 * framing checked now, before anything starts. */
static int config_listen(lua_State *L, lsv_plan_t *p)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "addr");
        lua_getfield(L, -2, "handler");
        lua_getfield(L, -3, "line");
        char where[LSV_ERRLEN + 64];
        snprintf(where, sizeof where, "%s:%d: listen: ", p->config,
                 (int)lua_tointeger(L, -1));
        const char *script = lua_tostring(L, -2);
        lsv_plan_entry_t *e = add(p, lua_tostring(L, -3),
                                  script ? script : p->main_script, where);
        if (lua_getfield(L, -4, "framing") != LUA_TNIL && e != NULL) {
            char err[LSV_ERRLEN];
            lsv_frame_spec_t spec;
            if (lsv_vm_parse_framing(L, -1, &spec, err) != LSV_OK) {
                fprintf(stderr, "luaserv: %s%s\n", where, err);
                e = NULL;
            }
        }
        lua_pop(L, 5);
        if (e == NULL) return LSV_ERR;
        e->cfg_index = (int)i;
    }
    return LSV_OK;
}

/* With no address named anywhere: the sockets systemd passed, else the
 * defaults (TCP and UDP port 21567, IPv4 and IPv6). */
static void default_listen(lsv_server_t *srv, lsv_plan_t *p)
{
    lsv_addr_t a;
    int fd;
    while (p->n < LSV_MAX_LISTEN && (fd = lsv_notify_next_fd(srv, &a)) >= 0) {
        lsv_plan_entry_t *e = &p->e[p->n++];
        memset(e, 0, sizeof *e);
        e->addr = a;
        e->fd = fd;
        e->spec = "(from systemd)";
        e->script = p->main_script;
    }
    if (p->n > 0) return;
    static const char *const defaults[] = {
        "tcp://0.0.0.0:21567", "tcp://[::]:21567",
        "udp://0.0.0.0:21567", "udp://[::]:21567"
    };
    for (int i = 0; i < 4; i++) {
        lsv_plan_entry_t *e = add(p, defaults[i], p->main_script, "");
        e->optional = i % 2;     /* IPv6 may be off on this host */
    }
}

/* --health HOST:PORT (config health): GET /healthz alone, served by
 * luaserv's own script as the metrics endpoint is. */
static int health_listen(lua_State *L, const lsv_flags_t *f, lsv_plan_t *p)
{
    const char *health = f->health ? f->health : cfg_string(L, p, "health");
    if (health == NULL) return LSV_OK;
    const char *file = lsv_config_module_file(L, "luaserv.health_endpoint");
    lsv_plan_entry_t *e = file ? add(p, health, file, "--health: ") : NULL;
    if (e == NULL) return LSV_ERR;
    if (e->addr.kind != LSV_NET_TCP) {
        fprintf(stderr, "luaserv: --health must be a TCP address\n");
        return LSV_ERR;
    }
    e->builtin = e->health = 1;
    return LSV_OK;
}

/* The admin socket and the metrics endpoint, served by luaserv's own
 * scripts. */
static int builtin_listen(lua_State *L, const lsv_flags_t *f, lsv_plan_t *p)
{
    const char *admin = f->admin ? f->admin : cfg_string(L, p, "admin");
    if (admin) {           /* unix: only: the table's prefix checked it */
        const char *file = lsv_config_module_file(L, "luaserv.admin");
        lsv_plan_entry_t *e = file ? add(p, admin, file, "--admin: ") : NULL;
        if (e == NULL) return LSV_ERR;
        e->builtin = e->private_socket = 1;
    }
    const char *metrics = f->metrics ? f->metrics
                                     : cfg_string(L, p, "metrics");
    if (metrics) {
        const char *file = lsv_config_module_file(L, "luaserv.metrics_endpoint");
        lsv_plan_entry_t *e = file ? add(p, metrics, file, "--metrics: ")
                                   : NULL;
        if (e == NULL) return LSV_ERR;
        if (e->addr.kind != LSV_NET_TCP) {
            fprintf(stderr, "luaserv: --metrics must be a TCP address\n");
            return LSV_ERR;
        }
        e->builtin = e->health = 1;
    }
    return health_listen(L, f, p);
}

int lsv_config_plan(lsv_server_t *srv, const lsv_flags_t *f, lsv_plan_t *p)
{
    lua_State *L = srv->vm->L;
    for (int i = 0; i < f->nlisten; i++)
        if (!add(p, f->listen[i], p->main_script, "")) return LSV_ERR;
    for (int i = 0; i < p->n; i++)       /* the -l ones: stream kinds */
        p->e[i].proxy_protocol = f->proxy_protocol &&
            (p->e[i].addr.kind == LSV_NET_TCP ||
             p->e[i].addr.kind == LSV_NET_UNIX);

    if (p->n == 0 && cfg_get(L, p, "listen") == LUA_TTABLE) {
        int rc = config_listen(L, p);
        lua_pop(L, 1);
        if (rc != LSV_OK) return LSV_ERR;
    } else if (p->cfg_ref != LUA_NOREF && p->n == 0) {
        lua_pop(L, cfg_get(L, p, "listen") != LUA_TNIL);
    }
    if (p->n == 0 && script_listen(srv, p) != LSV_OK) return LSV_ERR;
    if (p->n == 0) default_listen(srv, p);
    if (builtin_listen(L, f, p) != LSV_OK) return LSV_ERR;
    if (lsv_config_tls_plan(srv, f, p) != LSV_OK) return LSV_ERR;
    for (int i = 0; i < p->n; i++)
        if (p->e[i].fd < 0)
            p->e[i].fd = lsv_notify_match_fd(srv, &p->e[i].addr);
    return LSV_OK;
}

int lsv_config_apply(lsv_server_t *srv, const lsv_plan_t *p,
                     const lsv_plan_entry_t *e, lsv_listener_t *l)
{
    lua_State *L = srv->vm->L;
    if (e->proxy_protocol) l->opt.proxy_protocol = 1;
    if (e->cfg_index == 0 || p->cfg_ref == LUA_NOREF) {
        if (l->opt.proxy_protocol) lsv_handshake_attach(l);
        return lsv_config_tls_setup(e, l);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->cfg_ref);
    lua_getfield(L, -1, "listen");
    lua_rawgeti(L, -1, e->cfg_index);
    int t = lua_gettop(L), rc = LSV_OK;
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if (!o->lstore || lua_getfield(L, t, o->key) == LUA_TNIL) {
            lua_settop(L, t);
            continue;
        }
        if ((o->where & LSV_OPT_DGRAM) && !lsv_listener_is_dgram(l)) {
            fprintf(stderr, "luaserv: %s: listen %s: %s applies to udp:// "
                    "and unixgram: listeners only\n", p->config, e->spec,
                    o->key);
            rc = LSV_ERR;
        }
        if ((o->where & LSV_OPT_STREAM) && lsv_listener_is_dgram(l)) {
            fprintf(stderr, "luaserv: %s: listen %s: %s applies to tcp:// "
                    "and unix: stream listeners only (a datagram has no "
                    "PROXY header)\n", p->config, e->spec, o->key);
            rc = LSV_ERR;
        }
        lsv_option_store_lua(o, L, -1, NULL, &l->opt);
        lua_pop(L, 1);
    }
    l->opt.low_water = l->opt.high_water / 4;
    if (lua_getfield(L, t, "framing") != LUA_TNIL) {
        char err[LSV_ERRLEN];
        if (lsv_vm_parse_framing(L, -1, &l->opt.framing, err) != LSV_OK) {
            fprintf(stderr, "luaserv: %s: listen %s: %s\n", p->config,
                    e->spec, err);
            rc = LSV_ERR;
        }
        l->opt.has_framing = 1;
    }
    lua_settop(L, t - 3);
    if (l->opt.proxy_protocol) lsv_handshake_attach(l);
    if (rc == LSV_OK) rc = lsv_config_tls_setup(e, l);
    return rc;
}
