/* procstat.c: the standard process_* metrics and luaserv_build_info, read
 * from /proc/self, for the metrics endpoint (core.process_metrics()). */
#include "lsv.h"
#include "procstat.h"

#include <dirent.h>
#include <ev.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* What the Prometheus client libraries export as process_* metrics,
 * measured now; a field that cannot be read is negative. */
typedef struct {
    double cpu_seconds;     /* utime + stime */
    double start_time;      /* seconds since the epoch */
    double virtual_bytes;
    double resident_bytes;
    double open_fds;
    double max_fds;
} proc_sample_t;

/* Reads the whole of a small /proc file into buf (NUL-terminated).
 * Returns its length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* The system's boot time in seconds since the epoch ("btime" in
 * /proc/stat), or -1. */
static double boot_time(void)
{
    /* Line by line: on a host with many CPUs and interrupts the lines
     * before btime run to tens of kilobytes. */
    FILE *f = fopen("/proc/stat", "re");
    if (f == NULL) return -1;
    char line[256];
    unsigned long long bt;
    double found = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "btime ", 6) == 0 &&
            sscanf(line + 6, "%llu", &bt) == 1) {
            found = (double)bt;
            break;
        }
    }
    fclose(f);
    return found;
}

/* Fills s from /proc/self/stat, /proc/stat, /proc/self/fd and the
 * RLIMIT_NOFILE soft limit, as client_golang's process collector does. */
static void sample(proc_sample_t *s)
{
    s->cpu_seconds = s->start_time = s->virtual_bytes = -1;
    s->resident_bytes = s->open_fds = s->max_fds = -1;
    char buf[1024];
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (read_small("/proc/self/stat", buf, sizeof buf) > 0 && tck > 0) {
        /* The command name (field 2) may hold spaces and parentheses:
         * the fields that follow start after its last ')'. */
        const char *p = strrchr(buf, ')');
        unsigned long long ut, st, start, vsize;
        long long rss;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
                        "%*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu "
                        "%lld", &ut, &st, &start, &vsize, &rss) == 5) {
            s->cpu_seconds = (double)(ut + st) / (double)tck;
            s->virtual_bytes = (double)vsize;
            s->resident_bytes = (double)rss * (double)page;
            double bt = boot_time();
            if (bt >= 0) s->start_time = bt + (double)start / (double)tck;
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            if (e->d_name[0] != '.') n++;
        closedir(d);
        s->open_fds = (double)(n - 1);   /* not the one opendir holds */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        s->max_fds = rl.rlim_cur == RLIM_INFINITY ? -1 : (double)rl.rlim_cur;
}

/* Appends one single-sample family; skipped when v is negative (the
 * field could not be read), since a made-up value would mislead. */
static void one(luaL_Buffer *b, const char *name, const char *type,
                const char *help, double v)
{
    char line[512];
    if (v < 0) return;
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n",
             name, help, name, type, name, v);
    luaL_addstring(b, line);
}

/* core.process_metrics() -> the process_* families and
 * luaserv_build_info in the Prometheus text format. [-0, +1, m] */
int lsv_procstat_metrics(lua_State *L)
{
    proc_sample_t s;
    sample(&s);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    one(&b, "process_cpu_seconds_total", "counter",
        "Total user and system CPU time spent in seconds.", s.cpu_seconds);
    one(&b, "process_open_fds", "gauge", "Number of open file descriptors.",
        s.open_fds);
    one(&b, "process_max_fds", "gauge",
        "Maximum number of open file descriptors.", s.max_fds);
    one(&b, "process_virtual_memory_bytes", "gauge",
        "Virtual memory size in bytes.", s.virtual_bytes);
    one(&b, "process_resident_memory_bytes", "gauge",
        "Resident memory size in bytes.", s.resident_bytes);
    one(&b, "process_start_time_seconds", "gauge",
        "Start time of the process since unix epoch in seconds.",
        s.start_time);
    char line[512];
    snprintf(line, sizeof line, "# HELP luaserv_build_info The version of "
             "luaserv and of the Lua and libev it was built with.\n"
             "# TYPE luaserv_build_info gauge\nluaserv_build_info{version=\""
             "%s\",lua=\"%s\",libev=\"%d.%d\"} 1\n", LSV_VERSION,
             LUA_VERSION_MAJOR "." LUA_VERSION_MINOR "." LUA_VERSION_RELEASE,
             ev_version_major(), ev_version_minor());
    luaL_addstring(&b, line);
    luaL_pushresult(&b);
    return 1;
}
