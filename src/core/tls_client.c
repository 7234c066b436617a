/* tls_client.c: the client handshake of an outbound TLS conn (tls.h). */
#include "lsv.h"
#include "tls.h"
#include "tls_int.h"
