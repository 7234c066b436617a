/* args.h: how luaserv-cli and luaserv-bench report a bad command line:
 * the way getopt does ("PROG: message"), then the usage lines and a
 * pointer to --help, on stderr, exiting 2. */
#ifndef TOOLS_ARGS_H
#define TOOLS_ARGS_H

/* Names the program and its usage lines (both kept, not copied) for the
 * two below; call it before parsing. */
void args_init(const char *prog, const char *usage);

/* The usage lines and "Try 'PROG --help' for more." on stderr; exits 2. */
void args_usage_error(void) __attribute__((noreturn));

/* "PROG: " and fmt with arg (one %s) on stderr, then the usage; exits 2. */
void args_bad_option(const char *fmt, const char *arg)
    __attribute__((noreturn));

#endif
