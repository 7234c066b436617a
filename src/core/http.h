/* http.h: the HTTP/1.1 request framer. Pure like frame.c: no I/O, no
 * allocation, no Lua.
 *
 * lsv_http_frame follows lsv_frame_next's contract (frame.h) with off 0:
 * a frame is a whole request, head and body (by Content-Length or chunked),
 * which the decoder walks again once it is known to be complete and valid.
 * Limits: spec->max_bulk bytes of request line and headers, spec->max_args
 * headers, spec->max bytes of body. */
#ifndef LSV_HTTP_H
#define LSV_HTTP_H

#include "frame_spec.h"

#define LSV_HTTP_DEFAULT_MAX_HEAD (64u * 1024)
#define LSV_HTTP_DEFAULT_MAX_HEADERS 100u
#define LSV_HTTP_DEFAULT_MAX_BODY (1024u * 1024)

ssize_t lsv_http_frame(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *mlen);

/* See lsv_frame_reject (frame.h). */
size_t lsv_http_reject(const lsv_frame_spec_t *spec, ssize_t r,
                       const char *data, size_t len, char *out, size_t cap,
                       const char **why);

#endif
