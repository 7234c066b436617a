/* tls.c: certificate contexts, the server handshake stage and the TLS
 * transport (tls.h). */
#include "lsv.h"
#include "tls.h"
#include "tls_int.h"

#include <stdlib.h>

lsv_tls_ctx_t *lsv_tls_ctx_ref(lsv_tls_ctx_t *x)
{
    x->refs++;
    return x;
}

void lsv_tls_ctx_unref(lsv_tls_ctx_t *x)
{
    if (x == NULL || --x->refs > 0) return;
    SSL_CTX_free(x->ssl);
    free(x);
}

const lsv_transport_t *lsv_tls_session_transport(lsv_tls_session_t *s)
{
    return &s->vt;
}

void lsv_tls_session_free(lsv_tls_session_t *s)
{
    if (s == NULL) return;
    SSL_free(s->ssl);
    lsv_tls_ctx_unref(s->ctx);
    free(s->error);
    free(s);
}
