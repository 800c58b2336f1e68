/* Secrets leave no copy in freed memory: every block that veil's code, jansson
 * or libevent releases while a test runs is searched for the secret before it
 * is freed.
 *
 * How the frees are seen: this program alone is linked with
 * -Wl,--wrap=free,--wrap=realloc (tests/tests.cmake), so every free and
 * realloc in veil's static libraries goes through __wrap_free/__wrap_realloc
 * below; libevent's and jansson's frees come through their own allocator hooks
 * (event_set_mem_functions, json_set_alloc_funcs). The realloc wrapper always
 * moves the block, as glibc's realloc may, so an unwiped old copy is never
 * hidden by a lucky in-place growth. The detector's own test proves it sees
 * such a copy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/secret.h"
#include "enclave/history.h"

/* ---- the detector ---- */

static struct {
    bool armed;
    const char *needle;
    size_t needle_len;
    unsigned blocks;   /* blocks released while armed */
    unsigned hits;     /* ... that still held the needle */
} W;

void __real_free(void *p);
void *__real_realloc(void *p, size_t n);

static void check_block(const void *p)
{
    if (!W.armed || !p)
        return;
    W.blocks++;
    if (memmem(p, malloc_usable_size((void *)p), W.needle, W.needle_len))
        W.hits++;
}

void __wrap_free(void *p)
{
    check_block(p);
    __real_free(p);
}

void *__wrap_realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    void *q = malloc(n ? n : 1);
    if (!q)
        return NULL;
    size_t old = malloc_usable_size(p);
    memcpy(q, p, old < n ? old : n);
    __wrap_free(p);
    return q;
}

static void arm(const char *needle)
{
    W.armed = true;
    W.needle = needle;
    W.needle_len = strlen(needle);
    W.blocks = W.hits = 0;
}

static void disarm(void)
{
    W.armed = false;
}

/* ---- buffers ---- */

#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"

/* A secret at the front of a buffer that then doubles 8 times. */
static void grow_with(int (*append)(vbuf *, const void *, size_t), vbuf *b)
{
    assert_int_equal(append(b, SECRET, strlen(SECRET)), 0);
    for (int i = 0; i < 20000; i++)
        assert_int_equal(append(b, "x", 1), 0);
}

/* Calibration: plain growth leaves the secret in the blocks realloc frees, and
 * the detector sees it; so the tests below can fail. */
static void test_detector_sees_realloc_copies(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    arm(SECRET);
    grow_with(vbuf_append, &b);
    vbuf_free_secure(&b);
    disarm();
    assert_true(W.blocks >= 8);
    assert_true(W.hits >= 7); /* every old block; the last was wiped by vbuf_free_secure */
}

static void test_vbuf_secure_growth(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    arm(SECRET);
    grow_with(vbuf_append_secure, &b);
    assert_int_equal(b.len, strlen(SECRET) + 20000);
    assert_memory_equal(b.data, SECRET, strlen(SECRET)); /* the bytes moved intact */
    assert_int_equal(b.data[b.len - 1], 'x');
    assert_int_equal(vbuf_reserve_secure(&b, SIZE_MAX), -1); /* overflow: refused, kept */
    assert_memory_equal(b.data, SECRET, strlen(SECRET));
    vbuf_free_secure(&b);
    disarm();
    assert_true(W.blocks >= 9);
    assert_int_equal(W.hits, 0);
}

/* Merged history turns grow in place: consecutive user turns are joined. */
static void test_history_merge(void **state)
{
    (void)state;
    history h;
    history_init(&h);
    arm(SECRET);
    for (int i = 0; i < 200; i++)
        assert_int_equal(history_add(&h, ROLE_USER, SECRET, strlen(SECRET)), 0);
    assert_int_equal(h.n, 1);
    assert_memory_equal(h.msgs[0].text, SECRET "\n\n" SECRET, 2 * strlen(SECRET) + 2);
    history_free(&h);
    disarm();
    assert_true(W.blocks >= 5);
    assert_int_equal(W.hits, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detector_sees_realloc_copies),
        cmocka_unit_test(test_vbuf_secure_growth),
        cmocka_unit_test(test_history_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
