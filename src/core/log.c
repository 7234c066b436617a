/* log.c: leveled logging to stderr, rate-limited per source. */
#include "lsv.h"
#include "log.h"

#include <ev.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

int lsv_log_level = LSV_LOG_INFO;

/* A source of log lines for the rate limit (see lsv_log_write). */
#define SAMPLE 120
typedef struct log_source {
    const char *fmt;          /* NULL: slot unused */
    const char *listener;     /* the key: compared by address only */
    char lname[160];          /* a copy to report with: it may be freed */
    double start;             /* when the current interval began */
    unsigned shown;           /* lines written in it */
    uint64_t suppressed;      /* lines dropped in it */
    int level;
    char sample[SAMPLE];      /* first line of the last message shown */
} log_source_t;
static log_source_t *sampling;   /* the source of the line being written */

static const char *const level_names[] = { "debug", "info", "warn", "error" };

int lsv_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

int lsv_log_format = LSV_LOG_TEXT;

/* The length of the well-formed UTF-8 sequence at s, or 0. */
static size_t utf8_len(const unsigned char *s)
{
    size_t len;
    uint32_t cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) { len = 2; cp = s[0] & 0x1f; }
    else if (s[0] >= 0xe0 && s[0] <= 0xef) { len = 3; cp = s[0] & 0x0f; }
    else if (s[0] >= 0xf0 && s[0] <= 0xf4) { len = 4; cp = s[0] & 0x07; }
    else return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* Appends s to out[*n, cap) as a JSON string body (no quotes). */
static void json_escape(char *out, size_t cap, size_t *n, const char *s)
{
    for (; *s && *n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[(*n)++] = '\\';
            out[(*n)++] = (char)ch;
        } else if (ch == '\n') {
            out[(*n)++] = '\\';
            out[(*n)++] = 'n';
        } else if (ch == '\t') {
            out[(*n)++] = '\\';
            out[(*n)++] = 't';
        } else if (ch < 0x20 || ch == 0x7f) {
            *n += (size_t)snprintf(out + *n, cap - *n, "\\u%04x", ch);
        } else if (ch < 0x80) {
            out[(*n)++] = (char)ch;
        } else {
            /* Copy a well-formed UTF-8 sequence; anything else (a peer's
             * bytes in a message) becomes U+FFFD, so the line stays JSON. */
            size_t len = utf8_len((const unsigned char *)s);
            if (len == 0) {
                *n += (size_t)snprintf(out + *n, cap - *n, "\\ufffd");
            } else {
                memcpy(out + *n, s, len);
                *n += len;
                s += len - 1;
            }
        }
    }
}

static void emit(const char *line, size_t n)
{
    ssize_t w;
    do w = write(STDERR_FILENO, line, n);
    while (w < 0 && errno == EINTR);
}

/* Formats and writes one line: text "TS LEVEL [ctx: ]msg", or a JSON
 * object with ts, level, msg and the ctx fields. extra is pre-rendered
 * JSON members (",\"k\":v...") for JSON, or text appended for text. */
static void log_line(int level, const lsv_log_ctx_t *ctx, const char *extra,
                     const char *fmt, va_list ap)
{
    char msg[7168], line[8192];
    struct timeval tv;
    struct tm tm;
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    if (m < 0) msg[0] = '\0';
    if (sampling) {            /* keep the first line for a later report */
        size_t k = strcspn(msg, "\n");
        if (k >= SAMPLE) k = SAMPLE - 1;
        memcpy(sampling->sample, msg, k);
        sampling->sample[k] = '\0';
        sampling = NULL;
    }
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char ts[40];
    size_t t = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + t, sizeof ts - t, ".%03dZ", (int)(tv.tv_usec / 1000));
    const char *lname = level_names[level < 0 ? 0 : level > 3 ? 3 : level];
    size_t n = 0;
    if (lsv_log_format == LSV_LOG_JSON) {
        n = (size_t)snprintf(line, sizeof line,
                             "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                             lname);
        json_escape(line, sizeof line - 200, &n, msg);
        line[n++] = '"';
        if (ctx && ctx->listener) {
            n += (size_t)snprintf(line + n, sizeof line - n,
                                  ",\"listener\":\"");
            json_escape(line, sizeof line - 100, &n, ctx->listener);
            line[n++] = '"';
        }
        if (ctx && ctx->peer) {
            n += (size_t)snprintf(line + n, sizeof line - n, ",\"peer\":\"");
            json_escape(line, sizeof line - 60, &n, ctx->peer);
            line[n++] = '"';
        }
        if (ctx && ctx->conn_id)
            n += (size_t)snprintf(line + n, sizeof line - n, ",\"conn\":%llu",
                                  (unsigned long long)ctx->conn_id);
        if (extra && n < sizeof line - 2)
            n += (size_t)snprintf(line + n, sizeof line - n, "%s", extra);
        if (n > sizeof line - 2) n = sizeof line - 2;
        line[n++] = '}';
    } else {
        n = (size_t)snprintf(line, sizeof line, "%s %s ", ts, lname);
        if (ctx && ctx->conn_id)
            n += (size_t)snprintf(line + n, sizeof line - n,
                                  "conn %llu (peer %s, %s): ",
                                  (unsigned long long)ctx->conn_id,
                                  ctx->peer ? ctx->peer : "?",
                                  ctx->listener ? ctx->listener : "?");
        else if (ctx && ctx->listener && ctx->peer)
            n += (size_t)snprintf(line + n, sizeof line - n,
                                  "%s (peer %s): ", ctx->listener, ctx->peer);
        else if (ctx && ctx->listener)
            n += (size_t)snprintf(line + n, sizeof line - n, "%s: ",
                                  ctx->listener);
        if (n < sizeof line)
            n += (size_t)snprintf(line + n, sizeof line - n, "%s%s", msg,
                                  extra ? extra : "");
        if (n > sizeof line - 2) {
            n = sizeof line - 2;
            memcpy(line + n - 3, "...", 3);
        }
    }
    line[n++] = '\n';
    emit(line, n);
}

/* --- rate limiting ------------------------------------------------------
 * A source is a call site (its format string) plus the listener the line
 * is about, when the caller names one in its context. Each source may
 * write LSV_LOG_BURST lines per LSV_LOG_INTERVAL seconds; past that its
 * lines are counted, and when the interval ends one line says how many
 * were suppressed and what the last shown one was. Sources live in a
 * small hash table probed PROBES slots deep: when all are taken, the
 * oldest source is reported and evicted, so limiting can only loosen,
 * never lose the count. */

#define SOURCES 128


static log_source_t sources[SOURCES];
static struct ev_loop *rl_loop;
static ev_timer rl_timer;     /* reports suppressions when intervals end */
static int rl_armed;

static void report_line(int level, const lsv_log_ctx_t *ctx,
                        const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report_line(int level, const lsv_log_ctx_t *ctx,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, ctx, NULL, fmt, ap);
    va_end(ap);
}

/* Writes the "suppressed" line of src, if any, and starts a new interval
 * at now. */
static void report(log_source_t *src, double now)
{
    if (src->suppressed) {
        lsv_log_ctx_t ctx = { src->lname, NULL, 0 };
        report_line(src->level, src->listener ? &ctx : NULL,
                    "suppressed %llu similar messages in %.0f s (like: %s)",
                    (unsigned long long)src->suppressed,
                    LSV_LOG_INTERVAL, src->sample);
    }
    src->start = now;
    src->shown = 0;
    src->suppressed = 0;
}

/* Reports the sources whose interval is over; returns the seconds until
 * the next one with suppressed lines ends, or 0 if none. */
static double report_due(double now)
{
    double next = 0;
    for (int i = 0; i < SOURCES; i++) {
        log_source_t *src = &sources[i];
        if (src->fmt == NULL || src->suppressed == 0) continue;
        double left = src->start + LSV_LOG_INTERVAL - now;
        if (left <= 0) report(src, now);
        else if (next == 0 || left < next) next = left;
    }
    return next;
}

static void arm(double after)
{
    if (rl_loop == NULL || rl_armed) return;
    ev_timer_set(&rl_timer, after, 0.);
    ev_timer_start(rl_loop, &rl_timer);
    ev_unref(rl_loop);        /* pending reports do not keep the loop up */
    rl_armed = 1;
}

static void rl_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w; (void)revents;
    ev_ref(loop);             /* libev stopped it; undo arm()'s unref */
    rl_armed = 0;
    double next = report_due(lsv_clock());
    if (next > 0) arm(next);
}

void lsv_log_attach(struct ev_loop *loop)
{
    rl_loop = loop;
    ev_init(&rl_timer, rl_timer_cb);
}

void lsv_log_detach(void)
{
    if (rl_loop && rl_armed) {
        ev_ref(rl_loop);
        ev_timer_stop(rl_loop, &rl_timer);
    }
    rl_armed = 0;
    rl_loop = NULL;
    double now = lsv_clock();
    for (int i = 0; i < SOURCES; i++)
        if (sources[i].fmt) report(&sources[i], now);
}

/* Slots a source may sit in, from its hash on: two hot sources that
 * share a first slot each keep their own, so neither resets the
 * other's count. */
#define PROBES 4

/* The slot of (fmt, listener) among the PROBES from h: its own, else an
 * unused one, else the one whose interval began first (to be evicted). */
static log_source_t *find_source(size_t h, const char *fmt,
                                 const char *listener)
{
    log_source_t *victim = NULL;
    for (size_t i = 0; i < PROBES; i++) {
        log_source_t *src = &sources[(h + i) % SOURCES];
        if (src->fmt == fmt && src->listener == listener) return src;
        if (src->fmt == NULL) {
            if (victim == NULL || victim->fmt != NULL) victim = src;
        } else if (victim == NULL ||
                   (victim->fmt != NULL && src->start < victim->start)) {
            victim = src;
        }
    }
    return victim;
}

/* Whether a line from (fmt, listener) may be written now; counts it
 * otherwise. Only warnings and errors are limited, and what a caller
 * marks LSV_LOG_LIMITED: info lines are events an operator caused or
 * asked for (a reload, a stop), debug is asked for. level comes without
 * the mark. */
static int allowed(int level, int limited, const lsv_log_ctx_t *ctx,
                   const char *fmt)
{
    if (level < LSV_LOG_WARN && !limited) return 1;
    const char *listener = ctx ? ctx->listener : NULL;
    uintptr_t h = ((uintptr_t)fmt >> 3) ^ ((uintptr_t)listener >> 4);
    double now = lsv_clock();
    log_source_t *src = find_source((size_t)(h ^ (h >> 7)), fmt, listener);
    if (src->fmt != fmt || src->listener != listener) {
        report(src, now);             /* evict whoever had the slot */
        src->fmt = fmt;
        src->listener = listener;
        snprintf(src->lname, sizeof src->lname, "%s", listener ? listener
                                                               : "");
    } else if (now - src->start >= LSV_LOG_INTERVAL) {
        report(src, now);
    }
    if (src->shown < LSV_LOG_BURST) {
        src->shown++;
        src->level = level;
        sampling = src;
        return 1;
    }
    if (src->suppressed++ == 0) arm(src->start + LSV_LOG_INTERVAL - now);
    return 0;
}

void lsv_log_write(int level, const char *fmt, ...)
{
    int limited = level & LSV_LOG_LIMITED;
    level &= ~LSV_LOG_LIMITED;
    if (!allowed(level, limited, NULL, fmt)) return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, NULL, NULL, fmt, ap);
    va_end(ap);
}

void lsv_log_writec(int level, const lsv_log_ctx_t *ctx, const char *fmt, ...)
{
    int limited = level & LSV_LOG_LIMITED;
    level &= ~LSV_LOG_LIMITED;
    if (!allowed(level, limited, ctx, fmt)) return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, ctx, NULL, fmt, ap);
    va_end(ap);
}

void lsv_log_vwritec(int level, const lsv_log_ctx_t *ctx, const char *fmt,
                     va_list ap)
{
    int limited = level & LSV_LOG_LIMITED;
    level &= ~LSV_LOG_LIMITED;
    if (!allowed(level, limited, ctx, fmt)) return;
    log_line(level, ctx, NULL, fmt, ap);
}

void lsv_log_write_all(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, NULL, NULL, fmt, ap);
    va_end(ap);
}

static void access_line(const lsv_log_ctx_t *ctx, const char *extra,
                        const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void access_line(const lsv_log_ctx_t *ctx, const char *extra,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(LSV_LOG_INFO, ctx, extra, fmt, ap);
    va_end(ap);
}

void lsv_log_access(const char *listener, const char *peer, uint64_t id,
                    double seconds, uint64_t bytes_in, uint64_t bytes_out,
                    uint64_t messages, const char *reason)
{
    if (LSV_LOG_INFO < lsv_log_level) return;
    lsv_log_ctx_t ctx = { listener, peer, id };
    char extra[256];
    if (lsv_log_format == LSV_LOG_JSON) {
        snprintf(extra, sizeof extra, ",\"duration\":%.6f,\"bytes_in\":%llu,"
                 "\"bytes_out\":%llu,\"messages\":%llu,\"reason\":\"%s\"",
                 seconds, (unsigned long long)bytes_in,
                 (unsigned long long)bytes_out, (unsigned long long)messages,
                 reason);
        access_line(&ctx, extra, "access");
    } else {
        access_line(&ctx, NULL, "access duration=%.6f bytes_in=%llu "
                    "bytes_out=%llu messages=%llu reason=%s", seconds,
                    (unsigned long long)bytes_in,
                    (unsigned long long)bytes_out,
                    (unsigned long long)messages, reason);
    }
}

/* The ready line goes to stdout, where scripts wait for it, in one
 * write(2) (no stdio buffer to flush, whatever stdout is). */
void lsv_log_ready(const char *proto, const char *addr)
{
    char line[1024];
    size_t n;
    if (lsv_log_format == LSV_LOG_JSON) {
        struct timeval tv;
        struct tm tm;
        char ts[40];
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        size_t t = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(ts + t, sizeof ts - t, ".%03dZ", (int)(tv.tv_usec / 1000));
        n = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":"
                             "\"info\",\"msg\":\"listening\",\"proto\":\"%s\","
                             "\"addr\":\"", ts, proto);
        json_escape(line, sizeof line - 4, &n, addr);
        line[n++] = '"';
        line[n++] = '}';
        line[n++] = '\n';
    } else {
        int m = snprintf(line, sizeof line, "luaserv: listening on %s %s\n",
                         proto, addr);
        n = m < 0 ? 0 : (size_t)m < sizeof line ? (size_t)m : sizeof line - 1;
    }
    ssize_t w;
    do w = write(STDOUT_FILENO, line, n);
    while (w < 0 && errno == EINTR);
}
