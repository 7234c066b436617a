/* ws.c: placeholder, replaced by the ws framer (issue 11). */
#include "lsv.h"
#include "ws.h"

ssize_t lsv_ws_frame(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *mlen)
{
    (void)spec; (void)data; (void)len; (void)eof; (void)hint; (void)mlen;
    return LSV_FRAME_BAD;
}

size_t lsv_ws_reject(const lsv_frame_spec_t *spec, ssize_t r,
                       const char *data, size_t len, char *out, size_t cap,
                       const char **why)
{
    (void)spec; (void)r; (void)data; (void)len; (void)out; (void)cap;
    *why = "not implemented";
    return 0;
}
