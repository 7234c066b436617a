/* upgrade.c: the pid file and the zero-downtime binary upgrade (SIGUSR2). */
#include "lsv.h"
#include "upgrade.h"
#include "core_module.h"
#include "listener.h"
#include "log.h"
#include "notify.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ENV_FDS "LUASERV_UPGRADE_FDS"
#define ENV_READY "LUASERV_UPGRADE_READY"
#define MAX_FDS 256
/* Seconds between the hand-over (no more accepting) and the drain. */
#define HANDOVER_GRACE 1.0
/* A new generation not serving after its load's bounds (--handler-timeout
 * for each script's chunk, --load-timeout for on_load; LOAD_TIMEOUT_NEVER
 * when that is 0) and this many seconds more is killed. */
#define UPGRADE_MARGIN 5.0
#define LOAD_TIMEOUT_NEVER 30.0

extern char **environ;

static char **saved_argv;
static const char *pid_file;
static int ready_fd = -1;    /* a new generation's: the old one's pipe */
static int handed_over;
static int passed[MAX_FDS];  /* a new generation's: the sockets it got */
static int npassed;

/* The upgrade in flight, in the old generation. */
static struct {
    lsv_server_t *srv;
    lsv_upgrade_fds_fn fds;
    lsv_upgrade_quiet_fn quiet;
    pid_t pid;               /* the new generation; 0 when none */
    int pipe_fd;             /* its ready pipe's read end */
    int exec_errno;          /* what execve said, when it failed */
    ev_signal usr2;
    ev_io ready_io;
    ev_child child;
    ev_timer grace;
    ev_timer timeout;        /* the new generation's time to serve */
    int timed_out;           /* it ran out: killed, its exit is no news */
    int state;               /* the last one: LSV_UPGRADE_* (upgrade.h) */
    char outcome[1024];      /* and how it ended */
} up = { .pipe_fd = -1 };

/* --- the pid file ------------------------------------------------------- */

/* At exit: removes the pid file if it still names this process (a new
 * generation, or a worker, leaves it alone). */
static void remove_pid_file(void)
{
    if (pid_file == NULL) return;
    FILE *f = fopen(pid_file, "r");
    long pid = 0;
    if (f == NULL) return;
    if (fscanf(f, "%ld", &pid) != 1) pid = 0;
    fclose(f);
    if (pid == (long)getpid()) unlink(pid_file);
}

/* Writes our pid to the pid file through a temporary file and a rename,
 * so a reader never sees it half written. Returns LSV_OK or LSV_ERR. */
static int write_pid_file(void)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", pid_file, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL) return LSV_ERR;
    int ok = fprintf(f, "%d\n", (int)getpid()) > 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, pid_file) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return LSV_ERR;
    }
    return LSV_OK;
}

void lsv_upgrade_init(int argc, char **argv, const char *path)
{
    (void)argc;
    saved_argv = argv;
    lsv_upgrade_pid_file(path);
}

void lsv_upgrade_pid_file(const char *path)
{
    static int registered;
    pid_file = path;
    if (path && !registered) {
        registered = 1;
        atexit(remove_pid_file);
    }
}

/* --- the new generation ------------------------------------------------- */

int lsv_upgrade_take_fds(lsv_server_t *srv)
{
    (void)srv;
    const char *list = getenv(ENV_FDS);
    const char *ready = getenv(ENV_READY);
    if (ready) {
        ready_fd = atoi(ready);
        if (fcntl(ready_fd, F_SETFD, FD_CLOEXEC) != 0) ready_fd = -1;
    }
    for (const char *p = list; p && *p; ) {
        char *end;
        long fd = strtol(p, &end, 10);
        if (end == p) break;
        if (fd > 2 && fcntl((int)fd, F_SETFD, FD_CLOEXEC) == 0 &&
            lsv_notify_add_fd(srv, (int)fd) == LSV_OK && npassed < MAX_FDS)
            passed[npassed++] = (int)fd;
        p = *end == ',' ? end + 1 : end;
    }
    unsetenv(ENV_FDS);
    unsetenv(ENV_READY);
    if (list) lsv_debug("upgrade: took %d sockets from the old generation",
                        npassed);
    return npassed;
}

int lsv_upgrade_passed(int fd)
{
    for (int i = 0; i < npassed; i++)
        if (fd >= 0 && passed[i] == fd) return 1;
    return 0;
}

void lsv_upgrade_own(lsv_server_t *srv)
{
    for (lsv_listener_t *l = srv->listeners; l; l = l->next)
        if (lsv_upgrade_passed(l->fd)) l->inherited = 0;
}

void lsv_upgrade_ready(lsv_server_t *srv)
{
    (void)srv;
    if (pid_file && write_pid_file() != LSV_OK) {
        fprintf(stderr, "luaserv: --pid-file %s: %s\n", pid_file,
                strerror(errno));
        exit(1);
    }
    if (ready_fd < 0) return;
    ssize_t w;
    do w = write(ready_fd, "R", 1); while (w < 0 && errno == EINTR);
    close(ready_fd);
    ready_fd = -1;
    lsv_info("upgrade: serving; told the old generation to stop");
}

/* --- the old generation ------------------------------------------------- */

/* Where the binary is installed: /proc/self/exe's target now, less the
 * " (deleted)" the kernel adds once a new build replaced the file, so a
 * build installed over it (by rename) is what runs. Returns LSV_OK. */
static int installed_path(char *buf, size_t size)
{
    static const char tag[] = " (deleted)";
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n < 0) return LSV_ERR;
    buf[n] = '\0';
    size_t t = sizeof tag - 1;
    if ((size_t)n > t && strcmp(buf + n - t, tag) == 0) buf[n - t] = '\0';
    return LSV_OK;
}

/* Our environment without our own variables, plus the two that pass fds
 * (n of them) and wfd. The strings live in static buffers. */
static char **child_env(const int *fds, int n, int wfd)
{
    static char fdvar[MAX_FDS * 12 + 32], readyvar[48];
    size_t count = 0, len = (size_t)snprintf(fdvar, sizeof fdvar, "%s=",
                                             ENV_FDS);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(fdvar + len, sizeof fdvar - len, "%s%d",
                                i ? "," : "", fds[i]);
    snprintf(readyvar, sizeof readyvar, "%s=%d", ENV_READY, wfd);
    while (environ[count]) count++;
    char **env = lsv_calloc(count + 3, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < count; i++)
        if (strncmp(environ[i], "LUASERV_UPGRADE_", 16) != 0)
            env[k++] = environ[i];
    env[k++] = fdvar;
    env[k++] = readyvar;
    return env;
}

/* In the child just forked: clears FD_CLOEXEC on the passed fds alone,
 * unblocks every signal (libev may have blocked some) and execs. If the
 * exec fails, tells the parent why through wfd. Never returns. */
static void exec_child(const char *path, char **env, const int *fds, int n,
                       int wfd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int i = 0; i < n; i++) fcntl(fds[i], F_SETFD, 0);
    fcntl(wfd, F_SETFD, 0);
    execve(path, saved_argv, env);
    char msg[1 + sizeof(int)];
    int e = errno;
    msg[0] = 'E';
    memcpy(msg + 1, &e, sizeof e);
    if (write(wfd, msg, sizeof msg) < 0) _exit(127);
    _exit(127);
}

/* The listening sockets of srv's listeners (the single process). */
static int listener_fds(lsv_server_t *srv, int *fds, int max)
{
    int n = 0;
    for (lsv_listener_t *l = srv->listeners; l && n < max; l = l->next)
        if (l->fd >= 0) fds[n++] = l->fd;
    return n;
}

/* Ends the upgrade in flight (its watchers and pipe); the child, if it
 * still runs, is left to itself. */
static void finish(struct ev_loop *loop)
{
    ev_io_stop(loop, &up.ready_io);
    ev_child_stop(loop, &up.child);
    ev_timer_stop(loop, &up.timeout);
    if (up.pipe_fd >= 0) close(up.pipe_fd);
    up.pipe_fd = -1;
    up.pid = 0;
    up.exec_errno = 0;
    up.timed_out = 0;
}

/* Stops srv's listeners accepting (they stay the new generation's: no
 * unix socket file is unlinked); its connections go on as before. */
static void stop_accepting(lsv_server_t *srv)
{
    for (lsv_listener_t *l = srv->listeners; l; l = l->next)
        l->inherited = 1;
    lsv_listener_close_all(srv);
}

/* The grace after the hand-over is over: SIGTERM runs this process's own
 * stop (drain, exit 0). */
static void grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    kill(getpid(), SIGTERM);
}

/* The new generation serves: hand over. This one stops accepting at
 * once, and drains only HANDOVER_GRACE later, so a connection it took
 * just before gets its first request in and answered (a drain closes a
 * connection that has sent nothing yet). */
static void hand_over(struct ev_loop *loop)
{
    lsv_info("upgrade: the new generation (pid %d) serves; this one (pid "
             "%d) stops accepting and drains", (int)up.pid, (int)getpid());
    handed_over = 1;
    up.state = LSV_UPGRADE_DONE;
    snprintf(up.outcome, sizeof up.outcome, "the new generation (pid %d) "
             "serves", (int)up.pid);
    if (up.quiet) up.quiet(up.srv);   /* a master's workers */
    stop_accepting(up.srv);
    finish(loop);
    ev_timer_set(&up.grace, HANDOVER_GRACE, 0.);
    ev_timer_start(loop, &up.grace);
}

/* A byte on the ready pipe: 'R' (the new generation serves) or 'E' and
 * errno (it could not exec; its exit follows). */
static void ready_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    char msg[1 + sizeof(int)];
    ssize_t r = read(up.pipe_fd, msg, sizeof msg);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (r >= 1 && msg[0] == 'R') {
        hand_over(loop);
        return;
    }
    if (r == (ssize_t)sizeof msg && msg[0] == 'E')
        memcpy(&up.exec_errno, msg + 1, sizeof up.exec_errno);
    ev_io_stop(loop, w);   /* its exit says the rest */
}

/* Ends the upgrade in flight as failed: logs why (fmt) and keeps it for
 * the admin client. */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(up.outcome, sizeof up.outcome, fmt, ap);
    va_end(ap);
    up.state = LSV_UPGRADE_FAILED;
    if (up.srv) up.srv->draining &= ~LSV_DRAIN_UPGRADE;   /* serving on */
    lsv_error("upgrade failed: %s; still serving (pid %d)", up.outcome,
              (int)getpid());
}

/* The new generation exited before it served: the upgrade failed, and
 * this generation serves on. */
static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    char exe[4096];
    int st = w->rstatus;
    if (up.timed_out) {          /* the kill after the timeout: said */
        finish(loop);
        return;
    }
    /* Its exit may come before the pipe's watcher read why exec failed:
     * the message is in the pipe already, so read it now. */
    struct pollfd pf = { up.pipe_fd, POLLIN, 0 };
    char msg[1 + sizeof(int)];
    if (up.exec_errno == 0 && up.pipe_fd >= 0 && poll(&pf, 1, 0) > 0 &&
        read(up.pipe_fd, msg, sizeof msg) == (ssize_t)sizeof msg &&
        msg[0] == 'E')
        memcpy(&up.exec_errno, msg + 1, sizeof up.exec_errno);
    if (up.exec_errno)
        fail("cannot exec %s: %s", installed_path(exe, sizeof exe) == LSV_OK
             ? exe : "the binary", strerror(up.exec_errno));
    else if (WIFSIGNALED(st))
        fail("the new generation (pid %d) was killed by signal %d (%s) "
             "before it was serving", w->rpid, WTERMSIG(st),
             strsignal(WTERMSIG(st)));
    else
        fail("the new generation (pid %d) exited with status %d before it "
             "was serving (its own message in the log says why)", w->rpid,
             WEXITSTATUS(st));
    finish(loop);
}

/* How long the new generation may take to serve: its load's bounds and
 * UPGRADE_MARGIN. */
static double upgrade_timeout(const lsv_server_t *srv)
{
    double load = srv->opt.load_timeout > 0 ? srv->opt.load_timeout
                                            : LOAD_TIMEOUT_NEVER;
    return load + srv->opt.handler_timeout + UPGRADE_MARGIN;
}

/* The new generation did not serve in time (a script that hangs at load,
 * say): it is killed (its workers follow by their parent-death signal),
 * and this generation serves on; its exit, reaped by child_cb, adds
 * nothing. Its ready pipe is not read any more: a late 'R' is no hand-over. */
static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    (void)w;
    fail("the new generation (pid %d) timed out: not serving after %g s;"
         " killed it", (int)up.pid, upgrade_timeout(up.srv));
    up.timed_out = 1;
    ev_io_stop(loop, &up.ready_io);
    kill(up.pid, SIGKILL);
}

/* Forks and execs the new generation with our fds. Returns LSV_OK, or
 * LSV_ERR after logging why (nothing started). */
static int start_child(lsv_server_t *srv, const char *exe)
{
    int fds[MAX_FDS], p[2];
    int n = up.fds ? up.fds(srv, fds, MAX_FDS)
                   : listener_fds(srv, fds, MAX_FDS);
    if (pipe2(p, O_CLOEXEC) != 0) {
        fail("pipe: %s", strerror(errno));
        return LSV_ERR;
    }
    char **env = child_env(fds, n, p[1]);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) exec_child(exe, env, fds, n, p[1]);
    int e = errno;
    free(env);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        fail("fork: %s", strerror(e));
        return LSV_ERR;
    }
    up.pid = pid;
    up.pipe_fd = p[0];
    lsv_info("upgrade: started %s (pid %d) with %d sockets; serving until "
             "it is ready", exe, (int)pid, n);
    return LSV_OK;
}

int lsv_upgrade_start(lsv_server_t *srv, char *err, size_t size)
{
    char exe[4096];
    if (up.pid) {
        snprintf(err, size, "an upgrade is already under way (pid %d)",
                 (int)up.pid);
        return LSV_AGAIN;
    }
    if (srv->stopping || (srv->draining & LSV_DRAIN_STOP) || handed_over) {
        snprintf(err, size, "stopping: no upgrade");
        return LSV_AGAIN;
    }
    up.state = LSV_UPGRADE_RUNNING;
    if (installed_path(exe, sizeof exe) != LSV_OK) {
        fail("/proc/self/exe: %s", strerror(errno));
    } else {
        lsv_info("upgrading to %s", exe);
        if (start_child(srv, exe) == LSV_OK) {
            /* From now until a failure, health checks answer 503. */
            srv->draining |= LSV_DRAIN_UPGRADE;
            ev_io_set(&up.ready_io, up.pipe_fd, EV_READ);
            ev_io_start(srv->loop, &up.ready_io);
            ev_child_set(&up.child, up.pid, 0);
            ev_child_start(srv->loop, &up.child);
            ev_timer_set(&up.timeout, upgrade_timeout(srv), 0.);
            ev_timer_start(srv->loop, &up.timeout);
            return LSV_OK;
        }
    }
    snprintf(err, size, "%s", up.outcome);
    return LSV_ERR;
}

int lsv_upgrade_status(char *msg, size_t size)
{
    snprintf(msg, size, "%s", up.state == LSV_UPGRADE_RUNNING ? "" :
             up.outcome);
    return up.state;
}

/* SIGUSR2: starts an upgrade, unless one is in flight or we stop. */
static void usr2_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    char err[1024];
    lsv_info("SIGUSR2: upgrading");
    if (lsv_upgrade_start(up.srv, err, sizeof err) == LSV_AGAIN)
        lsv_warn("SIGUSR2: %s", err);   /* refused (a failure is logged) */
}

static const lsv_core_upgrade_t core_upgrade = {
    .start = lsv_upgrade_start,
    .status = lsv_upgrade_status,
};

void lsv_upgrade_watch(lsv_server_t *srv, lsv_upgrade_fds_fn fds,
                       lsv_upgrade_quiet_fn quiet)
{
    up.srv = srv;
    up.fds = fds;
    up.quiet = quiet;
    ev_signal_init(&up.usr2, usr2_cb, SIGUSR2);
    ev_io_init(&up.ready_io, ready_cb, -1, EV_READ);
    ev_child_init(&up.child, child_cb, 0, 0);
    ev_timer_init(&up.grace, grace_cb, 0., 0.);
    ev_timer_init(&up.timeout, timeout_cb, 0., 0.);
    ev_signal_start(srv->loop, &up.usr2);
    lsv_core_set_upgrade(&core_upgrade);   /* admin `upgrade` */
}

/* SIGUSR2 in a worker: its master handed over to a new generation. */
static void worker_usr2_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    lsv_debug("upgrade: the master handed over; no more accepting");
    stop_accepting(up.srv);
}

void lsv_upgrade_worker(lsv_server_t *srv)
{
    struct ev_loop *loop = srv->loop;
    ev_signal_stop(loop, &up.usr2);
    ev_io_stop(loop, &up.ready_io);
    ev_child_stop(loop, &up.child);
    ev_timer_stop(loop, &up.grace);
    ev_timer_stop(loop, &up.timeout);
    if (up.pipe_fd >= 0) close(up.pipe_fd);
    up.pipe_fd = -1;
    if (ready_fd >= 0) close(ready_fd);   /* the master tells, not it */
    ready_fd = -1;
    up.srv = srv;
    ev_signal_init(&up.usr2, worker_usr2_cb, SIGUSR2);
    ev_signal_start(loop, &up.usr2);
}

int lsv_upgrade_handed_over(void)
{
    return handed_over;
}
