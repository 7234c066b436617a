/* upgrade.h: the pid file and the zero-downtime binary upgrade (SIGUSR2).
 *
 * On SIGUSR2 the running server (the single process, or the master of
 * --workers N) forks a child that execs the installed binary with the
 * same arguments. The listening sockets pass by fd: their numbers go in
 * LUASERV_UPGRADE_FDS (comma-separated; FD_CLOEXEC is cleared on those
 * alone), and the new process matches them to its listeners by address
 * as it does systemd's (notify.c). LUASERV_UPGRADE_READY names the write
 * end of a pipe: once the new generation serves (its ready lines out) it
 * writes one byte there, and only then does the old one stop accepting,
 * and a second later drain as on SIGTERM and exit 0. If the child cannot exec, or exits
 * before that byte, the old one logs why and serves on. So it does when
 * the byte does not come within --load-timeout + --handler-timeout + 5 s
 * (30 s for a --load-timeout of 0): it kills the child first. */
#ifndef LSV_UPGRADE_H
#define LSV_UPGRADE_H

#include "lsv.h"
#include "server.h"

/* Fills fds (room for max) with the listening sockets an upgrade passes
 * on; returns how many. */
typedef int (*lsv_upgrade_fds_fn)(lsv_server_t *srv, int *fds, int max);

/* Remembers argv (the arguments the new generation gets) and pid_file
 * (may be NULL). Removes the pid file at exit if it still holds our pid. */
void lsv_upgrade_init(int argc, char **argv, const char *pid_file);

/* Sets the pid file (the config's pid_file when no --pid-file gave one;
 * path must outlive the process), with the same removal at exit. */
void lsv_upgrade_pid_file(const char *path);

/* In a new generation: adds the sockets the old one passed to the pool
 * lsv_notify_match_fd draws from, keeps the ready pipe, and clears the
 * variables. Returns how many sockets; 0 when not started by an upgrade. */
int lsv_upgrade_take_fds(lsv_server_t *srv);

/* Whether fd is a socket the old generation passed. */
int lsv_upgrade_passed(int fd);

/* After the listeners opened: those on a passed socket are ours to
 * unlink at exit (a unix socket file), unlike systemd's. */
void lsv_upgrade_own(lsv_server_t *srv);

/* Once serving (after the ready lines): writes the pid file, then tells
 * the old generation, if any, that it may stop. Exits 1 when the pid
 * file cannot be written. */
void lsv_upgrade_ready(lsv_server_t *srv);

/* Stops the accepting of every process serving (a master's workers). */
typedef void (*lsv_upgrade_quiet_fn)(lsv_server_t *srv);

/* Starts the SIGUSR2 watcher on srv's loop; fds lists what to pass on
 * (NULL: srv's listeners), quiet stops the accepting at the hand-over
 * (NULL: srv's listeners close). A second later this process gets
 * SIGTERM, so its own stop path drains it and exits. */
void lsv_upgrade_watch(lsv_server_t *srv, lsv_upgrade_fds_fn fds,
                       lsv_upgrade_quiet_fn quiet);

/* The last upgrade's state, as lsv_upgrade_status returns it. */
#define LSV_UPGRADE_NONE 0
#define LSV_UPGRADE_RUNNING 1
#define LSV_UPGRADE_DONE 2      /* the new generation serves */
#define LSV_UPGRADE_FAILED 3    /* this one serves on */

/* Starts an upgrade (what SIGUSR2 and the admin `upgrade` do). Returns
 * LSV_OK once the new generation runs (it may still fail: see
 * lsv_upgrade_status); LSV_AGAIN when refused (one under way, or this
 * process stopping), LSV_ERR when the set-up failed (logged), with why
 * in err. */
int lsv_upgrade_start(lsv_server_t *srv, char *err, size_t size);

/* The last upgrade's state (LSV_UPGRADE_*), with how it ended in msg:
 * the new pid, or why it failed. */
int lsv_upgrade_status(char *msg, size_t size);

/* In a forked worker: stops the master's upgrade watchers; SIGUSR2 now
 * means the master handed over: srv's listeners stop accepting (its
 * connections go on until the SIGTERM that follows drains them). */
void lsv_upgrade_worker(lsv_server_t *srv);

/* Whether this process handed its sockets to a new generation: then it
 * must not unlink its unix socket files. */
int lsv_upgrade_handed_over(void);

#endif
