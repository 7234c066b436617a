/* base64.h: base64 encoding (RFC 4648, with padding), for the WebSocket
 * handshake. Pure: no I/O, no allocation. */
#ifndef LSV_BASE64_H
#define LSV_BASE64_H

#include "lsv.h"

/* The encoded length of n bytes. */
#define LSV_BASE64_LEN(n) (((n) + 2) / 3 * 4)

/* Writes LSV_BASE64_LEN(n) characters (no terminator) for p[0, n) into
 * out; returns that length. */
size_t lsv_base64_encode(const void *p, size_t n, char *out);

#endif
