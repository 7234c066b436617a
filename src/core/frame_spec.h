/* frame_spec.h: what a framing is (kinds, limits, result codes), apart
 * from the framer itself so the protocol framers (resp.h, http.h, ws.h)
 * can share it without including frame.h. */
#ifndef LSV_FRAME_SPEC_H
#define LSV_FRAME_SPEC_H

#include "lsv.h"
#include <stdlib.h>
#include <sys/types.h>

#define LSV_FRAME_PARTIAL 0
#define LSV_FRAME_TOO_LONG -1
#define LSV_FRAME_TRUNCATED -2
#define LSV_FRAME_BAD -3        /* a protocol error (RESP, HTTP, WS) */

#define LSV_FRAME_DELIM_MAX 32

/* Default and absolute limits on a frame's payload, in bytes. */
#define LSV_FRAME_DEFAULT_MAX (64u * 1024)
#define LSV_FRAME_PREFIX_DEFAULT_MAX (1024u * 1024)
#define LSV_FRAME_HARD_MAX (64u * 1024 * 1024)
/* The protocol kinds' limits on a whole frame may go up to 1 GiB. */
#define LSV_FRAME_PROTO_HARD_MAX (1024u * 1024 * 1024)

typedef enum {
    LSV_FRAME_LINE = 0,  /* LF or CRLF */
    LSV_FRAME_DELIM,     /* an arbitrary delimiter string */
    LSV_FRAME_FIXED,     /* exactly `size` bytes */
    LSV_FRAME_PREFIX,    /* a 1/2/4/8 byte length, then that many bytes */
    LSV_FRAME_RAW,       /* whatever arrived, up to max bytes */
    /* Protocol kinds: a frame is a whole message, returned with off 0 and
     * mlen the bytes it spans; the Lua layer decodes it (src/lua). Their
     * *hint packs the framer's own resume state, not a plain offset. */
    LSV_FRAME_RESP,      /* a RESP2 command (or reply, with `client`) */
    LSV_FRAME_HTTP,      /* an HTTP/1.1 request: head and body */
    LSV_FRAME_WS         /* a WebSocket message (RFC 6455) */
} lsv_frame_kind_t;

#define LSV_FRAME_LAST LSV_FRAME_WS

typedef struct lsv_frame_spec {
    uint32_t max;          /* payload limit (LINE, DELIM, PREFIX, RAW) */
    uint32_t size;         /* FIXED: the frame size */
    uint8_t kind;          /* lsv_frame_kind_t */
    uint8_t keep_eol;      /* LINE, DELIM: keep the terminator */
    uint8_t prefix_len;    /* PREFIX: 1, 2, 4 or 8 */
    uint8_t big_endian;    /* PREFIX: network order (default) */
    uint8_t delim_len;     /* DELIM */
    uint8_t client;        /* RESP: read replies, not commands; WS: read a
                            * server's unmasked frames */
    char delim[LSV_FRAME_DELIM_MAX];
    uint32_t max_args;     /* RESP: arguments per command; HTTP: headers */
    uint32_t max_bulk;     /* RESP: one bulk string; HTTP: the request
                            * line and header section, in bytes */
} lsv_frame_spec_t;

/* A frame spec conns share, counted: a listener's current default, held
 * by each conn accepted with it, or one conn's own after set_framing.
 * Made by lsv_conn_share_framing and lsv_conn_set_framing. */
typedef struct lsv_frame_ref {
    lsv_frame_spec_t spec;
    uint32_t refs;
} lsv_frame_ref_t;

/* Drops a reference to r (NULL is ignored); frees it with the last. */
static inline void lsv_frame_ref_drop(lsv_frame_ref_t *r)
{
    if (r != NULL && --r->refs == 0) free(r);
}

/* Whether kind is a protocol kind (decoded by the Lua layer). */
static inline int lsv_frame_is_proto(int kind)
{
    return kind >= LSV_FRAME_RESP;
}

#endif
