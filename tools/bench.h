/* bench.h: what bench.c (the run) calls of bench_args.c (the command
 * line) and bench_report.c (the result); the state they share is
 * bench_conn.h's. */
#ifndef LSV_BENCH_H
#define LSV_BENCH_H

#include "bench_conn.h"

/* Fills b's options from argv (b zeroed before). On a bad option prints
 * why and the usage and exits 2; --help and --version print and exit 0. */
void bench_parse_args(bench_t *b, int argc, char **argv);

/* Prints b->final as text or JSON (--json) and returns the exit status:
 * 0 when a request succeeded (idle: all connections opened), else 1 after
 * one line on stderr saying why. */
int bench_report(bench_t *b);

#endif
