/* conn.h: a stream connection: lifecycle, buffered I/O, framing loop. */
#ifndef LSV_CONN_H
#define LSV_CONN_H

#include "lsv.h"
#include "server.h"

#include <netinet/in.h>
#include <sys/socket.h>

enum {
    LSV_CONN_PAUSED = 1 << 0,     /* conn:pause() */
    LSV_CONN_BLOCKED = 1 << 1,    /* output over the high-water mark */
    LSV_CONN_EOF = 1 << 2,        /* the peer will send nothing more */
    LSV_CONN_CLOSING = 1 << 3,    /* no more input; closes once flushed */
    LSV_CONN_ABORT = 1 << 4,      /* closing without flushing */
    LSV_CONN_PENDING = 1 << 5,    /* on srv->pending */
    LSV_CONN_CONNECTED = 1 << 6,  /* on_connect ran, so on_close is due */
    LSV_CONN_DRAIN = 1 << 7,      /* the server is stopping */
    LSV_CONN_READING = 1 << 8,    /* rio started */
    LSV_CONN_WRITING = 1 << 9,    /* wio started */
    LSV_CONN_TIMER = 1 << 10,     /* timer armed */
    LSV_CONN_STREAM = 1 << 11,    /* read by tasks, not on_message */
    LSV_CONN_OUTBOUND = 1 << 12,  /* made by luaserv.connect */
    LSV_CONN_CONNECTING = 1 << 13,/* outbound connect in progress */
    LSV_CONN_FULL = 1 << 14,      /* stream read-ahead is full */
    LSV_CONN_AGAIN = 1 << 15,     /* on srv->again or srv->again_next */
    LSV_CONN_PARTIAL = 1 << 16    /* the buffer ends in an incomplete frame */
};

/* Seconds a peer that takes none of its queued output may go on so before
 * it counts as not reading (a callback-style conn's queue past 8 times
 * the high-water mark, a task waiting to write to a callback-style conn):
 * the conn's idle timeout when it has one, else this. */
#define LSV_OUTPUT_STALL 10.0

/* A stream conn reads ahead at most this much while no task reads. */
#define LSV_READ_AHEAD (64u * 1024)

struct lsv_conn {
    lsv_server_t *srv;
    lsv_listener_t *listener;
    lsv_conn_t *prev, *next;      /* srv->conns */
    lsv_conn_t *next_pending;     /* srv->pending */
    lsv_task_t *task;             /* the handle() task serving it */
    lsv_task_t *reader;           /* a task waiting for its input */
    lsv_task_t *writer;           /* a task waiting for its output to drain */
    lsv_conn_t *next_again;       /* srv->again */
    ev_io rio;
    ev_io wio;
    ev_timer timer;               /* idle timeout, then close linger */
    lsv_buf_t in;
    lsv_buf_t out;
    lsv_frame_spec_t framing;
    uint32_t hint;                /* framer scan position in `in` */
    uint32_t flags;
    int fd;
    int ud_ref;                   /* registry ref to the Lua userdata */
    int busy;                     /* Lua calls in progress on this conn */
    socklen_t peer_len;
    uint64_t id;
    ev_tstamp last_active;
    ev_tstamp started;
    uint64_t nin, nout;           /* bytes, for the access log and conns */
    uint64_t nmsg;
    double msg_t0;                /* stream: a read returned a frame then */
    ev_tstamp out_since;          /* last output progress: a send took
                                   * bytes, or output was queued onto none */
    ev_tstamp timeout;            /* idle timeout, 0 = none */
    const char *close_reason;     /* static string */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
};

/* Logs about c: its id, peer and listener go with the message (fields
 * in JSON, a prefix in text). Needs log.h and net.h. */
#define conn_log(level, c, ...) \
    do { \
        if ((level) >= lsv_log_level) { \
            char peer_[LSV_ADDRSTRLEN]; \
            lsv_log_ctx_t ctx_ = { (c)->listener->name, \
                lsv_net_format(&(c)->peer.sa, (c)->peer_len, peer_), \
                (c)->id }; \
            lsv_log_writec((level), &ctx_, __VA_ARGS__); \
        } \
    } while (0)

/* Takes ownership of an accepted, non-blocking fd: creates the conn, runs
 * on_connect and starts reading. The conn may already be closed when this
 * returns. Never raises. */
void lsv_conn_accept(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                     socklen_t salen);

/* Queues n bytes for the peer; they are written before the loop next polls.
 * Returns LSV_OK, or LSV_ERR if the conn is closing (the bytes are dropped)
 * or the bytes cannot be queued: over --max-output, over 8 high-water marks
 * for a peer that has read nothing for a while, or out of memory. Then c
 * has failed: logged, on_error called, closed with reason "overflow"
 * (freed later if a Lua call on it is running, else now). */
int lsv_conn_write(lsv_conn_t *c, const char *p, size_t n);

/* Checks that n more bytes of output may be queued on c, as
 * lsv_conn_write does, failing c if not. Returns LSV_OK or LSV_ERR. A
 * writer that queues a reply in pieces calls it once for the whole. */
int lsv_conn_check_room(lsv_conn_t *c, size_t n);

/* A task waits on c's output (stream.c): with an idle timeout, a write
 * that sees no progress for that long fails with nil, "timeout". */
void lsv_conn_watch_write(lsv_conn_t *c);

/* Stops reading; closes once queued output is written (or after a linger
 * timeout if the peer does not read it), calling on_close(conn, reason).
 * reason must be a static string. Safe to call from inside a Lua call on
 * this conn: the free is deferred until the call returns. */
void lsv_conn_close(lsv_conn_t *c, const char *reason);

/* Like lsv_conn_close but drops queued output. */
void lsv_conn_abort(lsv_conn_t *c, const char *reason);

void lsv_conn_pause(lsv_conn_t *c);
void lsv_conn_resume(lsv_conn_t *c);
void lsv_conn_set_timeout(lsv_conn_t *c, double seconds);
/* Changes framing; the framer restarts on the bytes already buffered. */
void lsv_conn_set_framing(lsv_conn_t *c, const lsv_frame_spec_t *spec);

/* Creates an outbound stream conn for a connecting non-blocking fd (takes
 * ownership) and watches for the connect to finish. */
lsv_conn_t *lsv_conn_outbound(lsv_server_t *srv, int fd,
                              const struct sockaddr *sa, socklen_t salen);

/* Starts reading (stream conns call it when a task wants input). */
void lsv_conn_want_input(lsv_conn_t *c);

/* The handle() task of c ended; err is its error with traceback, or NULL
 * when it returned. The conn closes once its output is written. */
void lsv_conn_handle_done(lsv_conn_t *c, const char *err);

/* Task t is going away: forget it. */
void lsv_conn_task_gone(lsv_conn_t *c, lsv_task_t *t);
/* Gives every conn on srv->again its next turn of input work. */
void lsv_conn_run_again(lsv_server_t *srv);

/* Writes the output of every conn on srv->pending (the prepare watcher). */
void lsv_conn_flush_pending(lsv_server_t *srv);

/* The server is stopping: each conn answers what it has, then closes. */
void lsv_conn_drain_all(lsv_server_t *srv);

/* Closes every conn now, dropping output (the shutdown timeout). */
void lsv_conn_abort_all(lsv_server_t *srv, const char *reason);

#endif
