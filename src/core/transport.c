/* transport.c: the plain transport: a conn's bytes straight to its
 * socket. */
#include "lsv.h"
#include "transport.h"
#include "conn_int.h"

#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t plain_read(lsv_conn_t *c, char *p, size_t n)
{
    return read(c->io.fd, p, n);
}

static ssize_t plain_write(lsv_conn_t *c, const char *p, size_t n)
{
    return send(c->io.fd, p, n, MSG_NOSIGNAL);
}

static ssize_t plain_sendfile(lsv_conn_t *c, int fd, off_t *off, size_t n)
{
    return sendfile(c->io.fd, fd, off, n);
}

const lsv_transport_t *lsv_conn_transport(const lsv_conn_t *c)
{
    return c->transport;
}

static void plain_close(lsv_conn_t *c)
{
    close(c->io.fd);
}

const lsv_transport_t lsv_transport_plain = {
    .name = "plain",
    .read = plain_read,
    .write = plain_write,
    .close = plain_close,
    .sendfile = plain_sendfile,
};
