/* enclave_client — see enclave_client.h.
 * Stays whole (~860 lines): the operations, the two transports and the replies all
 * drive one operation's life (its deadline, cancel, pause and single finish); split
 * apart, each file would need the operation's insides and its invariants would no
 * longer read in one place. */
#include "server/link/enclave_client.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"
#include "common/secret.h"
#include "attest/nsm.h"
#include "enclave/enclave.h"
#include "enclave/server.h"

#define CONTROL_TIMEOUT_MS 5000u
#define KEY_TIMEOUT_MS 10000u
#define MAX_IDLE_CONNS 8
#define MAX_LINE (64u << 20)
#define KEY_RETRY_MS 2000u
/* The enclave's listen backlog is full (a unix socket's connect says EAGAIN): the
 * enclave is there and busy, so the connect is tried again after 5, 10, ... 320 ms,
 * at most this many times; the op's own deadline bounds the wait too. */
#define CONNECT_BUSY_RETRIES 24

typedef enum op_kind { OP_HEALTH, OP_SET_CREDS, OP_KEY, OP_STREAM, OP_ATTEST } op_kind;

typedef struct ec_conn ec_conn;

struct ec_op {
    enclave_client *ec;
    op_kind kind;
    ec_conn *conn;
    struct event *timer;  /* deadline (nitro) / deferred start (mock) */
    struct event *kick;   /* mock: run the request from the loop */
    vbuf req;             /* the request line, kept for one retry */
    bool reused_conn;     /* a failure before any reply byte may be retried once */
    bool retried;
    unsigned busy_waits;  /* connects put off because the enclave's backlog was full */
    bool connect_wait;    /* kick is a timer for the next connect */
    bool got_bytes;
    bool finished;
    bool in_cb;           /* inside on_event: a cancel only marks the op */
    bool paused;          /* backpressure: do not deliver events now */
    struct event *resume; /* delivers the events buffered while paused */
    json_t *mock_req;     /* mock: the request object */
    enclave_req *mock;    /* mock: the running core request */
    char rid[LOG_RID_LEN + 1];
    ec_health_cb health_cb;
    ec_result_cb result_cb;
    ec_attest_cb attest_cb;
    bool fill_cache;      /* OP_ATTEST made for the cache */
    ec_stream_callbacks scb;
    void *ud;
    LIST_ENTRY(ec_op) live; /* every op from its allocation on, to cancel on free */
};

struct ec_conn {
    enclave_client *ec;
    struct bufferevent *bev;
    vbuf line;
    ec_op *op;
    SLIST_ENTRY(ec_conn) idle; /* while pooled */
};

struct enclave_client {
    struct event_base *base;
    enclave_mode mode;
    veil_addr addr;
    char addr_text[160];
    long cid;
    unsigned stream_timeout_ms;
    size_t max_request;
    /* the last document made with veild's own nonce, for clients that send none */
    char *attest_b64;
    char attest_pub[65];
    char attest_nsm[16];
    time_t attest_at;
    char pub_hex[65];
    bool have_key;
    bool key_fetching;
    bool down; /* the last connect failed */
    struct event *key_retry;
    SLIST_HEAD(, ec_conn) idle; /* pooled connections (nitro) */
    unsigned n_idle;
    LIST_HEAD(, ec_op) live;
    void (*restart_cb)(void *);
    void *restart_ud;
    enclave_core *core; /* mock */
    nsm *nsm;           /* mock: the in-process core's NSM, or NULL */
};

/* ---- common ---- */

static void conn_free(ec_conn *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    vbuf_free(&c->line);
    free(c);
}

static void op_free(ec_op *op)
{
    LIST_REMOVE(op, live);
    if (op->timer)
        event_free(op->timer);
    if (op->kick)
        event_free(op->kick);
    if (op->resume)
        event_free(op->resume);
    if (op->conn) {
        op->conn->op = NULL;
        conn_free(op->conn); /* closing it makes the enclave cancel a running stream */
    }
    json_decref(op->mock_req);
    vbuf_free_secure(&op->req);
    free(op);
}

const char *ec_mode_name(const enclave_client *ec) { return ec->mode == ENCLAVE_NITRO ? "nitro" : "mock"; }
const char *ec_addr(const enclave_client *ec) { return ec->addr_text; }
long ec_cid(const enclave_client *ec) { return ec->cid; }
const char *ec_public_key(const enclave_client *ec) { return ec->have_key ? ec->pub_hex : NULL; }
size_t ec_max_request(const enclave_client *ec) { return ec->max_request; }

void ec_on_restart(enclave_client *ec, void (*cb)(void *), void *ud)
{
    ec->restart_cb = cb;
    ec->restart_ud = ud;
}

/* What deliver() did with op. */
typedef enum { OP_MORE = 0, OP_COMPLETE, OP_CANCELLED } deliver_rc;

/* A reply or event object arrived for op. Unless OP_MORE, op has been freed:
 * OP_CANCELLED says it was cancelled from inside the callback. */
static deliver_rc deliver(ec_op *op, json_t *obj);
static void finish_error(ec_op *op, enclave_err code, const char *msg);

/* ---- nitro transport ---- */

static void conn_to_idle(enclave_client *ec, ec_conn *c)
{
    c->op = NULL;
    vbuf_reset(&c->line);
    if (ec->n_idle >= MAX_IDLE_CONNS) {
        conn_free(c);
        return;
    }
    SLIST_INSERT_HEAD(&ec->idle, c, idle);
    ec->n_idle++;
}

static void idle_remove(enclave_client *ec, ec_conn *c)
{
    SLIST_REMOVE(&ec->idle, c, ec_conn, idle);
    ec->n_idle--;
}

static void note_up(enclave_client *ec)
{
    if (ec->down) {
        ec->down = false;
        log_info(NULL, "event=enclave_reachable addr=%s", ec->addr_text);
        ec_refresh_key(ec); /* it may have restarted with a new key */
    }
}

static void note_down(enclave_client *ec)
{
    if (!ec->down) {
        ec->down = true;
        log_warn(NULL, "event=enclave_unreachable addr=%s", ec->addr_text);
    }
}

static void start_nitro(ec_op *op);

static void on_conn_read(struct bufferevent *bev, void *arg)
{
    ec_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!c->op) { /* an idle connection should be silent */
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    ec_op *op = c->op;
    op->got_bytes = true;
    note_up(c->ec);
    while (!op->paused) {
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
        if (!line) {
            if (evbuffer_get_length(in) > MAX_LINE)
                finish_error(op, ENCLAVE_ERR_PROTOCOL, "enclave line too long");
            return;
        }
        json_error_t jerr;
        json_t *obj = n ? json_loadb(line, n, 0, &jerr) : NULL;
        free(line);
        if (!n)
            continue;
        if (!obj) {
            finish_error(op, ENCLAVE_ERR_PROTOCOL, "enclave sent invalid JSON");
            return;
        }
        deliver_rc done = deliver(op, obj);
        json_decref(obj);
        if (done != OP_MORE)
            return; /* op freed, connection pooled or closed */
    }
}

static void on_op_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ec_op *op = arg;
    if (!op->paused && op->conn)
        on_conn_read(op->conn->bev, op->conn);
}

void ec_op_pause(ec_op *op, bool pause)
{
    if (!op || op->finished || op->paused == pause)
        return;
    op->paused = pause;
    if (op->mock) {
        enclave_req_pause(op->mock, pause);
        return;
    }
    if (!op->conn)
        return;
    if (pause) {
        bufferevent_disable(op->conn->bev, EV_READ);
        return;
    }
    bufferevent_enable(op->conn->bev, EV_READ);
    if (!op->resume)
        op->resume = event_new(op->ec->base, -1, 0, on_op_resume, op);
    if (op->resume && evbuffer_get_length(bufferevent_get_input(op->conn->bev)) > 0)
        event_active(op->resume, EV_TIMEOUT, 0); /* lines read before the pause */
}

static void on_conn_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    ec_conn *c = arg;
    enclave_client *ec = c->ec;
    if (what & BEV_EVENT_CONNECTED)
        return;
    ec_op *op = c->op;
    if (!op) { /* an idle connection closed (e.g. the enclave restarted) */
        idle_remove(ec, c);
        conn_free(c);
        return;
    }
    int e = EVUTIL_SOCKET_ERROR();
    if (!op->got_bytes && op->reused_conn && !op->retried) {
        /* a pooled connection went stale: try once more on a fresh one */
        op->retried = true;
        op->conn = NULL;
        c->op = NULL;
        conn_free(c);
        start_nitro(op);
        return;
    }
    if (!op->got_bytes && (what & BEV_EVENT_ERROR) && (e == ECONNREFUSED || e == ENOENT))
        note_down(ec);
    finish_error(op, ENCLAVE_ERR_UNAVAILABLE,
                 op->got_bytes ? "enclave closed the connection" : "enclave unreachable");
}

static ec_conn *conn_open(enclave_client *ec, char *err, size_t errlen)
{
    int fd = addr_connect(&ec->addr, true, err, errlen);
    if (fd < 0)
        return NULL;
    ec_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->ec = ec;
    c->bev = bufferevent_socket_new(ec->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        close(fd);
        free(c);
        return NULL;
    }
    bufferevent_setcb(c->bev, on_conn_read, NULL, on_conn_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return c;
}

static void free_wiped(const void *data, size_t len, void *extra)
{
    (void)extra;
    secure_wipe((void *)data, len);
    free((void *)data);
}

/* A request may carry credentials, and bufferevent_write would copy them into
 * chains that libevent frees unwiped. libevent instead writes from a copy of
 * ours, which it hands back to free_wiped once written or dropped. A copy,
 * because op->req stays for a retry and a freed bufferevent lets go of its
 * chains only later. */
static int write_wiped(struct bufferevent *bev, const vbuf *b)
{
    uint8_t *copy = malloc(b->len ? b->len : 1);
    if (!copy)
        return -1;
    memcpy(copy, b->data, b->len);
    if (evbuffer_add_reference(bufferevent_get_output(bev), copy, b->len, free_wiped, NULL) < 0) {
        free_wiped(copy, b->len, NULL); /* not called back on failure */
        return -1;
    }
    return 0;
}

static void start_nitro(ec_op *op)
{
    enclave_client *ec = op->ec;
    ec_conn *c = NULL;
    op->reused_conn = false;
    if (!SLIST_EMPTY(&ec->idle)) {
        c = SLIST_FIRST(&ec->idle);
        SLIST_REMOVE_HEAD(&ec->idle, idle);
        ec->n_idle--;
        op->reused_conn = true;
    } else {
        char err[200];
        c = conn_open(ec, err, sizeof err);
        if (!c && (errno == EAGAIN || errno == EWOULDBLOCK) && op->busy_waits < CONNECT_BUSY_RETRIES) {
            unsigned shift = op->busy_waits < 6 ? op->busy_waits : 6;
            struct timeval tv = {0, (suseconds_t)(5000u << shift)};
            op->busy_waits++;
            op->connect_wait = true;
            log_debug(op->rid, "event=enclave_busy_backlog attempt=%u", op->busy_waits);
            event_add(op->kick, &tv);
            return;
        }
        if (!c) {
            note_down(ec);
            log_info(op->rid, "event=enclave_connect_failed detail=\"%s\"", err);
            /* report from the loop (on_kick): callers expect asynchronous callbacks */
            event_active(op->kick, EV_TIMEOUT, 0);
            return;
        }
    }
    c->op = op;
    op->conn = c;
    if (write_wiped(c->bev, &op->req) < 0)
        event_active(op->kick, EV_TIMEOUT, 0);
}

/* ---- replies ---- */

static void finish(ec_op *op, bool keep_conn)
{
    enclave_client *ec = op->ec;
    op->finished = true;
    if (op->conn) {
        ec_conn *c = op->conn;
        op->conn = NULL;
        if (keep_conn && ec->mode == ENCLAVE_NITRO)
            conn_to_idle(ec, c);
        else
            conn_free(c);
    }
    op_free(op);
}

static void set_key(enclave_client *ec, const char *hex)
{
    bool changed = !ec->have_key || strcmp(ec->pub_hex, hex) != 0;
    snprintf(ec->pub_hex, sizeof ec->pub_hex, "%s", hex);
    ec->have_key = true;
    if (changed) {
        log_info(NULL, "event=enclave_key_learned mode=%s", ec_mode_name(ec));
        if (ec->restart_cb)
            ec->restart_cb(ec->restart_ud);
    }
}

static void finish_error(ec_op *op, enclave_err code, const char *msg)
{
    if (op->finished)
        return;
    log_info(op->rid, "event=enclave_op_failed kind=%d code=%s", (int)op->kind, enclave_err_name(code));
    switch (op->kind) {
    case OP_HEALTH: {
        ec_health_result h = {0};
        snprintf(h.error, sizeof h.error, "%s", msg);
        op->health_cb(op->ud, &h);
        break;
    }
    case OP_SET_CREDS:
        op->result_cb(op->ud, false, msg);
        break;
    case OP_KEY: {
        enclave_client *ec = op->ec;
        ec->key_fetching = false;
        struct timeval tv = {KEY_RETRY_MS / 1000, (KEY_RETRY_MS % 1000) * 1000};
        event_add(ec->key_retry, &tv);
        break;
    }
    case OP_STREAM:
        op->scb.on_end(op->ud, code, msg);
        break;
    case OP_ATTEST:
        op->attest_cb(op->ud, code, NULL, NULL, NULL);
        break;
    }
    finish(op, false);
}

static bool is_success(const json_t *obj)
{
    const char *status = json_string_value(json_object_get(obj, PF_STATUS));
    return status && strcmp(status, "success") == 0;
}

static deliver_rc deliver_health(ec_op *op, const json_t *obj)
{
    enclave_client *ec = op->ec;
    ec_health_result h = {0};
    h.ok = is_success(obj);
    h.has_credentials = json_is_true(json_object_get(obj, PF_HAS_CREDENTIALS));
    const char *region = json_string_value(json_object_get(obj, PF_REGION));
    snprintf(h.region, sizeof h.region, "%s", region ? region : "");
    if (!h.ok)
        snprintf(h.error, sizeof h.error, "enclave reported an error");
    const char *pk = json_string_value(json_object_get(obj, PF_PUBLIC_KEY));
    if (h.ok && pk && strlen(pk) == 64)
        set_key(ec, pk); /* a different key means the enclave restarted */
    json_int_t mr = json_integer_value(json_object_get(obj, PF_MAX_REQUEST));
    if (h.ok && mr >= 1024 && (size_t)mr != ec->max_request) {
        ec->max_request = (size_t)mr;
        log_info(NULL, "event=enclave_limit_learned max_request=%zu", ec->max_request);
    }
    op->health_cb(op->ud, &h);
    finish(op, true);
    return OP_COMPLETE;
}

static deliver_rc deliver_key(ec_op *op, const json_t *obj)
{
    enclave_client *ec = op->ec;
    const char *pk = json_string_value(json_object_get(obj, PF_PUBLIC_KEY));
    ec->key_fetching = false;
    if (is_success(obj) && pk && strlen(pk) == 64) {
        set_key(ec, pk);
    } else {
        struct timeval tv = {KEY_RETRY_MS / 1000, (KEY_RETRY_MS % 1000) * 1000};
        event_add(ec->key_retry, &tv);
    }
    finish(op, true);
    return OP_COMPLETE;
}

static deliver_rc deliver_stream(ec_op *op, const json_t *obj)
{
    enclave_client *ec = op->ec;
    proto_event ev;
    switch (proto_parse_event(obj, &ev)) {
    case PROTO_EV_INVALID:
        finish_error(op, ENCLAVE_ERR_PROTOCOL, "enclave sent an event outside the protocol");
        return OP_COMPLETE;
    case PROTO_EV_ERROR:
        if (ev.err == ENCLAVE_ERR_DECRYPT_FAILED || ev.err == ENCLAVE_ERR_NO_CREDENTIALS) {
            /* the client used a stale key, or the enclave lost its credentials: both
             * mean it restarted; learn the key and push credentials again */
            ec_refresh_key(ec);
            if (ev.err == ENCLAVE_ERR_NO_CREDENTIALS && ec->restart_cb)
                ec->restart_cb(ec->restart_ud);
        }
        op->scb.on_end(op->ud, ev.err, ev.err_msg);
        finish(op, true);
        return OP_COMPLETE;
    default:
        break;
    }
    op->in_cb = true;
    op->scb.on_event(op->ud, &ev);
    op->in_cb = false;
    if (op->finished) { /* cancelled inside the callback: the free was left to us */
        op_free(op);
        return OP_CANCELLED;
    }
    if (ev.kind == PROTO_EV_FINAL) {
        op->scb.on_end(op->ud, ENCLAVE_OK, NULL);
        finish(op, true);
        return OP_COMPLETE;
    }
    return OP_MORE;
}

static deliver_rc deliver_attest(ec_op *op, const json_t *obj)
{
    enclave_client *ec = op->ec;
    const char *doc = json_string_value(json_object_get(obj, PF_ATTESTATION));
    const char *pk = json_string_value(json_object_get(obj, PF_PUBLIC_KEY));
    const char *nsm_name = json_string_value(json_object_get(obj, PF_NSM));
    if (!is_success(obj) || !doc || !pk || strlen(pk) != 64) {
        /* an enclave that does not know the command (the original's answers "Unknown
         * command") cannot attest: the same as one without an NSM */
        enclave_err e = enclave_err_parse(json_string_value(json_object_get(obj, PF_ERROR_CODE)));
        op->attest_cb(op->ud, e == ENCLAVE_ERR_UNKNOWN ? ENCLAVE_ERR_NO_ATTESTATION : e, NULL, NULL, NULL);
        finish(op, true);
        return OP_COMPLETE;
    }
    if (!ec->have_key || strcmp(ec->pub_hex, pk) != 0)
        ec_refresh_key(ec); /* the enclave restarted: learn its key the usual way */
    if (op->fill_cache) {
        char *copy = strdup(doc);
        if (copy) {
            free(ec->attest_b64);
            ec->attest_b64 = copy;
            snprintf(ec->attest_pub, sizeof ec->attest_pub, "%s", pk);
            snprintf(ec->attest_nsm, sizeof ec->attest_nsm, "%s", nsm_name ? nsm_name : "");
            ec->attest_at = time(NULL);
        }
    }
    op->attest_cb(op->ud, ENCLAVE_OK, doc, pk, nsm_name ? nsm_name : "");
    finish(op, true);
    return OP_COMPLETE;
}

static deliver_rc deliver(ec_op *op, json_t *obj)
{
    switch (op->kind) {
    case OP_ATTEST: return deliver_attest(op, obj);
    case OP_HEALTH: return deliver_health(op, obj);
    case OP_KEY: return deliver_key(op, obj);
    case OP_STREAM: return deliver_stream(op, obj);
    case OP_SET_CREDS:
        op->result_cb(op->ud, is_success(obj), is_success(obj) ? NULL : "enclave refused the credentials");
        finish(op, true);
        return OP_COMPLETE;
    }
    return OP_MORE;
}

/* ---- mock transport: the core in-process ---- */

static int mock_emit(void *ud, const char *json, size_t len)
{
    ec_op *op = ud;
    if (op->finished)
        return 1; /* cancelled: the core frees its request, no further calls */
    json_t *obj = json_loadb(json, len, 0, NULL);
    if (!obj)
        return 0;
    /* on the final object deliver() frees op; the core then ends its own request.
     * A cancel from inside the route's callback stops the core at once. */
    deliver_rc rc = deliver(op, obj);
    json_decref(obj);
    return rc == OP_CANCELLED;
}

static void mock_done(void *ud)
{
    (void)ud; /* every reply path delivered a final object already */
}

static const enclave_sink MOCK_SINK = {mock_emit, mock_done};

/* ---- op plumbing ---- */

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ec_op *op = arg;
    enclave_client *ec = op->ec;
    if (ec->mode == ENCLAVE_NITRO && op->connect_wait) { /* the enclave was busy: connect again */
        op->connect_wait = false;
        start_nitro(op);
        return;
    }
    if (ec->mode == ENCLAVE_NITRO) { /* a connect that failed at once */
        finish_error(op, ENCLAVE_ERR_UNAVAILABLE, "enclave unreachable");
        return;
    }
    json_t *req = op->mock_req;
    op->mock_req = NULL;
    /* completion may free op inside this call: do not touch op after it unless
     * the request is still running */
    enclave_req *er = enclave_handle(ec->core, req, &MOCK_SINK, op, op->rid);
    json_decref(req);
    if (er)
        op->mock = er;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ec_op *op = arg;
    if (op->mock) {
        enclave_req_cancel(op->mock);
        op->mock = NULL;
    }
    finish_error(op, ENCLAVE_ERR_TIMEOUT, "Request timed out");
}

static ec_op *op_alloc(enclave_client *ec, op_kind kind)
{
    ec_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->ec = ec;
    op->kind = kind;
    LIST_INSERT_HEAD(&ec->live, op, live);
    log_new_rid(op->rid);
    op->timer = evtimer_new(ec->base, on_deadline, op);
    op->kick = event_new(ec->base, -1, 0, on_kick, op);
    if (!op->timer || !op->kick) {
        op_free(op);
        return NULL;
    }
    return op;
}

/* Sends op->req (nitro) or runs op->mock_req (mock). */
static ec_op *op_start(ec_op *op, unsigned timeout_ms)
{
    enclave_client *ec = op->ec;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(op->timer, &tv);
    if (ec->mode == ENCLAVE_MOCK)
        event_active(op->kick, EV_TIMEOUT, 0);
    else
        start_nitro(op);
    return op;
}

static ec_op *op_new(enclave_client *ec, op_kind kind, const json_t *req, unsigned timeout_ms)
{
    ec_op *op = op_alloc(ec, kind);
    if (!op)
        return NULL;
    char *s = json_dumps(req, JSON_COMPACT);
    if (!s || vbuf_append_str(&op->req, s) < 0 || vbuf_append(&op->req, "\n", 1) < 0) {
        free(s);
        op_free(op);
        return NULL;
    }
    free(s);
    if (ec->mode == ENCLAVE_MOCK)
        op->mock_req = json_deep_copy(req);
    return op_start(op, timeout_ms);
}

void ec_op_cancel(ec_op *op)
{
    if (!op || op->finished)
        return;
    op->finished = true;
    if (op->mock) {
        enclave_req_cancel(op->mock);
        op->mock = NULL;
    }
    if (!op->in_cb) /* else deliver() frees it when the callback returns */
        op_free(op);
}

ec_op *ec_health(enclave_client *ec, ec_health_cb cb, void *ud)
{
    json_t *req = json_pack("{s:s}", PF_COMMAND, proto_cmd_name(PROTO_CMD_HEALTH));
    ec_op *op = op_new(ec, OP_HEALTH, req, CONTROL_TIMEOUT_MS);
    json_decref(req);
    if (op) {
        op->health_cb = cb;
        op->ud = ud;
    }
    return op;
}

/* The request line, written straight into a securely grown buffer: jansson
 * would leave the secret in the objects and the dumped string it frees
 * unwiped (veild installs no wiping allocator in nitro mode). */
ec_op *ec_set_credentials(enclave_client *ec, const imds_credentials *c, ec_result_cb cb, void *ud)
{
    ec_op *op = op_alloc(ec, OP_SET_CREDS);
    if (!op)
        return NULL;
    if (proto_write_set_credentials(&op->req, c->access_key_id, c->secret_access_key, c->session_token,
                                    c->expiration) < 0)
        goto fail;
    /* mock: veild installed the wiping JSON allocator (enclave_secure_json) */
    if (ec->mode == ENCLAVE_MOCK &&
        !(op->mock_req = json_loadb((const char *)op->req.data, op->req.len, 0, NULL)))
        goto fail;
    op->result_cb = cb;
    op->ud = ud;
    return op_start(op, CONTROL_TIMEOUT_MS);
fail:
    op_free(op);
    return NULL;
}

ec_op *ec_chat_stream(enclave_client *ec, const json_t *request, const ec_stream_callbacks *cb, void *ud)
{
    ec_op *op = op_new(ec, OP_STREAM, request, ec->stream_timeout_ms);
    if (op) {
        op->scb = *cb;
        op->ud = ud;
    }
    return op;
}

ec_op *ec_get_attestation(enclave_client *ec, const uint8_t *nonce, size_t len, ec_attest_cb cb, void *ud)
{
    json_t *req = proto_attestation_request(nonce, len);
    ec_op *op = req ? op_new(ec, OP_ATTEST, req, CONTROL_TIMEOUT_MS) : NULL;
    json_decref(req);
    if (op) {
        op->attest_cb = cb;
        op->ud = ud;
    }
    return op;
}

ec_op *ec_cached_attestation(enclave_client *ec, ec_attest_cb cb, void *ud)
{
    if (ec->attest_b64 && ec->have_key && strcmp(ec->attest_pub, ec->pub_hex) == 0 &&
        time(NULL) - ec->attest_at < EC_ATTEST_CACHE_S) {
        cb(ud, ENCLAVE_OK, ec->attest_b64, ec->attest_pub, ec->attest_nsm);
        return NULL;
    }
    uint8_t nonce[32];
    if (random_bytes(nonce, sizeof nonce) < 0)
        return NULL;
    ec_op *op = ec_get_attestation(ec, nonce, sizeof nonce, cb, ud);
    if (op)
        op->fill_cache = true;
    return op;
}

void ec_refresh_key(enclave_client *ec)
{
    if (ec->key_fetching)
        return;
    ec->key_fetching = true;
    json_t *req = json_pack("{s:s}", PF_COMMAND, proto_cmd_name(PROTO_CMD_GET_PUBLIC_KEY));
    ec_op *op = op_new(ec, OP_KEY, req, KEY_TIMEOUT_MS);
    json_decref(req);
    if (!op)
        ec->key_fetching = false;
}

static void on_key_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ec_refresh_key(arg);
}

/* nitro-cli describe-enclaves -> [0].EnclaveCID, with a 5 s limit */
static long discover_cid(char *err, size_t errlen)
{
    FILE *p = popen("timeout 5 nitro-cli describe-enclaves 2>/dev/null", "r");
    if (!p) {
        snprintf(err, errlen, "cannot run nitro-cli");
        return -1;
    }
    vbuf out = VBUF_INIT;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        vbuf_append(&out, buf, n);
    int st = pclose(p);
    json_t *j = st == 0 ? json_loadb((const char *)out.data, out.len, 0, NULL) : NULL;
    vbuf_free(&out);
    long cid = -1;
    if (json_is_array(j) && json_array_size(j) == 1)
        cid = (long)json_integer_value(json_object_get(json_array_get(j, 0), "EnclaveCID"));
    else if (json_is_array(j) && json_array_size(j) > 1)
        snprintf(err, errlen, "several enclaves are running: set ENCLAVE_CID (defect §10.14)");
    else
        snprintf(err, errlen, "no running enclave found with nitro-cli: set ENCLAVE_CID or ENCLAVE_ADDR");
    json_decref(j);
    return cid > 0 ? cid : -1;
}

enclave_client *ec_new(struct event_base *base, const server_config *cfg, char *err, size_t errlen)
{
    enclave_client *ec = calloc(1, sizeof *ec);
    if (!ec) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ec->base = base;
    LIST_INIT(&ec->live);
    SLIST_INIT(&ec->idle);
    ec->mode = cfg->mode;
    ec->stream_timeout_ms = (unsigned)cfg->stream_timeout * 1000u;
    ec->max_request = ENCLAVE_DEFAULT_MAX_REQUEST;
    ec->key_retry = evtimer_new(base, on_key_retry, ec);
    if (ec->mode == ENCLAVE_NITRO) {
        char spec[320];
        if (cfg->enclave_addr[0]) {
            snprintf(spec, sizeof spec, "%s", cfg->enclave_addr);
        } else {
            long cid = cfg->enclave_cid;
            if (cid == 0 && (cid = discover_cid(err, errlen)) < 0)
                goto fail;
            snprintf(spec, sizeof spec, "vsock:%ld:%ld", cid, cfg->enclave_port);
        }
        if (addr_parse(spec, &ec->addr, err, errlen) < 0)
            goto fail;
        addr_format(&ec->addr, ec->addr_text, sizeof ec->addr_text);
        ec->cid = ec->addr.kind == ADDR_VSOCK ? (long)ec->addr.cid : 0;
    } else {
        veil_addr proxy;
        char host[256] = "";
        long port = 0;
        if (cfg->proxy_addr[0] && addr_parse(cfg->proxy_addr, &proxy, err, errlen) < 0)
            goto fail;
        if (cfg->bedrock_endpoint[0]) {
            const char *colon = strrchr(cfg->bedrock_endpoint, ':');
            if (!colon || (size_t)(colon - cfg->bedrock_endpoint) >= sizeof host ||
                parse_long(colon + 1, 1, 65535, &port) < 0) {
                snprintf(err, errlen, "BEDROCK_ENDPOINT must be HOST:PORT");
                goto fail;
            }
            memcpy(host, cfg->bedrock_endpoint, (size_t)(colon - cfg->bedrock_endpoint));
        }
        if (cfg->enclave_nsm[0] && strcmp(cfg->enclave_nsm, "none") != 0) {
            char nerr[256];
            nsm_err ne = nsm_open(cfg->enclave_nsm, &ec->nsm, nerr, sizeof nerr);
            if (ne != NSM_OK) {
                snprintf(err, errlen, "ENCLAVE_NSM=%s: %s: %s", cfg->enclave_nsm, nsm_strerror(ne), nerr);
                goto fail;
            }
        }
        enclave_config ecfg = {
            .nsm = ec->nsm, .region = cfg->region, .proxy = cfg->proxy_addr[0] ? &proxy : NULL,
            .bedrock_host = host[0] ? host : NULL, .bedrock_port = (uint16_t)port,
            .ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL,
            .stream_timeout_ms = ec->stream_timeout_ms,
        };
        ec->core = enclave_core_new(base, &ecfg, err, errlen);
        if (!ec->core)
            goto fail;
        snprintf(ec->addr_text, sizeof ec->addr_text, "in-process");
    }
    return ec;
fail:
    ec_free(ec);
    return NULL;
}

void ec_free(enclave_client *ec)
{
    if (!ec)
        return;
    while (!LIST_EMPTY(&ec->live))
        ec_op_cancel(LIST_FIRST(&ec->live));
    while (!SLIST_EMPTY(&ec->idle)) {
        ec_conn *c = SLIST_FIRST(&ec->idle);
        SLIST_REMOVE_HEAD(&ec->idle, idle);
        conn_free(c);
    }
    if (ec->key_retry)
        event_free(ec->key_retry);
    free(ec->attest_b64);
    enclave_core_free(ec->core);
    nsm_close(ec->nsm);
    free(ec);
}
