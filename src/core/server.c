/* server.c: the server's read-buffer pool. */
#include "lsv.h"
#include "server.h"

/* --- read buffer pool --------------------------------------------------- */

char *lsv_server_get_buf(lsv_server_t *srv)
{
    if (srv->nfree_bufs) return srv->free_bufs[--srv->nfree_bufs];
    return lsv_malloc(LSV_READ_SIZE);
}

void lsv_server_put_buf(lsv_server_t *srv, char *p)
{
    if (srv->nfree_bufs < (int)(sizeof srv->free_bufs / sizeof *srv->free_bufs))
        srv->free_bufs[srv->nfree_bufs++] = p;
    else
        free(p);
}

void lsv_server_free_bufs(lsv_server_t *srv)
{
    while (srv->nfree_bufs) free(srv->free_bufs[--srv->nfree_bufs]);
}
