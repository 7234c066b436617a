/* options_table.h: the table of every option, the one place a new option
 * goes, with the types its rows are made of and the helpers its actions
 * use; options.h (the parsing and checking the table drives) sits on top.
 *
 * Each row names an option once: its flag, its key in the configuration
 * file, where the key may appear, its type and range, its default and its
 * --help text, and the struct field it writes (through offsetof). The
 * table drives getopt, --help, the configuration file's checks and their
 * messages, and `luaserv --list-options`, which the docs spec reads.
 *
 * Adding an option: a row in options_table.c, and the field it writes. */
#ifndef LSV_OPTIONS_TABLE_H
#define LSV_OPTIONS_TABLE_H

#include "lsv.h"
#include "listener.h"
#include "server.h"

#include <stdint.h>
#include <stdio.h>

#define LSV_MAX_LISTEN 64
#define LSV_MAX_SHARED 32
#define LSV_DEFAULT_SCRIPT "scripts/handle.lua"
#define LSV_DEFAULT_PORT 21567

/* Flags given on the command line that land outside lsv_options_t. A flag
 * beats the configuration file: `given` has bit i set when the table's
 * row i came from the command line. */
typedef struct lsv_flags {
    const char *listen[LSV_MAX_LISTEN];
    int nlisten;
    const char *config;
    const char *script;
    const char *admin;
    const char *metrics;
    const char *health;                   /* --health HOST:PORT */
    const char *shared[LSV_MAX_SHARED];   /* --shared NAME=SIZE, checked */
    int nshared;
    int check;
    const char *pid_file;                 /* --pid-file PATH */
    int proxy_protocol;                   /* --proxy-protocol: the -l ones */
    /* --tls-*: every tls:// listener's, unless its listen{} says
     * otherwise (config_tls.c) */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_client_ca;
    int tls_verify;                       /* 0 require, 1 optional */
    const char *tls_alpn;                 /* "h2,http/1.1", checked */
    double tls_handshake_timeout;
    uint64_t given;
} lsv_flags_t;

/* How a value is read and checked. */
typedef enum lsv_opt_type {
    LSV_OPT_SECONDS,   /* a number >= min (and <= 1e9), into a double */
    LSV_OPT_BYTES,     /* a whole number of bytes in [min, max] */
    LSV_OPT_COUNT,     /* a whole number in [min, max] */
    LSV_OPT_FLAG,      /* no argument on the command line; a boolean */
    LSV_OPT_STRING,    /* a non-empty string, starting with prefix if set */
    LSV_OPT_ENUM,      /* one of choices; the index is stored */
    LSV_OPT_FRAMING,   /* a framing spec (checked in depth by the vm) */
    LSV_OPT_ACTION,    /* the command line runs action (-l, -h, -V) */
    LSV_OPT_DICTS,     /* a table of NAME = SIZE; the flag runs action */
    LSV_OPT_ALPN       /* protocol names of 1 to 255 bytes: a list in the
                        * config, comma-separated on the command line */
} lsv_opt_type_t;

/* Where a key may appear in the configuration file. */
#define LSV_OPT_SETTING 1u   /* an assignment: key = value */
#define LSV_OPT_CALL 2u      /* a call: key "value" (admin, metrics) */
#define LSV_OPT_LISTEN 4u    /* a key of listen { ... } */
#define LSV_OPT_DGRAM 8u     /* listen{} key for datagram listeners only */
#define LSV_OPT_ZERO 16u     /* 0 is allowed too (it means "off") */
#define LSV_OPT_STREAM 32u   /* listen{} key for stream listeners only */
#define LSV_OPT_TLS 64u      /* listen{} key for tls:// listeners only; its
                              * flag applies to each of them */

/* Which struct `off` is in. */
typedef enum lsv_opt_dest {
    LSV_OPT_NOWHERE,   /* checked only; its reader reads the config */
    LSV_OPT_SERVER,    /* lsv_options_t */
    LSV_OPT_FLAGS,     /* lsv_flags_t (the command line only) */
    LSV_OPT_GLOBAL     /* the int at global (an ENUM's index) */
} lsv_opt_dest_t;

typedef struct lsv_option lsv_option_t;
struct lsv_option {
    const char *name;        /* long flag without "--", or NULL */
    char short_name;         /* 'l', or 0 */
    const char *key;         /* configuration key, or NULL */
    unsigned where;          /* LSV_OPT_SETTING | ... */
    lsv_opt_type_t type;
    long long min, max;      /* BYTES, COUNT: the range; SECONDS: min */
    const char *def;         /* default as a flag would spell it, or NULL */
    const char *arg;         /* the argument's name in --help */
    const char *help;        /* --help text; "\n" breaks a line */
    lsv_opt_dest_t dest;
    size_t off, size;        /* the field in the dest struct */
    int *global;             /* LSV_OPT_GLOBAL */
    int lstore;              /* listen{} key stored in lsv_lopts_t: */
    size_t loff, lsize;      /* ... this field */
    const char *const *choices;   /* ENUM, NULL-terminated */
    const char *word;        /* COUNT: a word accepted too ("auto") */
    const char *prefix;      /* STRING: what it must start with */
    const char *want;        /* overrides the generated "must be" text */
    const char *flag_want;   /* the flag's message after "--name " */
    /* ACTION, DICTS: what the flag does */
    void (*action)(const lsv_option_t *o, const char *arg, lsv_flags_t *f);
};

/* The table, and its length: at most a row per bit of lsv_flags_t.given. */
#define LSV_OPT_ROWS_MAX 64
extern const lsv_option_t lsv_option_table[];
extern const int lsv_option_count;

/* Writes the --help text to f. */
void lsv_options_usage(FILE *f);

/* Prints "luaserv: " and the message, then the usage; exits 2 (a bad
 * command line). */
void lsv_options_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* Parses a size: digits, then k, m or g (KiB, MiB, GiB; either case).
 * Returns 1 with *out set, or 0 when s is not one or overflows. */
int lsv_option_parse_size(const char *s, uint64_t *out);

/* Splits a --shared argument "NAME=SIZE" (checked when the flag was
 * read) into name (a buffer of size bytes) and *bytes. Returns 1, or 0
 * when it is not one. */
int lsv_option_shared(const char *arg, char *name, size_t size,
                      uint64_t *bytes);

/* Whether a dict's size is one: at least the smallest dict, at most
 * 1 TiB. */
int lsv_option_dict_size_ok(uint64_t n);

/* Bit for the row o in lsv_flags_t.given. */
static inline uint64_t lsv_option_bit(const lsv_option_t *o)
{
    return (uint64_t)1 << (o - lsv_option_table);
}

#endif
