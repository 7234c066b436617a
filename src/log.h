/* log.h: leveled logging to stderr. */
#ifndef LSV_LOG_H
#define LSV_LOG_H

#include "lsv.h"

enum { LSV_LOG_DEBUG = 0, LSV_LOG_INFO, LSV_LOG_WARN, LSV_LOG_ERROR };

extern int lsv_log_level;

/* Parses "debug", "info", "warn" or "error". Returns the level or -1. */
int lsv_log_parse_level(const char *name);

/* Writes one line "2026-11-27T20:18:46.123Z warn message" to stderr, in one
 * write so lines from several processes do not interleave. The message may
 * span lines (a traceback). Cheap when level is below lsv_log_level: the
 * macros below test it before formatting anything. */
void lsv_log_write(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define lsv_log(level, ...) \
    do { \
        if ((level) >= lsv_log_level) lsv_log_write((level), __VA_ARGS__); \
    } while (0)
#define lsv_debug(...) lsv_log(LSV_LOG_DEBUG, __VA_ARGS__)
#define lsv_info(...) lsv_log(LSV_LOG_INFO, __VA_ARGS__)
#define lsv_warn(...) lsv_log(LSV_LOG_WARN, __VA_ARGS__)
#define lsv_error(...) lsv_log(LSV_LOG_ERROR, __VA_ARGS__)

#endif
