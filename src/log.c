/* log.c: leveled logging to stderr. */
#include "lsv.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

int lsv_log_level = LSV_LOG_INFO;

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

void lsv_log_write(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, NULL, NULL, fmt, ap);
    va_end(ap);
}

void lsv_log_writec(int level, const lsv_log_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, ctx, NULL, fmt, ap);
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
