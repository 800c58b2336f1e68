#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/addr.h"

#define MAX_PROCS 64

static pid_t g_pids[MAX_PROCS];
static char g_tmp[256];
static int g_path_seq;

static void cleanup(void)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (g_pids[i] > 0) {
            kill(-g_pids[i], SIGKILL);
            waitpid(g_pids[i], NULL, 0);
            g_pids[i] = 0;
        }
    }
    if (g_tmp[0] && !getenv("VEIL_KEEP_TMP")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "harness: could not remove %s\n", g_tmp);
    }
}

static void on_signal(int sig)
{
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

const char *h_tmpdir(void)
{
    if (!g_tmp[0]) {
        snprintf(g_tmp, sizeof g_tmp, "/tmp/veil-it-XXXXXX");
        if (!mkdtemp(g_tmp)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(cleanup);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGPIPE, SIG_IGN);
    }
    return g_tmp;
}

/* "a" + sep + "b" in one of 8 rotating static slots */
static const char *slot_join(const char *a, const char *sep, const char *b)
{
    static char slots[8][1024];
    static int next;
    char *s = slots[next++ % 8];
    snprintf(s, sizeof slots[0], "%s%s%s", a, sep, b);
    return s;
}

static const char *env_or_die(const char *name)
{
    const char *v = getenv(name);
    if (!v) {
        fprintf(stderr, "harness: %s is not set (run through ctest)\n", name);
        exit(1);
    }
    return v;
}

const char *h_bin(const char *name) { return slot_join(env_or_die("VEIL_BIN"), "/", name); }
const char *h_src(const char *rel) { return slot_join(env_or_die("VEIL_SRC"), "/", rel); }
const char *h_fixture(const char *rel) { return slot_join(env_or_die("VEIL_FIXTURES"), "/", rel); }

const char *h_path(const char *prefix, const char *suffix)
{
    char n[16];
    snprintf(n, sizeof n, "%d", ++g_path_seq);
    char pre[512];
    snprintf(pre, sizeof pre, "%s/%s-%s", h_tmpdir(), prefix, n);
    return slot_join(pre, "", suffix ? suffix : "");
}

int proc_start(proc *p, const char *name, const char *const argv[], const char *const envp[])
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->log_path, sizeof p->log_path, "%s/%s.log", h_tmpdir(), name);
    int slot = -1;
    for (int i = 0; i < MAX_PROCS && slot < 0; i++)
        if (g_pids[i] == 0)
            slot = i;
    if (slot < 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setpgid(0, 0);
        int fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd < 0 || nul < 0)
            _exit(127);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        for (size_t i = 0; envp && envp[i]; i++)
            putenv((char *)envp[i]);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    g_pids[slot] = pid;
    p->pid = pid;
    return 0;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            } else {
                buf = nb;
            }
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

bool proc_log_contains(const proc *p, const char *needle)
{
    char *log = read_file(p->log_path);
    bool found = log && strstr(log, needle);
    free(log);
    return found;
}

void proc_dump_log(const proc *p)
{
    char *log = read_file(p->log_path);
    fprintf(stderr, "---- %s log (%s) ----\n%s---- end %s ----\n", p->name, p->log_path,
            log ? log : "(none)\n", p->name);
    free(log);
}

bool proc_alive(const proc *p)
{
    if (p->pid <= 0)
        return false;
    int st;
    return waitpid(p->pid, &st, WNOHANG) == 0;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int proc_wait_log(proc *p, const char *needle, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (proc_log_contains(p, needle))
            return 0;
        if (!proc_alive(p))
            break;
        usleep(10000);
    }
    if (proc_log_contains(p, needle))
        return 0;
    fprintf(stderr, "harness: %s: '%s' not seen\n", p->name, needle);
    proc_dump_log(p);
    return -1;
}

int proc_wait_listening(proc *p, int timeout_ms)
{
    if (proc_wait_log(p, "event=listening addr=", timeout_ms) < 0)
        return -1;
    char *log = read_file(p->log_path);
    const char *a = log ? strstr(log, "event=listening addr=") : NULL;
    if (!a) {
        free(log);
        return -1;
    }
    a += strlen("event=listening addr=");
    size_t n = strcspn(a, " \n");
    if (n >= sizeof p->addr)
        n = sizeof p->addr - 1;
    memcpy(p->addr, a, n);
    p->addr[n] = '\0';
    free(log);
    return 0;
}

int proc_stop(proc *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    int st = -1;
    kill(p->pid, sig);
    long end = now_ms() + timeout_ms;
    pid_t r = 0;
    while ((r = waitpid(p->pid, &st, WNOHANG)) == 0 && now_ms() < end)
        usleep(5000);
    if (r == 0) {
        kill(-p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
        st = -1;
    }
    kill(-p->pid, SIGKILL); /* anything the program left in its group */
    for (int i = 0; i < MAX_PROCS; i++)
        if (g_pids[i] == p->pid)
            g_pids[i] = 0;
    p->pid = 0;
    return st;
}

int h_connect(const char *spec, int timeout_ms)
{
    veil_addr a;
    char err[256];
    if (addr_parse(spec, &a, err, sizeof err) < 0) {
        fprintf(stderr, "harness: %s\n", err);
        return -1;
    }
    long end = now_ms() + timeout_ms;
    do {
        int fd = addr_connect(&a, false, err, sizeof err);
        if (fd >= 0)
            return fd;
        usleep(10000);
    } while (now_ms() < end);
    fprintf(stderr, "harness: %s\n", err);
    return -1;
}

static int wait_readable(int fd, long end)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    long left = end - now_ms();
    if (left <= 0)
        return 0;
    return poll(&pfd, 1, (int)left);
}

long h_read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    size_t len = 0;
    while (len + 1 < cap) {
        if (wait_readable(fd, end) <= 0)
            return -1;
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return (long)len;
}

long h_read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    size_t len = 0;
    while (len + 1 < cap) {
        if (wait_readable(fd, end) <= 0)
            return -1;
        ssize_t n = read(fd, buf + len, 1); /* byte at a time: tests only */
        if (n <= 0)
            return -1;
        if (buf[len] == '\n') {
            buf[len] = '\0';
            return (long)len;
        }
        len++;
    }
    return -1;
}

int h_write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}
