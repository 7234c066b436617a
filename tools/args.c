/* args.c: the command-line errors luaserv-cli and luaserv-bench share. */
#include "args.h"

#include <stdio.h>
#include <stdlib.h>

static const char *prog_name = "luaserv";
static const char *usage_text = "";

void args_init(const char *prog, const char *usage)
{
    prog_name = prog;
    usage_text = usage;
}

void args_usage_error(void)
{
    fprintf(stderr, "%sTry '%s --help' for more.\n", usage_text, prog_name);
    exit(2);
}

void args_bad_option(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog_name);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    args_usage_error();
}
