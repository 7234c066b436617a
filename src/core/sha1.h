/* sha1.h: SHA-1 (FIPS 180-4), for the WebSocket handshake's
 * Sec-WebSocket-Accept (RFC 6455 4.2.2). Not for security: SHA-1 is
 * broken for collisions, and the handshake needs no more than a checksum.
 * Pure: no I/O, no allocation. */
#ifndef LSV_SHA1_H
#define LSV_SHA1_H

#include "lsv.h"

#define LSV_SHA1_LEN 20

/* Writes the 20-byte digest of p[0, n) into out. */
void lsv_sha1(const void *p, size_t n, unsigned char out[LSV_SHA1_LEN]);

#endif
