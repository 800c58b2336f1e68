/* db_pool — veild's database work off the event loop: a fixed set of worker
 * threads, each with a connection of its own, a bounded queue of jobs, and the
 * jobs' completions handed back to the loop in the order they finish.
 *
 * A job's work runs on a worker with that worker's connection and must touch
 * nothing the loop owns (HTTP connections, libevent objects, user_limits, the
 * enclave client); its done runs on the loop's thread, woken by an eventfd. The
 * pool owns the threads, the connections (made by the caller's open on the
 * loop's thread before any worker starts, closed by its close after the last one
 * stopped), the queue and the eventfd. The job's arg stays the caller's. Never logs.
 */
#ifndef VEIL_SERVER_DB_POOL_H
#define VEIL_SERVER_DB_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
typedef struct db_pool db_pool;

typedef enum dbp_status {
    DBP_RAN = 0,       /* the work ran */
    DBP_CANCELLED = 1, /* the pool stopped before a worker took the job: the work never ran */
} dbp_status;

typedef enum dbp_rc {
    DBP_OK = 0,
    DBP_FULL = 1,    /* queue_max jobs are waiting already */
    DBP_STOPPED = 2, /* the pool is stopping */
    DBP_NOMEM = 3,
} dbp_rc;

typedef void (*dbp_work_fn)(void *conn, void *arg); /* on a worker */
typedef void (*dbp_done_fn)(void *arg, dbp_status st); /* on the loop's thread */

typedef struct dbp_config {
    unsigned workers;   /* threads, one connection each (at least 1) */
    unsigned queue_max; /* jobs waiting for a worker; a bounded submit past it is refused */
    /* Makes worker i's connection (NULL with err filled on failure); runs in dbp_new. */
    void *(*open)(void *ud, unsigned i, char *err, size_t errlen);
    void (*close)(void *ud, void *conn);
    void *ud;
} dbp_config;

/* Opens every connection, then starts the workers; called on the loop's thread,
 * which is the only one that may submit, stop or free. NULL with err on failure
 * (what was opened is closed). */
db_pool *dbp_new(struct event_base *base, const dbp_config *cfg, char *err, size_t errlen);

/* Queues a job: work(conn, arg) on the first free worker, then done(arg, DBP_RAN)
 * on the loop. bounded: refused with DBP_FULL when queue_max jobs wait already;
 * an unbounded job is admitted regardless (for work whose number is bounded
 * elsewhere). On any refusal nothing is queued and done is not called. */
dbp_rc dbp_submit(db_pool *p, dbp_work_fn work, dbp_done_fn done, void *arg, bool bounded);

/* Shutdown: no new jobs; the jobs still waiting are cancelled; the workers finish
 * the jobs they run (a connection's own timeout bounds that) and are joined; then
 * every done still due runs here, in the order the jobs finished (the cancelled
 * ones first). Idempotent. */
void dbp_stop(db_pool *p);
/* dbp_stop, then closes the connections and frees the pool. NULL is ignored. */
void dbp_free(db_pool *p);

/* Jobs waiting for a worker, and workers running one (for logs and health). */
unsigned dbp_queued(db_pool *p);
unsigned dbp_busy(db_pool *p);
unsigned dbp_workers(const db_pool *p);
/* The calling thread is the loop's (the API layer asserts this where it sends). */
bool dbp_on_loop(const db_pool *p);

#endif
