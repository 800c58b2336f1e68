/* pg_harness — see pg_harness.h.
 *
 * The postmaster runs as a direct child (not daemonized by pg_ctl) so that it
 * can be tied to this process with PR_SET_PDEATHSIG: a test killed by a timeout
 * never leaves a server behind. SIGQUIT is PostgreSQL's immediate shutdown, the
 * same as `pg_ctl stop -m immediate`.
 */
#include "pg_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PG_USER "veil"
#define PG_START_TIMEOUT_MS 30000
#define PG_STOP_TIMEOUT_MS 5000
#define MAX_SERVERS 4

static pg_server *g_servers[MAX_SERVERS];
static struct sigaction g_old_int, g_old_term;
static bool g_hooked;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Stops the postmaster and waits for it (SIGKILL after a timeout). */
static void kill_server(pg_server *pg)
{
    if (pg->pid <= 0)
        return;
    kill(pg->pid, SIGQUIT);
    long end = now_ms() + PG_STOP_TIMEOUT_MS;
    pid_t r;
    while ((r = waitpid(pg->pid, NULL, WNOHANG)) == 0 && now_ms() < end)
        usleep(10000);
    if (r == 0) {
        kill(pg->pid, SIGKILL);
        waitpid(pg->pid, NULL, 0);
    }
    pg->pid = 0;
}

static void unregister(pg_server *pg)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (g_servers[i] == pg)
            g_servers[i] = NULL;
}

void pg_stop(pg_server *pg)
{
    kill_server(pg);
    if (pg->dir[0] && !getenv("VEIL_KEEP_TMP"))
        nftw(pg->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    pg->dir[0] = '\0';
    unregister(pg);
}

static void stop_all(void)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (g_servers[i])
            pg_stop(g_servers[i]);
}

static void on_signal(int sig)
{
    stop_all();
    /* then whatever was there before us (the harness kills its processes and exits) */
    struct sigaction *old = sig == SIGINT ? &g_old_int : &g_old_term;
    if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN && !(old->sa_flags & SA_SIGINFO)) {
        old->sa_handler(sig);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void hook(pg_server *pg)
{
    if (!g_hooked) {
        g_hooked = true;
        h_tmpdir(); /* the harness installs its handlers first; ours chain to them */
        atexit(stop_all);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &g_old_int);
        sigaction(SIGTERM, &sa, &g_old_term);
    }
    for (int i = 0; i < MAX_SERVERS; i++)
        if (!g_servers[i]) {
            g_servers[i] = pg;
            return;
        }
}

/* The bin dir of the highest installed PostgreSQL major version. */
static int find_bindir(char *out, size_t outlen)
{
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) != 0)
        return -1;
    int best = -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int v = atoi(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"));
        char initdb[512];
        snprintf(initdb, sizeof initdb, "/usr/lib/postgresql/%d/bin/initdb", v);
        if (v > best && access(initdb, X_OK) == 0)
            best = v;
    }
    globfree(&g);
    if (best < 0)
        return -1;
    snprintf(out, outlen, "/usr/lib/postgresql/%d/bin", best);
    return 0;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* The last ~600 bytes of a log file, for error messages. */
static void log_tail(const char *path, char *out, size_t outlen)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char buf[601];
    if (fseek(f, -600, SEEK_END) != 0)
        fseek(f, 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    snprintf(out, outlen, "%s", buf);
}

/* Forks argv[0] with cwd = pg->dir, output appended to log, as uid/gid when
 * run_as is set; the child dies with us (PR_SET_PDEATHSIG). Returns the pid. */
static pid_t spawn(const pg_server *pg, const char *const argv[], const char *log, const struct passwd *run_as)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int nul = open("/dev/null", O_RDONLY);
    if (fd < 0 || nul < 0 || chdir(pg->dir) < 0)
        _exit(126);
    dup2(nul, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (run_as && (setgroups(0, NULL) < 0 || setgid(run_as->pw_gid) < 0 || setuid(run_as->pw_uid) < 0)) {
        dprintf(2, "pg_harness: cannot drop privileges: %s\n", strerror(errno));
        _exit(126);
    }
    /* after setuid: a credential change clears the parent-death signal */
    prctl(PR_SET_PDEATHSIG, SIGQUIT);
    if (getppid() != parent)
        _exit(126);
    setenv("LC_ALL", "C", 1);
    unsetenv("PGDATA");
    execv(argv[0], (char *const *)argv);
    dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int fail_log(char *err, size_t errlen, const char *what, const char *log)
{
    char tail[700];
    log_tail(log, tail, sizeof tail);
    snprintf(err, errlen, "%s; log %s:\n%s", what, log, tail);
    return -1;
}

int pg_start(pg_server *pg, const char *dbname, char *err, size_t errlen)
{
    memset(pg, 0, sizeof *pg);
    char bindir[256];
    if (find_bindir(bindir, sizeof bindir) < 0) {
        snprintf(err, errlen,
                 "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres and initdb); "
                 "install the Debian package `postgresql` (scripts/install-deps does)");
        return -1;
    }
    const struct passwd *run_as = NULL;
    if (geteuid() == 0 && !(run_as = getpwnam("nobody"))) {
        snprintf(err, errlen, "running as root and there is no `nobody` user to run PostgreSQL as");
        return -1;
    }
    snprintf(pg->dir, sizeof pg->dir, "/tmp/veil-pg-XXXXXX");
    if (!mkdtemp(pg->dir)) {
        snprintf(err, errlen, "mkdtemp: %s", strerror(errno));
        pg->dir[0] = '\0';
        return -1;
    }
    hook(pg);
    char data[300], sock[300], initlog[300], srvlog[300];
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(sock, sizeof sock, "%s/sock", pg->dir);
    snprintf(initlog, sizeof initlog, "%s/initdb.log", pg->dir);
    snprintf(srvlog, sizeof srvlog, "%s/postgres.log", pg->dir);
    if (mkdir(sock, 0700) < 0 ||
        (run_as && (chown(pg->dir, run_as->pw_uid, run_as->pw_gid) < 0 ||
                    chown(sock, run_as->pw_uid, run_as->pw_gid) < 0))) {
        snprintf(err, errlen, "preparing %s: %s", pg->dir, strerror(errno));
        pg_stop(pg);
        return -1;
    }

    char initdb[300], postgres[300];
    snprintf(initdb, sizeof initdb, "%s/initdb", bindir);
    snprintf(postgres, sizeof postgres, "%s/postgres", bindir);
    const char *const init_argv[] = {initdb, "-D", data, "-U", PG_USER, "-A", "trust", "-E", "UTF8",
                                     "--locale=C", "--no-sync", NULL};
    pid_t ipid = spawn(pg, init_argv, initlog, run_as);
    int st = -1;
    if (ipid < 0 || waitpid(ipid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fail_log(err, errlen, "initdb failed", initlog);
        pg_stop(pg);
        return -1;
    }

    pg->port = free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", pg->port);
    const char *const pg_argv[] = {postgres, "-D", data, "-p", port, "-k", sock,
                                   "-c", "listen_addresses=127.0.0.1",
                                   "-F", /* no fsync: a throwaway server */
                                   "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                   "-c", "max_connections=20", "-c", "shared_buffers=16MB",
                                   "-c", "logging_collector=off", NULL};
    pg->pid = spawn(pg, pg_argv, srvlog, run_as);
    if (pg->pid < 0) {
        pg->pid = 0;
        snprintf(err, errlen, "fork: %s", strerror(errno));
        pg_stop(pg);
        return -1;
    }

    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=" PG_USER " dbname=postgres connect_timeout=2",
             pg->port);
    long end = now_ms() + PG_START_TIMEOUT_MS;
    while (PQping(conninfo) != PQPING_OK) {
        if (waitpid(pg->pid, NULL, WNOHANG) != 0) {
            pg->pid = 0;
            fail_log(err, errlen, "postgres exited during startup", srvlog);
            pg_stop(pg);
            return -1;
        }
        if (now_ms() > end) {
            fail_log(err, errlen, "postgres did not accept connections in time", srvlog);
            pg_stop(pg);
            return -1;
        }
        usleep(20000);
    }

    PGconn *c = PQconnectdb(conninfo);
    char sql[200];
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", dbname);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "create database %s: %s", dbname, PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        pg_stop(pg);
        return -1;
    }
    PQclear(r);
    PQfinish(c);
    snprintf(pg->url, sizeof pg->url, "postgresql://" PG_USER "@127.0.0.1:%d/%s", pg->port, dbname);
    return 0;
}
