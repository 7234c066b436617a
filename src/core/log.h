/* log.h: leveled logging to stderr. */
#ifndef LSV_LOG_H
#define LSV_LOG_H

#include "lsv.h"

#include <stdarg.h>

struct ev_loop;

enum { LSV_LOG_DEBUG = 0, LSV_LOG_INFO, LSV_LOG_WARN, LSV_LOG_ERROR };

enum { LSV_LOG_TEXT = 0, LSV_LOG_JSON };

extern int lsv_log_level;
extern int lsv_log_format;

/* Where a log line comes from; any field may be NULL / 0. */
typedef struct lsv_log_ctx {
    const char *listener;
    const char *peer;
    uint64_t conn_id;
} lsv_log_ctx_t;

/* Parses "debug", "info", "warn" or "error". Returns the level or -1. */
int lsv_log_parse_level(const char *name);

/* ORed into an info line's level: limited as warnings are, for a line a
 * peer can cause at will (a failed TLS handshake from a scanner). */
#define LSV_LOG_LIMITED 0x100

/* Lines one source may write per interval before it is suppressed. */
#define LSV_LOG_BURST 10
#define LSV_LOG_INTERVAL 5.0

/* Writes one line "2026-11-27T20:18:46.123Z warn message" to stderr, in one
 * write so lines from several processes do not interleave. The message may
 * span lines (a traceback). Cheap when level is below lsv_log_level: the
 * macros below test it before formatting anything.
 *
 * Rate-limited per source: a source is the call site (fmt, compared by
 * address, so fmt must be a string literal) plus ctx->listener for
 * lsv_log_writec. A source writes LSV_LOG_BURST lines per
 * LSV_LOG_INTERVAL seconds; then its lines are only counted, and when the
 * interval ends one line "suppressed N similar messages in 5 s (like:
 * ...)" reports them. Only warn and error lines are limited, and lines
 * whose level carries LSV_LOG_LIMITED. */
void lsv_log_write(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* lsv_log_write without the rate limit: for lines a script asked for. */
void lsv_log_write_all(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The rate limit reports suppressed lines from a timer on loop (without
 * one, only when the source logs again). lsv_log_detach stops the timer
 * and reports every pending suppression; call it before the loop goes. */
void lsv_log_attach(struct ev_loop *loop);
void lsv_log_detach(void);

/* Like lsv_log_write, with the connection the line is about: in text the
 * context leads the message ("conn 5 (peer 1.2.3.4:5, tcp://...): ..."),
 * in JSON it is the fields listener, peer and conn. */
void lsv_log_writec(int level, const lsv_log_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* lsv_log_writec with a va_list; fmt keys the rate limit as there. */
void lsv_log_vwritec(int level, const lsv_log_ctx_t *ctx, const char *fmt,
                     va_list ap);

/* One access log line for a closed connection (level info). */
void lsv_log_access(const char *listener, const char *peer, uint64_t id,
                    double seconds, uint64_t bytes_in, uint64_t bytes_out,
                    uint64_t messages, const char *reason);

/* The ready line for a listener, on stdout (not stderr, where the log
 * goes): "luaserv: listening on tcp 127.0.0.1:7000", or with
 * --log-format json one object {"ts":...,"level":"info","msg":"listening",
 * "proto":"tcp","addr":"127.0.0.1:7000"}, so that 2>&1 | jq reads every
 * line. Printed whatever the log level. */
void lsv_log_ready(const char *proto, const char *addr);

#define lsv_log(level, ...) \
    do { \
        if ((level) >= lsv_log_level) lsv_log_write((level), __VA_ARGS__); \
    } while (0)
#define lsv_debug(...) lsv_log(LSV_LOG_DEBUG, __VA_ARGS__)
#define lsv_info(...) lsv_log(LSV_LOG_INFO, __VA_ARGS__)
#define lsv_warn(...) lsv_log(LSV_LOG_WARN, __VA_ARGS__)
#define lsv_error(...) lsv_log(LSV_LOG_ERROR, __VA_ARGS__)

#endif
