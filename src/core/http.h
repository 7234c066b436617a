/* http.h: the HTTP/1.1 request framer. Pure like frame.c: no I/O, no
 * allocation, no Lua.
 *
 * lsv_http_frame follows lsv_frame_next's contract (frame.h) with off 0:
 * a frame is a whole request, head and body (by Content-Length or chunked),
 * which the decoder walks again with lsv_http_request_line,
 * lsv_http_field and lsv_http_chunk once it is known to be complete and
 * valid. Limits: spec->max_bulk bytes of request line and headers (the
 * request line alone at most LSV_HTTP_MAX_LINE), spec->max_args headers,
 * spec->max bytes of body.
 *
 * A request the framer refuses is LSV_FRAME_TOO_LONG (413, 414, 431) or
 * LSV_FRAME_BAD (400, 501, 505); lsv_http_reject names the fault and
 * writes the short response with its status. Request smuggling shapes are
 * 400: Content-Length with Transfer-Encoding, differing Content-Length
 * headers, a Content-Length that is not a plain decimal number, obs-fold,
 * a bare CR, whitespace before a header's colon, a bad chunk size line,
 * chunk data not followed by CRLF.
 *
 * *hint packs the resume state (needs a 64-bit size_t): while the head is
 * incomplete, how far it was scanned; then the frame's length (body by
 * Content-Length) or the chunked body's progress (decoded bytes and
 * framing overhead so far), and whether a 100 Continue is owed
 * (lsv_http_interim). Body bytes are skipped by length, never scanned. */
#ifndef LSV_HTTP_H
#define LSV_HTTP_H

#include "frame_spec.h"

#define LSV_HTTP_DEFAULT_MAX_HEAD (64u * 1024)
#define LSV_HTTP_DEFAULT_MAX_HEADERS 100u
#define LSV_HTTP_DEFAULT_MAX_BODY (1024u * 1024)
/* The request line's own limit (414 past it), and a chunk size line's or
 * a trailer line's. */
#define LSV_HTTP_MAX_LINE 8192u
#define LSV_HTTP_MAX_CHUNK_LINE 4096u

ssize_t lsv_http_frame(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *mlen);

/* See lsv_frame_reject (frame.h). */
size_t lsv_http_reject(const lsv_frame_spec_t *spec, ssize_t r,
                       const char *data, size_t len, char *out, size_t cap,
                       const char **why);

/* See lsv_frame_interim (frame.h): "HTTP/1.1 100 Continue\r\n\r\n" once,
 * when the head of a request with `Expect: 100-continue` and a body is in
 * and its body is not. */
size_t lsv_http_interim(const lsv_frame_spec_t *spec, const char *data,
                        size_t len, size_t *hint, char *out, size_t cap);

/* ---- walking a frame lsv_http_frame returned (already validated) ----- */

typedef struct lsv_http_line {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    int minor;                 /* HTTP/1.<minor>: 0 or 1 */
} lsv_http_line_t;

/* The request line of the frame p[0, n). Returns the offset of the first
 * header line, 0 if p is not a frame lsv_http_frame accepted. */
size_t lsv_http_request_line(const char *p, size_t n, lsv_http_line_t *rl);

/* The header field at *i (start with the request line's result): returns
 * 1 with its name and value (without surrounding whitespace) and *i past
 * it, or 0 at the blank line that ends the head, with *i at the body. */
int lsv_http_field(const char *p, size_t n, size_t *i, const char **name,
                   size_t *nlen, const char **val, size_t *vlen);

/* The chunk at *i of a chunked body (start at the body's offset): returns
 * 1 with its data and *i past it, or 0 at the last chunk (size 0). */
int lsv_http_chunk(const char *p, size_t n, size_t *i, const char **data,
                   size_t *len);

/* Whether the token list v[0, n) ("close, Upgrade") holds token, compared
 * ASCII case-insensitively. */
int lsv_http_has_token(const char *v, size_t n, const char *token);

/* Whether a[0, n) equals the lowercase literal lit, ignoring ASCII case. */
int lsv_http_ieq(const char *a, size_t n, const char *lit);

#endif
