#include "enclave/workers.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "enclave/protocol.h"

#define DRAIN_TICK_MS 100
#define DRAIN_FLUSH_MS 200 /* after the last error events: let them reach the parent */
#define WAKE (-1)          /* in a worker's inbox: read its command */

typedef enum worker_cmd { CMD_NONE = 0, CMD_DRAIN, CMD_STOP } worker_cmd;

typedef struct worker {
    enclave_workers *w;
    unsigned index;
    struct event_base *base;
    enclave_core *core;
    enclave_server *srv;
    int inbox_r, inbox_w; /* accepted descriptors and WAKEs, from the control thread */
    struct event *inbox;
    struct event *drain_tick;
    atomic_int cmd;       /* stored after drain_deadline (release), read before it (acquire) */
    pthread_t thread;
    bool running;
    bool draining;        /* the worker thread's own view */
} worker;

struct enclave_workers {
    struct event_base *control;
    estate *st;
    struct evconnlistener *listener;
    int listen_fd;        /* until the listener owns it */
    int done_r, done_w;   /* one byte per worker whose loop ended */
    struct event *done_ev;
    unsigned n, done;
    time_t drain_deadline;
    worker *ws;
};

static int make_pipe(int *r, int *w)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    *r = p[0];
    *w = p[1];
    return 0;
}

/* ---- a worker's thread ---- */

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *k = arg;
    unsigned active = enclave_active_streams(k->core);
    if (active && time(NULL) < k->w->drain_deadline)
        return;
    if (active)
        log_warn(NULL, "event=drain_deadline aborting=%u", active);
    enclave_abort_all(k->core, "Enclave shutting down");
    struct timeval flush = {0, DRAIN_FLUSH_MS * 1000};
    event_base_loopexit(k->base, &flush);
    event_del(k->drain_tick);
}

static void run_command(worker *k)
{
    worker_cmd c = (worker_cmd)atomic_load_explicit(&k->cmd, memory_order_acquire);
    if (c == CMD_STOP) {
        event_base_loopbreak(k->base);
    } else if (c == CMD_DRAIN && !k->draining) {
        k->draining = true;
        log_info(NULL, "event=draining active_streams=%u connections=%u", enclave_active_streams(k->core),
                 enclave_server_connections(k->srv));
        struct timeval tick = {0, DRAIN_TICK_MS * 1000};
        event_add(k->drain_tick, &tick);
        on_drain_tick(-1, 0, k); /* nothing running: stop now */
    }
}

static void on_inbox(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    worker *k = arg;
    int msgs[64];
    ssize_t n;
    /* writes of one int are atomic (below PIPE_BUF), so reads split on int boundaries */
    while ((n = read(fd, msgs, sizeof msgs)) > 0)
        for (size_t i = 0; i < (size_t)n / sizeof msgs[0]; i++)
            if (msgs[i] != WAKE)
                enclave_server_adopt(k->srv, msgs[i]);
    /* a command may come without its WAKE when the inbox was full: look each time */
    run_command(k);
}

static void *worker_main(void *arg)
{
    worker *k = arg;
    char name[16]; /* the kernel's limit, NUL included */
    snprintf(name, sizeof name, "veil-worker-%u", k->index % 1000);
    pthread_setname_np(pthread_self(), name); /* top -H, /proc/PID/task/TID/comm */
    log_set_worker((int)k->index);
    event_base_dispatch(k->base);
    log_info(NULL, "event=worker_stopped");
    char b = 1;
    ssize_t r = write(k->w->done_w, &b, 1); /* at most n bytes in a fresh pipe: never full */
    (void)r;
    return NULL;
}

static void send_command(worker *k, worker_cmd c)
{
    atomic_store_explicit(&k->cmd, c, memory_order_release);
    int wake = WAKE;
    ssize_t r = write(k->inbox_w, &wake, sizeof wake); /* EAGAIN: the worker reads a full inbox anyway */
    (void)r;
}

/* ---- the control thread ---- */

static void on_worker_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    enclave_workers *w = arg;
    char b[64];
    ssize_t n;
    while ((n = read(fd, b, sizeof b)) > 0)
        w->done += (unsigned)n;
    if (w->done >= w->n)
        event_base_loopexit(w->control, NULL);
}

static worker *least_loaded(enclave_workers *w)
{
    worker *best = &w->ws[0];
    unsigned best_n = enclave_server_connections(best->srv);
    for (unsigned i = 1; i < w->n && best_n; i++) {
        unsigned n = enclave_server_connections(w->ws[i].srv);
        if (n < best_n)
            best = &w->ws[i], best_n = n;
    }
    return best;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    enclave_workers *w = arg;
    if (!estate_conn_take(w->st)) {
        enclave_server_refuse(fd, estate_max_connections(w->st));
        return;
    }
    worker *k = least_loaded(w);
    enclave_server_reserve(k->srv);
    int v = fd;
    if (write(k->inbox_w, &v, sizeof v) != (ssize_t)sizeof v) {
        /* 16,384 connections wait for that worker already: it is not keeping up */
        log_warn(NULL, "event=conn_refused reason=worker_inbox_full worker=%u", k->index);
        enclave_server_unreserve(k->srv);
        estate_conn_release(w->st);
        enclave_server_refuse(fd, estate_max_connections(w->st));
    }
}

static void worker_free(worker *k)
{
    log_set_worker((int)k->index); /* the connections' last lines are this worker's */
    enclave_server_free(k->srv);
    enclave_core_free(k->core);
    if (k->inbox_r >= 0) { /* descriptors handed over but never adopted */
        int fd;
        while (read(k->inbox_r, &fd, sizeof fd) == (ssize_t)sizeof fd)
            if (fd != WAKE)
                close(fd);
        close(k->inbox_r);
    }
    if (k->inbox_w >= 0)
        close(k->inbox_w);
    if (k->inbox)
        event_free(k->inbox);
    if (k->drain_tick)
        event_free(k->drain_tick);
    if (k->base)
        event_base_free(k->base);
    log_set_worker(-1);
}

static int worker_init(enclave_workers *w, worker *k, unsigned index, const enclave_workers_config *cfg, char *err,
                       size_t errlen)
{
    k->w = w;
    k->index = index;
    if (!(k->base = event_base_new()) || make_pipe(&k->inbox_r, &k->inbox_w) < 0 ||
        !(k->inbox = event_new(k->base, k->inbox_r, EV_READ | EV_PERSIST, on_inbox, k)) ||
        !(k->drain_tick = event_new(k->base, -1, EV_PERSIST, on_drain_tick, k)) || event_add(k->inbox, NULL) < 0) {
        snprintf(err, errlen, "worker %u: cannot create its event loop: %s", index, strerror(errno));
        return -1;
    }
    enclave_config cc = *cfg->core;
    cc.shared = w->st;
    cc.worker = index;
    cc.workers = w->n;
    log_set_worker((int)index); /* the lines of its making are the worker's */
    k->core = enclave_core_new(k->base, &cc, err, errlen);
    k->srv = k->core ? enclave_server_new(k->base, k->core, -1, cfg->server, err, errlen) : NULL;
    log_set_worker(-1);
    return k->srv ? 0 : -1;
}

enclave_workers *enclave_workers_new(struct event_base *control, int listen_fd, const enclave_workers_config *cfg,
                                     char *err, size_t errlen)
{
    err[0] = '\0';
    enclave_workers *w = calloc(1, sizeof *w);
    if (!w || cfg->workers < 1 || cfg->workers > ENCLAVE_MAX_WORKERS) {
        snprintf(err, errlen, w ? "workers must be 1 to %d" : "out of memory", ENCLAVE_MAX_WORKERS);
        free(w);
        close(listen_fd);
        return NULL;
    }
    w->control = control;
    w->listen_fd = listen_fd;
    w->done_r = w->done_w = -1;
    w->n = cfg->workers;
    const enclave_config *cc = cfg->core;
    estate_config ec = {.max_streams = cc->max_streams, .replay_max = cc->replay_max,
                        .replay_window_s = PROTO_ISSUED_WINDOW_S, .max_connections = cc->max_connections};
    if (!(w->ws = calloc(w->n, sizeof *w->ws)))
        goto fail;
    for (unsigned i = 0; i < w->n; i++) { /* before any can fail: worker_free reads these */
        w->ws[i].inbox_r = w->ws[i].inbox_w = -1;
        atomic_init(&w->ws[i].cmd, CMD_NONE);
    }
    if (!(w->st = estate_new(&ec, err, errlen)))
        goto fail;
    for (unsigned i = 0; i < w->n; i++)
        if (worker_init(w, &w->ws[i], i, cfg, err, errlen) < 0)
            goto fail;
    if (make_pipe(&w->done_r, &w->done_w) < 0 ||
        !(w->done_ev = event_new(control, w->done_r, EV_READ | EV_PERSIST, on_worker_done, w))) {
        snprintf(err, errlen, "cannot create the workers' pipe: %s", strerror(errno));
        goto fail;
    }
    return w;
fail:
    if (!err[0])
        snprintf(err, errlen, "out of memory");
    enclave_workers_free(w);
    return NULL;
}

int enclave_workers_start(enclave_workers *w, char *err, size_t errlen)
{
    /* signals are the control loop's: no worker thread takes one */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = 0;
    for (unsigned i = 0; i < w->n && rc == 0; i++) {
        if ((rc = pthread_create(&w->ws[i].thread, NULL, worker_main, &w->ws[i])) != 0)
            snprintf(err, errlen, "worker %u: cannot start its thread: %s", i, strerror(rc));
        else
            w->ws[i].running = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -1;
    event_add(w->done_ev, NULL);
    w->listener = evconnlistener_new(w->control, on_accept, w, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1,
                                     w->listen_fd);
    if (!w->listener) {
        snprintf(err, errlen, "cannot listen: %s", strerror(errno));
        return -1;
    }
    w->listen_fd = -1;
    return 0;
}

void enclave_workers_drain(enclave_workers *w, time_t deadline)
{
    if (w->listener)
        evconnlistener_disable(w->listener);
    w->drain_deadline = deadline; /* published by each command's release */
    for (unsigned i = 0; i < w->n; i++)
        send_command(&w->ws[i], CMD_DRAIN);
}

void enclave_workers_stop(enclave_workers *w)
{
    if (w->listener)
        evconnlistener_disable(w->listener);
    for (unsigned i = 0; i < w->n; i++)
        send_command(&w->ws[i], CMD_STOP);
}

unsigned enclave_workers_active_streams(const enclave_workers *w) { return estate_streams(w->st); }

void enclave_workers_free(enclave_workers *w)
{
    if (!w)
        return;
    for (unsigned i = 0; w->ws && i < w->n; i++) {
        if (w->ws[i].running) {
            send_command(&w->ws[i], CMD_STOP); /* already stopped after a drain: no effect */
            pthread_join(w->ws[i].thread, NULL);
        }
    }
    if (w->listener)
        evconnlistener_free(w->listener);
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    for (unsigned i = 0; w->ws && i < w->n; i++)
        worker_free(&w->ws[i]);
    free(w->ws);
    estate_free(w->st); /* after the cores: their requests hold credentials */
    if (w->done_ev)
        event_free(w->done_ev);
    if (w->done_r >= 0)
        close(w->done_r);
    if (w->done_w >= 0)
        close(w->done_w);
    free(w);
}
