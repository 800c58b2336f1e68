/* server/http/routes_util: what the non-chat routes share. The JSON views of store
 * rows (every field, nulls where the row has none), the DB-role admin check with
 * its 404/403 texts, transactions that answer 500 and roll back, the table-driven
 * and optional field checks, and the context documents.
 *
 * The store is a fake: this program is linked with --wrap for each store function
 * routes_util calls (tests/tests.cmake), so a test chooses what the store answers,
 * failures included, and sees what was asked of it. Replies are captured as the API
 * layer would send them (api_capture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/http/routes_util.h"

#include "api_capture.h"

#define HEX64 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define HEX32 "00112233445566778899aabbccddeeff"

/* ---- the fake store ---- */

static struct {
    store_rc rc;           /* what the next data call answers */
    store_rc begin_rc, commit_rc, rollback_rc;
    bool timed_out;        /* store_timed_out's answer */
    const char *role;      /* store_membership_get's row role */
    json_t *context;       /* store_context_get's document (borrowed; NULL: no row) */
    int begins, commits, rollbacks;
    char called[64], user[64], org[64], owner_type[16], owner_id[64];
    json_t *put;           /* what store_context_put was given (a copy) */
} st;

static void st_reset(void)
{
    json_decref(st.put);
    memset(&st, 0, sizeof st);
    st.role = ROLE_ADMIN;
}

static void called(const char *fn, const char *user, const char *org)
{
    snprintf(st.called, sizeof st.called, "%s", fn);
    snprintf(st.user, sizeof st.user, "%s", user ? user : "");
    snprintf(st.org, sizeof st.org, "%s", org ? org : "");
}

static membership_row row(const char *id, const char *org_name, bool with_key)
{
    membership_row m = {0};
    m.id = strdup(id);
    m.user_id = strdup("user_1");
    m.org_id = strdup("org_1");
    m.role = strdup(st.role);
    m.org_name = org_name ? strdup(org_name) : NULL;
    m.has_org_key = with_key;
    m.key_distributed_at = with_key ? strdup("2026-01-02T03:04:05Z") : NULL;
    m.joined_at = strdup("2026-01-01T00:00:00Z");
    return m;
}

const char *__wrap_store_last_error(const store *s);
const char *__wrap_store_last_error(const store *s)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    return "disk I/O error at /var/lib/veil/secret-path"; /* must never reach a client */
}

bool __wrap_store_timed_out(const store *s);
bool __wrap_store_timed_out(const store *s)
{
    assert_ptr_equal(s, &cap_db);
    return st.timed_out;
}

store_rc __wrap_store_membership_get(store *s, const char *user_id, const char *org_id, membership_row *out);
store_rc __wrap_store_membership_get(store *s, const char *user_id, const char *org_id, membership_row *out)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    called("membership_get", user_id, org_id);
    if (st.rc == STORE_OK)
        *out = row("mem_1", NULL, false);
    return st.rc;
}

static store_rc list(membership_row **out, size_t *n)
{
    if (st.rc != STORE_OK)
        return st.rc;
    *out = calloc(2, sizeof **out);
    assert_non_null(*out);
    (*out)[0] = row("mem_1", "Acme", true);
    (*out)[1] = row("mem_2", NULL, false);
    *n = 2;
    return STORE_OK;
}

store_rc __wrap_store_memberships_for_user(store *s, const char *user_id, membership_row **out, size_t *n);
store_rc __wrap_store_memberships_for_user(store *s, const char *user_id, membership_row **out, size_t *n)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    called("memberships_for_user", user_id, NULL);
    return list(out, n);
}

store_rc __wrap_store_memberships_for_org(store *s, const char *org_id, membership_row **out, size_t *n);
store_rc __wrap_store_memberships_for_org(store *s, const char *org_id, membership_row **out, size_t *n)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    called("memberships_for_org", NULL, org_id);
    return list(out, n);
}

store_rc __wrap_store_begin(store *s);
store_rc __wrap_store_begin(store *s)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    st.begins++;
    return st.begin_rc;
}

store_rc __wrap_store_commit(store *s);
store_rc __wrap_store_commit(store *s)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    st.commits++;
    return st.commit_rc;
}

store_rc __wrap_store_rollback(store *s);
store_rc __wrap_store_rollback(store *s)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    st.rollbacks++;
    return st.rollback_rc;
}

store_rc __wrap_store_context_get(store *s, const char *owner_type, const char *owner_id, json_t **data);
store_rc __wrap_store_context_get(store *s, const char *owner_type, const char *owner_id, json_t **data)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    snprintf(st.owner_type, sizeof st.owner_type, "%s", owner_type);
    snprintf(st.owner_id, sizeof st.owner_id, "%s", owner_id);
    if (st.rc == STORE_OK)
        *data = st.context ? json_incref(st.context) : NULL;
    return st.rc;
}

store_rc __wrap_store_context_put(store *s, const char *owner_type, const char *owner_id, const json_t *data);
store_rc __wrap_store_context_put(store *s, const char *owner_type, const char *owner_id, const json_t *data)
{
    assert_ptr_equal(s, &cap_db); /* the request's store, the worker's */
    snprintf(st.owner_type, sizeof st.owner_type, "%s", owner_type);
    snprintf(st.owner_id, sizeof st.owner_id, "%s", owner_id);
    json_decref(st.put);
    st.put = json_deep_copy(data);
    return st.rc;
}

static int setup(void **state)
{
    (void)state;
    st_reset();
    return 0;
}

static json_t *J(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!j)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return j;
}

static void assert_json(const json_t *got, const char *want_text)
{
    json_t *want = J(want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fail_msg("got %s\nwant %s", g ? g : "(null)", want_text);
    }
    json_decref(want);
}

/* ---- replies ---- */

static void test_reply(void **state)
{
    (void)state;
    api_req *r = cap_req();
    ru_reply(r, 201, json_pack("{s:s}", "id", "x"));
    assert_int_equal(cap.n, 1);
    assert_int_equal(cap.status, 201);
    assert_json(cap.body, "{\"id\":\"x\"}");
    cap_done(r);

    r = cap_req(); /* a body that could not be built is a 500, never an empty 200 */
    ru_reply(r, 200, NULL);
    assert_detail(500, "Internal server error");
    cap_done(r);

    r = cap_req();
    ru_detailf(r, 404, "Organization %s not found", "org_9");
    assert_detail(404, "Organization org_9 not found");
    cap_done(r);
}

/* ---- JSON views ---- */

static void test_json_views(void **state)
{
    (void)state;
    json_t *j = ru_str(NULL);
    assert_true(json_is_null(j));
    json_decref(j);
    j = ru_str("s");
    assert_string_equal(json_string_value(j), "s");
    json_decref(j);

    org_key_ep none = {0};
    j = ru_ep_json(&none);
    assert_true(json_is_null(j));
    json_decref(j);
    org_key_ep k = {.ephemeral_public_key = HEX64, .iv = HEX32, .ciphertext = "abcd", .auth_tag = HEX32,
                    .hkdf_salt = HEX64};
    j = ru_ep_json(&k);
    assert_json(j, "{\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"abcd\","
                   "\"auth_tag\":\"" HEX32 "\",\"hkdf_salt\":\"" HEX64 "\"}");

    /* borrowing gives the object's own strings back */
    org_key_ep b;
    ru_ep_borrow(j, &b);
    assert_ptr_equal(b.ciphertext, json_string_value(json_object_get(j, "ciphertext")));
    assert_string_equal(b.ephemeral_public_key, HEX64);
    assert_string_equal(b.iv, HEX32);
    assert_string_equal(b.auth_tag, HEX32);
    assert_string_equal(b.hkdf_salt, HEX64);
    json_decref(j);

    st.role = ROLE_MEMBER;
    membership_row m = row("mem_1", "Acme", true);
    j = ru_membership_json(&m);
    assert_json(j, "{\"id\":\"mem_1\",\"org_id\":\"org_1\",\"org_name\":\"Acme\",\"role\":\"org:member\","
                   "\"has_org_key\":true,\"key_distributed_at\":\"2026-01-02T03:04:05Z\","
                   "\"joined_at\":\"2026-01-01T00:00:00Z\"}");
    json_decref(j);
    membership_row_free(&m);
    m = row("mem_2", NULL, false);
    j = ru_membership_json(&m);
    assert_json(j, "{\"id\":\"mem_2\",\"org_id\":\"org_1\",\"org_name\":null,\"role\":\"org:member\","
                   "\"has_org_key\":false,\"key_distributed_at\":null,"
                   "\"joined_at\":\"2026-01-01T00:00:00Z\"}");
    json_decref(j);
    membership_row_free(&m);

    j = ru_user_keys_json("pk", "epk", "iv", "tag", "salt");
    assert_json(j, "{\"public_key\":\"pk\",\"encrypted_private_key\":\"epk\",\"iv\":\"iv\",\"tag\":\"tag\","
                   "\"salt\":\"salt\",\"recovery_encrypted_private_key\":null,\"recovery_iv\":null,"
                   "\"recovery_tag\":null,\"recovery_salt\":null}");
    json_decref(j);
    j = ru_user_keys_json(NULL, NULL, NULL, NULL, NULL);
    assert_json(j, "{\"public_key\":null,\"encrypted_private_key\":null,\"iv\":null,\"tag\":null,"
                   "\"salt\":null,\"recovery_encrypted_private_key\":null,\"recovery_iv\":null,"
                   "\"recovery_tag\":null,\"recovery_salt\":null}");
    json_decref(j);
}

static json_t *id_only(const membership_row *m)
{
    return json_string(m->id);
}

static void test_memberships(void **state)
{
    (void)state;
    api_req *r = cap_req();
    json_t *a = ru_memberships(r, "user_1", NULL, id_only);
    assert_string_equal(st.called, "memberships_for_user");
    assert_string_equal(st.user, "user_1");
    assert_json(a, "[\"mem_1\",\"mem_2\"]");
    assert_int_equal(cap.n, 0);
    json_decref(a);
    cap_done(r);

    r = cap_req();
    a = ru_memberships(r, NULL, "org_7", ru_membership_json);
    assert_string_equal(st.called, "memberships_for_org");
    assert_string_equal(st.org, "org_7");
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "org_name")), "Acme");
    json_decref(a);
    cap_done(r);

    /* a store failure: NULL and a 500 that does not carry the store's reason */
    st.rc = STORE_ERR;
    r = cap_req();
    assert_null(ru_memberships(r, "user_1", NULL, id_only));
    assert_detail(500, "Database operation failed");
    cap_done(r);

    /* a database that did not answer in time (VEIL_DB_STATEMENT_TIMEOUT_MS): 503 with
     * Retry-After, a retry may succeed; the fixed text, without the store's reason */
    st.timed_out = true;
    r = cap_req();
    assert_null(ru_memberships(r, "user_1", NULL, id_only));
    assert_detail(503, "The database did not answer in time, please retry");
    assert_non_null(strstr(vbuf_cstr(&r->headers), "Retry-After: 1\r\n"));
    cap_done(r);
}

/* ---- the DB-role admin check (spec §4.5) ---- */

static void test_require_db_admin(void **state)
{
    (void)state;
    api_req *r = cap_req();
    membership_row m = {0};
    assert_true(ru_require_db_admin(r, "org_1", &m));
    assert_int_equal(cap.n, 0);
    assert_string_equal(st.user, "user_1"); /* the caller's own membership */
    assert_string_equal(st.org, "org_1");
    assert_string_equal(m.role, ROLE_ADMIN);
    membership_row_free(&m);
    cap_done(r);

    r = cap_req(); /* without out, the row is freed (the ASan build checks) */
    assert_true(ru_require_db_admin(r, "org_1", NULL));
    cap_done(r);

    st.rc = STORE_NOT_FOUND;
    r = cap_req();
    assert_false(ru_require_db_admin(r, "org_1", NULL));
    assert_detail(404, "User user_1 is not a member of org org_1");
    cap_done(r);

    /* the stored role decides, whatever the token says */
    st.rc = STORE_OK;
    st.role = ROLE_MEMBER;
    r = cap_req();
    snprintf(r->auth.org_role, sizeof r->auth.org_role, "org:admin");
    assert_false(ru_require_db_admin(r, "org_1", NULL));
    assert_detail(403, "User user_1 is not an admin of org org_1");
    cap_done(r);

    st.rc = STORE_ERR;
    r = cap_req();
    assert_false(ru_require_db_admin(r, "org_1", NULL));
    assert_detail(500, "Database operation failed");
    cap_done(r);
}

/* ---- transactions ---- */

static void test_transactions(void **state)
{
    (void)state;
    api_req *r = cap_req();
    assert_true(ru_begin(r));
    assert_true(ru_commit(r));
    assert_int_equal(st.begins, 1);
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.rollbacks, 0);
    assert_int_equal(cap.n, 0);
    cap_done(r);

    st.begin_rc = STORE_ERR;
    r = cap_req();
    assert_false(ru_begin(r));
    assert_detail(500, "Database operation failed");
    cap_done(r);

    /* a failed commit answers 500 and rolls back */
    st_reset();
    st.commit_rc = STORE_ERR;
    r = cap_req();
    assert_false(ru_commit(r));
    assert_detail(500, "Database operation failed");
    assert_int_equal(st.rollbacks, 1);
    cap_done(r);

    st_reset();
    r = cap_req();
    ru_fail(r, "org_insert");
    assert_detail(500, "Database operation failed");
    assert_int_equal(st.rollbacks, 1);
    cap_done(r);

    /* a refusal rolls back and answers its own status, even if the rollback fails */
    st_reset();
    r = cap_req();
    ru_abort(r, 409, "Organization %s already has keys", "org_1");
    assert_detail(409, "Organization org_1 already has keys");
    assert_int_equal(st.rollbacks, 1);
    cap_done(r);
    st.rollback_rc = STORE_ERR;
    r = cap_req();
    ru_abort(r, 400, "bad");
    assert_detail(400, "bad");
    assert_int_equal(st.rollbacks, 2);
    cap_done(r);
}

/* ---- 422s ---- */

static void test_hex_fields(void **state)
{
    (void)state;
    static const ru_hex_field F[] = {{"public_key", 64, 0}, {"iv", 32, 0}, {"ciphertext", 0, 2}};
    json_t *b = J("{\"public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"AB\"}");
    api_req *r = cap_req();
    assert_true(ru_hex_fields(r, b, F, 3));
    assert_int_equal(cap.n, 0);
    assert_string_equal(json_string_value(json_object_get(b, "ciphertext")), "ab");
    json_decref(b);
    cap_done(r);

    /* the table's order: the first bad field answers */
    b = J("{\"public_key\":\"" HEX64 "\",\"iv\":\"xyz\"}");
    r = cap_req();
    assert_false(ru_hex_fields(r, b, F, 3));
    assert_422("string_too_short", "[\"body\",\"iv\"]", "String should have at least 32 characters", "\"xyz\"");
    json_decref(b);
    cap_done(r);
}

static void test_opt_str(void **state)
{
    (void)state;
    api_req *r;
    static const char *const ok[] = {"{}", "{\"slug\":null}", "{\"slug\":\"acme\"}", "{\"slug\":\"\"}"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        json_t *b = J(ok[i]);
        r = cap_req();
        assert_true(ru_opt_str(r, b, "slug"));
        assert_int_equal(cap.n, 0);
        json_decref(b);
        cap_done(r);
    }
    json_t *b = J("{\"slug\":[\"acme\"]}");
    r = cap_req();
    assert_false(ru_opt_str(r, b, "slug"));
    assert_422("string_type", "[\"body\",\"slug\"]", "Input should be a valid string", "[\"acme\"]");
    json_decref(b);
    cap_done(r);
}


/* ---- context documents ---- */

static void test_context_get(void **state)
{
    (void)state;
    st.context = J("{\"tone\":\"brief\"}");
    api_req *r = cap_req();
    ru_context_get(r, "user", "user_1", true);
    assert_string_equal(st.owner_type, "user");
    assert_string_equal(st.owner_id, "user_1");
    assert_int_equal(cap.status, 200);
    assert_json(cap.body, "{\"owner_type\":\"user\",\"context_data\":{\"tone\":\"brief\"}}");
    cap_done(r);

    r = cap_req(); /* /organizations/context: no owner_type */
    ru_context_get(r, "org", "org_1", false);
    assert_json(cap.body, "{\"context_data\":{\"tone\":\"brief\"}}");
    cap_done(r);
    json_decref(st.context);

    st.context = NULL; /* no document yet */
    r = cap_req();
    ru_context_get(r, "org", "org_1", true);
    assert_json(cap.body, "{\"owner_type\":\"org\",\"context_data\":null}");
    cap_done(r);

    st.rc = STORE_ERR;
    r = cap_req();
    ru_context_get(r, "user", "user_1", true);
    assert_detail(500, "Database operation failed");
    cap_done(r);
}

static void test_context_put(void **state)
{
    (void)state;
    api_req *r = cap_req();
    cap.request_body = "{\"context_data\":{\"tone\":\"brief\",\"n\":[1,2]}}";
    ru_context_put(r, "user", "user_1", true);
    assert_string_equal(st.owner_type, "user");
    assert_string_equal(st.owner_id, "user_1");
    assert_json(st.put, "{\"tone\":\"brief\",\"n\":[1,2]}");
    assert_int_equal(cap.status, 200);
    assert_json(cap.body, "{\"owner_type\":\"user\",\"context_data\":{\"tone\":\"brief\",\"n\":[1,2]}}");
    cap_done(r);

    static const struct {
        const char *body, *type, *loc, *msg, *input;
    } BAD[] = {
        {"{\"context_data\":", "json_invalid", "[\"body\"]", "JSON decode error", "null"},
        {"[]", "model_attributes_type", "[\"body\"]",
         "Input should be a valid dictionary or object to extract fields from", "[]"},
        {"{}", "missing", "[\"body\",\"context_data\"]", "Field required", "null"},
        {"{\"context_data\":\"text\"}", "dict_type", "[\"body\",\"context_data\"]",
         "Input should be a valid dictionary", "\"text\""},
        {"{\"context_data\":null}", "dict_type", "[\"body\",\"context_data\"]",
         "Input should be a valid dictionary", "null"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        st_reset();
        r = cap_req();
        cap.request_body = BAD[i].body;
        ru_context_put(r, "org", "org_1", false);
        assert_422(BAD[i].type, BAD[i].loc, BAD[i].msg, BAD[i].input);
        assert_null(st.put); /* nothing stored */
        cap_done(r);
    }

    st_reset();
    st.rc = STORE_ERR;
    r = cap_req();
    cap.request_body = "{\"context_data\":{}}";
    ru_context_put(r, "org", "org_1", false);
    assert_detail(500, "Database operation failed");
    cap_done(r);
    st_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_reply, setup),
        cmocka_unit_test_setup(test_json_views, setup),
        cmocka_unit_test_setup(test_memberships, setup),
        cmocka_unit_test_setup(test_require_db_admin, setup),
        cmocka_unit_test_setup(test_transactions, setup),
        cmocka_unit_test_setup(test_hex_fields, setup),
        cmocka_unit_test_setup(test_opt_str, setup),
        cmocka_unit_test_setup(test_context_get, setup),
        cmocka_unit_test_setup(test_context_put, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
