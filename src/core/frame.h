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

#include "frame_spec.h"

/* Fills spec with the defaults for kind ("line": max 64 KiB, no keep_eol;
 * "prefix": 4 bytes big endian, max 1 MiB; ...). */
void lsv_frame_spec_init(lsv_frame_spec_t *spec, lsv_frame_kind_t kind);

/* See the contract above. */
ssize_t lsv_frame_next(const lsv_frame_spec_t *spec, const char *data,
                       size_t len, int eof, size_t *hint, size_t *off,
                       size_t *mlen);

/* The name of a framing kind ("line", "delim", ...). */
const char *lsv_frame_kind_name(int kind);

/* A protocol kind (RESP, HTTP, WS): what to answer when lsv_frame_next
 * returned r < 0 on data[0, len). Writes the protocol's error reply into
 * out (at most cap bytes; RESP "-ERR Protocol error: ...", HTTP a 400,
 * 413, 414, 431, 501 or 505 response, WS a close frame) and returns its
 * length, 0 for none; *why gets a static description for the log. For
 * the simple kinds it returns 0. */
size_t lsv_frame_reject(const lsv_frame_spec_t *spec, ssize_t r,
                        const char *data, size_t len, char *out, size_t cap,
                        const char **why);

/* A protocol kind may owe its peer an interim reply while a frame is
 * partial (HTTP: "100 Continue" once the head of a request that expects
 * it is in and its body is not; WebSocket: the pong for each ping between
 * the fragments of a message). Call it after lsv_frame_next returned
 * LSV_FRAME_PARTIAL, with the same data, len and hint. Writes the reply
 * into out (at most cap bytes) and returns its length, 0 for none; it
 * updates *hint so the reply is owed only once per frame. Call it again
 * until it returns 0: what did not fit in cap comes next. It may rewrite
 * the partial frame's bytes it answered so the decoder does not answer
 * them again (WebSocket: an answered ping becomes a pong). */
size_t lsv_frame_interim(const lsv_frame_spec_t *spec, char *data,
                         size_t len, size_t *hint, char *out, size_t cap);

#endif
