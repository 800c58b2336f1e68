/* api_capture — a request of veild's API layer (server/http/http.c) without a
 * connection, for unit tests of the code that replies through it.
 *
 * The program that includes this is linked with -Wl,--wrap=httpd_respond,
 * --wrap=httpd_header,--wrap=httpd_body (tests/tests.cmake): http.c builds the
 * reply exactly as it does for a client (the 422 shapes, the echo cap, the
 * headers), and the engine's send is replaced by a capture of its status and
 * body. A test makes a request with cap_req(), calls the code under test, then
 * reads the one reply (cap.n counts replies: a check that passes sends none).
 * The request's store (r->db, a DB worker's in veild) is &cap_db: a test that
 * fakes the store checks that the code under test passes it on. */
#ifndef VEIL_TEST_API_CAPTURE_H
#define VEIL_TEST_API_CAPTURE_H

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server_int.h"

typedef struct capture {
    int n;           /* replies sent */
    int status;
    json_t *body;    /* the parsed JSON body of the last reply, or NULL */
    const char *request_body; /* what httpd_body answers (NULL: no body) */
} capture;

static capture cap;
static server cap_srv;
static int cap_db; /* stands for the DB worker's store (r->db): only its address is used */
static int cap_conn; /* stands for the connection: only its address is used */

void __wrap_httpd_respond(httpd_req *rq, int status, const char *extra_headers, const void *body,
                          size_t len);
void __wrap_httpd_respond(httpd_req *rq, int status, const char *extra_headers, const void *body,
                          size_t len)
{
    (void)rq;
    (void)extra_headers;
    cap.n++;
    cap.status = status;
    json_decref(cap.body);
    json_error_t jerr;
    cap.body = len ? json_loadb(body, len, JSON_DECODE_ANY, &jerr) : NULL;
}

const char *__wrap_httpd_header(const httpd_req *rq, const char *name);
const char *__wrap_httpd_header(const httpd_req *rq, const char *name)
{
    (void)rq;
    (void)name;
    return NULL;
}

const uint8_t *__wrap_httpd_body(const httpd_req *rq, size_t *len);
const uint8_t *__wrap_httpd_body(const httpd_req *rq, size_t *len)
{
    (void)rq;
    *len = cap.request_body ? strlen(cap.request_body) : 0;
    return (const uint8_t *)(cap.request_body ? cap.request_body : "");
}

/* A fresh request by user_1 and an empty capture; free it with cap_done(). */
static inline api_req *cap_req(void)
{
    json_decref(cap.body);
    memset(&cap, 0, sizeof cap);
    api_req *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->srv = &cap_srv;
    r->hr = (httpd_req *)&cap_conn;
    r->db = (store *)&cap_db;
    TAILQ_INIT(&r->query);
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    snprintf(r->path, sizeof r->path, "/test");
    snprintf(r->rid, sizeof r->rid, "test");
    snprintf(r->auth.user_id, sizeof r->auth.user_id, "user_1");
    return r;
}

static inline void cap_done(api_req *r)
{
    vbuf_free(&r->headers);
    free(r);
    json_decref(cap.body);
    cap.body = NULL;
}

/* The reply's detail[0] of a 422, checked whole: type, loc (a JSON array text such
 * as "[\"body\",\"iv\"]"), msg, and the echoed input as JSON text ("null" for none). */
#define assert_422(type_, loc_, msg_, input_)                                                     \
    do {                                                                                          \
        assert_int_equal(cap.n, 1);                                                               \
        assert_int_equal(cap.status, 422);                                                        \
        json_t *d_ = json_array_get(json_object_get(cap.body, "detail"), 0);                      \
        assert_non_null(d_);                                                                      \
        assert_int_equal(json_array_size(json_object_get(cap.body, "detail")), 1);               \
        assert_string_equal(json_string_value(json_object_get(d_, "type")), type_);               \
        char *l_ = json_dumps(json_object_get(d_, "loc"), JSON_COMPACT);                          \
        assert_string_equal(l_, loc_);                                                            \
        free(l_);                                                                                 \
        assert_string_equal(json_string_value(json_object_get(d_, "msg")), msg_);                 \
        char *i_ = json_dumps(json_object_get(d_, "input"), JSON_COMPACT | JSON_ENCODE_ANY);      \
        assert_string_equal(i_, input_);                                                          \
        free(i_);                                                                                 \
    } while (0)

/* A {"detail": "..."} reply with this status. */
#define assert_detail(status_, text_)                                                             \
    do {                                                                                          \
        assert_int_equal(cap.n, 1);                                                               \
        assert_int_equal(cap.status, status_);                                                    \
        assert_string_equal(json_string_value(json_object_get(cap.body, "detail")), text_);       \
    } while (0)

#endif
