/* net/evwipe: with evwipe_install(), no block libevent releases still holds what a
 * peer sent: evbuffer chains drained, pulled up (copied into a new chain) or freed
 * whole. evbuffer_drain_wiped wipes in place without the allocators. This program
 * alone wraps free at link time (tests/tests.cmake) so that every block is searched
 * for the secret just before it is released. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "net/evwipe.h"

#define SECRET "Bearer eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln"

static struct {
    bool armed;
    unsigned blocks, hits;
} W;

void __real_free(void *p);

void __wrap_free(void *p)
{
    if (W.armed && p) {
        W.blocks++;
        if (memmem(p, malloc_usable_size(p), SECRET, strlen(SECRET)))
            W.hits++;
    }
    __real_free(p);
}

static void arm(void)
{
    W.armed = true;
    W.blocks = W.hits = 0;
}

/* The detector sees an unwiped block: the checks below can fail. */
static void test_detector(void **state)
{
    (void)state;
    arm();
    char *volatile p = malloc(200); /* volatile: the pair is not optimised away */
    assert_non_null(p);
    memcpy(p, SECRET, strlen(SECRET));
    free(p);
    W.armed = false;
    assert_int_equal(W.hits, 1);
}

/* A request head that arrives in pieces, is pulled up into one chain (libevent
 * copies and frees the old chains), drained and freed. */
static void test_chains_wiped(void **state)
{
    (void)state;
    arm();
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    char line[512];
    snprintf(line, sizeof line, "GET /api/v1/chat/sessions HTTP/1.1\r\nAuthorization: %s\r\n", SECRET);
    for (int i = 0; i < 40; i++) /* many small adds: several chains */
        assert_int_equal(evbuffer_add(b, line, strlen(line)), 0);
    assert_int_equal(evbuffer_add(b, "\r\n", 2), 0);
    size_t n = evbuffer_get_length(b);
    assert_non_null(evbuffer_pullup(b, (ev_ssize_t)n)); /* one contiguous copy */
    evbuffer_drain(b, n / 2);
    assert_int_equal(evbuffer_add(b, line, strlen(line)), 0);
    evbuffer_free(b);
    W.armed = false;
    assert_true(W.blocks >= 2);
    assert_int_equal(W.hits, 0);
}

/* evbuffer_drain_wiped zeroes the drained bytes where they lay, in a chain that
 * stays (its tail is still unread). */
static void test_drain_wiped(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    char both[128];
    size_t n = strlen(SECRET);
    memcpy(both, SECRET, n);
    memcpy(both + n, "tail", 4);
    assert_int_equal(evbuffer_add(b, both, n + 4), 0);
    struct evbuffer_iovec v;
    assert_int_equal(evbuffer_peek(b, -1, NULL, &v, 1), 1);
    const unsigned char *lay = v.iov_base;
    assert_memory_equal(lay, SECRET, n);
    evbuffer_drain_wiped(b, n);
    static const unsigned char zero[128];
    assert_memory_equal(lay, zero, n);
    char rest[8] = {0};
    assert_int_equal(evbuffer_copyout(b, rest, sizeof rest), 4);
    assert_memory_equal(rest, "tail", 4);
    evbuffer_free(b);
}

int main(void)
{
    evwipe_install(); /* first, as veild's and veil-enclave's main do */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detector),
        cmocka_unit_test(test_chains_wiped),
        cmocka_unit_test(test_drain_wiped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
