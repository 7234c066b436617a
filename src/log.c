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

void lsv_log_write(int level, const char *fmt, ...)
{
    char line[8192];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03dZ %s ",
                          (int)(tv.tv_usec / 1000),
                          level_names[level < 0 ? 0 : level > 3 ? 3 : level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += (size_t)m;
    if (n > sizeof line - 2) {
        n = sizeof line - 2;
        memcpy(line + n - 3, "...", 3);
    }
    line[n++] = '\n';
    ssize_t w;
    do w = write(STDERR_FILENO, line, n);
    while (w < 0 && errno == EINTR);
}
