/* bench_report.c: luaserv-bench's result, as text or one JSON object. */
#include "bench.h"

#include <stdio.h>
#include <sys/time.h>

typedef unsigned long long ull;

/* The figures of the measured window every form of the report shows. */
typedef struct figures {
    double d, user, cpu, rps, per_cpu;
    double p50, p99, p999, max, mean;     /* µs */
    ull errors;
} figures_t;

static double tv_diff(const struct timeval *a, const struct timeval *z)
{
    return (double)(z->tv_sec - a->tv_sec)
           + (double)(z->tv_usec - a->tv_usec) * 1e-6;
}

/* A duration in µs as "812.3 us", "1.94 ms" or "1.20 s". */
static const char *fmt_us(double us, char out[32])
{
    if (us < 1000)
        snprintf(out, 32, "%.1f us", us);
    else if (us < 1e6)
        snprintf(out, 32, "%.2f ms", us / 1e3);
    else
        snprintf(out, 32, "%.2f s", us / 1e6);
    return out;
}

static void compute(const bench_t *b, figures_t *f)
{
    const stats_t *s = &b->final;

    f->d = b->measured;
    f->user = tv_diff(&b->ru0.ru_utime, &b->ru1.ru_utime);
    f->cpu = f->user + tv_diff(&b->ru0.ru_stime, &b->ru1.ru_stime);
    f->rps = f->d > 0 ? (double)s->requests / f->d : 0;
    f->per_cpu = f->cpu > 0 ? (double)s->requests / f->cpu : 0;
    f->p50 = lsv_hist_quantile(&s->lat, 0.5) / 1000.0;
    f->p99 = lsv_hist_quantile(&s->lat, 0.99) / 1000.0;
    f->p999 = lsv_hist_quantile(&s->lat, 0.999) / 1000.0;
    f->max = (double)s->lat.max_ns / 1e3;
    f->mean = lsv_hist_mean(&s->lat) / 1e3;
    f->errors = s->bad + s->closed + s->connect + s->timeout;
}

static void print_json(const bench_t *b, const figures_t *f)
{
    const stats_t *s = &b->final;

    printf("{\"mode\":\"%s\",\"connections\":%d,\"pipeline\":%u,"
           "\"duration\":%.3f,\"requests\":%llu,\"rps\":%.1f,"
           "\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
           "\"errors\":%llu,\"bench_cpu_s\":%.3f,\"bench_user_s\":%.3f,"
           "\"requests_per_cpu_s\":%.0f,\"mean_us\":%.1f,"
           "\"max_us\":%.1f,\"size\":%zu,\"check\":\"%s\",\"open\":%d,"
           "\"bad\":%llu,\"closed\":%llu,\"connect\":%llu,"
           "\"timeout\":%llu,\"requests_total\":%llu,\"tls\":%s,"
           "\"tls_handshakes\":%llu,\"tls_resumed\":%llu,"
           "\"tls_version\":\"%s\"}\n",
           bench_mode_names[b->mode], b->nconns, b->pipeline, f->d,
           (ull)s->requests, f->rps, f->p50, f->p99, f->p999, f->errors,
           f->cpu, f->user, f->per_cpu, f->mean, f->max, b->size,
           bench_check_names[b->check], b->open, (ull)s->bad,
           (ull)s->closed, (ull)s->connect, (ull)s->timeout,
           (ull)b->requests_total, b->tls ? "true" : "false",
           (ull)s->handshakes, (ull)s->resumed,
           b->tls_version ? b->tls_version : "");
}

/* The lines above the errors: what ran, for how long, and its figures. */
static void print_run(const bench_t *b, const figures_t *f)
{
    const stats_t *s = &b->final;
    char t[5][32];

    if (b->mode == MODE_IDLE) {
        printf("idle %s: %d connections for %.2f s%s\n", b->name, b->nconns,
               f->d, b->interrupted ? " (interrupted)" : "");
        printf("  open        %d of %d (%s%s)\n", b->open, b->nconns,
               b->ready ? "all open after " : "never all open",
               b->ready ? fmt_us(b->ready_after * 1e6, t[0]) : "");
        return;
    }
    printf("%s %s: %d connections", bench_mode_names[b->mode], b->name,
           b->nconns);
    if (b->mode != MODE_SHORT) printf(" x %u in flight", b->pipeline);
    printf(", %zu-byte %s, check %s\n", b->size,
           b->mode == MODE_WS ? "messages" : "lines",
           bench_check_names[b->check]);
    printf("  measured    %.2f s after %.2f s warmup%s\n", f->d, b->warmup,
           b->interrupted ? " (interrupted)" : "");
    printf("  requests    %llu (%.0f/s)\n", (ull)s->requests, f->rps);
    printf("  latency     p50 %s  p99 %s  p99.9 %s  mean %s  max %s\n",
           fmt_us(f->p50, t[0]), fmt_us(f->p99, t[1]), fmt_us(f->p999, t[2]),
           fmt_us(f->mean, t[3]), fmt_us(f->max, t[4]));
    if (b->tls)
        printf("  tls         %s, %llu handshakes measured (%llu "
               "resumed)\n", b->tls_version ? b->tls_version : "no handshake",
               (ull)s->handshakes, (ull)s->resumed);
    if (b->open < b->nconns && b->mode != MODE_SHORT)
        printf("  open        %d of %d at the end\n", b->open, b->nconns);
}

/* The lines below: errors, samples of them, and the generator's CPU. */
static void print_costs(const bench_t *b, const figures_t *f)
{
    const stats_t *s = &b->final;
    int idle = b->mode == MODE_IDLE;

    printf("  errors      %llu", f->errors);
    if (f->errors > 0)
        printf(" (bad reply %llu, closed %llu, connect %llu, timeout "
               "%llu)", (ull)s->bad, (ull)s->closed, (ull)s->connect,
               (ull)s->timeout);
    if (s->late > 0) printf(", %llu late", (ull)s->late);
    printf("\n");
    if (b->bad_sample[0] != '\0')
        printf("  first bad   %s\n", b->bad_sample);
    if (b->last_err[0] != '\0' && s->bad < f->errors)
        printf("  last error  %s\n", b->last_err);
    printf("  bench cpu   %.2f s, %.2f user (%.0f%% of one core)", f->cpu,
           f->user, f->d > 0 ? 100 * f->cpu / f->d : 0);
    if (!idle) printf(", %.0f requests per cpu-second", f->per_cpu);
    printf("\n");
    if (!idle && f->d > 0 && f->cpu / f->d > 0.9)
        printf("  note        the generator was busy over 90%% of the "
               "time: it may be the limit\n");
}

int bench_report(bench_t *b)
{
    figures_t f;
    int idle = b->mode == MODE_IDLE;
    int status = idle ? !b->ready : b->final.requests == 0;
    const char *why = b->last_err[0] ? "; last error: " : "";

    compute(b, &f);
    if (b->json) {
        print_json(b, &f);
    } else {
        print_run(b, &f);
        print_costs(b, &f);
    }
    fflush(stdout);
    if (status && !idle)
        fprintf(stderr, PROG ": no request to %s succeeded%s%s\n", b->name,
                why, b->last_err);
    else if (status)
        fprintf(stderr, PROG ": only %d of %d connections to %s opened%s%s\n",
                b->open, b->nconns, b->name, why, b->last_err);
    return status;
}
