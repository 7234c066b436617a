/* ws.h: the WebSocket framer (RFC 6455). Pure like frame.c: no I/O, no
 * allocation, no Lua.
 *
 * lsv_ws_frame follows lsv_frame_next's contract (frame.h) with off 0: a
 * frame is a whole message (its fragments and the control frames between
 * them) or one control frame, which the decoder walks again. As a server
 * (spec->client 0) it requires masked frames; as a client, unmasked ones.
 * spec->max caps a message's payload. */
#ifndef LSV_WS_H
#define LSV_WS_H

#include "frame_spec.h"

#define LSV_WS_DEFAULT_MAX (1024u * 1024)

ssize_t lsv_ws_frame(const lsv_frame_spec_t *spec, const char *data,
                     size_t len, int eof, size_t *hint, size_t *mlen);

/* See lsv_frame_reject (frame.h). */
size_t lsv_ws_reject(const lsv_frame_spec_t *spec, ssize_t r,
                     const char *data, size_t len, char *out, size_t cap,
                     const char **why);

#endif
