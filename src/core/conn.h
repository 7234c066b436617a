/* conn.h: a stream connection: socket, input buffer and framer, output
 * buffer and backpressure, timeouts, close; it reports to the code serving
 * it through a table of callbacks (lsv_conn_type_t). The struct is private
 * to src/core (conn_int.h); everyone else uses these functions. */
#ifndef LSV_CONN_H
#define LSV_CONN_H

#include "lsv.h"
#include "server.h"

#include <sys/socket.h>

/* How the code serving a conn hears of it, as Redis's connection.h hands
 * a ConnectionType its handlers. Two users today, both in src/lua: the
 * callback style (dispatch.c) and the stream style (stream.c). A conn has
 * one of two input modes, set by its type:
 * - push (frame != NULL): the conn frames its input with its framing and
 *   hands each complete frame to frame(), between begin() and end(); the
 *   idle timeout applies to the conn (timeout());
 * - pull (frame == NULL): input is read ahead as room() allows and
 *   input() hears of it; the user takes frames itself (lsv_conn_take)
 *   and calls lsv_conn_want_input when it needs more.
 * Every callback runs with the conn held (lsv_conn_hold): it may close
 * the conn, which is freed only once the callback returns. */
typedef struct lsv_conn_type {
    const char *style;     /* "callback", "stream": what core.conns shows */
    /* push: a run of frames begins / ends (the callbacks may be NULL) */
    void (*begin)(lsv_conn_t *c);
    void (*end)(lsv_conn_t *c);
    /* push: one complete frame, p[0, n) borrowed for the call */
    void (*frame)(lsv_conn_t *c, const char *p, size_t n);
    /* pull: new input was buffered, or the input ended */
    void (*input)(lsv_conn_t *c);
    /* pull: how many bytes one read may add now; 0 stops reading until
     * lsv_conn_want_input */
    size_t (*room)(const lsv_conn_t *c);
    /* queued output shrank (a send took some); may be NULL */
    void (*drained)(lsv_conn_t *c);
    /* push: the idle timeout passed; returns 1 to keep the conn open */
    int (*timeout)(lsv_conn_t *c);
    /* a watched write (lsv_conn_watch_write) made no progress for the
     * idle timeout: `seconds` since the last */
    void (*stalled)(lsv_conn_t *c, double seconds);
    /* the conn fails for msg (a frame over its max, output it cannot
     * queue); it closes after this returns */
    void (*error)(lsv_conn_t *c, const char *msg);
    /* an outbound connect finished: err is 0 or an errno (the conn is
     * aborted after this returns) */
    void (*connected)(lsv_conn_t *c, int err);
    /* the conn stops reading (abort: its output is dropped too) */
    void (*closing)(lsv_conn_t *c, int abort);
    /* the conn is about to be freed, for reason (a static string) */
    void (*closed)(lsv_conn_t *c, const char *reason);
} lsv_conn_type_t;

/* Seconds a peer that takes none of its queued output may go on so before
 * it counts as not reading (a push conn's queue past 8 times the
 * high-water mark, a task waiting to write to a push conn): the conn's
 * idle timeout when it has one, else this. */
#define LSV_OUTPUT_STALL 10.0

/* A pull conn reads ahead at most this much while its user wants none. */
#define LSV_READ_AHEAD (64u * 1024)

/* Takes ownership of an accepted, non-blocking fd, and of what its
 * stages learned (acc: the PROXY header, the TLS session; NULL for
 * none): creates the conn on l with framing and type, not yet reading
 * (lsv_conn_start). A TLS session becomes the conn's transport. */
lsv_conn_t *lsv_conn_new(lsv_listener_t *l, int fd, const struct sockaddr *sa,
                         socklen_t salen, const lsv_frame_spec_t *framing,
                         const lsv_conn_type_t *type, lsv_accepted_t *acc);

/* The PROXY header c came with (conn.proxy), or NULL. */
const lsv_proxy_info_t *lsv_conn_proxy(const lsv_conn_t *c);

/* Formats the address c's client connected to: the PROXY header's dst,
 * else the socket's own (getsockname). Returns out. */
char *lsv_conn_local(const lsv_conn_t *c, char *out /* LSV_ADDRSTRLEN */);

/* Starts c: reads, and in push mode arms the idle timeout. Call it after
 * the user's set-up, with c not held. Returns LSV_OK, or LSV_ERR when c
 * was closed meanwhile and is freed now (or has only output to write). */
int lsv_conn_start(lsv_conn_t *c);

/* Creates an outbound conn of type for a connecting non-blocking fd
 * (takes ownership); type->connected hears how the connect ended. */
lsv_conn_t *lsv_conn_outbound(lsv_server_t *srv, int fd,
                              const struct sockaddr *sa, socklen_t salen,
                              const lsv_conn_type_t *type);

/* Changes how c is served (the callback style turning into the stream
 * style after on_connect). */
void lsv_conn_set_type(lsv_conn_t *c, const lsv_conn_type_t *type);

/* A call chain that may close c holds it; release frees c if it closed
 * meanwhile. lsv_conn_release returns LSV_ERR when c is gone (or only
 * flushing its last output), else LSV_OK. */
void lsv_conn_hold(lsv_conn_t *c);
int lsv_conn_release(lsv_conn_t *c);

/* Queues n bytes for the peer; they are written before the loop next polls.
 * Returns LSV_OK, or LSV_ERR if the conn is closing (the bytes are dropped)
 * or the bytes cannot be queued: over --max-output, over 8 high-water marks
 * for a peer that has read nothing for a while, or out of memory. Then c
 * has failed: logged, type->error called, closed with reason "overflow"
 * (freed later if held, else now). */
int lsv_conn_write(lsv_conn_t *c, const char *p, size_t n);

/* Checks that n more bytes of output may be queued on c, as
 * lsv_conn_write does, failing c if not. Returns LSV_OK or LSV_ERR. A
 * writer that queues a reply in pieces calls it once for the whole. */
int lsv_conn_check_room(lsv_conn_t *c, size_t n);

/* Appends n bytes already checked with lsv_conn_check_room. Returns
 * LSV_ERR after failing c when memory runs out; lsv_conn_queued after
 * the last piece. */
int lsv_conn_append(lsv_conn_t *c, const char *p, size_t n);
void lsv_conn_queued(lsv_conn_t *c);

/* Makes room for n more bytes of output, already checked with
 * lsv_conn_check_room, and returns where they go: the caller copies
 * exactly n bytes there and calls lsv_conn_commit, with no call that may
 * touch c in between. One reservation for a reply in pieces instead of an
 * append per piece. Returns NULL after failing c when memory runs out, as
 * lsv_conn_append does. */
char *lsv_conn_reserve(lsv_conn_t *c, size_t n);
/* Queues the n bytes copied at lsv_conn_reserve's pointer, with
 * lsv_conn_queued's bookkeeping. */
void lsv_conn_commit(lsv_conn_t *c, size_t n);

/* A task waits on c's output: in pull mode, with an idle timeout, a
 * write that sees no progress for that long reaches type->stalled. */
void lsv_conn_watch_write(lsv_conn_t *c);

/* Stops reading; closes once queued output is written (or after a linger
 * timeout if the peer does not read it), then type->closed(c, reason).
 * reason must be a static string. Safe while c is held: the free waits
 * for the release. */
void lsv_conn_close(lsv_conn_t *c, const char *reason);

/* Like lsv_conn_close but drops queued output. */
void lsv_conn_abort(lsv_conn_t *c, const char *reason);

void lsv_conn_pause(lsv_conn_t *c);
void lsv_conn_resume(lsv_conn_t *c);
void lsv_conn_set_timeout(lsv_conn_t *c, double seconds);
/* Changes framing; the framer restarts on the bytes already buffered.
 * Returns LSV_OK, or LSV_ERR out of memory (c's framing unchanged). */
int lsv_conn_set_framing(lsv_conn_t *c, const lsv_frame_spec_t *spec);

/* Where a pull-mode user keeps its read's hint for lsv_conn_take: the
 * field push mode keeps its framer's state in. lsv_conn_end_input resets
 * it; its user resets it to start a new read. */
size_t *lsv_conn_pull_hint(lsv_conn_t *c);

/* Takes the next frame by `want` from c's buffered input (pull mode):
 * returns the bytes consumed (> 0) with *p, *n the frame (borrowed: valid
 * until c next reads), or what lsv_frame_next returns otherwise
 * (LSV_FRAME_PARTIAL, _TOO_LONG, _TRUNCATED), with *hint kept for the next
 * try of the same request (start it at 0). At the end of input a
 * truncated FIXED frame comes back whole as what is left. */
ssize_t lsv_conn_take(lsv_conn_t *c, const lsv_frame_spec_t *want,
                      size_t *hint, const char **p, size_t *n);

/* A protocol framing (RESP, HTTP, WS) refused c's input with r (< 0):
 * queues the protocol's error reply (lsv_frame_reject), logs one info
 * line, tells c's user (type->error) and closes c, in either mode.
 * Frees c unless the caller holds it. */
void lsv_conn_reject(lsv_conn_t *c, const lsv_frame_spec_t *spec, ssize_t r);

/* Ends c's input: what is buffered is dropped, reading stops; writing
 * still works (a stream that cannot be resynchronised). */
void lsv_conn_end_input(lsv_conn_t *c);

/* A pull conn's user wants input (or took some): reading restarts if
 * room() allows. */
void lsv_conn_want_input(lsv_conn_t *c);

/* The conn's state, for its users. */
lsv_server_t *lsv_conn_server(const lsv_conn_t *c);
lsv_listener_t *lsv_conn_listener(const lsv_conn_t *c);
uint64_t lsv_conn_id(const lsv_conn_t *c);
const lsv_conn_type_t *lsv_conn_type(const lsv_conn_t *c);
/* The user's pointer (src/lua: the conn's userdata), NULL at first. */
void *lsv_conn_data(const lsv_conn_t *c);
void lsv_conn_set_data(lsv_conn_t *c, void *data);
const struct sockaddr *lsv_conn_peer(const lsv_conn_t *c, socklen_t *len);
int lsv_conn_fd(const lsv_conn_t *c);
const lsv_frame_spec_t *lsv_conn_framing(const lsv_conn_t *c);
double lsv_conn_timeout(const lsv_conn_t *c);
/* Bytes of input buffered, and of output queued, not yet written. */
size_t lsv_conn_buffered(const lsv_conn_t *c);
size_t lsv_conn_pending(const lsv_conn_t *c);

/* Sends up to n bytes of the open file fd from *off (advanced) to c's
 * peer through its transport's sendfile, past the output queue, which
 * must be empty: queued bytes would be overtaken. Returns the bytes sent
 * (0 at the file's end), LSV_AGAIN when the socket is full, or LSV_ERR
 * with errno: EBUSY (output is queued), ENOTSUP (the transport cannot),
 * EPIPE (c is closing), or sendfile's own. Counts the bytes as output.
 * In conn_out.c. */
ssize_t lsv_conn_sendfile(lsv_conn_t *c, int fd, off_t *off, size_t n);
/* closing: no more input, maybe output left; at_eof: the input ended
 * (the peer's end, a close, or lsv_conn_end_input); draining: the server
 * is stopping; outbound: made by lsv_conn_outbound. */
int lsv_conn_is_closing(const lsv_conn_t *c);
int lsv_conn_at_eof(const lsv_conn_t *c);
int lsv_conn_is_draining(const lsv_conn_t *c);
int lsv_conn_is_outbound(const lsv_conn_t *c);
/* c failed (its output could not be queued, or it was aborted): what its
 * user still queues is dropped. */
int lsv_conn_has_failed(const lsv_conn_t *c);

/* What core.conns() lists about c. */
typedef struct lsv_conn_info {
    double age;
    uint64_t bytes_in, bytes_out, messages;
} lsv_conn_info_t;
void lsv_conn_info(const lsv_conn_t *c, lsv_conn_info_t *info);

/* Counts one message on c that its user framed (pull mode). */
void lsv_conn_count_message(lsv_conn_t *c);

/* Logs about c: its id, peer and listener go with the message (fields
 * in JSON, a prefix in text). */
void lsv_conn_log(int level, const lsv_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Gives every conn on srv->again its next turn of input work. */
void lsv_conn_run_again(lsv_server_t *srv);

/* Writes the output of every conn on srv->pending (the prepare watcher). */
void lsv_conn_flush_pending(lsv_server_t *srv);

/* The server is stopping: each conn answers what it has, then closes. */
void lsv_conn_drain_all(lsv_server_t *srv);

/* Ends the loop if a stopping server has nothing left that holds the
 * stop: no conn but those of health listeners (called as each conn
 * goes). */
void lsv_conn_maybe_done(lsv_server_t *srv);

/* Closes every conn now, dropping output (the shutdown timeout). */
void lsv_conn_abort_all(lsv_server_t *srv, const char *reason);

/* Each open inbound conn of srv in turn: for (c = lsv_conn_first(srv); c;
 * c = lsv_conn_next(c)). */
lsv_conn_t *lsv_conn_first(const lsv_server_t *srv);
lsv_conn_t *lsv_conn_next(const lsv_conn_t *c);

#endif
