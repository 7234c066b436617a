/* hist.h: a latency histogram for the load generator, log-linear like
 * HdrHistogram. Pure: no I/O, no allocation.
 *
 * Contract: a lsv_hist_t is plain data; zero it (memset, or a zeroed
 * struct) to start empty, and copy it by assignment to freeze a window.
 *   - lsv_hist_record() counts one value in ns. Values are exact below
 *     LSV_HIST_LINEAR ns, then fall in one of LSV_HIST_SUB buckets per
 *     power of two, each under 1.6% wide; values at or past
 *     LSV_HIST_MAX_NS (10 s) count in the last bucket. Constant time, no
 *     branch on the data beyond the linear range.
 *   - lsv_hist_quantile() returns the middle of the bucket that holds the
 *     q-quantile (rank ceil(q * count), at least 1), in ns: within 0.8% of
 *     any value in that bucket. 0 when nothing was counted.
 * The sum and max are exact; only the quantiles are bucketed. */
#ifndef LSV_HIST_H
#define LSV_HIST_H

#include <stdint.h>

#define LSV_HIST_SUB_BITS 6
#define LSV_HIST_SUB (1 << LSV_HIST_SUB_BITS)
#define LSV_HIST_LINEAR (2 * LSV_HIST_SUB)
#define LSV_HIST_MAX_NS 10000000000ULL  /* 10 s: 2^33.2, msb 33 */
#define LSV_HIST_BUCKETS \
    (LSV_HIST_LINEAR + (33 - LSV_HIST_SUB_BITS) * LSV_HIST_SUB)

typedef struct lsv_hist {
    uint64_t count;                 /* values recorded */
    uint64_t sum_ns, max_ns;        /* exact */
    uint64_t bucket[LSV_HIST_BUCKETS];
} lsv_hist_t;

/* Counts the value ns (see the contract above). */
void lsv_hist_record(lsv_hist_t *h, uint64_t ns);

/* The q-quantile (0 < q <= 1) in ns, or 0 when h is empty. */
double lsv_hist_quantile(const lsv_hist_t *h, double q);

/* The exact mean in ns, or 0 when h is empty. */
double lsv_hist_mean(const lsv_hist_t *h);

#endif
