/* frame.h: the framer. Pure: no I/O, no allocation, no Lua.
 *
 * Contract: lsv_frame_next() looks at the bytes data[0, len) that a stream
 * has delivered and not yet consumed, and finds the first complete frame.
 *   - returns n > 0: a frame ends at data[n-1]; the caller consumes n bytes.
 *     The payload handed to the application is data[*off, *off + *mlen)
 *     (it excludes a length prefix, and the terminator unless keep_eol).
 *   - returns LSV_FRAME_PARTIAL: more bytes are needed. *hint is updated so
 *     the next call with a longer buffer need not rescan the same bytes;
 *     callers start with *hint = 0 and reset it to 0 after consuming.
 *   - returns LSV_FRAME_TOO_LONG: the frame being received exceeds max. The
 *     stream cannot be resynchronised; the caller closes it.
 * With eof set (no more bytes will come), a trailing unterminated line or
 * delimited record, or leftover raw bytes, are a frame, as Python's
 * readline() returns its last partial line; a truncated fixed or prefixed
 * frame returns LSV_FRAME_TRUNCATED. With eof set and len == 0 the result is
 * LSV_FRAME_PARTIAL (nothing left).
 * The framer never reads outside data[0, len). */
#ifndef LSV_FRAME_H
#define LSV_FRAME_H

#include "lsv.h"
#include <sys/types.h>

#define LSV_FRAME_PARTIAL 0
#define LSV_FRAME_TOO_LONG -1
#define LSV_FRAME_TRUNCATED -2

#define LSV_FRAME_DELIM_MAX 32

/* Default and absolute limits on a frame's payload, in bytes. */
#define LSV_FRAME_DEFAULT_MAX (64u * 1024)
#define LSV_FRAME_PREFIX_DEFAULT_MAX (1024u * 1024)
#define LSV_FRAME_HARD_MAX (64u * 1024 * 1024)

typedef enum {
    LSV_FRAME_LINE = 0,  /* LF or CRLF */
    LSV_FRAME_DELIM,     /* an arbitrary delimiter string */
    LSV_FRAME_FIXED,     /* exactly `size` bytes */
    LSV_FRAME_PREFIX,    /* a 1/2/4/8 byte length, then that many bytes */
    LSV_FRAME_RAW        /* whatever arrived, up to max bytes */
} lsv_frame_kind_t;

typedef struct lsv_frame_spec {
    uint32_t max;          /* payload limit (LINE, DELIM, PREFIX, RAW) */
    uint32_t size;         /* FIXED: the frame size */
    uint8_t kind;          /* lsv_frame_kind_t */
    uint8_t keep_eol;      /* LINE, DELIM: keep the terminator */
    uint8_t prefix_len;    /* PREFIX: 1, 2, 4 or 8 */
    uint8_t big_endian;    /* PREFIX: network order (default) */
    uint8_t delim_len;     /* DELIM */
    char delim[LSV_FRAME_DELIM_MAX];
} lsv_frame_spec_t;

/* Fills spec with the defaults for kind ("line": max 64 KiB, no keep_eol;
 * "prefix": 4 bytes big endian, max 1 MiB; ...). */
void lsv_frame_spec_init(lsv_frame_spec_t *spec, lsv_frame_kind_t kind);

/* See the contract above. */
ssize_t lsv_frame_next(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *off,
                       size_t *mlen);

/* The name of a framing kind ("line", "delim", ...). */
const char *lsv_frame_kind_name(int kind);

#endif
