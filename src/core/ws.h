/* ws.h: the WebSocket framer (RFC 6455). Pure like frame.c: no I/O, no
 * allocation, no Lua.
 *
 * lsv_ws_frame follows lsv_frame_next's contract (frame.h) with off 0: a
 * frame is a whole message (its fragments and the control frames between
 * them) or one control frame, which the decoder walks again. As a server
 * (spec->client 0) it requires masked frames; as a client, unmasked ones.
 * spec->max caps a message's payload; the bytes a message spans on the
 * wire (headers, masks, control frames between its fragments) are capped
 * at LSV_WS_WIRE_MAX(max), so pings between fragments cannot make the
 * conn buffer without bound. Returns LSV_FRAME_BAD on a protocol error
 * (reserved bits, unknown opcode, a fragmented or over-125-byte control
 * frame, a continuation outside a message, a new data frame inside one,
 * a 64-bit length with its high bit set, the wrong masking, a close
 * payload of 1 byte), LSV_FRAME_TOO_LONG over the caps, as soon as the
 * offending header is in.
 *
 * A close between fragments ends the message early: the frame returned
 * then runs through the close (the decoder answers it and drops the
 * partial message).
 *
 * *hint packs the resume state: the offset of the first frame not yet
 * complete, or of the first ping between fragments not yet answered
 * (low 32 bits), the data payload before it (bits 32-62) and a tag (bit
 * 63), so a big message arriving in many reads is parsed once; a nonzero
 * hint without the tag (another framing's) restarts the scan. */
#ifndef LSV_WS_H
#define LSV_WS_H

#include "frame_spec.h"

#define LSV_WS_DEFAULT_MAX (1024u * 1024)
#define LSV_WS_WIRE_MAX(max) (2 * (uint64_t)(max) + 65536)

/* Opcodes. */
#define LSV_WS_CONT 0x0
#define LSV_WS_TEXT 0x1
#define LSV_WS_BINARY 0x2
#define LSV_WS_CLOSE 0x8
#define LSV_WS_PING 0x9
#define LSV_WS_PONG 0xA

/* The longest frame header: 2 + 8 length bytes + 4 mask bytes. */
#define LSV_WS_HEAD_MAX 14

/* One frame header as parsed. */
typedef struct lsv_ws_head {
    uint64_t len;        /* payload bytes */
    size_t hlen;         /* header bytes, the mask key included */
    uint8_t fin;
    uint8_t opcode;
    uint8_t masked;
    uint8_t mask[4];
} lsv_ws_head_t;

ssize_t lsv_ws_frame(const lsv_frame_spec_t *spec, const char *data,
                     size_t len, int eof, size_t *hint, size_t *mlen);

/* See lsv_frame_reject (frame.h): a close frame, 1009 for TOO_LONG and
 * 1002 for BAD (masked with a zero key in client mode), nothing for
 * TRUNCATED; *why names the fault. */
size_t lsv_ws_reject(const lsv_frame_spec_t *spec, ssize_t r,
                     const char *data, size_t len, char *out, size_t cap,
                     const char **why);

/* See lsv_frame_interim (frame.h): while a fragmented message is partial,
 * the pongs owed for the complete pings between its fragments, as many
 * as fit in cap (the rest on the next call), masked in client mode. Each
 * answered ping is rewritten in data[] into a pong (opcode byte only), so
 * the decoder, which answers pings and ignores pongs, answers it once;
 * *hint moves past it. */
size_t lsv_ws_interim(const lsv_frame_spec_t *spec, char *data, size_t len,
                      size_t *hint, char *out, size_t cap);

/* A fresh masking key for a client's frame (getrandom; a fixed one when
 * the kernel has no entropy yet, which is still a valid frame). */
void lsv_ws_mask_key(uint8_t key[4]);

/* Parses the header at p[0, n) without judging it. Returns its length
 * (h filled), or 0 when p[0, n) does not hold all of it yet. */
size_t lsv_ws_head(const char *p, size_t n, lsv_ws_head_t *h);

/* Writes a frame header into out (LSV_WS_HEAD_MAX bytes of room) for a
 * payload of len bytes, final fragment, with opcode; masked with mask
 * when mask is not NULL. Returns its length. */
size_t lsv_ws_put_head(char *out, int opcode, uint64_t len,
                       const uint8_t *mask);

/* Copies n bytes from src to dst XORing them with mask (dst may be src). */
void lsv_ws_unmask(char *dst, const char *src, size_t n,
                   const uint8_t mask[4]);

/* Whether p[0, n) is valid UTF-8 (no overlongs, surrogates, or code
 * points past U+10FFFF), as RFC 6455 asks of text messages. */
int lsv_ws_utf8_valid(const char *p, size_t n);

/* Whether a close frame's code may be sent on the wire (RFC 6455 7.4). */
int lsv_ws_close_code_valid(unsigned code);

#endif
