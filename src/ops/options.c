/* options.c: what the options table drives: the command line, the
 * configuration file's checks (the table is in options_table.c). */
#include "lsv.h"
#include "options.h"
#include "log.h"
#include "net.h"
#include "shared.h"
#include "shdict.h"

#include <errno.h>
#include <getopt.h>
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

/* A value read from a flag's argument or from the configuration. */
typedef struct value {
    double num;           /* SECONDS */
    long long i;          /* BYTES, COUNT; ENUM: the choice; FLAG: 0 or 1 */
    const char *s;        /* STRING */
} value_t;

/* --- checking ----------------------------------------------------------- */

/* Fills buf with what a value of o must be: "a whole number >= 1". */
static void want(const lsv_option_t *o, char *buf, size_t size)
{
    size_t n = 0;
    if (o->want) {
        snprintf(buf, size, "%s", o->want);
        return;
    }
    buf[0] = '\0';
    switch (o->type) {
    case LSV_OPT_SECONDS:
        snprintf(buf, size, "a number of seconds >= %lld", o->min);
        break;
    case LSV_OPT_BYTES:
    case LSV_OPT_COUNT:
        if (o->where & LSV_OPT_ZERO) n = (size_t)snprintf(buf, size, "0 or ");
        else if (o->word)
            n = (size_t)snprintf(buf, size, "\"%s\" or ", o->word);
        n += (size_t)snprintf(buf + n, size - n, "a whole number%s >= %lld",
                              o->type == LSV_OPT_BYTES ? " of bytes" : "",
                              o->min);
        if (o->max && n < size)
            snprintf(buf + n, size - n, " and <= %lld", o->max);
        break;
    case LSV_OPT_FLAG:
        snprintf(buf, size, "true or false");
        break;
    case LSV_OPT_STRING:
        snprintf(buf, size, "a non-empty string");
        break;
    case LSV_OPT_ENUM:
        for (int i = 0; o->choices[i] && n < size; i++)
            n += (size_t)snprintf(buf + n, size - n, "%s\"%s\"",
                                  i == 0 ? "" : o->choices[i + 1] ? ", "
                                                                  : " or ",
                                  o->choices[i]);
        break;
    case LSV_OPT_FRAMING:
        snprintf(buf, size, "a framing spec (a string or a table)");
        break;
    case LSV_OPT_ALPN:
        snprintf(buf, size, "a list of protocol names of 1 to 255 bytes");
        break;
    case LSV_OPT_ACTION:
    case LSV_OPT_DICTS:
        break;
    }
}

/* Whether the whole number v is in o's range. */
static int in_range(const lsv_option_t *o, long long v)
{
    if (v == 0 && (o->where & LSV_OPT_ZERO)) return 1;
    return v >= o->min && (o->max == 0 || v <= o->max);
}

/* Whether the number of seconds v is in o's range (and not NaN). */
static int seconds_ok(const lsv_option_t *o, double v)
{
    return v >= (double)o->min && v <= 1e9;
}

/* The index of s in o->choices, or -1. */
static int choice(const lsv_option_t *o, const char *s)
{
    for (int i = 0; o->choices[i]; i++)
        if (strcmp(o->choices[i], s) == 0) return i;
    return -1;
}

/* Whether s is a string o accepts. */
static int string_ok(const lsv_option_t *o, const char *s)
{
    return s[0] != '\0' &&
           (o->prefix == NULL || strncmp(s, o->prefix, strlen(o->prefix)) == 0);
}

/* Whether the comma-separated list s is ALPN protocol names, each of 1
 * to 255 bytes, whose wire form (a length byte before each) fits the
 * extension's 65535 bytes. */
static int alpn_list_ok(const char *s)
{
    size_t total = 0;
    for (const char *p = s;; p++) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n > 255) return 0;
        total += n + 1;
        p += n;
        if (*p == '\0') break;
    }
    return total <= 65535;
}

/* Parses a flag's argument s into v. Returns 1, or 0 when s does not fit. */
static int from_arg(const lsv_option_t *o, const char *s, value_t *v)
{
    char *end;
    errno = 0;
    switch (o->type) {
    case LSV_OPT_SECONDS:
        v->num = strtod(s, &end);
        return !errno && end != s && !*end && seconds_ok(o, v->num);
    case LSV_OPT_BYTES:
    case LSV_OPT_COUNT:
        if (o->word && strcmp(s, o->word) == 0) {
            v->i = 0;   /* the word's value: the reader decides (auto) */
            return 1;
        }
        v->i = strtoll(s, &end, 10);
        return !errno && end != s && !*end && in_range(o, v->i);
    case LSV_OPT_STRING:
        v->s = s;
        return string_ok(o, s);
    case LSV_OPT_ENUM:
        v->i = choice(o, s);
        return v->i >= 0;
    case LSV_OPT_FLAG:
        v->i = 1;
        return 1;
    case LSV_OPT_ALPN:
        v->s = s;
        return alpn_list_ok(s);
    case LSV_OPT_FRAMING:
    case LSV_OPT_ACTION:
    case LSV_OPT_DICTS:
        break;
    }
    return 0;
}

/* Copies the whole number v into a field of size bytes. */
static void put_int(void *p, size_t size, long long v)
{
    if (size == sizeof(uint64_t)) {
        uint64_t x = (uint64_t)v;
        memcpy(p, &x, size);
    } else {
        uint32_t x = (uint32_t)v;   /* int and uint32_t, all >= 0 */
        memcpy(p, &x, sizeof x);
    }
}

/* Writes v into the field at p (size bytes) as o's type. */
static void put(const lsv_option_t *o, void *p, size_t size, const value_t *v)
{
    switch (o->type) {
    case LSV_OPT_SECONDS:
        memcpy(p, &v->num, sizeof v->num);
        break;
    case LSV_OPT_STRING:
    case LSV_OPT_ALPN:
        memcpy(p, &v->s, sizeof v->s);
        break;
    default:
        put_int(p, size, v->i);
    }
}

/* Stores v where o says: srv, f, the global, and lopts when given. */
static void store(const lsv_option_t *o, const value_t *v, lsv_options_t *srv,
                  lsv_flags_t *f, lsv_lopts_t *lopts)
{
    if (lopts) {
        if (o->lstore) put(o, (char *)lopts + o->loff, o->lsize, v);
        return;
    }
    if (o->dest == LSV_OPT_SERVER && srv)
        put(o, (char *)srv + o->off, o->size, v);
    else if (o->dest == LSV_OPT_FLAGS && f)
        put(o, (char *)f + o->off, o->size, v);
    else if (o->dest == LSV_OPT_GLOBAL)
        *o->global = (int)v->i;
}

/* --- the configuration file's side ------------------------------------- */

const lsv_option_t *lsv_option_find(const char *key, unsigned where)
{
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if (o->key && (o->where & where) && strcmp(o->key, key) == 0) return o;
    }
    return NULL;
}

void lsv_option_known(unsigned where, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < lsv_option_count && n < size; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        if (o->key && (o->where & where))
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "",
                                  o->key);
    }
}

/* Whether the table at idx is NAME = SIZE pairs. Never raises. */
static int dicts_fit(lua_State *L, int idx)
{
    int ok = 1;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        uint64_t n = 0;
        if (lua_type(L, -2) != LUA_TSTRING ||
            !lsv_shared_name_ok(lua_tostring(L, -2)))
            ok = 0;
        else if (lua_isinteger(L, -1))
            n = lua_tointeger(L, -1) > 0 ? (uint64_t)lua_tointeger(L, -1) : 0;
        else if (lua_type(L, -1) == LUA_TSTRING)
            lsv_option_parse_size(lua_tostring(L, -1), &n);
        if (!lsv_option_dict_size_ok(n)) ok = 0;
        lua_pop(L, 1);
    }
    return ok;
}

/* The index of the first entry of the list at idx that is no ALPN
 * protocol name (a string of 1 to 255 bytes), or 0. An empty list is bad
 * at 1; a list too long for the extension's 65535 bytes at its last. */
static lua_Integer alpn_bad_entry(lua_State *L, int idx)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    size_t total = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len = 0;
        int t = lua_rawgeti(L, idx, i);
        if (t == LUA_TSTRING) lua_tolstring(L, -1, &len);
        lua_pop(L, 1);
        total += len + 1;
        if (t != LUA_TSTRING || len < 1 || len > 255) return i;
    }
    return n == 0 ? 1 : total > 65535 ? n : 0;
}

/* Whether the Lua value at idx fits o. */
static int lua_fits(const lsv_option_t *o, lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    switch (o->type) {
    case LSV_OPT_SECONDS:
        return t == LUA_TNUMBER && seconds_ok(o, lua_tonumber(L, idx));
    case LSV_OPT_BYTES:
    case LSV_OPT_COUNT:
        if (o->word && t == LUA_TSTRING)
            return strcmp(lua_tostring(L, idx), o->word) == 0;
        return lua_isinteger(L, idx) && in_range(o, lua_tointeger(L, idx));
    case LSV_OPT_FLAG:
        return t == LUA_TBOOLEAN;
    case LSV_OPT_STRING:
        return t == LUA_TSTRING && string_ok(o, lua_tostring(L, idx));
    case LSV_OPT_ENUM:
        return t == LUA_TSTRING && choice(o, lua_tostring(L, idx)) >= 0;
    case LSV_OPT_FRAMING:
        return t == LUA_TSTRING || t == LUA_TTABLE;
    case LSV_OPT_DICTS:
        return t == LUA_TTABLE && dicts_fit(L, idx);
    case LSV_OPT_ALPN:
        return t == LUA_TTABLE && alpn_bad_entry(L, idx) == 0;
    case LSV_OPT_ACTION:
        break;
    }
    return 0;
}

/* Writes the Lua value at idx as string.format's %q would show a string,
 * or as tostring() would show anything else. Never raises. */
static void show_value(lua_State *L, int idx, char *buf, size_t size)
{
    size_t len, n = 0;
    if (lua_type(L, idx) != LUA_TSTRING) {
        int t = lua_type(L, idx);
        if (t == LUA_TNUMBER && lua_isinteger(L, idx))
            snprintf(buf, size, LUA_INTEGER_FMT, lua_tointeger(L, idx));
        else if (t == LUA_TNUMBER) {
            int w = snprintf(buf, size, LUA_NUMBER_FMT, lua_tonumber(L, idx));
            if (w > 0 && (size_t)w + 3 < size &&
                buf[strspn(buf, "-0123456789")] == '\0')
                memcpy(buf + w, ".0", 3);   /* as tostring() shows 2.0 */
        }
        else if (t == LUA_TBOOLEAN)
            snprintf(buf, size, "%s", lua_toboolean(L, idx) ? "true" : "false");
        else if (t == LUA_TNIL)
            snprintf(buf, size, "nil");
        else
            snprintf(buf, size, "%s: %p", lua_typename(L, t),
                     lua_topointer(L, idx));
        return;
    }
    const char *s = lua_tolstring(L, idx, &len);
    buf[n++] = '"';
    for (size_t i = 0; i < len && n + 6 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c == '\n') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c == '\r') {
            n += (size_t)snprintf(buf + n, size - n, "\\r");
        } else if (c < 32 || c == 127) {
            n += (size_t)snprintf(buf + n, size - n, "\\%d", c);
        } else {
            buf[n++] = (char)c;
        }
    }
    buf[n++] = '"';
    buf[n] = '\0';
}

int lsv_option_check_lua(const lsv_option_t *o, lua_State *L, int idx,
                         const char *prefix, char *err, size_t size)
{
    if (lua_fits(o, L, idx)) return 1;
    char w[256], v[128];
    if (o->type == LSV_OPT_ALPN && lua_istable(L, idx)) {
        lua_Integer i = alpn_bad_entry(L, idx);   /* name the entry */
        lua_rawgeti(L, idx, i);
        show_value(L, -1, v, sizeof v);
        lua_pop(L, 1);
        snprintf(err, size, "%s%s[%lld] must be a protocol name of 1 to 255 "
                 "bytes (the list at most 65535 bytes), not %s", prefix,
                 o->key, (long long)i, v);
        return 0;
    }
    want(o, w, sizeof w);
    show_value(L, idx, v, sizeof v);
    snprintf(err, size, "%s%s must be %s, not %s", prefix, o->key, w, v);
    return 0;
}

void lsv_option_store_lua(const lsv_option_t *o, lua_State *L, int idx,
                          lsv_options_t *srv, lsv_lopts_t *lopts)
{
    value_t v = { 0, 0, NULL };
    switch (o->type) {
    case LSV_OPT_SECONDS: v.num = lua_tonumber(L, idx); break;
    case LSV_OPT_FLAG: v.i = lua_toboolean(L, idx); break;
    case LSV_OPT_STRING: v.s = lua_tostring(L, idx); break;
    case LSV_OPT_ENUM: v.i = choice(o, lua_tostring(L, idx)); break;
    default: v.i = (long long)lua_tointeger(L, idx);
    }
    store(o, &v, srv, NULL, lopts);
}

/* --- the command line --------------------------------------------------- */

/* --proxy-protocol applies to the -l stream listeners: refuse it when
 * there is none, rather than serve without it. */
static void proxy_flag_check(const lsv_flags_t *f)
{
    for (int i = 0; i < f->nlisten; i++) {
        lsv_addr_t a;
        char err[LSV_ERRLEN];
        if (lsv_net_parse(f->listen[i], &a, err) == LSV_OK &&
            (a.kind == LSV_NET_TCP || a.kind == LSV_NET_UNIX))
            return;
    }
    lsv_options_fail("--proxy-protocol applies to the tcp and unix stream "
                     "listeners given with -l, and there is none (in a "
                     "config file, set proxy_protocol = true in listen "
                     "{ ... })");
}

/* Reads one flag of row o, with its argument (NULL for none). */
static void take_flag(const lsv_option_t *o, const char *arg,
                      lsv_options_t *srv, lsv_flags_t *f)
{
    value_t v = { 0, 0, NULL };
    if (o->action) {
        o->action(o, arg, f);
    } else if (from_arg(o, arg, &v)) {
        store(o, &v, srv, f, NULL);
    } else {
        char w[256], label[64];
        want(o, w, sizeof w);
        if (o->flag_want)
            lsv_options_fail("--%s %s", o->name, o->flag_want);
        if (o->type != LSV_OPT_ENUM)
            lsv_options_fail("--%s needs %s", o->name, w);
        snprintf(label, sizeof label, "%s", o->name);
        for (char *p = label; *p; p++) if (*p == '-') *p = ' ';
        lsv_options_fail("unknown %s '%s' (--%s needs %s)", label, arg,
                         o->name, w);
    }
    f->given |= lsv_option_bit(o);
}

/* Stores every row's default; the defaults go through the same parser as
 * flags, so a default out of its own range fails at the first run. */
static void set_defaults(lsv_options_t *srv, lsv_flags_t *f)
{
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        value_t v = { 0, 0, NULL };
        if (o->def == NULL) continue;
        if (!from_arg(o, o->def, &v)) {
            fprintf(stderr, "luaserv: bad default for --%s\n", o->name);
            abort();
        }
        store(o, &v, srv, f, NULL);
    }
}

void lsv_options_parse(lsv_options_t *srv, lsv_flags_t *f, int argc,
                       char **argv)
{
    struct option longs[LSV_OPT_ROWS_MAX + 1];
    char shorts[2 * LSV_OPT_ROWS_MAX + 1];
    int nl = 0, ns = 0, c;

    memset(f, 0, sizeof *f);
    set_defaults(srv, f);
    for (int i = 0; i < lsv_option_count; i++) {
        const lsv_option_t *o = &lsv_option_table[i];
        int has_arg = o->arg ? required_argument : no_argument;
        if (o->name == NULL) continue;
        longs[nl++] = (struct option){ o->name, has_arg, NULL, 256 + i };
        if (o->short_name) {
            shorts[ns++] = o->short_name;
            if (has_arg) shorts[ns++] = ':';
        }
    }
    longs[nl] = (struct option){ NULL, 0, NULL, 0 };
    shorts[ns] = '\0';
    while ((c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        const lsv_option_t *o = NULL;
        if (c >= 256) o = &lsv_option_table[c - 256];
        for (int i = 0; o == NULL && i < lsv_option_count && c != '?'; i++)
            if (lsv_option_table[i].short_name == c) o = &lsv_option_table[i];
        if (o == NULL) {
            lsv_options_usage(stderr);
            exit(2);
        }
        take_flag(o, optarg, srv, f);
    }
    if (argc - optind > 1)
        lsv_options_fail("one script at most (got '%s' too)",
                         argv[optind + 1]);
    f->script = optind < argc ? argv[optind] : NULL;
    /* Check addresses now, so a typo exits 2 before anything starts. */
    for (int i = 0; i < f->nlisten; i++) {
        lsv_addr_t a;
        char err[LSV_ERRLEN];
        if (lsv_net_parse(f->listen[i], &a, err) != LSV_OK)
            lsv_options_fail("%s", err);
    }
    if (f->proxy_protocol) proxy_flag_check(f);
    srv->low_water = srv->high_water / 4;
}
