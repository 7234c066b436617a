/* config.c: the flags, the configuration file and the script's `listen`,
 * merged into the plan of listeners main() opens. */
#include "lsv.h"
#include "config.h"
#include "log.h"
#include "notify.h"
#include "script.h"
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

int lsv_config_load(lsv_server_t *srv, const lsv_flags_t *f, lsv_plan_t *p)
{
    lua_State *L = srv->vm->L;
    p->cfg_ref = LUA_NOREF;
    if (f->config == NULL) return LSV_OK;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "luaserv.config");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "luaserv: %s\n", lua_tostring(L, -1));
        return LSV_ERR;
    }
    lua_getfield(L, -1, "load");
    lua_pushstring(L, f->config);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK || lua_isnil(L, -2)) {
        fprintf(stderr, "luaserv: %s\n", lua_tostring(L, -1));
        return LSV_ERR;
    }
    lua_pop(L, 1);
    p->cfg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);

    lsv_options_t *o = &srv->opt;
    const char *s;
    if (f->log_level < 0 && (s = cfg_string(L, p, "log_level")))
        lsv_log_level = lsv_log_parse_level(s);
    if (f->log_format == NULL && (s = cfg_string(L, p, "log_format")))
        lsv_log_format = strcmp(s, "json") == 0 ? LSV_LOG_JSON : LSV_LOG_TEXT;
    if (cfg_get(L, p, "access_log") != LUA_TNIL) {
        o->access_log = f->access_log || lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (cfg_get(L, p, "watch") != LUA_TNIL) {
        o->watch = f->watch || lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (!f->set_idle && cfg_get(L, p, "idle_timeout") != LUA_TNIL) {
        o->idle_timeout = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    if (!f->set_shutdown && cfg_get(L, p, "shutdown_timeout") != LUA_TNIL) {
        o->shutdown_timeout = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    if (!f->set_high_water && cfg_get(L, p, "high_water") != LUA_TNIL) {
        o->high_water = (size_t)lua_tointeger(L, -1);
        o->low_water = o->high_water / 4;
        lua_pop(L, 1);
    }
    if (!f->set_backlog && cfg_get(L, p, "backlog") != LUA_TNIL) {
        o->backlog = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (!f->set_handler_timeout &&
        cfg_get(L, p, "handler_timeout") != LUA_TNIL) {
        o->handler_timeout = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    if (!f->set_load_timeout && cfg_get(L, p, "load_timeout") != LUA_TNIL) {
        o->load_timeout = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    if (!f->set_max_output && cfg_get(L, p, "max_output") != LUA_TNIL) {
        o->max_output = (size_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (!f->set_task_slice && cfg_get(L, p, "task_slice") != LUA_TNIL) {
        o->task_slice = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (!f->set_lua_memory && cfg_get(L, p, "lua_memory") != LUA_TNIL) {
        o->lua_memory = (size_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (cfg_get(L, p, "workers") != LUA_TNIL) {
        if (!(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 1))
            lsv_info("workers = %s: this build runs one process",
                     lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return LSV_OK;
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
static const char *module_file(lua_State *L, const char *name)
{
    static char *files[4];
    static int nfiles;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushstring(L, name);
    lua_getfield(L, -3, "path");
    lua_call(L, 2, 2);
    const char *f = lua_tostring(L, -2);
    char *copy = f && nfiles < 4 ? (files[nfiles++] = lsv_strdup(f)) : NULL;
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

int lsv_config_plan(lsv_server_t *srv, const lsv_flags_t *f, lsv_plan_t *p)
{
    lua_State *L = srv->vm->L;
    for (int i = 0; i < f->nlisten; i++)
        if (!add(p, f->listen[i], p->main_script, "")) return LSV_ERR;

    if (p->n == 0 && cfg_get(L, p, "listen") == LUA_TTABLE) {
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
                                      script ? script : p->main_script,
                                      where);
            /* Check a framing now, before anything starts. */
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
        lua_pop(L, 1);
    } else if (p->cfg_ref != LUA_NOREF && p->n == 0) {
        lua_pop(L, cfg_get(L, p, "listen") != LUA_TNIL);
    }

    if (p->n == 0 && script_listen(srv, p) != LSV_OK) return LSV_ERR;

    if (p->n == 0) {       /* socket activation with no addresses named */
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
    }

    if (p->n == 0) {
        static const char *const defaults[] = {
            "tcp://0.0.0.0:21567", "tcp://[::]:21567",
            "udp://0.0.0.0:21567", "udp://[::]:21567"
        };
        for (int i = 0; i < 4; i++) {
            lsv_plan_entry_t *e = add(p, defaults[i], p->main_script, "");
            e->optional = i % 2;     /* IPv6 may be off on this host */
        }
    }

    const char *admin = f->admin ? f->admin : cfg_string(L, p, "admin");
    if (admin) {
        if (strncmp(admin, "unix:", 5) != 0) {
            fprintf(stderr, "luaserv: --admin must be unix:/path (eval over "
                    "the network would give anyone the server)\n");
            return LSV_ERR;
        }
        const char *file = module_file(L, "luaserv.admin");
        lsv_plan_entry_t *e = file ? add(p, admin, file, "--admin: ") : NULL;
        if (e == NULL) return LSV_ERR;
        e->builtin = e->private_socket = 1;
    }
    const char *metrics = f->metrics ? f->metrics
                                     : cfg_string(L, p, "metrics");
    if (metrics) {
        const char *file = module_file(L, "luaserv.metrics_endpoint");
        lsv_plan_entry_t *e = file ? add(p, metrics, file, "--metrics: ")
                                   : NULL;
        if (e == NULL) return LSV_ERR;
        if (e->addr.kind != LSV_NET_TCP) {
            fprintf(stderr, "luaserv: --metrics must be a TCP address\n");
            return LSV_ERR;
        }
        e->builtin = 1;
    }
    for (int i = 0; i < p->n; i++)
        if (p->e[i].fd < 0) p->e[i].fd = lsv_notify_match_fd(srv, &p->e[i].addr);
    return LSV_OK;
}

int lsv_config_apply(lsv_server_t *srv, const lsv_plan_t *p,
                     const lsv_plan_entry_t *e, lsv_listener_t *l)
{
    lua_State *L = srv->vm->L;
    if (e->cfg_index == 0 || p->cfg_ref == LUA_NOREF) return LSV_OK;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->cfg_ref);
    lua_getfield(L, -1, "listen");
    lua_rawgeti(L, -1, e->cfg_index);
    int t = lua_gettop(L), rc = LSV_OK;
    if (lua_getfield(L, t, "idle_timeout") != LUA_TNIL)
        l->opt.idle_timeout = lua_tonumber(L, -1);
    if (lua_getfield(L, t, "high_water") != LUA_TNIL) {
        l->opt.high_water = (size_t)lua_tointeger(L, -1);
        l->opt.low_water = l->opt.high_water / 4;
    }
    if (lua_getfield(L, t, "max_frame") != LUA_TNIL)
        l->opt.max_frame = (uint32_t)lua_tointeger(L, -1);
    static const char *const bufs[2] = { "rcvbuf", "sndbuf" };
    for (int i = 0; i < 2; i++) {
        if (lua_getfield(L, t, bufs[i]) == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        if (!lsv_listener_is_dgram(l)) {
            fprintf(stderr, "luaserv: %s: listen %s: %s applies to udp:// "
                    "and unixgram: listeners only\n", p->config, e->spec,
                    bufs[i]);
            rc = LSV_ERR;
        }
        *(i ? &l->opt.sndbuf : &l->opt.rcvbuf) =
            (size_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
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
    return rc;
}
