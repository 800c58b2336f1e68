/* server/db_pool: jobs run on the workers, each with its own connection; their
 * dones come back on the loop's thread in the order the jobs finished; the queue
 * bound refuses a bounded job and admits an unbounded one; stopping cancels what
 * waits, lets the running job finish, and closes every connection; a pool whose
 * connection cannot be opened is not made.
 *
 * The connections are fakes (one small block each); a job can wait on a gate the
 * test opens, so the order of events is the test's, not the scheduler's. Nothing
 * here depends on time: waits are for events, bounded by a generous deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/db_pool.h"

#define WAIT_S 30 /* a bound for every wait: never reached unless the pool is broken */

/* ---- fake connections ---- */

typedef struct fake_conn {
    unsigned id;
} fake_conn;

static struct {
    int opened, closed;
    int fail_at; /* open of this worker fails (-1: none) */
} conns;

static void *fake_open(void *ud, unsigned i, char *err, size_t errlen)
{
    (void)ud;
    if ((int)i == conns.fail_at) {
        snprintf(err, errlen, "connection %u refused", i);
        return NULL;
    }
    fake_conn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->id = i;
    conns.opened++;
    return c;
}

static void fake_close(void *ud, void *conn)
{
    (void)ud;
    conns.closed++;
    free(conn);
}

/* ---- gates: a job waits until the test opens it ---- */

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    int started; /* jobs that reached the gate */
} gate;

static void gate_init(gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = false;
    g->started = 0;
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_pass(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->started++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* Waits until n jobs stand at the gate. */
static void gate_wait_started(gate *g, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_S;
    pthread_mutex_lock(&g->mu);
    while (g->started < n)
        assert_int_equal(pthread_cond_timedwait(&g->cv, &g->mu, &until), 0);
    pthread_mutex_unlock(&g->mu);
}

/* ---- jobs ---- */

typedef struct tjob {
    gate *g; /* NULL: no wait */
    pthread_t ran_on, done_on;
    const fake_conn *conn;
    bool ran, done, on_loop_in_work;
    dbp_status st;
    int order; /* 1 for the first done, ... */
} tjob;

static pthread_t g_main;
static int g_done_count;
static db_pool *g_pool;

static void work(void *conn, void *arg)
{
    tjob *j = arg;
    j->ran_on = pthread_self();
    j->conn = conn;
    j->on_loop_in_work = dbp_on_loop(g_pool);
    if (j->g)
        gate_pass(j->g);
    j->ran = true;
}

static void done(void *arg, dbp_status st)
{
    tjob *j = arg;
    assert_false(j->done); /* once */
    j->done = true;
    j->st = st;
    j->done_on = pthread_self();
    j->order = ++g_done_count;
}

/* ---- the loop ---- */

static struct event_base *g_base;

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until every job in js is done (bounded). */
static void loop_until_done(tjob **js, size_t n)
{
    struct event *t = event_new(g_base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 50000};
    event_add(t, &tv);
    time_t until = time(NULL) + WAIT_S;
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++)
            left += !js[i]->done;
        if (!left)
            break;
        assert_true(time(NULL) < until);
        event_base_loop(g_base, EVLOOP_ONCE);
    }
    event_free(t);
}

static db_pool *new_pool(unsigned workers, unsigned queue_max)
{
    dbp_config cfg = {.workers = workers, .queue_max = queue_max, .open = fake_open, .close = fake_close};
    char err[256];
    db_pool *p = dbp_new(g_base, &cfg, err, sizeof err);
    assert_non_null(p);
    g_pool = p;
    return p;
}

static int setup(void **state)
{
    (void)state;
    memset(&conns, 0, sizeof conns);
    conns.fail_at = -1;
    g_done_count = 0;
    g_main = pthread_self();
    g_base = event_base_new();
    return g_base ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    event_base_free(g_base);
    g_base = NULL;
    g_pool = NULL;
    return 0;
}

/* ---- tests ---- */

/* Every job runs once on a worker, with one of the pool's connections; its done
 * runs on the loop's thread with DBP_RAN. */
static void test_jobs_run_on_workers(void **state)
{
    (void)state;
    db_pool *p = new_pool(3, 16);
    assert_int_equal(conns.opened, 3);
    assert_int_equal(dbp_workers(p), 3);
    assert_true(dbp_on_loop(p));
    tjob jobs[8] = {0};
    tjob *js[8];
    for (int i = 0; i < 8; i++) {
        js[i] = &jobs[i];
        assert_int_equal(dbp_submit(p, work, done, &jobs[i], true), DBP_OK);
    }
    loop_until_done(js, 8);
    for (int i = 0; i < 8; i++) {
        assert_true(jobs[i].ran);
        assert_int_equal(jobs[i].st, DBP_RAN);
        assert_false(pthread_equal(jobs[i].ran_on, g_main));
        assert_false(jobs[i].on_loop_in_work);
        assert_true(pthread_equal(jobs[i].done_on, g_main));
        assert_non_null(jobs[i].conn);
        assert_true(jobs[i].conn->id < 3);
    }
    dbp_free(p);
    assert_int_equal(conns.closed, 3);
}

/* Two workers: a job that is held finishes after one submitted later; the dones
 * come in the order the jobs finished, not the order they were submitted. */
static void test_completion_order(void **state)
{
    (void)state;
    db_pool *p = new_pool(2, 16);
    gate g;
    gate_init(&g);
    tjob a = {.g = &g}, b = {0};
    assert_int_equal(dbp_submit(p, work, done, &a, true), DBP_OK);
    gate_wait_started(&g, 1);
    assert_int_equal(dbp_submit(p, work, done, &b, true), DBP_OK);
    tjob *only_b[] = {&b};
    loop_until_done(only_b, 1);
    assert_false(a.done);
    assert_true(a.conn != b.conn); /* two workers, two connections */
    gate_open(&g);
    tjob *only_a[] = {&a};
    loop_until_done(only_a, 1);
    assert_int_equal(b.order, 1);
    assert_int_equal(a.order, 2);
    dbp_free(p);
}

/* One worker, at most two waiting: with one job running and two waiting, a third
 * bounded job is refused (DBP_FULL, its done never runs); an unbounded one is
 * admitted. When the worker is free again, every admitted job runs, in order,
 * and the queue takes bounded jobs again. */
static void test_queue_bound(void **state)
{
    (void)state;
    db_pool *p = new_pool(1, 2);
    gate g;
    gate_init(&g);
    tjob a = {.g = &g}, b = {0}, c = {0}, d = {0}, e = {0}, f = {0};
    assert_int_equal(dbp_submit(p, work, done, &a, true), DBP_OK);
    gate_wait_started(&g, 1);
    assert_int_equal(dbp_busy(p), 1);
    assert_int_equal(dbp_submit(p, work, done, &b, true), DBP_OK);
    assert_int_equal(dbp_submit(p, work, done, &c, true), DBP_OK);
    assert_int_equal(dbp_submit(p, work, done, &d, true), DBP_FULL);
    assert_int_equal(dbp_queued(p), 2);
    assert_int_equal(dbp_submit(p, work, done, &e, false), DBP_OK);
    assert_int_equal(dbp_queued(p), 3);
    gate_open(&g);
    tjob *js[] = {&a, &b, &c, &e};
    loop_until_done(js, 4);
    assert_false(d.ran);
    assert_false(d.done);
    assert_int_equal(a.order, 1);
    assert_int_equal(b.order, 2);
    assert_int_equal(c.order, 3);
    assert_int_equal(e.order, 4);
    assert_int_equal(dbp_queued(p), 0);
    assert_int_equal(dbp_submit(p, work, done, &f, true), DBP_OK);
    tjob *jf[] = {&f};
    loop_until_done(jf, 1);
    dbp_free(p);
}

typedef struct opener {
    db_pool *p;
    gate *g;
} opener;

/* Opens the gate once the stop has taken the waiting jobs out of the queue. */
static void *open_when_cancelled(void *arg)
{
    opener *o = arg;
    time_t until = time(NULL) + WAIT_S;
    while (dbp_queued(o->p) > 0 && time(NULL) < until)
        usleep(1000);
    gate_open(o->g);
    return NULL;
}

static int g_resubmit;

static void done_resubmit(void *arg, dbp_status st)
{
    done(arg, st);
    g_resubmit = dbp_submit(g_pool, work, done, arg, true);
}

/* Stopping with one job running and two waiting: the two are cancelled (their
 * dones run with DBP_CANCELLED, their work never), the running one finishes and
 * its done runs, all on the loop's thread and before dbp_stop returns; a done
 * that submits again is refused; then the connection is closed. */
static void test_stop_with_jobs_queued(void **state)
{
    (void)state;
    db_pool *p = new_pool(1, 8);
    gate g;
    gate_init(&g);
    tjob a = {.g = &g}, b = {0}, c = {0};
    assert_int_equal(dbp_submit(p, work, done, &a, true), DBP_OK);
    gate_wait_started(&g, 1);
    assert_int_equal(dbp_submit(p, work, done_resubmit, &b, true), DBP_OK);
    assert_int_equal(dbp_submit(p, work, done, &c, true), DBP_OK);
    opener o = {p, &g};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, open_when_cancelled, &o), 0);
    dbp_stop(p);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(a.done && b.done && c.done);
    assert_int_equal(a.st, DBP_RAN);
    assert_true(a.ran);
    assert_int_equal(b.st, DBP_CANCELLED);
    assert_int_equal(c.st, DBP_CANCELLED);
    assert_false(b.ran);
    assert_false(c.ran);
    assert_int_equal(b.order, 1); /* cancelled at the stop, before the running one ended */
    assert_int_equal(c.order, 2);
    assert_int_equal(a.order, 3);
    assert_int_equal(g_resubmit, DBP_STOPPED);
    assert_true(pthread_equal(b.done_on, g_main) && pthread_equal(a.done_on, g_main));
    tjob late = {0};
    assert_int_equal(dbp_submit(p, work, done, &late, true), DBP_STOPPED);
    assert_int_equal(conns.closed, 0);
    dbp_free(p);
    assert_int_equal(conns.closed, 1);
    assert_false(late.done);
}

/* A connection that cannot be opened: no pool, and the ones opened are closed. */
static void test_open_failure(void **state)
{
    (void)state;
    conns.fail_at = 2;
    dbp_config cfg = {.workers = 4, .queue_max = 4, .open = fake_open, .close = fake_close};
    char err[256] = "";
    assert_null(dbp_new(g_base, &cfg, err, sizeof err));
    assert_string_equal(err, "connection 2 refused");
    assert_int_equal(conns.opened, 2);
    assert_int_equal(conns.closed, 2);
    cfg.workers = 0;
    assert_null(dbp_new(g_base, &cfg, err, sizeof err));
    assert_non_null(strstr(err, "at least one worker"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_jobs_run_on_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completion_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_jobs_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_failure, setup, teardown),
    };
    return cmocka_run_group_tests_name("server/db_pool", tests, NULL, NULL);
}
