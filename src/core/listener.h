/* listener.h: listening sockets, stream and datagram. */
#ifndef LSV_LISTENER_H
#define LSV_LISTENER_H

#include "lsv.h"
#include "net.h"
#include "server.h"


/* Buckets of luaserv_handler_duration_seconds, in seconds. */
#define LSV_HIST_BUCKETS 12
extern const double lsv_hist_bounds[LSV_HIST_BUCKETS];

/* Per-listener counters: the metrics endpoint labels them by listener. */
typedef struct lsv_lstats {
    uint64_t conns_total;
    uint64_t conns_active;
    uint64_t messages;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t handler_errors;
    uint64_t reloads;
    uint64_t reload_failures;
    uint64_t udp_drops;       /* datagrams the kernel dropped (SO_RXQ_OVFL) */
    uint64_t proxy_headers[3];   /* PROXY headers read: v1, v2, local */
    uint64_t proxy_errors[4];    /* closed in the stage (handshake.h) */
    uint64_t proxy_empty;        /* closed before a byte: a TCP check */
    uint64_t tls_handshakes;     /* server handshakes done (tls.c) */
    uint64_t tls_resumed;        /* ... of them resumed sessions */
    uint64_t tls_errors[6];      /* failed, by LSV_TLS_ERR_* (tls.h) */
    uint64_t hist[LSV_HIST_BUCKETS + 1];   /* last: +Inf */
    uint64_t hist_count;
    double hist_sum;
} lsv_lstats_t;

/* What a listener asks of a client certificate (listen{ verify = }). */
enum {
    LSV_TLS_VERIFY_NONE = 0,     /* no client_ca: none is asked for */
    LSV_TLS_VERIFY_OPTIONAL,     /* asked for; one sent must verify */
    LSV_TLS_VERIFY_REQUIRE       /* asked for and required */
};

/* A listener's TLS settings: listen{ cert, key, client_ca, verify, alpn,
 * handshake_timeout } in the config, else the --tls-* flags. The strings
 * are borrowed: the options or the config keep them for the process's
 * life. cert and key are file names, or PEM text (starting "-----BEGIN")
 * as on_sni may return. */
typedef struct lsv_tls_opts {
    const char *cert;            /* PEM chain: leaf first */
    const char *key;
    const char *client_ca;       /* PEM CAs for client certs; NULL: none */
    int verify;                  /* LSV_TLS_VERIFY_*; REQUIRE by default
                                  * when client_ca is set */
    const unsigned char *alpn;   /* protocols offered, in preference
                                  * order, wire format (length-prefixed);
                                  * NULL: no ALPN */
    size_t alpn_len;
    double handshake_timeout;    /* seconds, 0 = none (default 10) */
} lsv_tls_opts_t;

/* Per-listener settings (config file listen{} keys, else the flags). */
typedef struct lsv_lopts {
    double idle_timeout;     /* 0 = none */
    size_t high_water;
    size_t low_water;
    uint32_t max_frame;      /* 0 = the framing's own max */
    size_t rcvbuf, sndbuf;   /* datagram kinds: socket buffers, 0 = kernel's */
    int proxy_protocol;      /* read a PROXY header first (handshake.c) */
    double proxy_timeout;    /* ... within this many seconds, 0 = none */
    int has_framing;         /* framing below overrides the handler's */
    lsv_frame_spec_t framing;
    lsv_tls_opts_t tls;      /* a tls:// listener's (tls.h) */
} lsv_lopts_t;

/* What a kind of listener adds to the stream kind's accepting: udp.c's
 * datagram kinds set it (lsv_udp_attach). Each may be NULL. */
typedef struct lsv_listener_ops {
    void (*start)(lsv_listener_t *l);   /* before its watcher starts */
    void (*drain)(lsv_listener_t *l);   /* a graceful stop, before closing */
    void (*free)(lsv_listener_t *l);    /* what it owns */
} lsv_listener_ops_t;

/* Records one handler call batch: n calls that took `seconds` together,
 * each observed as seconds / n. */
void lsv_listener_observe(lsv_listener_t *l, double seconds, uint64_t n);

struct lsv_listener {
    lsv_listener_t *next;
    lsv_server_t *srv;
    lsv_addr_t addr;
    int fd;
    struct lsv_script *script;  /* what serves it (src/lua/script.h); core
                                 * never looks inside */
    lsv_lopts_t opt;
    lsv_lstats_t stats;
    int inherited;              /* fd came from systemd: do not unlink */
    int internal;               /* luaserv's own channel (a worker's, to
                                 * its master): left out of the stats,
                                 * the metrics and the conns lists */
    int health;                 /* serves /healthz (--metrics, --health):
                                 * stays open through a stop until the
                                 * exit, and its conns do not hold it */
    lsv_frame_spec_t framing;   /* the handler's default framing */
    lsv_frame_ref_t *shared;    /* the framing the last conns accepted
                                 * here share (lsv_conn_share_framing) */
    char name[LSV_ADDRSTRLEN + 16];  /* "tcp://127.0.0.1:21567" */
    ev_io io;
    ev_timer pause_timer;       /* restarts accepting after EMFILE */
    ev_tstamp last_pause_log;
    uint64_t paused_count;      /* pauses not yet logged */
    const lsv_listener_ops_t *ops;     /* a kind's own, or NULL */
    /* A transport stage between accept and the conn (a PROXY header's,
     * lsv_handshake_attach): takes ownership of fd and calls
     * hooks->accept itself once done. NULL: accepted fds go straight to
     * hooks->accept. */
    void (*stage)(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                  socklen_t salen);
    lsv_dgram_t *dgram;         /* datagram kinds: the light conn state */
    struct lsv_tls_ctx *tls;    /* a tls:// listener's current context
                                 * (lsv_tls_listener_setup), else NULL */
};

/* Binds a listener for a, or adopts fd when it is >= 0 (a socket systemd
 * passed), and links it into srv->listeners (not started). Returns it, or
 * NULL with a message in err (errno set). */
lsv_listener_t *lsv_listener_open(lsv_server_t *srv, const lsv_addr_t *a,
                                  int fd, char err[LSV_ERRLEN]);

/* Starts watching every listener. */
void lsv_listener_start_all(lsv_server_t *srv);

/* Stops and closes every listener (unlinking unix socket files) but keeps
 * the structs so in-flight state stays valid; lsv_listener_free_all frees. */
void lsv_listener_close_all(lsv_server_t *srv);
void lsv_listener_free_all(lsv_server_t *srv);

/* The same for every listener but the health ones (l->health), which a
 * graceful stop keeps answering until the process exits. */
void lsv_listener_close_serving(lsv_server_t *srv);

static inline int lsv_listener_is_dgram(const lsv_listener_t *l)
{
    return l->addr.kind == LSV_NET_UDP || l->addr.kind == LSV_NET_UNIXGRAM;
}

#endif
