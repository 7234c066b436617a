/* hist.c: the load generator's log-linear latency histogram (hist.h). */
#include "hist.h"

#include <math.h>

/* The bucket of v: v itself below LSV_HIST_LINEAR, then LSV_HIST_SUB
 * buckets per power of two, indexed by the bits just below the top one. */
static int bucket_of(uint64_t v)
{
    if (v >= LSV_HIST_MAX_NS) v = LSV_HIST_MAX_NS - 1;
    if (v < LSV_HIST_LINEAR) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - LSV_HIST_SUB_BITS;
    return LSV_HIST_LINEAR + (shift - 1) * LSV_HIST_SUB
           + (int)((v >> shift) - LSV_HIST_SUB);
}

/* The middle of bucket i, in ns: the inverse of bucket_of. */
static double bucket_value(int i)
{
    if (i < LSV_HIST_LINEAR) return i;
    int k = i - LSV_HIST_LINEAR, shift = k / LSV_HIST_SUB + 1;
    uint64_t low = (uint64_t)(LSV_HIST_SUB + k % LSV_HIST_SUB) << shift;
    return (double)low + (double)(1ULL << (shift - 1));
}

void lsv_hist_record(lsv_hist_t *h, uint64_t ns)
{
    h->count++;
    h->sum_ns += ns;
    if (ns > h->max_ns) h->max_ns = ns;
    h->bucket[bucket_of(ns)]++;
}

double lsv_hist_quantile(const lsv_hist_t *h, double q)
{
    uint64_t rank = (uint64_t)ceil(q * (double)h->count), seen = 0;

    if (h->count == 0) return 0;
    if (rank < 1) rank = 1;
    for (int i = 0; i < LSV_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) return bucket_value(i);
    }
    return (double)h->max_ns;
}

double lsv_hist_mean(const lsv_hist_t *h)
{
    return h->count ? (double)h->sum_ns / (double)h->count : 0;
}
