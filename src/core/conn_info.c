/* conn_info.c: what a conn's users may read of it (the struct is private
 * to src/core), and the log line about a conn. */
#include "lsv.h"
#include "conn.h"
#include "conn_int.h"
#include "listener.h"
#include "log.h"
#include "net.h"

#include <stdarg.h>

lsv_server_t *lsv_conn_server(const lsv_conn_t *c) { return c->srv; }
lsv_listener_t *lsv_conn_listener(const lsv_conn_t *c) { return c->listener; }
uint64_t lsv_conn_id(const lsv_conn_t *c) { return c->id; }
const lsv_conn_type_t *lsv_conn_type(const lsv_conn_t *c) { return c->type; }
void *lsv_conn_data(const lsv_conn_t *c) { return c->data; }
void lsv_conn_set_data(lsv_conn_t *c, void *data) { c->data = data; }
int lsv_conn_fd(const lsv_conn_t *c) { return c->fd; }
double lsv_conn_timeout(const lsv_conn_t *c) { return c->timeout; }
size_t lsv_conn_buffered(const lsv_conn_t *c) { return c->in.len; }
size_t lsv_conn_pending(const lsv_conn_t *c) { return c->out.len; }

const lsv_frame_spec_t *lsv_conn_framing(const lsv_conn_t *c)
{
    return &c->framing;
}

const struct sockaddr *lsv_conn_peer(const lsv_conn_t *c, socklen_t *len)
{
    *len = c->peer_len;
    return &c->peer.sa;
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
    info->age = ev_now(c->srv->loop) - c->started;
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
    lsv_log_ctx_t ctx = { c->listener->name,
                          lsv_net_format(&c->peer.sa, c->peer_len, peer),
                          c->id };
    va_list ap;
    va_start(ap, fmt);
    lsv_log_vwritec(level, &ctx, fmt, ap);
    va_end(ap);
}
