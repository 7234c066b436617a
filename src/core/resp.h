/* resp.h: the RESP2 framer (Redis's protocol). Pure like frame.c: no I/O,
 * no allocation, no Lua.
 *
 * As a server (spec->client 0) it frames commands: a multibulk
 * ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or an inline command ("GET k\r\n").
 * As a client (spec->client 1) it frames one reply of any type, arrays
 * nested. lsv_resp_frame follows lsv_frame_next's contract (frame.h) with
 * off 0: the frame is the whole command or reply, which lsv_resp_item and
 * lsv_resp_inline_arg walk again to decode once it is known to be complete
 * and valid. */
#ifndef LSV_RESP_H
#define LSV_RESP_H

#include "frame_spec.h"

#define LSV_RESP_DEFAULT_MAX_ARGS (1024u * 1024)
#define LSV_RESP_DEFAULT_MAX_BULK (512u * 1024 * 1024)
#define LSV_RESP_DEFAULT_MAX (64u * 1024 * 1024)
/* An inline command's line, as Redis's PROTO_INLINE_MAX_SIZE. */
#define LSV_RESP_INLINE_MAX (64u * 1024)
/* How deep a reply's arrays may nest (client mode). */
#define LSV_RESP_MAX_DEPTH 128

/* The lsv_frame_next contract (frame.h), with off 0 and *mlen the frame's
 * length. Beyond it:
 *   - returns LSV_FRAME_BAD on a protocol error (lsv_resp_reject names it);
 *     LSV_FRAME_TOO_LONG when the frame would pass spec->max bytes, found
 *     as soon as a length announces it (a reply's array of n elements at
 *     offset o needs o + 3n bytes), so at most spec->max bytes plus one
 *     partial length line are ever buffered.
 *   - *hint is the resume state, its low 32 bits always an offset within
 *     the data. A command: the offset of the next unparsed bulk and how
 *     many the command still expects (high 32 bits). A reply: the offset
 *     of the next element of the innermost open array and the counts
 *     still expected by every array open there, up to 4 levels deep, when
 *     they pack (resp.c reply_pack: always for one level; for deeper ones
 *     when the outer counts are small, e.g. an EXEC reply's commands, a
 *     SCAN reply's cursor); else the deepest anchor that packs, at worst
 *     the outermost array's next element. So a reply of depth <= 4 with
 *     small outer counts, however big its innermost array, and a reply
 *     whose outer array holds many small elements, cost O(their size) in
 *     all however they arrive; only an element nested below the anchor is
 *     read again. An inline command or a simple-string reply: how far the
 *     line was searched. A bulk's payload is skipped by its length, never
 *     scanned. A hint that does not fit the data (past len, or from
 *     another framing) restarts at 0.
 *   - "*0\r\n", "*-1\r\n" and an empty inline line are frames of their own
 *     that decode to no arguments (server mode).
 *   - at eof a partial frame is LSV_FRAME_TRUNCATED. */
ssize_t lsv_resp_frame(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *mlen);

/* See lsv_frame_reject (frame.h). For LSV_FRAME_BAD it finds the error
 * again in data[0, len) and writes Redis's reply,
 * "-ERR Protocol error: <what>\r\n"; a frame over max gets
 * "-ERR Protocol error: too big command"; a truncated frame (eof) gets no
 * reply. In client mode nothing is written: a server is not answered. */
size_t lsv_resp_reject(const lsv_frame_spec_t *spec, ssize_t r,
                       const char *data, size_t len, char *out, size_t cap,
                       const char **why);

/* One element of a frame lsv_resp_frame accepted. */
typedef struct lsv_resp_item {
    char type;        /* '+', '-', ':', '$' or '*' */
    long long num;    /* ':' the integer; '$' the length, '*' the count
                       * (-1: null) */
    const char *str;  /* '+', '-': the line without CRLF; '$': the payload */
    size_t len;       /* str's length */
} lsv_resp_item_t;

/* Reads the element at p[*pos] of a complete frame p[0, n) that
 * lsv_resp_frame returned (multibulk or reply; not inline) and moves *pos
 * past it; past an array's header only, its elements follow. Returns 1,
 * or 0 at the end of p or on bytes it cannot read (never past n: a frame
 * that was not validated is safe, only not decoded). */
int lsv_resp_item(const char *p, size_t n, size_t *pos, lsv_resp_item_t *it);

/* Whether the server-mode frame p[0, n) is an inline command. */
static inline int lsv_resp_is_inline(const char *p, size_t n)
{
    return n > 0 && p[0] != '*';
}

/* The inline command frame p[0, n) (its line and LF) split as Redis's
 * sdssplitargs: on spaces and tabs, "..." with \n \r \t \b \a \\ \" \xHH
 * escapes, '...' with \'. Call with *pos 0 first. Writes the next argument
 * into out (room for n bytes: an argument is never longer than its line),
 * sets *olen and returns 1; returns 0 when there are no more, -1 on
 * unbalanced quotes. out may be NULL to only count. */
int lsv_resp_inline_arg(const char *p, size_t n, size_t *pos, char *out,
                        size_t *olen);

#endif
