/* db_pool — worker threads with their own connections, a bounded job queue, and
 * completions back on the loop. See db_pool.h.
 *
 * One mutex guards the two lists (waiting, finished) and the counts; a condition
 * wakes idle workers. A worker that finishes a job appends it to the finished list
 * and writes the eventfd; the loop drains the list in one go and runs the dones
 * outside the lock, so a done may submit again.
 */
#include "server/db_pool.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct dbp_job {
    dbp_work_fn work;
    dbp_done_fn done;
    void *arg;
    dbp_status status;
    struct dbp_job *next;
} dbp_job;

typedef struct dbp_list {
    dbp_job *head, *tail;
} dbp_list;

typedef struct dbp_worker {
    db_pool *p;
    pthread_t t;
    void *conn;
    bool started;
} dbp_worker;

struct db_pool {
    dbp_config cfg;
    pthread_t loop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dbp_list waiting, finished;
    unsigned queued, busy;
    bool stopping, stopped;
    int efd;
    struct event *wake;
    dbp_worker *w;
};

static void list_push(dbp_list *l, dbp_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static dbp_job *list_take_all(dbp_list *l)
{
    dbp_job *h = l->head;
    l->head = l->tail = NULL;
    return h;
}

/* Wakes the loop: the eventfd's counter only grows, one read resets it. */
static void wake_loop(db_pool *p)
{
    uint64_t one = 1;
    ssize_t n = write(p->efd, &one, sizeof one);
    (void)n; /* EAGAIN: the counter is saturated, the loop is woken anyway */
}

static void *worker_main(void *arg)
{
    dbp_worker *w = arg;
    db_pool *p = w->p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stopping && !p->waiting.head)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping)
            break; /* what still waits is cancelled by dbp_stop */
        dbp_job *j = p->waiting.head;
        p->waiting.head = j->next;
        if (!p->waiting.head)
            p->waiting.tail = NULL;
        p->queued--;
        p->busy++;
        pthread_mutex_unlock(&p->mu);

        j->work(w->conn, j->arg);
        j->status = DBP_RAN;

        pthread_mutex_lock(&p->mu);
        p->busy--;
        list_push(&p->finished, j);
        wake_loop(p);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Runs the dones of every finished job, in the order they finished. */
static void deliver(db_pool *p)
{
    for (;;) {
        pthread_mutex_lock(&p->mu);
        dbp_job *j = list_take_all(&p->finished);
        pthread_mutex_unlock(&p->mu);
        if (!j)
            return;
        while (j) {
            dbp_job *next = j->next;
            j->done(j->arg, j->status);
            free(j);
            j = next;
        }
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t n;
    ssize_t r = read(fd, &n, sizeof n);
    (void)r;
    deliver(arg);
}

static void close_conns(db_pool *p)
{
    for (unsigned i = 0; p->w && i < p->cfg.workers; i++)
        if (p->w[i].conn) {
            p->cfg.close(p->cfg.ud, p->w[i].conn);
            p->w[i].conn = NULL;
        }
}

/* The workers take no signals: SIGTERM and SIGINT reach the loop's thread. */
static int start_workers(db_pool *p, char *err, size_t errlen)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (unsigned i = 0; i < p->cfg.workers && rc == 0; i++) {
        p->w[i].p = p;
        rc = pthread_create(&p->w[i].t, NULL, worker_main, &p->w[i]);
        p->w[i].started = rc == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        snprintf(err, errlen, "cannot start a database worker: %s", strerror(rc));
    return rc == 0 ? 0 : -1;
}

db_pool *dbp_new(struct event_base *base, const dbp_config *cfg, char *err, size_t errlen)
{
    if (cfg->workers == 0 || !cfg->open || !cfg->close) {
        snprintf(err, errlen, "a database pool needs at least one worker");
        return NULL;
    }
    db_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->w = calloc(cfg->workers, sizeof *p->w))) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = *cfg;
    p->loop = pthread_self();
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0 || !(p->wake = event_new(base, p->efd, EV_READ | EV_PERSIST, on_wake, p)) ||
        event_add(p->wake, NULL) < 0) {
        snprintf(err, errlen, "cannot create the database pool's wake-up: %s", strerror(errno));
        goto fail;
    }
    for (unsigned i = 0; i < cfg->workers; i++)
        if (!(p->w[i].conn = cfg->open(cfg->ud, i, err, errlen)))
            goto fail;
    if (start_workers(p, err, errlen) < 0)
        goto fail;
    return p;
fail:
    dbp_free(p);
    return NULL;
}

dbp_rc dbp_submit(db_pool *p, dbp_work_fn work, dbp_done_fn done, void *arg, bool bounded)
{
    dbp_job *j = calloc(1, sizeof *j);
    if (!j)
        return DBP_NOMEM;
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&p->mu);
    dbp_rc rc = p->stopping ? DBP_STOPPED : bounded && p->queued >= p->cfg.queue_max ? DBP_FULL : DBP_OK;
    if (rc == DBP_OK) {
        list_push(&p->waiting, j);
        p->queued++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != DBP_OK)
        free(j);
    return rc;
}

void dbp_stop(db_pool *p)
{
    if (!p || p->stopped)
        return;
    p->stopped = true;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    for (dbp_job *j = list_take_all(&p->waiting), *next; j; j = next) {
        next = j->next;
        j->status = DBP_CANCELLED;
        list_push(&p->finished, j);
    }
    p->queued = 0;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; p->w && i < p->cfg.workers; i++)
        if (p->w[i].started) {
            pthread_join(p->w[i].t, NULL);
            p->w[i].started = false;
        }
    deliver(p);
}

void dbp_free(db_pool *p)
{
    if (!p)
        return;
    dbp_stop(p);
    close_conns(p);
    if (p->wake)
        event_free(p->wake);
    if (p->efd >= 0)
        close(p->efd);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}

unsigned dbp_queued(db_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned n = p->queued;
    pthread_mutex_unlock(&p->mu);
    return n;
}

unsigned dbp_busy(db_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned n = p->busy;
    pthread_mutex_unlock(&p->mu);
    return n;
}

unsigned dbp_workers(const db_pool *p) { return p->cfg.workers; }

bool dbp_on_loop(const db_pool *p) { return pthread_equal(pthread_self(), p->loop) != 0; }
