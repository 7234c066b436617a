/* options.h: the command line and the configuration file's checks, both
 * driven by the table of every option (options_table.h). */
#ifndef LSV_OPTIONS_H
#define LSV_OPTIONS_H

#include "lsv.h"
#include "options_table.h"

#include <lua.h>

/* Fills o with the table's defaults and f from argv, then checks what
 * depends on more than one flag. Prints and exits 0 for --help, --version
 * and --list-options; prints the problem and the usage and exits 2 for a
 * bad option. Sets o->low_water to a quarter of o->high_water. */
void lsv_options_parse(lsv_options_t *o, lsv_flags_t *f, int argc,
                       char **argv);

/* The row for a configuration key allowed in `where` (a LSV_OPT_SETTING,
 * LSV_OPT_CALL or LSV_OPT_LISTEN bit), or NULL. */
const lsv_option_t *lsv_option_find(const char *key, unsigned where);

/* Writes "a, b, c": every key allowed in `where`, in table order. */
void lsv_option_known(unsigned where, char *buf, size_t size);

/* Checks the Lua value at idx against o. Returns 1 when it fits;
 * otherwise 0 with "PREFIXKEY must be WANT, not VALUE" in err (prefix is
 * "" or "listen."). Never raises. */
int lsv_option_check_lua(const lsv_option_t *o, lua_State *L, int idx,
                         const char *prefix, char *err, size_t size);

/* Stores the Lua value at idx, already checked, into o's field: of srv
 * (or the global) when lopts is NULL, else of lopts. */
void lsv_option_store_lua(const lsv_option_t *o, lua_State *L, int idx,
                          lsv_options_t *srv, lsv_lopts_t *lopts);

#endif
