/* script.h: handler scripts: loading, on_load, reload and --watch. */
#ifndef LSV_SCRIPT_H
#define LSV_SCRIPT_H

#include "lsv.h"
#include "server.h"

/* A handler script and what it loaded. Listeners point at it; a reload
 * swaps `ref` and every listener's handler table at once. */
typedef struct lsv_script {
    struct lsv_script *next;
    lsv_server_t *srv;
    char *path;
    int ref;                   /* registry ref to the current handler table */
    int mods_ref;              /* registry ref to the list of its modules */
    lsv_frame_spec_t framing;  /* the handler's framing at its last load */
    ev_stat *watches;          /* --watch: the script and its modules */
    int nwatches;
    int builtin;               /* luaserv's own (admin, metrics): not reloaded */
    /* A prepared reload (lsv_reload_prepare), until commit or abort: the
     * new handler table, its modules, and the package.loaded names and
     * old modules to put back on an abort; LUA_NOREF when none. */
    int next_ref, next_mods_ref, next_before_ref, next_backup_ref;
    lsv_frame_spec_t next_framing;
} lsv_script_t;

/* Loads path (once: a second call for the same path returns the same
 * script). Returns NULL with "file:line: message" in err. */
lsv_script_t *lsv_script_load(lsv_server_t *srv, const char *path, char *err,
                              size_t errlen);

/* Runs s's on_load, if it has one, within --load-timeout. Returns LSV_OK,
 * or LSV_ERR with the error (and traceback) in err. */
int lsv_script_on_load(lsv_script_t *s, char *err, size_t errlen);

/* Reloads every script: each is compiled, run (within --handler-timeout)
 * and checked, then the new table's on_load and on_reload(old) run; only
 * a script that passes all of it replaces its handler (new events use it,
 * running tasks finish on the old code). A failing one keeps its old
 * handler. Returns LSV_OK if all reloaded, else LSV_ERR with the
 * errors in err. Logs either way and counts reloads and failures. Every
 * TLS listener's certificate is re-read after it, whatever the scripts
 * did (lsv_tls_reload_certs): also at a commit, an abort, or a prepare
 * that failed (after which no abort comes). */
int lsv_reload_all(lsv_server_t *srv, char *err, size_t errlen);

/* A reload in two steps, so that a master's workers switch all or none.
 * prepare loads and vets every script as lsv_reload_all does, but keeps
 * each new handler aside (the old ones serve on); when one fails it
 * drops them all (logged and counted as failures) and returns LSV_ERR
 * with why in err. commit then switches every script to its new
 * handler, abort drops them (why: the failure elsewhere, logged and
 * counted). A prepare drops any reload still prepared. Each returns
 * LSV_OK, or LSV_ERR (abort, commit) when nothing was prepared. */
int lsv_reload_prepare(lsv_server_t *srv, char *err, size_t errlen);
int lsv_reload_commit(lsv_server_t *srv);
int lsv_reload_abort(lsv_server_t *srv, const char *why);

/* With --watch: (re)watches every script and the modules it required
 * from its own folder; a change reloads (debounced). */
void lsv_reload_watch(lsv_server_t *srv);

/* Frees every script (at exit). */
void lsv_script_free_all(lsv_server_t *srv);

#endif
