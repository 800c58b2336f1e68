#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/term.h"
#include "common/hex.h"
#include "common/secret.h"

int cli_fail(const char *verb, int code, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap); /* no fixed size: a long detail is shown whole */
    va_end(ap);
    if (n < 0) {
        fprintf(stderr, "veil %s: out of memory\n", verb);
        return code;
    }
    for (char *p = msg; *p; p++) /* exactly one line */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    /* details come from the server: no escape sequence reaches the terminal */
    term_fprintf(stderr, "veil %s: %s\n", verb, msg);
    free(msg);
    return code;
}

bool cli_id_ok(const char *id)
{
    size_t n = id ? strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") : 0;
    return n > 0 && n < CLI_ID_MAX && id[n] == '\0';
}

/* The long option named by arg ("--name" or "--name=value"), or NULL. */
static const struct option *long_named(const struct option *longopts, const char *arg)
{
    if (strncmp(arg, "--", 2) != 0)
        return NULL;
    size_t n = strcspn(arg + 2, "=");
    for (const struct option *o = longopts; o && o->name; o++)
        if (strlen(o->name) == n && strncmp(o->name, arg + 2, n) == 0)
            return o;
    return NULL;
}

int cli_getopt(const char *verb, int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    char spec[64];
    snprintf(spec, sizeof spec, ":%s", shortopts); /* ':' first: a missing argument is told apart */
    opterr = 0; /* getopt's own message names neither veil nor the verb */
    int c = getopt_long(argc, argv, spec, longopts, NULL);
    if (c != '?' && c != ':')
        return c;
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    const struct option *lo = long_named(longopts, arg);
    size_t n = strcspn(arg, "=");
    if (lo && c == ':')
        cli_fail(verb, EXIT_USAGE, "option '--%s' needs an argument", lo->name);
    else if (lo && optopt && lo->has_arg == no_argument)
        cli_fail(verb, EXIT_USAGE, "option '--%s' takes no argument", lo->name);
    else if (strncmp(arg, "--", 2) == 0 && optopt == 0)
        cli_fail(verb, EXIT_USAGE, "unknown option '%.*s'", (int)n, arg);
    else if (c == ':')
        cli_fail(verb, EXIT_USAGE, "option '-%c' needs an argument", optopt);
    else
        cli_fail(verb, EXIT_USAGE, "unknown option '-%c'", optopt);
    fprintf(stderr, "Try 'veil %s --help'.\n", verb);
    return '?';
}

int cli_read_stdin(vbuf *out, size_t max)
{
    for (;;) {
        if (vbuf_reserve(out, 65536) < 0)
            return -1;
        ssize_t n = read(STDIN_FILENO, out->data + out->len, 65536);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        out->len += (size_t)n;
        if (out->len > max)
            return -1;
    }
}

int cli_key_arg(const char *verb, const char *what, const char *hex, const char *file,
                uint8_t out[32])
{
    char buf[130];
    if (hex && file)
        return cli_fail(verb, EXIT_USAGE, "give the %s either inline or as a file, not both", what);
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f)
            return cli_fail(verb, 1, "cannot read %s file %s: %s", what, file, strerror(errno));
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
            n--;
        buf[n] = '\0';
        hex = buf;
    }
    if (!hex)
        return cli_fail(verb, EXIT_USAGE, "missing %s (see veil %s --help)", what, verb);
    int rc = 0;
    if (hex_decode_exact(hex, strlen(hex), out, 32) < 0)
        rc = cli_fail(verb, EXIT_USAGE, "%s must be 64 hex characters", what);
    secure_wipe(buf, sizeof buf);
    return rc;
}
