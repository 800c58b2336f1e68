/* server/refresher: when veild pushes AWS credentials to the enclave. The next
 * push follows the credentials' lifetime (five minutes before expiry, a quarter of
 * the lifetime for short-lived ones, never later than the refresh interval);
 * failures back off from 1 s to 60 s and reset after a success; an IMDS that has
 * not rotated yet is asked again soon instead of re-pushing the same credentials
 * when they are due to expire, and far from expiry the interval's push sends them
 * again; an enclave restart, or a kick while busy, pushes at once.
 *
 * The seams are link-time (tests/tests.cmake): the refresher's clock (time), its
 * timer (event_add/event_del record the delay asked for; the test fires the timer
 * itself after moving the clock by that delay), IMDS and the enclave client (each
 * call is recorded and completed by the test). So no test waits and none depends
 * on how fast the machine is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/isotime.h"
#include "server/link/refresher.h"

#define T0 ((time_t)1800000000) /* 2027-01-15T08:00:00Z */

/* ---- the clock ---- */

static time_t g_now;

time_t __wrap_time(time_t *t);
time_t __wrap_time(time_t *t)
{
    if (t)
        *t = g_now;
    return g_now;
}

/* ---- the timer ---- */

static struct {
    struct event *ev; /* the refresher's timer */
    bool pending;
    unsigned ms;      /* the delay of the last schedule */
    int adds;
} T;

int __real_event_add(struct event *ev, const struct timeval *tv);
int __wrap_event_add(struct event *ev, const struct timeval *tv);
int __wrap_event_add(struct event *ev, const struct timeval *tv)
{
    if (!tv)
        return __real_event_add(ev, tv);
    T.ev = ev;
    T.pending = true;
    T.ms = (unsigned)(tv->tv_sec * 1000 + tv->tv_usec / 1000);
    T.adds++;
    return 0; /* not armed for real: the test fires it */
}

int __real_event_del(struct event *ev);
int __wrap_event_del(struct event *ev);
int __wrap_event_del(struct event *ev)
{
    if (ev == T.ev)
        T.pending = false;
    return __real_event_del(ev);
}

static struct event_base *base;

/* The scheduled moment comes: the clock moves by the delay, the timer runs. */
static void fire(void)
{
    assert_true(T.pending);
    T.pending = false;
    g_now += (time_t)(T.ms / 1000);
    event_active(T.ev, EV_TIMEOUT, 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
}

/* ---- IMDS ---- */

static struct {
    int fetches, cancels;
    imds_creds_cb cb;
    void *ud;
    bool in_flight;
    char host[64];
    uint16_t port;
} I;

static int fake_op; /* stands for an operation: only its address is used */

imds_op *__wrap_imds_fetch_credentials(https_ctx *https, const imds_config *cfg, imds_creds_cb cb, void *ud);
imds_op *__wrap_imds_fetch_credentials(https_ctx *https, const imds_config *cfg, imds_creds_cb cb, void *ud)
{
    assert_non_null(https);
    assert_false(I.in_flight); /* one fetch at a time */
    I.fetches++;
    I.cb = cb;
    I.ud = ud;
    I.in_flight = true;
    snprintf(I.host, sizeof I.host, "%s", cfg->host);
    I.port = cfg->port;
    return (imds_op *)&fake_op;
}

void __wrap_imds_cancel(imds_op *op);
void __wrap_imds_cancel(imds_op *op)
{
    assert_ptr_equal(op, &fake_op);
    I.cancels++;
    I.in_flight = false;
}

static imds_credentials creds_of(const char *akid, time_t expires_at)
{
    imds_credentials c;
    memset(&c, 0, sizeof c);
    snprintf(c.access_key_id, sizeof c.access_key_id, "%s", akid);
    snprintf(c.secret_access_key, sizeof c.secret_access_key, "secret-of-%s", akid);
    snprintf(c.session_token, sizeof c.session_token, "token-of-%s", akid);
    if (expires_at) {
        struct tm tm;
        gmtime_r(&expires_at, &tm);
        strftime(c.expiration, sizeof c.expiration, "%Y-%m-%dT%H:%M:%SZ", &tm);
        c.expires_at = expires_at;
    }
    return c;
}

static void imds_answers(const char *akid, time_t expires_at)
{
    assert_true(I.in_flight);
    I.in_flight = false;
    imds_credentials c = creds_of(akid, expires_at);
    I.cb(I.ud, &c, NULL);
}

static void imds_fails(const char *err)
{
    assert_true(I.in_flight);
    I.in_flight = false;
    I.cb(I.ud, NULL, err);
}

/* ---- the enclave client ---- */

static struct {
    int pushes, cancels;
    imds_credentials last; /* what the enclave was given */
    ec_result_cb cb;
    void *ud;
    bool in_flight;
    void (*restart_cb)(void *);
    void *restart_ud;
} E;

ec_op *__wrap_ec_set_credentials(enclave_client *ec, const imds_credentials *c, ec_result_cb cb, void *ud);
ec_op *__wrap_ec_set_credentials(enclave_client *ec, const imds_credentials *c, ec_result_cb cb, void *ud)
{
    (void)ec;
    assert_false(E.in_flight); /* one push at a time */
    E.pushes++;
    E.last = *c;
    E.cb = cb;
    E.ud = ud;
    E.in_flight = true;
    return (ec_op *)&fake_op;
}

void __wrap_ec_op_cancel(ec_op *op);
void __wrap_ec_op_cancel(ec_op *op)
{
    assert_ptr_equal(op, &fake_op);
    E.cancels++;
    E.in_flight = false;
}

void __wrap_ec_on_restart(enclave_client *ec, void (*cb)(void *ud), void *ud);
void __wrap_ec_on_restart(enclave_client *ec, void (*cb)(void *ud), void *ud)
{
    (void)ec;
    E.restart_cb = cb;
    E.restart_ud = ud;
}

static void enclave_answers(bool ok)
{
    assert_true(E.in_flight);
    E.in_flight = false;
    E.cb(E.ud, ok, ok ? NULL : "enclave refused the credentials");
}

/* ---- fixtures ---- */

static refresher *rf;
static server_config cfg;
static int fake_ec;

static void clear_env(void)
{
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_CREDENTIAL_EXPIRATION");
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    memset(&T, 0, sizeof T);
    memset(&I, 0, sizeof I);
    memset(&E, 0, sizeof E);
    g_now = T0;
    base = event_base_new();
    assert_non_null(base);
    memset(&cfg, 0, sizeof cfg);
    cfg.refresh_seconds = 2700;
    snprintf(cfg.imds_endpoint, sizeof cfg.imds_endpoint, "127.0.0.1:8111");
    rf = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    refresher_free(rf);
    event_base_free(base);
    clear_env();
    return 0;
}

static refresher *make(void)
{
    char err[200] = "";
    refresher *r = refresher_new(base, &cfg, (enclave_client *)&fake_ec, err, sizeof err);
    if (!r)
        fail_msg("refresher_new: %s", err);
    return r;
}

/* ---- IMDS: one full cycle ---- */

static void test_imds_push_then_schedule(void **state)
{
    (void)state;
    rf = make();
    assert_string_equal(refresher_source(rf), "imds");
    assert_false(refresher_pushed(rf));
    assert_non_null(E.restart_cb); /* it listens for enclave restarts */
    refresher_start(rf);
    assert_int_equal(I.fetches, 1);
    assert_string_equal(I.host, "127.0.0.1");
    assert_int_equal(I.port, 8111);

    imds_answers("ASIA1", T0 + 6 * 3600); /* a six-hour credential, as EC2 gives */
    assert_int_equal(E.pushes, 1);
    assert_string_equal(E.last.access_key_id, "ASIA1");
    assert_string_equal(E.last.session_token, "token-of-ASIA1");
    assert_false(refresher_pushed(rf)); /* not before the enclave said yes */
    enclave_answers(true);
    assert_true(refresher_pushed(rf));
    assert_int_equal(refresher_push_count(rf), 1);
    assert_int_equal(refresher_expiration(rf), T0 + 6 * 3600);
    /* the refresh interval comes first */
    assert_true(T.pending);
    assert_int_equal(T.ms, 2700 * 1000);

    /* the interval passes: a new credential is fetched and pushed */
    fire();
    assert_int_equal(I.fetches, 2);
    imds_answers("ASIA2", g_now + 6 * 3600);
    enclave_answers(true);
    assert_string_equal(E.last.access_key_id, "ASIA2");
    assert_int_equal(refresher_push_count(rf), 2);
    assert_int_equal(T.ms, 2700 * 1000);
}

/* ---- the schedule follows the credential's lifetime ---- */

static void test_schedule_by_lifetime(void **state)
{
    (void)state;
    static const struct {
        long lifetime_s, interval_s;
        unsigned want_ms;
    } C[] = {
        {6 * 3600, 2700, 2700000},  /* the interval comes first */
        {3600, 2700, 2700000},      /* 3600 - 300 > 2700 */
        {2700, 2700, 2400000},      /* five minutes before expiry */
        {1200, 2700, 900000},
        {900, 2700, 675000},        /* short-lived: a quarter of the lifetime, not five minutes */
        {600, 2700, 450000},
        {200, 2700, 150000},
        {2, 2700, 2000},
        {-10, 2700, 1000},          /* already expired: a second, never sooner */
        {0, 2700, 2700000},         /* no expiry given: the interval */
        {0, 10L * 86400, 86400000}, /* never later than a day */
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        if (rf)
            refresher_free(rf);
        memset(&T, 0, sizeof T);
        memset(&I, 0, sizeof I);
        memset(&E, 0, sizeof E);
        cfg.refresh_seconds = C[i].interval_s;
        rf = make();
        refresher_start(rf);
        imds_answers("ASIA1", C[i].lifetime_s ? g_now + C[i].lifetime_s : 0);
        enclave_answers(true);
        if (T.ms != C[i].want_ms)
            fail_msg("lifetime %ld s, interval %ld s: next push in %u ms, want %u", C[i].lifetime_s,
                     C[i].interval_s, T.ms, C[i].want_ms);
    }
}

/* ---- failures back off ---- */

static void test_backoff(void **state)
{
    (void)state;
    rf = make();
    refresher_start(rf);
    static const unsigned want[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        imds_fails("IMDS token request failed");
        assert_true(T.pending);
        if (T.ms != want[i])
            fail_msg("failure %zu: retry in %u ms, want %u", i + 1, T.ms, want[i]);
        assert_false(refresher_pushed(rf));
        fire();
        assert_int_equal(I.fetches, (int)i + 2);
    }
    /* a success resets the backoff; the enclave refusing counts as a failure */
    imds_answers("ASIA1", g_now + 6 * 3600);
    enclave_answers(true);
    assert_int_equal(T.ms, 2700000);
    fire();
    time_t exp2 = g_now + 6 * 3600;
    imds_answers("ASIA2", exp2);
    enclave_answers(false);
    assert_int_equal(T.ms, 1000);
    fire();
    imds_answers("ASIA3", exp2 + 10);
    enclave_answers(false);
    assert_int_equal(T.ms, 2000);
    fire();
    imds_answers("ASIA4", exp2 + 20);
    enclave_answers(true);
    assert_int_equal(refresher_push_count(rf), 2);
    fire();
    imds_fails("timeout");
    assert_int_equal(T.ms, 1000);
}

/* ---- an IMDS that has not rotated yet ---- */

static void test_waits_out_unrotated_imds(void **state)
{
    (void)state;
    rf = make();
    refresher_start(rf);
    time_t exp = T0 + 1200;
    imds_answers("ASIA1", exp);
    enclave_answers(true);
    assert_int_equal(T.ms, 900000); /* five minutes before expiry */
    fire();
    /* IMDS still hands out the same credential: no second push of it; ask again in a second */
    imds_answers("ASIA1", exp);
    assert_int_equal(E.pushes, 1);
    assert_true(T.pending);
    assert_int_equal(T.ms, 1000);
    fire();
    imds_answers("ASIA1", exp);
    assert_int_equal(E.pushes, 1);
    assert_int_equal(T.ms, 1000);
    /* right before expiry it asks more often */
    g_now = exp - 2;
    fire(); /* moves the clock by 1 s: exp - 1 */
    imds_answers("ASIA1", exp);
    assert_int_equal(E.pushes, 1);
    assert_int_equal(T.ms, 250);
    /* IMDS rotates: the new credential is pushed */
    fire();
    imds_answers("ASIA2", exp + 6 * 3600);
    assert_int_equal(E.pushes, 2);
    assert_string_equal(E.last.access_key_id, "ASIA2");
    enclave_answers(true);
    assert_int_equal(refresher_push_count(rf), 2);
}

/* The refresh interval, with credentials far from expiry that IMDS has not rotated
 * (EC2's last for hours and rotate on their own schedule): the interval's push sends
 * them again, and the next check is an interval later, not IMDS asked every second
 * until it rotates. */
static void test_interval_repushes_unrotated(void **state)
{
    (void)state;
    cfg.refresh_seconds = 10;
    rf = make();
    refresher_start(rf);
    time_t exp = T0 + 6 * 3600;
    imds_answers("ASIA1", exp);
    enclave_answers(true);
    assert_int_equal(T.ms, 10000);
    for (int i = 0; i < 3; i++) {
        fire();
        assert_int_equal(I.fetches, i + 2);
        imds_answers("ASIA1", exp);
        assert_int_equal(E.pushes, i + 2); /* the same credentials, pushed again */
        assert_string_equal(E.last.access_key_id, "ASIA1");
        enclave_answers(true);
        assert_int_equal(refresher_push_count(rf), (unsigned long)i + 2);
        assert_true(T.pending);
        assert_int_equal(T.ms, 10000);
    }
    /* their lifetime stays theirs: near expiry the margin is still five minutes */
    g_now = exp - 300 - 5;
    fire();
    imds_answers("ASIA1", exp);
    assert_int_equal(E.pushes, 4); /* inside the margin: not pushed again, asked again soon */
    assert_int_equal(T.ms, 1000);
}

/* ---- an enclave restart, and a kick while busy ---- */

static void test_restart_pushes_at_once(void **state)
{
    (void)state;
    rf = make();
    refresher_start(rf);
    imds_answers("ASIA1", T0 + 6 * 3600);
    enclave_answers(true);
    assert_true(T.pending);

    /* the enclave restarted: it has no credentials, even the same ones go again now */
    E.restart_cb(E.restart_ud);
    assert_false(refresher_pushed(rf));
    assert_false(T.pending); /* the scheduled refresh is replaced by this one */
    assert_int_equal(I.fetches, 2);
    imds_answers("ASIA1", T0 + 6 * 3600);
    assert_int_equal(E.pushes, 2);
    assert_string_equal(E.last.access_key_id, "ASIA1");
    enclave_answers(true);
    assert_true(refresher_pushed(rf));
    assert_int_equal(T.ms, 2700000);
}

static void test_kick_while_busy(void **state)
{
    (void)state;
    rf = make();
    refresher_start(rf);
    refresher_kick(rf); /* while fetching: remembered, not a second fetch */
    assert_int_equal(I.fetches, 1);
    imds_answers("ASIA1", T0 + 6 * 3600);
    refresher_kick(rf); /* while pushing */
    assert_int_equal(E.pushes, 1);
    enclave_answers(true);
    /* the attempt asked for while busy runs when the push ends (a kick comes from an
     * enclave that said it holds no credentials): the same credential, far from
     * expiry, goes again, and then the interval, never IMDS asked every second
     * until it rotates */
    assert_int_equal(I.fetches, 2);
    imds_answers("ASIA1", T0 + 6 * 3600);
    assert_int_equal(E.pushes, 2);
    assert_string_equal(E.last.access_key_id, "ASIA1");
    enclave_answers(true);
    assert_int_equal(refresher_push_count(rf), 2);
    assert_int_equal(T.ms, 2700000);
    fire();
    imds_answers("ASIA2", g_now + 6 * 3600); /* a new one, as always */
    assert_int_equal(E.pushes, 3);
    enclave_answers(true);
    assert_int_equal(refresher_push_count(rf), 3);
    assert_int_equal(T.ms, 2700000);
}

/* The enclave refused a credential: it does not hold it, so the same credential
 * from IMDS is pushed again (not taken for one the enclave already has). */
static void test_refused_push_is_pushed_again(void **state)
{
    (void)state;
    rf = make();
    refresher_start(rf);
    imds_answers("ASIA1", T0 + 6 * 3600);
    enclave_answers(true);
    fire();
    time_t exp2 = g_now + 6 * 3600;
    imds_answers("ASIA2", exp2);
    enclave_answers(false);
    assert_false(refresher_pushed(rf)); /* "the last push succeeded" */
    assert_int_equal(T.ms, 1000);
    fire();
    imds_answers("ASIA2", exp2); /* IMDS has not rotated since */
    assert_int_equal(E.pushes, 3);
    assert_string_equal(E.last.access_key_id, "ASIA2");
    enclave_answers(true);
    assert_true(refresher_pushed(rf));
}

/* A restart while a push is on the wire: that push may have reached the enclave
 * that went away, so the same credential goes again once it ends. */
static void test_restart_while_pushing(void **state)
{
    (void)state;
    rf = make();
    refresher_start(rf);
    imds_answers("ASIA1", T0 + 6 * 3600);
    E.restart_cb(E.restart_ud);
    assert_int_equal(E.pushes, 1);
    enclave_answers(true); /* the old enclave's yes */
    assert_int_equal(I.fetches, 2);
    imds_answers("ASIA1", T0 + 6 * 3600);
    assert_int_equal(E.pushes, 2);
    assert_string_equal(E.last.access_key_id, "ASIA1");
    enclave_answers(true);
    assert_int_equal(refresher_push_count(rf), 2);
    assert_int_equal(T.ms, 2700000);
    /* and a restart after a settled push still re-pushes the same credential */
    E.restart_cb(E.restart_ud);
    imds_answers("ASIA1", T0 + 6 * 3600);
    assert_int_equal(E.pushes, 3);
    enclave_answers(true);
}

static void test_free_cancels_what_runs(void **state)
{
    (void)state;
    rf = make();
    refresher_start(rf);
    refresher_free(rf);
    assert_int_equal(I.cancels, 1);
    rf = make();
    refresher_start(rf);
    imds_answers("ASIA1", T0 + 6 * 3600);
    refresher_free(rf);
    rf = NULL;
    assert_int_equal(E.cancels, 1);
}

/* ---- credentials from the environment ---- */

static void test_env_source(void **state)
{
    (void)state;
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SESSION_TOKEN", "envtoken", 1);
    setenv("AWS_CREDENTIAL_EXPIRATION", "2027-01-15T08:20:00Z", 1); /* T0 + 1200 */
    rf = make();
    assert_string_equal(refresher_source(rf), "env");
    assert_int_equal(refresher_expiration(rf), T0 + 1200);
    refresher_start(rf);
    assert_int_equal(I.fetches, 0); /* the variables win over IMDS */
    assert_int_equal(E.pushes, 1);
    assert_string_equal(E.last.access_key_id, "AKIDENV");
    assert_string_equal(E.last.secret_access_key, "envsecret");
    assert_string_equal(E.last.session_token, "envtoken");
    assert_string_equal(E.last.expiration, "2027-01-15T08:20:00Z");
    enclave_answers(true);
    assert_int_equal(T.ms, 900000);
    /* a restart pushes them again */
    E.restart_cb(E.restart_ud);
    assert_int_equal(E.pushes, 2);
    enclave_answers(false);
    assert_int_equal(T.ms, 1000);
    fire();
    assert_int_equal(E.pushes, 3);
}

static void test_config_errors(void **state)
{
    (void)state;
    char err[200];
    static const struct {
        const char *akid, *secret, *token, *exp, *want;
    } C[] = {
        {"AKID", "s", NULL, NULL, "AWS_SESSION_TOKEN must be set with AWS_ACCESS_KEY_ID"},
        {"AKID", "s", "t", "2027-01-15 08:20:00", "AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 UTC time"},
        {"AKID", "s", "t", "2027-01-15T08:20:00+01:00",
         "AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 UTC time"},
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        clear_env();
        setenv("AWS_ACCESS_KEY_ID", C[i].akid, 1);
        setenv("AWS_SECRET_ACCESS_KEY", C[i].secret, 1);
        if (C[i].token)
            setenv("AWS_SESSION_TOKEN", C[i].token, 1);
        if (C[i].exp)
            setenv("AWS_CREDENTIAL_EXPIRATION", C[i].exp, 1);
        assert_null(refresher_new(base, &cfg, (enclave_client *)&fake_ec, err, sizeof err));
        assert_string_equal(err, C[i].want);
    }
    clear_env();
    char big[200];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    setenv("AWS_ACCESS_KEY_ID", big, 1);
    setenv("AWS_SECRET_ACCESS_KEY", "s", 1);
    setenv("AWS_SESSION_TOKEN", "t", 1);
    assert_null(refresher_new(base, &cfg, (enclave_client *)&fake_ec, err, sizeof err));
    assert_string_equal(err, "AWS credential variables are too long");
    clear_env();

    /* only the secret: not the environment source, and IMDS needs a HOST:PORT */
    setenv("AWS_SECRET_ACCESS_KEY", "s", 1);
    static const char *const bad_ep[] = {"169.254.169.254", "host:", "host:0", "host:65536", "host:8x", ""};
    for (size_t i = 0; i < sizeof bad_ep / sizeof bad_ep[0]; i++) {
        snprintf(cfg.imds_endpoint, sizeof cfg.imds_endpoint, "%s", bad_ep[i]);
        assert_null(refresher_new(base, &cfg, (enclave_client *)&fake_ec, err, sizeof err));
        assert_string_equal(err, "VEIL_IMDS_ENDPOINT must be HOST:PORT");
    }
    snprintf(cfg.imds_endpoint, sizeof cfg.imds_endpoint, "localhost:80");
    rf = make();
    assert_string_equal(refresher_source(rf), "imds");
    refresher_start(rf);
    assert_string_equal(I.host, "localhost");
    assert_int_equal(I.port, 80);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_imds_push_then_schedule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schedule_by_lifetime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waits_out_unrotated_imds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interval_repushes_unrotated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_pushes_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kick_while_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_push_is_pushed_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_while_pushing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_cancels_what_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
