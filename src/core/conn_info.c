/* conn_info.c: what a conn's users may read of it (the struct is private
 * to src/core), and the log line about a conn. */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "proxy.h"

#include <stdarg.h>
#include <string.h>

lsv_server_t *lsv_conn_server(const lsv_conn_t *c) { return lsv_conn_srv(c); }
lsv_listener_t *lsv_conn_listener(const lsv_conn_t *c) { return c->listener; }
uint64_t lsv_conn_id(const lsv_conn_t *c) { return c->id; }
const lsv_conn_type_t *lsv_conn_type(const lsv_conn_t *c) { return c->type; }
void *lsv_conn_data(const lsv_conn_t *c) { return c->data; }
void lsv_conn_set_data(lsv_conn_t *c, void *data) { c->data = data; }
const lsv_proxy_info_t *lsv_conn_proxy(const lsv_conn_t *c)
{
    lsv_proxy_info_t *p = NULL;
    if (c->flags & LSV_CONN_PROXY) memcpy(&p, c->peer.proxy, sizeof p);
    return p;
}
int lsv_conn_fd(const lsv_conn_t *c) { return c->io.fd; }
double lsv_conn_timeout(const lsv_conn_t *c) { return c->timeout; }
size_t lsv_conn_buffered(const lsv_conn_t *c) { return c->in.len; }
size_t lsv_conn_pending(const lsv_conn_t *c) { return c->out.len; }
size_t *lsv_conn_pull_hint(lsv_conn_t *c) { return &c->hint; }

const lsv_frame_spec_t *lsv_conn_framing(const lsv_conn_t *c)
{
    return &c->framing->spec;
}

/* --- framing, shared ---------------------------------------------------- */

/* Whether a and b frame alike (a delim's bytes past delim_len and the
 * padding do not count). */
static int frame_spec_same(const lsv_frame_spec_t *a,
                           const lsv_frame_spec_t *b)
{
    return a->max == b->max && a->size == b->size && a->kind == b->kind &&
           a->keep_eol == b->keep_eol && a->prefix_len == b->prefix_len &&
           a->big_endian == b->big_endian && a->delim_len == b->delim_len &&
           a->client == b->client && a->max_args == b->max_args &&
           a->max_bulk == b->max_bulk &&
           memcmp(a->delim, b->delim, a->delim_len) == 0;
}

/* A new frame ref holding one reference to a copy of spec, or NULL out of
 * memory. */
static lsv_frame_ref_t *frame_ref_new(const lsv_frame_spec_t *spec)
{
    lsv_frame_ref_t *r = malloc(sizeof *r);
    if (unlikely(r == NULL)) return NULL;
    r->spec = *spec;
    r->refs = 1;
    return r;
}

lsv_frame_ref_t *lsv_conn_share_framing(lsv_listener_t *l,
                                        const lsv_frame_spec_t *spec)
{
    lsv_frame_ref_t *r = l->shared;
    if (r == NULL || !frame_spec_same(&r->spec, spec)) {
        r = lsv_malloc(sizeof *r);      /* aborts out of memory */
        r->spec = *spec;
        r->refs = 1;
        lsv_frame_ref_drop(l->shared);
        l->shared = r;      /* the listener's own reference */
    }
    r->refs++;
    return r;
}

int lsv_conn_set_framing(lsv_conn_t *c, const lsv_frame_spec_t *spec)
{
    lsv_frame_ref_t *r = frame_ref_new(spec);
    if (unlikely(r == NULL)) return LSV_ERR;
    lsv_frame_ref_drop(c->framing);
    c->framing = r;
    if (!(c->flags & LSV_CONN_PULL)) c->hint = 0;   /* a pull read's own */
    return LSV_OK;
}

const struct sockaddr *lsv_conn_peer(const lsv_conn_t *c, socklen_t *len)
{
    const lsv_proxy_info_t *p = lsv_conn_proxy(c);
    if (p && p->hdr.local) {
        *len = p->socket_peer_len;
        return (const struct sockaddr *)&p->socket_peer;
    }
    if (p) {
        *len = p->hdr.src_len;
        return (const struct sockaddr *)&p->hdr.src;
    }
    *len = c->peer_len;
    return &c->peer.sa;
}

char *lsv_conn_local(const lsv_conn_t *c, char *out)
{
    const lsv_proxy_info_t *p = lsv_conn_proxy(c);
    if (p && !p->hdr.local)
        return lsv_net_format((const struct sockaddr *)&p->hdr.dst,
                              p->hdr.dst_len, out);
    return lsv_net_local(c->io.fd, out);
}

int lsv_conn_is_closing(const lsv_conn_t *c)
{
    return (c->flags & LSV_CONN_CLOSING) != 0;
}

int lsv_conn_at_eof(const lsv_conn_t *c)
{
    return (c->flags & (LSV_CONN_EOF | LSV_CONN_CLOSING)) != 0;
}

int lsv_conn_is_draining(const lsv_conn_t *c)
{
    return (c->flags & LSV_CONN_DRAIN) != 0;
}

int lsv_conn_is_outbound(const lsv_conn_t *c)
{
    return (c->flags & LSV_CONN_OUTBOUND) != 0;
}

int lsv_conn_has_failed(const lsv_conn_t *c)
{
    return (c->flags & LSV_CONN_ABORT) != 0;
}

void lsv_conn_info(const lsv_conn_t *c, lsv_conn_info_t *info)
{
    info->age = ev_now(lsv_conn_srv(c)->loop) - c->started;
    info->bytes_in = c->nin;
    info->bytes_out = c->nout;
    info->messages = c->nmsg;
}

void lsv_conn_count_message(lsv_conn_t *c)
{
    c->nmsg++;
    c->listener->stats.messages++;
}

lsv_conn_t *lsv_conn_first(const lsv_server_t *srv) { return srv->conns; }
lsv_conn_t *lsv_conn_next(const lsv_conn_t *c) { return c->next; }

void lsv_conn_log(int level, const lsv_conn_t *c, const char *fmt, ...)
{
    if (level < lsv_log_level) return;
    char peer[LSV_ADDRSTRLEN];
    socklen_t plen;
    const struct sockaddr *psa = lsv_conn_peer(c, &plen);
    lsv_log_ctx_t ctx = { c->listener->name,
                          lsv_net_format(psa, plen, peer), c->id };
    va_list ap;
    va_start(ap, fmt);
    lsv_log_vwritec(level, &ctx, fmt, ap);
    va_end(ap);
}
