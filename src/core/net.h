/* net.h: socket helpers shared by the server, the client and the bench. */
#ifndef LSV_NET_H
#define LSV_NET_H

#include "lsv.h"
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/un.h>

typedef enum {
    LSV_NET_TCP = 0,
    LSV_NET_UDP,
    LSV_NET_UNIX,       /* unix stream */
    LSV_NET_UNIXGRAM    /* unix datagram */
} lsv_net_kind_t;

/* A parsed listen or connect address. host is empty for "any". */
typedef struct lsv_addr {
    int kind;                 /* lsv_net_kind_t */
    char host[256];           /* TCP/UDP: name or literal, no brackets */
    int port;                 /* TCP/UDP */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* unix kinds */
    int tls;                  /* tls://HOST:PORT: TCP with TLS on top */
} lsv_addr_t;

/* Enough room for any address we format: "[v6%scope]:port" or a unix path. */
#define LSV_ADDRSTRLEN 128

/* Parses "tcp://HOST:PORT", "tls://HOST:PORT" (TCP with a->tls set),
 * "udp://HOST:PORT", "unix:/path", "unixgram:/path", a bare "HOST:PORT",
 * ":PORT" or "[::1]:PORT" (TCP).
 * Returns LSV_OK, or LSV_ERR with a message in err. */
int lsv_net_parse(const char *spec, lsv_addr_t *a, char err[LSV_ERRLEN]);

/* Name of an address kind: "tcp", "udp", "unix", "unixgram". */
const char *lsv_net_kind_name(int kind);

/* a's scheme as listener names and the ready line show it: its kind's
 * name, or "tls" for a tls:// address (a TCP kind). */
const char *lsv_net_scheme(const lsv_addr_t *a);

/* Creates a non-blocking, close-on-exec socket bound to a (and listening,
 * for stream kinds), with SO_REUSEADDR. An IPv6 wildcard is IPV6_V6ONLY so
 * it can sit beside an IPv4 one. A unix path held by a dead socket file is
 * replaced; one a live server answers on is EADDRINUSE. Returns the fd, or
 * -1 with errno set and a message in err. */
int lsv_net_listen(const lsv_addr_t *a, int backlog, char err[LSV_ERRLEN]);

/* lsv_net_listen with flags: LSV_NET_REUSEPORT sets SO_REUSEPORT on a TCP
 * or UDP socket, so each worker process binds its own socket to the same
 * address and the kernel spreads connections and datagrams among them. */
#define LSV_NET_REUSEPORT 1
int lsv_net_listen_flags(const lsv_addr_t *a, int backlog, int flags,
                         char err[LSV_ERRLEN]);

/* Connects a blocking socket to host:port (TCP or UDP) or a unix path,
 * giving up after timeout seconds. Returns the fd, or -1 with errno set
 * (ETIMEDOUT on timeout) and a message in err. */
int lsv_net_connect(const lsv_addr_t *a, double timeout,
                    char err[LSV_ERRLEN]);

/* Formats a socket address as "1.2.3.4:80", "[::1]:80" or the unix path
 * (or "unix" for an unnamed one). Returns out. */
char *lsv_net_format(const struct sockaddr *sa, socklen_t len,
                     char out[LSV_ADDRSTRLEN]);

/* Splits a socket address into its IP text and port (port -1 for unix). */
void lsv_net_split(const struct sockaddr *sa, socklen_t len,
                   char ip[LSV_ADDRSTRLEN], int *port);

/* Formats the local address of fd (see lsv_net_format). */
char *lsv_net_local(int fd, char out[LSV_ADDRSTRLEN]);

/* Sets O_NONBLOCK on or off. Returns LSV_OK or LSV_ERR. */
int lsv_net_nonblock(int fd, int on);

#endif
