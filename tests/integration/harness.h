/* harness — start real veil programs for integration tests, and always stop them.
 *
 * Each started process gets its own process group and a log file in the test's
 * temp dir. Every process still running at exit (normal exit, failed assertion,
 * or SIGINT/SIGTERM of the test) is killed, and the temp dir is removed.
 * Programs announce readiness with a log line `event=listening addr=ADDR`.
 */
#ifndef VEIL_TEST_HARNESS_H
#define VEIL_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct proc {
    pid_t pid;
    char name[64];
    char log_path[512];
    char addr[256]; /* filled by proc_wait_listening */
} proc;

/* The temp dir of this test run (created on first use, removed at exit). */
const char *h_tmpdir(void);
/* $VEIL_BIN/name, in a static buffer per call slot (up to 8 live results). */
const char *h_bin(const char *name);
/* $VEIL_SRC/rel or $VEIL_FIXTURES/rel */
const char *h_src(const char *rel);
const char *h_fixture(const char *rel);
/* A fresh path in the temp dir: "<tmpdir>/<prefix>-<n><suffix>". */
const char *h_path(const char *prefix, const char *suffix);

/* Starts argv[0] (a full path) with argv; stdout+stderr go to <tmpdir>/<name>.log.
 * envp entries "K=V" are added to the environment (NULL-terminated, may be NULL).
 * Returns 0 or -1. */
int proc_start(proc *p, const char *name, const char *const argv[], const char *const envp[]);
/* Waits until the log has `event=listening addr=...` and copies ADDR into p->addr.
 * Returns 0, or -1 if the process died or timeout_ms passed (the log is printed). */
int proc_wait_listening(proc *p, int timeout_ms);
/* Waits until the log contains needle. 0 or -1 on timeout. */
int proc_wait_log(proc *p, const char *needle, int timeout_ms);
/* True if the log file contains needle. */
bool proc_log_contains(const proc *p, const char *needle);
/* Sends sig, waits up to timeout_ms, then SIGKILLs. Returns the wait status, or -1. */
int proc_stop(proc *p, int sig, int timeout_ms);
bool proc_alive(const proc *p);
/* Prints the process log to stderr (for failure diagnostics). */
void proc_dump_log(const proc *p);

/* Connects to an address spec (blocking, with a timeout); returns fd or -1. */
int h_connect(const char *addr_spec, int timeout_ms);
/* Reads until the peer closes or timeout; returns bytes read (NUL-terminated), -1 on error. */
long h_read_all(int fd, char *buf, size_t cap, int timeout_ms);
/* Reads one '\n'-terminated line (without the '\n'); returns its length, -1 on EOF/timeout. */
long h_read_line(int fd, char *buf, size_t cap, int timeout_ms);
int h_write_all(int fd, const void *p, size_t n);

#endif
