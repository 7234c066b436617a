/* workers.c: the master and its worker processes (--workers N). */
#include "lsv.h"
#include "workers.h"
#include "conn.h"
#include "core_module.h"
#include "guard.h"
#include "listener.h"
#include "log.h"
#include "lua_api.h"
#include "net.h"
#include "notify.h"
#include "sched.h"
#include "script.h"
#include "upgrade.h"
#include "vm.h"

#include <lauxlib.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* A worker that dies sooner than this after it started is crash-looping:
 * its restarts back off from BACKOFF_FIRST, doubling up to BACKOFF_MAX. */
#define QUICK_DEATH 1.0
#define BACKOFF_FIRST 0.5
#define BACKOFF_MAX 30.0
/* The master gives up when every worker has died this many times in a
 * row within QUICK_DEATH and none is running. */
#define GIVE_UP 4
/* After a stop, how much longer than --shutdown-timeout the workers get
 * before the master kills them. */
#define KILL_GRACE 5.0

/* One worker process the master keeps running. */
typedef struct slot {
    int id;                  /* 1..n */
    pid_t pid;               /* 0 while not running */
    int ready;               /* has said it serves */
    int fails;               /* quick deaths in a row */
    ev_tstamp started;
    int ready_fd;            /* the ready pipe's read end, or -1 */
    ev_child child;
    ev_io ready_io;
    ev_timer restart;
} slot_t;

static struct {
    lsv_server_t *srv;
    lsv_plan_t *plan;
    int n;
    slot_t *slots;
    int *fds;                /* fds[i * n + k - 1]: entry i's, worker k's */
    int all_ready;           /* the ready lines are out */
    int stopping;            /* a stop signal came: no more restarts */
    int status;              /* the master's exit status */
    ev_signal sigterm, sigint, sighup;
    ev_timer kill_timer;
    ev_timer drain_timer;    /* --drain-delay (a forked worker stops it) */
} m;

/* Where each entry's TCP or UDP sockets are bound (a port 0 resolved):
 * where a worker's socket closed during its backoff is bound again. */
static lsv_addr_t bound[LSV_MAX_LISTEN + 6];
/* Which entries took an old master's per-worker sockets in an upgrade. */
static char upgraded[LSV_MAX_LISTEN + 6];
/* Which entries' unix socket files the master made (and removes). */
static char own_file[LSV_MAX_LISTEN + 6];

/* Each worker's admin channel: a unix socket DIR/K in a directory of
 * mode 0700 the master makes, served by luaserv.admin in the worker, so
 * the master's admin socket and /metrics can ask every worker. */
static char control_dir[64];
static char control_spec[sizeof control_dir + 32];
static const char *admin_file;

static int self;             /* this worker's id; 0 in the master */
static pid_t master_pid;     /* in a worker: its master's */
static int self_ready_fd = -1;

static void spawn(slot_t *s);

int lsv_workers_count(const lsv_options_t *o)
{
    if (o->workers > 0) return o->workers;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1 : cpus > 1024 ? 1024 : (int)cpus;
}

/* --- the sockets -------------------------------------------------------- */

/* Whether entry e gets one socket per worker (TCP, UDP) rather than one
 * shared (a unix path cannot be bound twice; systemd passed one). */
static int per_worker(const lsv_plan_entry_t *e)
{
    return !e->builtin && (e->fd < 0 || upgraded[e - m.plan->e]) &&
           (e->addr.kind == LSV_NET_TCP || e->addr.kind == LSV_NET_UDP);
}

/* Whether fd is a SO_REUSEPORT socket an old master passed in a binary
 * upgrade: one of its workers' sockets, which ours take over. */
static int passed_per_worker(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    return lsv_upgrade_passed(fd) &&
           getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) == 0 && on;
}

/* Worker k's socket for entry e bound at b: another the old master
 * passed with that address, else a new one. Returns the fd or -1. */
static int worker_socket(const lsv_plan_entry_t *e, const lsv_addr_t *b,
                         int backlog, char *err)
{
    int fd = upgraded[e - m.plan->e] ? lsv_notify_match_fd(m.srv, b) : -1;
    if (fd >= 0) return fd;
    return lsv_net_listen_flags(b, backlog, LSV_NET_REUSEPORT, err);
}

/* Opens entry i's sockets for every worker. The first binds as asked
 * (port 0 picks one); the rest bind to the address it got, so every
 * worker listens on the same port. Returns LSV_OK, LSV_AGAIN for an
 * optional entry the host cannot have (no IPv6), or LSV_ERR after
 * printing why. */
static int open_entry(lsv_plan_entry_t *e, int *fds, int backlog)
{
    char err[LSV_ERRLEN];
    int flags = per_worker(e) ? LSV_NET_REUSEPORT : 0;
    int fd = e->fd, free_port = 1;
    /* SO_REUSEPORT would let us share a port another server of ours
     * holds the same way: bind it plainly first, so a port in use fails
     * the start as it does for the single process. */
    if (flags && fd < 0 && e->addr.port != 0) {
        int probe = lsv_net_listen_flags(&e->addr, backlog, 0, err);
        free_port = probe >= 0;
        if (free_port) close(probe);
    }
    if (fd < 0 && free_port) {
        mode_t mask = e->private_socket ? umask(077) : 0;  /* admin: 0600 */
        fd = lsv_net_listen_flags(&e->addr, backlog, flags, err);
        if (e->private_socket) umask(mask);
    }
    if (fd < 0) {
        if (e->optional && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
            lsv_info("%s (skipped)", err);
            return LSV_AGAIN;
        }
        fprintf(stderr, "luaserv: %s\n", err);
        return LSV_ERR;
    }
    fds[0] = fd;
    lsv_addr_t *b = &bound[e - m.plan->e];
    *b = e->addr;
    if (flags) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        char ip[LSV_ADDRSTRLEN];
        getsockname(fd, (struct sockaddr *)&ss, &len);
        lsv_net_split((struct sockaddr *)&ss, len, ip, &b->port);
        snprintf(b->host, sizeof b->host, "%s", ip);
    }
    for (int k = 1; k < m.n; k++) {
        fds[k] = flags ? worker_socket(e, b, backlog, err) : fd;
        if (fds[k] < 0) {
            fprintf(stderr, "luaserv: %s\n", err);
            return LSV_ERR;
        }
    }
    return LSV_OK;
}

/* Opens every entry's sockets into m.fds, dropping the optional entries
 * the host cannot have. Exits 1 when one cannot be opened. */
static void open_sockets(void)
{
    lsv_plan_t *p = m.plan;
    m.fds = lsv_calloc((size_t)(m.n * p->n) + 1, sizeof *m.fds);
    for (int i = 0; i < p->n; i++) {
        upgraded[i] = p->e[i].fd >= 0 && passed_per_worker(p->e[i].fd);
        own_file[i] = p->e[i].fd < 0 || lsv_upgrade_passed(p->e[i].fd);
        int rc = open_entry(&p->e[i], &m.fds[i * m.n], m.srv->opt.backlog);
        if (rc == LSV_ERR) exit(1);
        if (rc == LSV_AGAIN) {   /* drop it: the workers never see it */
            memmove(&p->e[i], &p->e[i + 1], (size_t)(p->n - i - 1) *
                    sizeof p->e[0]);
            p->n--;
            i--;
        }
    }
}

/* A worker waiting out a backoff: its own TCP and UDP sockets close, so
 * the kernel sends what arrives to the workers that run (what was queued
 * on them is reset). A worker restarted at once keeps them, queue and
 * all. */
static void close_own_sockets(int k)
{
    for (int i = 0; i < m.plan->n; i++) {
        int *fd = &m.fds[i * m.n + k - 1];
        if (per_worker(&m.plan->e[i]) && *fd >= 0) {
            close(*fd);
            *fd = -1;
        }
    }
}

/* Binds again the sockets close_own_sockets closed, before worker k
 * starts. Returns LSV_OK, or LSV_ERR after logging why. */
static int reopen_own_sockets(int k)
{
    char err[LSV_ERRLEN];
    for (int i = 0; i < m.plan->n; i++) {
        int *fd = &m.fds[i * m.n + k - 1];
        if (*fd >= 0) continue;
        *fd = lsv_net_listen_flags(&bound[i], m.srv->opt.backlog,
                                   LSV_NET_REUSEPORT, err);
        if (*fd < 0) {
            lsv_error("worker %d: %s", k, err);
            return LSV_ERR;
        }
    }
    return LSV_OK;
}

/* Removes the unix socket files the master bound, and the workers'
 * channels (at its exit). */
static void remove_socket_files(void)
{
    for (int k = 1; k <= m.n && control_dir[0]; k++) {
        char path[sizeof control_dir + 16];
        snprintf(path, sizeof path, "%s/%d", control_dir, k);
        unlink(path);
    }
    if (control_dir[0]) rmdir(control_dir);
    if (lsv_upgrade_handed_over()) return;   /* the new master's now */
    for (int i = 0; i < m.plan->n; i++) {
        const lsv_plan_entry_t *e = &m.plan->e[i];
        if (own_file[i] && (e->addr.kind == LSV_NET_UNIX ||
                            e->addr.kind == LSV_NET_UNIXGRAM))
            unlink(e->addr.path);
    }
}

/* Whether a worker still serves one of the channels in dir (path[0, n),
 * with room after it): a master in another PID namespace looks dead to
 * kill(2), not to connect(2). */
static int channel_alive(char *path, size_t n, size_t size)
{
    int alive = 0;
    for (int k = 1; k <= 64 && !alive; k++) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(path + n, size - n, "/%d", k);
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        alive = fd >= 0 && connect(fd, (struct sockaddr *)&sun,
                                   sizeof sun) == 0;
        if (fd >= 0) close(fd);
    }
    path[n] = '\0';
    return alive;
}

/* Removes the channel directories in tmp that masters killed before
 * they could (luaserv.PID.XXXXXX, ours, PID no longer running, no
 * channel answering): the sockets in each, then the directory. */
static void sweep_channels(const char *tmp)
{
    DIR *d = opendir(tmp);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        int pid = 0, end = 0;
        char path[sizeof control_dir + 16];
        struct stat st;
        if (sscanf(e->d_name, "luaserv.%d.%*6[A-Za-z0-9]%n", &pid, &end) != 1
            || e->d_name[end] != '\0' || pid <= 0 || pid == getpid() ||
            kill(pid, 0) == 0 || errno != ESRCH ||
            snprintf(path, sizeof path, "%s/%s", tmp, e->d_name) >=
                (int)sizeof path - 8 ||
            lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) ||
            st.st_uid != geteuid())
            continue;
        size_t n = strlen(path);
        if (channel_alive(path, n, sizeof path)) continue;
        for (int k = 1; k <= 1024; k++) {   /* the workers' sockets */
            snprintf(path + n, sizeof path - n, "/%d", k);
            if (unlink(path) != 0 && errno == ENOENT && k > 64) break;
        }
        path[n] = '\0';
        if (rmdir(path) == 0)
            lsv_debug("removed %s, left by a master that was killed", path);
    }
    if (d) closedir(d);
}

/* Makes the workers' channel directory (mode 0700) and finds the admin
 * handler that serves each channel. Exits 1 when it cannot. */
static void make_control_dir(lsv_server_t *srv)
{
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0' ||
        strlen(tmp) + 32 > sizeof control_dir)
        tmp = "/tmp";
    sweep_channels(tmp);
    snprintf(control_dir, sizeof control_dir, "%s/luaserv.%d.XXXXXX", tmp,
             (int)getpid());
    admin_file = lsv_config_module_file(srv->vm->L, "luaserv.admin");
    if (admin_file == NULL) exit(1);
    if (mkdtemp(control_dir) == NULL) {
        fprintf(stderr, "luaserv: cannot make the workers' channel "
                "directory %s: %s\n", control_dir, strerror(errno));
        exit(1);
    }
    lsv_core_set_control(control_dir, 1);
}

/* The master's ready lines, one per listener, in the plan's order. */
static void print_ready(void)
{
    for (int i = 0; i < m.plan->n; i++) {
        const lsv_plan_entry_t *e = &m.plan->e[i];
        char local[LSV_ADDRSTRLEN];
        const char *addr = e->addr.path;
        if (e->addr.kind == LSV_NET_TCP || e->addr.kind == LSV_NET_UDP)
            addr = lsv_net_local(m.fds[i * m.n], local);
        lsv_log_ready(lsv_net_scheme(&e->addr), addr);
    }
    lsv_info("serving %s with %d workers (master pid %d)",
             m.plan->main_script, m.n, (int)getpid());
    lsv_upgrade_ready(m.srv);   /* the pid file; an old master stops */
    lsv_notify(m.srv, "READY=1");
}

/* --- becoming a worker -------------------------------------------------- */

/* Stops every watcher the master set on the loop (also clearing what is
 * pending, so nothing of the master's runs in the child). */
static void stop_master_watchers(struct ev_loop *loop)
{
    ev_signal_stop(loop, &m.sigterm);
    ev_signal_stop(loop, &m.sigint);
    ev_signal_stop(loop, &m.sighup);
    ev_timer_stop(loop, &m.kill_timer);
    ev_timer_stop(loop, &m.drain_timer);
    for (int k = 0; k < m.n; k++) {
        slot_t *s = &m.slots[k];
        ev_child_stop(loop, &s->child);
        ev_io_stop(loop, &s->ready_io);
        ev_timer_stop(loop, &s->restart);
        if (s->ready_fd >= 0) close(s->ready_fd);
        s->ready_fd = -1;
    }
}

/* Drops the scripts the master loaded (only to read a script's own
 * `listen`, when nothing else named addresses), so the worker loads each
 * anew, with luaserv.worker set, as it does every other. */
static void forget_scripts(lsv_server_t *srv)
{
    lua_State *L = srv->vm->L;
    for (lsv_script_t *s = srv->vm->scripts; s; s = s->next) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
        luaL_unref(L, LUA_REGISTRYINDEX, s->mods_ref);
    }
    lsv_script_free_all(srv);
}

/* In a worker forked by a restart: closes and frees what the master
 * served itself (its admin socket and /metrics, their connections and
 * tasks, its calls to the other workers). Only closes: nothing is
 * written, shut down or unlinked, so the master's copies are untouched. */
static void drop_master_state(lsv_server_t *srv)
{
    for (lsv_listener_t *l = srv->listeners; l; l = l->next)
        l->inherited = 1;
    lsv_conn_abort_all(srv, "worker start");
    lsv_sched_free_all(srv);
    lsv_listener_free_all(srv);
    /* Its counts start from zero, as a first start's do. */
    memset(&srv->stats, 0, sizeof srv->stats);
    memset(&srv->outbound_listener->stats, 0, sizeof(lsv_lstats_t));
    memset(&srv->server_listener->stats, 0, sizeof(lsv_lstats_t));
}

/* Worker k's plan: the entries the master serves itself (builtin: the
 * admin socket, /metrics) out, and the worker's own admin channel in. */
static void plan_worker(int k)
{
    lsv_plan_t *p = m.plan;
    for (int i = 0; i < p->n; i++) {
        if (!p->e[i].builtin) continue;
        close(p->e[i].fd);
        memmove(&p->e[i], &p->e[i + 1], (size_t)(p->n - i - 1) *
                sizeof p->e[0]);
        p->n--;
        i--;
    }
    char err[LSV_ERRLEN];
    lsv_plan_entry_t *e = &p->e[p->n];
    memset(e, 0, sizeof *e);
    snprintf(control_spec, sizeof control_spec, "unix:%s/%d", control_dir, k);
    if (lsv_net_parse(control_spec, &e->addr, err) != LSV_OK) {
        lsv_error("worker %d: %s", k, err);
        exit(1);
    }
    e->spec = control_spec;
    e->script = admin_file;
    e->fd = -1;
    e->builtin = e->private_socket = e->internal = 1;
    p->n++;
}

/* A reload asked of a worker (SIGHUP sent to it, or --watch in worker
 * 1, the only one watching): the master reloads every worker or none. */
static void ask_master_reload(lsv_server_t *srv)
{
    (void)srv;
    if (getppid() != master_pid) return;   /* the master is gone */
    lsv_info("worker %d: asking the master to reload every worker", self);
    kill(master_pid, SIGHUP);
}

/* At a worker's exit: its channel goes; the directory too when the
 * master is gone (killed: the last worker to exit removes it). While the
 * master runs, the directory is its (it restarts workers into it). */
static void remove_channel(void)
{
    if (self == 0) return;
    char path[sizeof control_dir + 16];
    snprintf(path, sizeof path, "%s/%d", control_dir, self);
    unlink(path);
    if (getppid() != master_pid) rmdir(control_dir);
}

/* In the child just forked for worker k: keeps its own sockets in the
 * plan and closes the other workers', and leaves the master behind: its
 * own process group (a terminal's ^C reaches the master, which passes it
 * on), SIGTERM when the master dies, no systemd notifications. */
static void become_worker(int k, int ready_fd, pid_t master)
{
    struct ev_loop *loop = m.srv->loop;
    ev_loop_fork(loop);
    stop_master_watchers(loop);
    lsv_upgrade_worker(m.srv);
    drop_master_state(m.srv);
    for (int i = 0; i < m.plan->n; i++) {
        int *row = &m.fds[i * m.n];
        for (int j = 0; j < m.n; j++)
            if (j != k - 1 && row[j] >= 0 && row[j] != row[k - 1])
                close(row[j]);
        m.plan->e[i].fd = row[k - 1];
    }
    plan_worker(k);
    lsv_core_set_control(control_dir, 0);
    master_pid = master;
    atexit(remove_channel);
    m.srv->vm->ask_reload = ask_master_reload;
    if (k != 1) m.srv->opt.watch = 0;
    m.srv->opt.drain_delay = 0;   /* the master waited it out already */
    signal(SIGHUP, SIG_IGN);   /* until its own watcher: it loads anew */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master) raise(SIGTERM);
    unsetenv("NOTIFY_SOCKET");
    lsv_guard_after_fork();
    forget_scripts(m.srv);
    lsv_lua_set_worker(m.srv, k, m.n);
    lua_gc(m.srv->vm->L, LUA_GCCOLLECT);   /* what the master's left */
    self = k;
    self_ready_fd = ready_fd;
}

/* Forks worker s. In the master it returns with the child watched; in
 * the child it returns after become_worker, with self set. A failed fork
 * is retried like a quick death. */
static void spawn(slot_t *s)
{
    struct ev_loop *loop = m.srv->loop;
    int p[2];
    pid_t master = getpid(), pid = -1;
    fflush(NULL);   /* nothing buffered is written twice */
    if (mkdir(control_dir, 0700) != 0 && errno != EEXIST)
        lsv_warn("worker %d: cannot make %s again: %s", s->id, control_dir,
                 strerror(errno));
    if (reopen_own_sockets(s->id) == LSV_OK && pipe2(p, O_CLOEXEC) == 0 &&
        (pid = fork()) < 0) {
        close(p[0]);
        close(p[1]);
    }
    if (pid < 0) {
        double delay = BACKOFF_FIRST;
        lsv_error("cannot start worker %d: %s; trying again in %.1f s",
                  s->id, strerror(errno), delay);
        ev_timer_set(&s->restart, delay, 0.);
        ev_timer_start(loop, &s->restart);
        return;
    }
    if (pid == 0) {
        close(p[0]);
        become_worker(s->id, p[1], master);
        return;
    }
    close(p[1]);
    s->pid = pid;
    s->ready = 0;
    s->started = ev_now(loop);
    s->ready_fd = p[0];
    ev_child_set(&s->child, pid, 0);
    ev_child_start(loop, &s->child);
    ev_io_set(&s->ready_io, p[0], EV_READ);
    ev_io_start(loop, &s->ready_io);
}

int lsv_workers_tell_ready(lsv_server_t *srv)
{
    (void)srv;
    if (self == 0) return 0;
    lsv_debug("worker %d serving (pid %d)", self, (int)getpid());
    ssize_t w;
    do w = write(self_ready_fd, "R", 1); while (w < 0 && errno == EINTR);
    close(self_ready_fd);
    self_ready_fd = -1;
    return 1;
}

/* --- the master --------------------------------------------------------- */

/* Formats how a worker ended: "exited with status 3", "killed by signal 9
 * (Killed)". */
static void describe_status(int status, char *buf, size_t size)
{
    if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
}

/* How many workers are running. */
static int alive(void)
{
    int n = 0;
    for (int k = 0; k < m.n; k++) n += m.slots[k].pid > 0;
    return n;
}

/* Sends sig to every running worker. */
static void signal_all(int sig)
{
    for (int k = 0; k < m.n; k++)
        if (m.slots[k].pid > 0) kill(m.slots[k].pid, sig);
}

/* A worker's ready byte, or the end of its pipe (it died first; its
 * child watcher says how). The first time every worker is ready the
 * ready lines go out. */
static void ready_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    slot_t *s = container_of(w, slot_t, ready_io);
    char c;
    ssize_t r = read(s->ready_fd, &c, 1);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
    ev_io_stop(loop, w);
    close(s->ready_fd);
    s->ready_fd = -1;
    if (r != 1) return;
    s->ready = 1;
    if (m.all_ready) {
        lsv_info("worker %d serving again (pid %d)", s->id, (int)s->pid);
        return;
    }
    for (int k = 0; k < m.n; k++)
        if (!m.slots[k].ready) return;
    m.all_ready = 1;
    print_ready();
}

/* When a worker that died with n quick deaths in a row starts again. */
static double backoff(int fails)
{
    if (fails == 0) return 0;
    double d = BACKOFF_FIRST;
    for (int i = 1; i < fails && d < BACKOFF_MAX; i++) d *= 2;
    return d < BACKOFF_MAX ? d : BACKOFF_MAX;
}

/* Whether every worker is down after GIVE_UP quick deaths in a row. */
static int hopeless(void)
{
    for (int k = 0; k < m.n; k++)
        if (m.slots[k].pid > 0 || m.slots[k].fails < GIVE_UP) return 0;
    return 1;
}

/* A worker ended: logged with how, then restarted (at once, or after a
 * backoff when it died within QUICK_DEATH of starting). Before the ready
 * lines a death fails the start; during a stop it is what we wait for. */
static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    slot_t *s = container_of(w, slot_t, child);
    char how[96];
    double lived = ev_now(loop) - s->started;
    describe_status(w->rstatus, how, sizeof how);
    ev_child_stop(loop, w);
    s->pid = 0;
    s->ready = 0;
    if (m.stopping) {
        lsv_info("worker %d (pid %d) %s", s->id, w->rpid, how);
        if (alive() == 0) ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (!m.all_ready) {
        fprintf(stderr, "luaserv: worker %d (pid %d) %s before it was "
                "serving\n", s->id, w->rpid, how);
        m.status = WIFEXITED(w->rstatus) && WEXITSTATUS(w->rstatus) == 2
                   ? 2 : 1;
        m.stopping = 1;
        signal_all(SIGKILL);
        if (alive() == 0) ev_break(loop, EVBREAK_ALL);
        return;
    }
    s->fails = lived < QUICK_DEATH ? s->fails + 1 : 0;
    if (hopeless()) {
        lsv_error("cannot keep any worker alive: each of the %d died within "
                  "%.0f s of starting %d times in a row (the last %s); "
                  "exiting", m.n, QUICK_DEATH, GIVE_UP, how);
        m.status = 1;
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    double delay = backoff(s->fails);
    if (delay > 0) close_own_sockets(s->id);
    lsv_warn("worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
             s->id, w->rpid, how, lived, delay);
    ev_timer_set(&s->restart, delay, 0.);
    ev_timer_start(loop, &s->restart);
}

/* A worker's restart is due. In the new child, leaves the master's loop
 * (lsv_workers_run goes on as the worker). */
static void restart_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    spawn(container_of(w, slot_t, restart));
    if (self) ev_break(loop, EVBREAK_ALL);
}

/* The stop: the master's copies of the workers' sockets close (no more
 * restarts), so a connect is refused once the workers closed theirs. */
static void close_worker_sockets(void)
{
    for (int i = 0, all = m.plan->n * m.n; i < all; i++) {
        int fd = m.fds[i];
        if (fd < 0 || m.plan->e[i / m.n].builtin) continue;  /* master's */
        for (int j = i; j < all; j++) if (m.fds[j] == fd) m.fds[j] = -1;
        close(fd);
    }
}

/* The stop proper (once): no more restarts, every worker drains as the
 * single process would; workers left after --shutdown-timeout and
 * KILL_GRACE are killed. Also m.drain_timer's callback (w unused). */
static void stop_workers(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w; (void)revents;
    ev_timer_stop(loop, &m.drain_timer);
    if (m.stopping) return;
    m.stopping = 1;
    for (int k = 0; k < m.n; k++) ev_timer_stop(loop, &m.slots[k].restart);
    close_worker_sockets();
    signal_all(SIGTERM);
    ev_timer_set(&m.kill_timer, m.srv->opt.shutdown_timeout + KILL_GRACE, 0.);
    ev_timer_start(loop, &m.kill_timer);
    if (alive() == 0) ev_break(loop, EVBREAK_ALL);
}

/* SIGTERM or SIGINT: the master's health checks answer 503 at once; the
 * workers serve on for --drain-delay (none after an upgrade's
 * hand-over), then stop. A second signal stops them at once: a SIGTERM
 * then a SIGINT, each worker's first and second stop signal. */
static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    if (m.stopping || ((m.srv->draining & LSV_DRAIN_STOP) &&
                       !lsv_upgrade_handed_over())) {   /* see main.c */
        lsv_warn("signal %d again: stopping the workers now", w->signum);
        stop_workers(loop, NULL, 0);
        signal_all(SIGINT);
        return;
    }
    m.srv->draining |= LSV_DRAIN_STOP;
    lsv_core_mark_draining();   /* the workers' core.draining() too */
    lsv_notify(m.srv, "STOPPING=1");
    double delay = lsv_upgrade_handed_over() ? 0 : m.srv->opt.drain_delay;
    lsv_info("signal %d: draining: health checks answer 503; stopping %d "
             "workers in %.1f s (--drain-delay)", w->signum, alive(), delay);
    ev_timer_set(&m.drain_timer, delay, 0.);
    if (delay > 0) ev_timer_start(loop, &m.drain_timer);
    else stop_workers(loop, NULL, 0);
}

static void kill_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    lsv_warn("%d workers still running after the shutdown timeout: "
             "killing them", alive());
    signal_all(SIGKILL);
}

/* SIGHUP: every worker reloads, or none (luaserv.control.reload: each
 * loads the new scripts first; all switch only if all loaded). */
static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    lsv_info("SIGHUP: reloading %d workers", alive());
    lsv_core_spawn(m.srv, "luaserv.control", "reload");
}

/* What a binary upgrade passes on: every socket the master holds, each
 * once (a shared one is in every worker's column). */
static int master_fds(lsv_server_t *srv, int *fds, int max)
{
    (void)srv;
    int n = 0;
    for (int i = 0; i < m.plan->n * m.n && n < max; i++) {
        int fd = m.fds[i], seen = fd < 0;
        for (int j = 0; j < n && !seen; j++) seen = fds[j] == fd;
        if (!seen) fds[n++] = fd;
    }
    return n;
}

/* At an upgrade's hand-over: every worker stops accepting (SIGUSR2 in a
 * worker; see lsv_upgrade_worker). */
static void master_quiet(lsv_server_t *srv)
{
    (void)srv;
    signal_all(SIGUSR2);
}

/* The master's watchers: its signals, and per worker its child, ready
 * pipe and restart timer (not started). */
static void init_master(struct ev_loop *loop)
{
    m.slots = lsv_calloc((size_t)m.n, sizeof *m.slots);
    for (int k = 0; k < m.n; k++) {
        slot_t *s = &m.slots[k];
        s->id = k + 1;
        s->ready_fd = -1;
        ev_child_init(&s->child, child_cb, 0, 0);
        ev_io_init(&s->ready_io, ready_cb, -1, EV_READ);
        ev_timer_init(&s->restart, restart_cb, 0., 0.);
    }
    ev_signal_init(&m.sigterm, stop_cb, SIGTERM);
    ev_signal_init(&m.sigint, stop_cb, SIGINT);
    ev_signal_init(&m.sighup, hup_cb, SIGHUP);
    ev_timer_init(&m.kill_timer, kill_cb, 0., 0.);
    ev_timer_init(&m.drain_timer, stop_workers, 0., 0.);
    ev_signal_start(loop, &m.sigterm);
    ev_signal_start(loop, &m.sigint);
    ev_signal_start(loop, &m.sighup);
    lsv_upgrade_watch(m.srv, master_fds, master_quiet);   /* SIGUSR2 */
}

int lsv_workers_run(lsv_server_t *srv, lsv_plan_t *plan, int n,
                    lsv_workers_serve_fn serve)
{
    m.srv = srv;
    m.plan = plan;
    m.n = n;
    open_sockets();
    make_control_dir(srv);
    lsv_core_share_draining();
    lsv_notify_close_unused(srv);
    init_master(srv->loop);
    for (int k = 0; k < n && self == 0; k++) spawn(&m.slots[k]);
    if (self == 0) {
        /* The master serves the admin socket and /metrics itself. */
        for (int i = 0; i < plan->n; i++)
            if (plan->e[i].builtin) plan->e[i].fd = m.fds[i * n];
        serve(srv, plan);
        ev_run(srv->loop, 0);
    }
    if (self) return self;   /* a child, forked before or in the loop */
    stop_master_watchers(srv->loop);
    remove_socket_files();
    if (m.status == 0) lsv_info("stopped");
    exit(m.status);
}
