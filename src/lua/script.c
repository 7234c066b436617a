/* script.c: handler scripts: loading, hot reload, watching their files. */
#include "lsv.h"
#include "script.h"
#include "listener.h"
#include "log.h"
#include "guard.h"
#include "tls_lua.h"
#include "vm.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Changes to watched files within this many seconds make one reload. */
#define WATCH_SETTLE 0.1

/* Pushes the set of module names in package.loaded. [-0, +1, m] */
static void push_loaded_names(lua_State *L)
{
    lua_newtable(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_pushvalue(L, -1);
            lua_pushboolean(L, 1);
            lua_rawset(L, -5);
        }
    }
    lua_pop(L, 1);
}

/* Pushes the list of modules loaded since `before` (a set at idx) that are
 * the project's own: Lua files found by package.path, not luaserv's.
 * Each entry is { name, path }. [-0, +1, m] */
static void push_new_modules(lua_State *L, int before)
{
    before = lua_absindex(L, before);
    lua_newtable(L);
    int list = lua_gettop(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_getfield(L, -2, "path");
    int searchpath = lua_gettop(L) - 1, path = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, list + 1)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) continue;
        const char *name = lua_tostring(L, -1);
        lua_pushvalue(L, -1);
        int seen = lua_rawget(L, before) != LUA_TNIL;
        lua_pop(L, 1);
        if (seen || strncmp(name, "luaserv", 7) == 0) continue;
        lua_pushvalue(L, searchpath);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, path);
        lua_call(L, 2, 1);
        if (lua_isstring(L, -1)) {
            lua_createtable(L, 2, 0);
            lua_pushvalue(L, -3);
            lua_rawseti(L, -2, 1);
            lua_insert(L, -2);
            lua_rawseti(L, -2, 2);
            lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_settop(L, list);
}

/* After a failed load: drops the modules it required for the first time
 * (not in the set at idx), so the next attempt loads them afresh. */
static void forget_new_modules(lua_State *L, int before)
{
    before = lua_absindex(L, before);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    int loaded = lua_gettop(L);
    lua_newtable(L);                     /* names to drop */
    int drop = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, before) == LUA_TNIL) {
            lua_pushvalue(L, -2);
            lua_rawseti(L, drop, (lua_Integer)lua_rawlen(L, drop) + 1);
        }
        lua_pop(L, 1);
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, drop);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, drop, i);
        lua_pushnil(L);
        lua_rawset(L, loaded);
    }
    lua_settop(L, loaded - 1);
}

/* Moves the script's modules out of package.loaded into a backup table
 * it pushes, so the next require loads them afresh. [-0, +1, m] */
static void unload_modules(lua_State *L, lsv_script_t *s)
{
    lua_newtable(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->mods_ref);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -1, 1);           /* name */
        lua_pushvalue(L, -1);
        lua_rawget(L, -5);               /* package.loaded[name] */
        lua_rawset(L, -6);               /* backup[name] = it */
        lua_rawgeti(L, -1, 1);
        lua_pushnil(L);
        lua_rawset(L, -5);               /* package.loaded[name] = nil */
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
}

/* Puts the backup at the top back into package.loaded and pops it. */
static void restore_modules(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_pop(L, 2);
}

/* Runs the new table's on_load (within --load-timeout), then its
 * on_reload(old) (within --handler-timeout), before anything switches:
 * a reload whose hooks fail keeps the old handler. */
static int vet(lsv_script_t *s, int ref, char *err, size_t errlen)
{
    lua_State *L = s->srv->vm->L;
    if (lsv_vm_get_fn(L, ref, "on_load") &&
        lsv_vm_pcall_as(L, 0, 0, LSV_GUARD_ON_LOAD) != LUA_OK) {
        lsv_vm_count_error(s->srv, NULL);
        snprintf(err, errlen, "on_load failed: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return LSV_ERR;
    }
    if (lsv_vm_get_fn(L, ref, "on_reload")) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
        if (lsv_vm_pcall_as(L, 1, 0, LSV_GUARD_HANDLER) != LUA_OK) {
            lsv_vm_count_error(s->srv, NULL);
            snprintf(err, errlen, "on_reload failed: %s",
                     lua_tostring(L, -1));
            lua_pop(L, 1);
            return LSV_ERR;
        }
    }
    return LSV_OK;
}

/* Loads s->path into a new handler table, kept aside in s->next_*; on
 * a reload (the script has a table already) vets it too. On failure
 * leaves the script, its modules and listeners as they were. */
static int prepare_script(lsv_script_t *s, char *err, size_t errlen)
{
    lsv_server_t *srv = s->srv;
    lua_State *L = srv->vm->L;
    int top = lua_gettop(L);
    if (s->mods_ref != LUA_NOREF) unload_modules(L, s);
    else lua_newtable(L);
    int backup = lua_gettop(L);
    push_loaded_names(L);
    int before = lua_gettop(L);

    int ref;
    lsv_frame_spec_t framing;
    if (lsv_vm_load(srv, s->path, &ref, &framing, err, errlen) != LSV_OK)
        goto fail;
    if (s->ref != LUA_NOREF && vet(s, ref, err, errlen) != LSV_OK) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        goto fail;
    }
    push_new_modules(L, before);
    s->next_mods_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->next_before_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->next_backup_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    s->next_ref = ref;
    s->next_framing = framing;
    return LSV_OK;

fail:
    forget_new_modules(L, before);
    lua_settop(L, backup);
    restore_modules(L);
    lua_settop(L, top);
    return LSV_ERR;
}

/* Drops one registry ref and marks it none. */
static void unref(lua_State *L, int *ref)
{
    luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    *ref = LUA_NOREF;
}

/* Switches s to the handler prepare_script kept aside. */
static void commit_script(lsv_script_t *s)
{
    lua_State *L = s->srv->vm->L;
    unref(L, &s->mods_ref);
    s->mods_ref = s->next_mods_ref;
    s->next_mods_ref = LUA_NOREF;
    unref(L, &s->next_before_ref);
    unref(L, &s->next_backup_ref);
    unref(L, &s->ref);                           /* none at first load */
    s->ref = s->next_ref;
    s->next_ref = LUA_NOREF;
    s->framing = s->next_framing;
    for (lsv_listener_t *l = s->srv->listeners; l; l = l->next)
        if (l->script == s) l->framing = s->framing;
}

/* Drops the handler prepare_script kept aside: its new modules out of
 * package.loaded, the old ones back. */
static void abort_script(lsv_script_t *s)
{
    lua_State *L = s->srv->vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->next_before_ref);
    forget_new_modules(L, -1);
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->next_backup_ref);
    restore_modules(L);
    unref(L, &s->next_ref);
    unref(L, &s->next_mods_ref);
    unref(L, &s->next_before_ref);
    unref(L, &s->next_backup_ref);
}

static int load_script(lsv_script_t *s, char *err, size_t errlen)
{
    if (prepare_script(s, err, errlen) != LSV_OK) return LSV_ERR;
    commit_script(s);
    return LSV_OK;
}

lsv_script_t *lsv_script_load(lsv_server_t *srv, const char *path, char *err,
                              size_t errlen)
{
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next)
        if (strcmp(s->path, path) == 0) return s;
    lsv_script_t *s = lsv_calloc(1, sizeof *s);
    s->srv = srv;
    s->path = lsv_strdup(path);
    s->ref = s->mods_ref = LUA_NOREF;
    s->next_ref = s->next_mods_ref = LUA_NOREF;
    s->next_before_ref = s->next_backup_ref = LUA_NOREF;
    if (load_script(s, err, errlen) != LSV_OK) {
        free(s->path);
        free(s);
        return NULL;
    }
    s->next = srv->vm->scripts;
    srv->vm->scripts = s;
    return s;
}

int lsv_script_on_load(lsv_script_t *s, char *err, size_t errlen)
{
    lua_State *L = s->srv->vm->L;
    if (!lsv_vm_get_fn(L, s->ref, "on_load")) return LSV_OK;
    if (lsv_vm_pcall_as(L, 0, 0, LSV_GUARD_ON_LOAD) == LUA_OK) return LSV_OK;
    lsv_vm_count_error(s->srv, NULL);
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return LSV_ERR;
}

/* Counts a reload, or a failed one, on each listener s serves. */
static void count_reload(lsv_script_t *s, int ok)
{
    for (lsv_listener_t *l = s->srv->listeners; l; l = l->next)
        if (l->script == s) {
            if (ok) l->stats.reloads++;
            else l->stats.reload_failures++;
        }
}

/* Reloads one script; see lsv_reload_all. */
static int reload_script(lsv_script_t *s, char *err, size_t errlen)
{
    double t0 = lsv_clock();
    if (load_script(s, err, errlen) != LSV_OK) {
        count_reload(s, 0);
        lsv_error("reload of %s failed; the old handler stays: %s", s->path,
                  err);
        return LSV_ERR;
    }
    count_reload(s, 1);
    lsv_info("reloaded %s in %.1f ms", s->path, (lsv_clock() - t0) * 1e3);
    return LSV_OK;
}

/* Aborts every prepared reload from s on, the last prepared first (the
 * list's order is the prepare order), so shared modules end as they
 * began. Returns how many there were. */
static int abort_from(lsv_script_t *s)
{
    if (s == NULL) return 0;
    int n = abort_from(s->next);
    if (s->next_ref == LUA_NOREF) return n;
    abort_script(s);
    return n + 1;
}

int lsv_reload_all(lsv_server_t *srv, char *err, size_t errlen)
{
    int rc = LSV_OK;
    size_t used = 0;
    err[0] = '\0';
    if (srv->hooks->notify) srv->hooks->notify(srv, "RELOADING=1");
    abort_from(srv->vm->scripts);   /* a reload prepared, never finished */
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next) {
        char one[2048];
        if (s->builtin || reload_script(s, one, sizeof one) == LSV_OK)
            continue;
        rc = LSV_ERR;
        if (used < errlen)
            used += (size_t)snprintf(err + used, errlen - used, "%s%s",
                                     used ? "\n" : "", one);
    }
    lsv_tls_reload_certs(srv);      /* whether the scripts did or not */
    if (srv->opt.watch) lsv_reload_watch(srv);
    if (srv->hooks->notify) srv->hooks->notify(srv, "READY=1");
    return rc;
}

int lsv_reload_prepare(lsv_server_t *srv, char *err, size_t errlen)
{
    abort_from(srv->vm->scripts);
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next) {
        if (s->builtin || prepare_script(s, err, errlen) == LSV_OK) continue;
        lsv_error("reload of %s failed; the old handler stays: %s", s->path,
                  err);
        abort_from(srv->vm->scripts);
        for (lsv_script_t *o = srv->vm->scripts; o; o = o->next)
            if (!o->builtin) count_reload(o, 0);
        lsv_tls_reload_certs(srv);  /* no abort follows here: now */
        return LSV_ERR;
    }
    return LSV_OK;
}

int lsv_reload_commit(lsv_server_t *srv)
{
    int n = 0;
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next) {
        if (s->next_ref == LUA_NOREF) continue;
        commit_script(s);
        count_reload(s, 1);
        lsv_info("reloaded %s", s->path);
        n++;
    }
    lsv_tls_reload_certs(srv);
    if (n && srv->opt.watch) lsv_reload_watch(srv);
    return n ? LSV_OK : LSV_ERR;
}

int lsv_reload_abort(lsv_server_t *srv, const char *why)
{
    if (abort_from(srv->vm->scripts) == 0) return LSV_ERR;
    lsv_tls_reload_certs(srv);      /* the scripts stay; certs reload */
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next) {
        if (s->builtin) continue;
        count_reload(s, 0);
        lsv_warn("reload of %s abandoned (%s); the old handler stays",
                 s->path, why);
    }
    return LSV_OK;
}

/* --- watching ----------------------------------------------------------- */

static void settle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    lsv_server_t *srv = w->data;
    char err[4096];
    if (srv->vm->ask_reload) {
        srv->vm->ask_reload(srv);
        return;
    }
    lsv_info("a watched file changed: reloading");
    lsv_reload_all(srv, err, sizeof err);
}

static void stat_cb(struct ev_loop *loop, ev_stat *w, int revents)
{
    (void)revents;
    lsv_server_t *srv = w->data;
    if (w->attr.st_nlink == 0 && w->prev.st_nlink == 0) return;
    ev_timer_stop(loop, &srv->vm->reload_timer);
    ev_timer_set(&srv->vm->reload_timer, WATCH_SETTLE, 0.);
    ev_timer_start(loop, &srv->vm->reload_timer);
}

static void unwatch(lsv_script_t *s)
{
    for (int i = 0; i < s->nwatches; i++) {
        ev_stat_stop(s->srv->loop, &s->watches[i]);
        free((char *)s->watches[i].path);
    }
    free(s->watches);
    s->watches = NULL;
    s->nwatches = 0;
}

static void watch_path(lsv_script_t *s, const char *path)
{
    lsv_server_t *srv = s->srv;
    s->watches = lsv_realloc(s->watches,
                             sizeof *s->watches * (size_t)(s->nwatches + 1));
    ev_stat *w = &s->watches[s->nwatches++];
    ev_stat_init(w, stat_cb, lsv_strdup(path), 0.25);
    w->data = srv;
}

void lsv_reload_watch(lsv_server_t *srv)
{
    lua_State *L = srv->vm->L;
    if (srv->vm->reload_timer.cb != settle_cb) {
        ev_init(&srv->vm->reload_timer, settle_cb);
        srv->vm->reload_timer.data = srv;
    }
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next) {
        unwatch(s);
        if (s->builtin) continue;
        watch_path(s, s->path);
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->mods_ref);
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            lua_rawgeti(L, -1, 2);
            watch_path(s, lua_tostring(L, -1));
            lua_pop(L, 2);
        }
        lua_pop(L, 1);
        /* Start only now: the array may have moved while growing. */
        for (int i = 0; i < s->nwatches; i++)
            ev_stat_start(srv->loop, &s->watches[i]);
    }
}

void lsv_script_free_all(lsv_server_t *srv)
{
    ev_timer_stop(srv->loop, &srv->vm->reload_timer);
    while (srv->vm->scripts) {
        lsv_script_t *s = srv->vm->scripts;
        srv->vm->scripts = s->next;
        unwatch(s);
        free(s->path);
        free(s);
    }
}
