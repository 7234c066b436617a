/* resp.h: the RESP2 framer (Redis's protocol). Pure like frame.c: no I/O,
 * no allocation, no Lua.
 *
 * As a server (spec->client 0) it frames commands: a multibulk
 * ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or an inline command ("GET k\r\n").
 * As a client (spec->client 1) it frames one reply of any type, arrays
 * nested. lsv_resp_frame follows lsv_frame_next's contract (frame.h) with
 * off 0: the frame is the whole command or reply, which lsv_resp_args and
 * lsv_resp_reply walk again to decode once it is known to be complete and
 * valid. */
#ifndef LSV_RESP_H
#define LSV_RESP_H

#include "frame_spec.h"

#define LSV_RESP_DEFAULT_MAX_ARGS (1024u * 1024)
#define LSV_RESP_DEFAULT_MAX_BULK (512u * 1024 * 1024)
#define LSV_RESP_DEFAULT_MAX (64u * 1024 * 1024)

ssize_t lsv_resp_frame(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *mlen);

/* See lsv_frame_reject (frame.h). */
size_t lsv_resp_reject(const lsv_frame_spec_t *spec, ssize_t r,
                       const char *data, size_t len, char *out, size_t cap,
                       const char **why);

#endif
