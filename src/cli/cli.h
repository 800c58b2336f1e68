/* cli — the verbs of the `veil` program, one function each.
 *
 * Every verb returns the process exit status: 0 success, 1 failure, 2 usage.
 * Failures print exactly one line on stderr, `veil VERB: reason`; a bad option
 * adds a second, `Try 'veil VERB --help'.`. No verb ever
 * prints a private key or plaintext except as its requested output.
 */
#ifndef VEIL_CLI_H
#define VEIL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define EXIT_USAGE 2

/* Room for one error message, a server's detail included (the complete list of
 * models fits many times over). A longer detail is cut with a visible mark, so a
 * hostile server cannot flood the terminal. */
#define CLI_ERR_MAX 4096

typedef struct cli_verb {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_verb;

int cmd_keygen(int argc, char **argv);
int cmd_seal(int argc, char **argv);
int cmd_open(int argc, char **argv);
int cmd_devtoken(int argc, char **argv);
int cmd_login(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_ask(int argc, char **argv);
int cmd_history(int argc, char **argv);
int cmd_sessions(int argc, char **argv);
int cmd_models(int argc, char **argv);
int cmd_org(int argc, char **argv);
int cmd_attest(int argc, char **argv);

/* `veil VERB: message` on stderr; returns 1 (or the given code). */
int cli_fail(const char *verb, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct option;
/* getopt_long for a verb. A bad option prints `veil VERB: what is wrong` and
 * `Try 'veil VERB --help'.` on stderr and returns '?'. */
int cli_getopt(const char *verb, int argc, char **argv, const char *shortopts, const struct option *longopts);

/* Reads all of stdin (at most max bytes) into out; -1 when over the limit or on error. */
int cli_read_stdin(vbuf *out, size_t max);

/* A session or message id fit for a URL path and the CLI's own files: 1 to
 * CLI_ID_MAX - 1 characters of [A-Za-z0-9_-] (veild's are UUIDs). The server's ids
 * pass here before the CLI puts them anywhere. */
#define CLI_ID_MAX 64
bool cli_id_ok(const char *id);

/* Reads a 32-byte key given as 64 hex chars, or from a file holding them. */
int cli_key_arg(const char *verb, const char *what, const char *hex, const char *file,
                uint8_t out[32]);

#endif
