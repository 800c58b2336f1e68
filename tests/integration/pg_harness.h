/* pg_harness — a throwaway PostgreSQL server for integration tests.
 *
 * pg_start runs initdb and postgres from /usr/lib/postgresql/<version>/bin in a
 * new temp dir (as `nobody` when the test runs as root: PostgreSQL refuses root),
 * with trust auth on 127.0.0.1:<free port> and on a unix socket in that dir, and
 * creates one database. The server is our child: pg_stop (or exit, SIGINT,
 * SIGTERM, or even our death by SIGKILL, through PR_SET_PDEATHSIG) stops it, and
 * the dir is removed. PostgreSQL not being installed is an error, not a skip.
 */
#ifndef VEIL_TEST_PG_HARNESS_H
#define VEIL_TEST_PG_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct pg_server {
    pid_t pid;      /* the postmaster; 0 when not running */
    int port;       /* on 127.0.0.1 */
    char dir[256];  /* data/, sock/, *.log */
    char url[512];  /* postgresql://veil@127.0.0.1:PORT/DBNAME */
} pg_server;

/* 0, or -1 with err filled (the server log's tail included when it failed to start). */
int pg_start(pg_server *pg, const char *dbname, char *err, size_t errlen);
/* Immediate shutdown (SIGQUIT, as `pg_ctl stop -m immediate`), then removes the dir. */
void pg_stop(pg_server *pg);

#endif
