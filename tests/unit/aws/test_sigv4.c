/* SigV4: the published AWS vectors (data-driven, tests/fixtures/sigv4), the Bedrock
 * "%3A" -> "%253A" canonical path, signing-key caching, refusal to re-sign, and
 * sign -> verify round trips with every verification failure mode.
 * Stays whole: tests mirror the tree, one file per module under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "aws/sigv4.h"
#include "common/buf.h"
#include "common/hex.h"

#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define T_20150830_123600 ((time_t)1440938160) /* 2015-08-30T12:36:00Z */
#define MAX_FX_HEADERS 32

/* ---- fixture loading ---------------------------------------------------------- */

/* Whole file as a NUL-terminated string, or NULL if it does not exist. */
static char *slurp(const char *dir, const char *file, size_t *len_out)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sigv4/%s/%s", VEIL_FIXTURES, dir, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    vbuf b = VBUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(vbuf_append(&b, chunk, n), 0);
    fclose(f);
    assert_non_null(vbuf_cstr(&b));
    if (len_out)
        *len_out = b.len;
    return (char *)b.data;
}

/* Expected-value files: a trailing newline an editor may add is not part of it. */
static char *slurp_expected(const char *dir, const char *file)
{
    size_t n = 0;
    char *s = slurp(dir, file, &n);
    while (s && n && s[n - 1] == '\n')
        s[--n] = '\0';
    return s;
}

typedef struct fx_request {
    char *buf;
    char *method;
    char *path;
    char *query;
    sigv4_header headers[MAX_FX_HEADERS];
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
} fx_request;

/* "METHOD target HTTP/1.1\nName:value\n...\n\nbody"; the target may hold spaces. */
static void parse_request(char *buf, size_t len, fx_request *r)
{
    memset(r, 0, sizeof *r);
    r->buf = buf;
    char *blank = strstr(buf, "\n\n");
    if (blank) {
        *blank = '\0';
        r->body = (const uint8_t *)blank + 2;
        r->body_len = len - (size_t)(blank + 2 - buf);
    }
    char *line_end = strchr(buf, '\n');
    if (line_end)
        *line_end = '\0';
    char *sp1 = strchr(buf, ' ');
    char *sp2 = strrchr(buf, ' ');
    assert_non_null(sp1);
    assert_true(sp2 > sp1);
    *sp1 = '\0';
    *sp2 = '\0';
    r->method = buf;
    r->path = sp1 + 1;
    char *q = strchr(r->path, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }
    for (char *line = line_end ? line_end + 1 : NULL; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *colon = strchr(line, ':');
        assert_non_null(colon);
        *colon = '\0';
        assert_true(r->n_headers < MAX_FX_HEADERS);
        r->headers[r->n_headers++] = (sigv4_header){line, colon + 1};
        line = next;
    }
}

static sigv4_request as_request(const fx_request *r, const sigv4_header *h, size_t n)
{
    sigv4_request req = {r->method, r->path, r->query, h, n, r->body, r->body_len};
    return req;
}

typedef struct fx_context {
    char date[SIGV4_AMZ_DATE_LEN + 1];
    char region[64];
    char service[64];
    char token[512];
    bool canonical_only;
    sigv4_config cfg;
} fx_context;

static void load_context(const char *name, fx_context *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->date, "20150830T123600Z");
    strcpy(c->region, "us-east-1");
    strcpy(c->service, "service");
    c->cfg.double_uri_encode = true;
    c->cfg.normalize_path = true;
    char *txt = slurp(name, "context.txt", NULL);
    for (char *line = txt; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        assert_non_null(eq);
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(line, "date") == 0)
            snprintf(c->date, sizeof c->date, "%s", v);
        else if (strcmp(line, "region") == 0)
            snprintf(c->region, sizeof c->region, "%s", v);
        else if (strcmp(line, "service") == 0)
            snprintf(c->service, sizeof c->service, "%s", v);
        else if (strcmp(line, "token") == 0)
            snprintf(c->token, sizeof c->token, "%s", v);
        else if (strcmp(line, "normalize_path") == 0)
            c->cfg.normalize_path = strcmp(v, "1") == 0;
        else if (strcmp(line, "double_uri_encode") == 0)
            c->cfg.double_uri_encode = strcmp(v, "1") == 0;
        else if (strcmp(line, "mode") == 0)
            c->canonical_only = strcmp(v, "canonical") == 0;
        else
            fail_msg("unknown context key %s", line);
        line = next;
    }
    free(txt);
    c->cfg.region = c->region;
    c->cfg.service = c->service;
}

static time_t amz_to_time(const char *amz)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    assert_int_equal(sscanf(amz, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec),
                     6);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

static void expect_str(const char *name, const char *what, const char *want, const char *got)
{
    if (strcmp(want, got) != 0)
        fail_msg("%s: %s\n--- want\n%s\n--- got\n%s", name, what, want, got);
}

/* Pulls "SignedHeaders=..." and "Signature=..." out of an expected Authorization. */
static void auth_parts(const char *authz, char *signed_headers, size_t sh_cap, char *sig)
{
    const char *sh = strstr(authz, "SignedHeaders=");
    const char *sg = strstr(authz, "Signature=");
    assert_non_null(sh);
    assert_non_null(sg);
    sh += strlen("SignedHeaders=");
    size_t n = strcspn(sh, ",");
    assert_true(n < sh_cap);
    memcpy(signed_headers, sh, n);
    signed_headers[n] = '\0';
    snprintf(sig, SIGV4_HEX_LEN + 1, "%s", sg + strlen("Signature="));
}

static void run_vector(const char *name)
{
    fx_context c;
    fx_request r;
    size_t len = 0;
    char *raw = slurp(name, "request.txt", &len);
    if (!raw)
        fail_msg("%s: no request.txt", name);
    parse_request(raw, len, &r);
    load_context(name, &c);
    char *want_creq = slurp_expected(name, "canonical-request.txt");
    char *want_sts = slurp_expected(name, "string-to-sign.txt");
    char *want_auth = slurp_expected(name, "authorization.txt");
    char *want_key = slurp_expected(name, "signing-key.txt");
    sigv4_credentials creds = {AKID, SECRET, c.token[0] ? c.token : NULL};

    /* 1. the pure functions, over the request exactly as published */
    sigv4_request full = as_request(&r, r.headers, r.n_headers);
    vbuf creq = VBUF_INIT, names = VBUF_INIT, scope = VBUF_INIT, sts = VBUF_INIT;
    assert_int_equal(sigv4_canonical_request(&c.cfg, &full, &creq, &names), SIGV4_OK);
    if (want_creq)
        expect_str(name, "canonical request", want_creq, (char *)creq.data);
    assert_int_equal(sigv4_scope(c.date, c.region, c.service, &scope), SIGV4_OK);
    assert_int_equal(sigv4_string_to_sign(c.date, (char *)scope.data, (char *)creq.data,
                                          creq.len, &sts),
                     SIGV4_OK);
    if (want_sts)
        expect_str(name, "string to sign", want_sts, (char *)sts.data);
    uint8_t key[SIGV4_KEY_LEN];
    char key_hex[2 * SIGV4_KEY_LEN + 1], sig[SIGV4_HEX_LEN + 1];
    assert_int_equal(sigv4_derive_signing_key(SECRET, c.date, c.region, c.service, key), SIGV4_OK);
    hex_encode(key, sizeof key, key_hex);
    if (want_key)
        expect_str(name, "signing key", want_key, key_hex);
    assert_int_equal(sigv4_sign_string(key, (char *)sts.data, sts.len, sig), SIGV4_OK);
    if (want_auth) {
        char want_sh[256], want_sig[SIGV4_HEX_LEN + 1];
        auth_parts(want_auth, want_sh, sizeof want_sh, want_sig);
        expect_str(name, "signed headers", want_sh, (char *)names.data);
        expect_str(name, "signature", want_sig, sig);
    }

    /* 2. the signer, which must add X-Amz-Date (and the token) itself */
    if (!c.canonical_only) {
        sigv4_header bare[MAX_FX_HEADERS];
        size_t nb = 0;
        for (size_t i = 0; i < r.n_headers; i++) {
            if (strcasecmp(r.headers[i].name, "x-amz-date") == 0) {
                expect_str(name, "request date", c.date, r.headers[i].value);
                continue;
            }
            if (strcasecmp(r.headers[i].name, "x-amz-security-token") == 0)
                continue;
            bare[nb++] = r.headers[i];
        }
        sigv4_request req = as_request(&r, bare, nb);
        sigv4_signer *s = sigv4_signer_new(&c.cfg);
        assert_non_null(s);
        sigv4_signed out;
        int rc = sigv4_sign_request(s, &creds, &req, amz_to_time(c.date), &out);
        if (rc != SIGV4_OK)
            fail_msg("%s: sign: %s", name, sigv4_strerror(rc));
        expect_str(name, "X-Amz-Date", c.date, sigv4_signed_get(&out, "x-amz-date"));
        if (c.token[0])
            expect_str(name, "token", c.token, sigv4_signed_get(&out, "X-Amz-Security-Token"));
        else
            assert_null(sigv4_signed_get(&out, "X-Amz-Security-Token"));
        assert_null(sigv4_signed_get(&out, "x-amz-content-sha256"));
        if (want_auth)
            expect_str(name, "Authorization", want_auth, sigv4_signed_get(&out, "Authorization"));
        expect_str(name, "signature field", sig, out.signature);

        /* 3. and what it signed verifies on the server side */
        sigv4_header all[MAX_FX_HEADERS + SIGV4_MAX_ADDED_HEADERS];
        memcpy(all, bare, nb * sizeof *bare);
        for (size_t i = 0; i < out.n_headers; i++)
            all[nb + i] = (sigv4_header){out.headers[i].name, out.headers[i].value};
        sigv4_request received = as_request(&r, all, nb + out.n_headers);
        rc = sigv4_verify(&c.cfg, &creds, 1, &received, amz_to_time(c.date) + 60);
        if (rc != SIGV4_OK)
            fail_msg("%s: verify: %s", name, sigv4_strerror(rc));
        sigv4_signed_free(&out);
        sigv4_signer_free(s);
    }

    vbuf_free(&creq);
    vbuf_free(&names);
    vbuf_free(&scope);
    vbuf_free(&sts);
    free(want_creq);
    free(want_sts);
    free(want_auth);
    free(want_key);
    free(raw);
}

static void test_published_vectors(void **state)
{
    (void)state;
    char *list = slurp(".", "cases.txt", NULL);
    assert_non_null(list);
    int n = 0;
    for (char *line = list; *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (*line) {
            run_vector(line);
            n++;
        }
        if (!next)
            break;
        line = next;
    }
    free(list);
    assert_true(n >= 30);
}

/* ---- Bedrock ------------------------------------------------------------------- */

#define MODEL_ID "us.anthropic.claude-3-5-haiku-20241022-v1:0"
#define WIRE_PATH "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"
#define CANON_PATH "/model/us.anthropic.claude-3-5-haiku-20241022-v1%253A0/converse-stream"
#define BEDROCK_HOST "bedrock-runtime.us-east-1.amazonaws.com"
#define BODY "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"Hi\"}]}]}"
#define TOKEN "FQoGZXIvYXdzEXAMPLETOKEN//////////wEaDEXAMPLE+token/with=chars"

/* The classic Bedrock 403: the id's ':' is %3A on the wire and must be %253A in
 * the canonical URI, because AWS encodes the (already encoded) path again. */
static void test_bedrock_colon_path(void **state)
{
    (void)state;
    vbuf wire = VBUF_INIT, canon = VBUF_INIT;
    const char *segs[] = {"model", MODEL_ID, "converse-stream"};
    assert_int_equal(sigv4_build_path(&wire, segs, 3), SIGV4_OK);
    assert_string_equal((char *)wire.data, WIRE_PATH);

    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    assert_string_equal(cfg.service, "bedrock");
    assert_true(cfg.double_uri_encode && cfg.normalize_path && !cfg.add_content_sha256);
    assert_int_equal(sigv4_canonical_uri(&cfg, (char *)wire.data, &canon), SIGV4_OK);
    assert_string_equal((char *)canon.data, CANON_PATH);

    /* with the flag off the wire path is hashed as is (S3 behaviour) */
    cfg.double_uri_encode = false;
    vbuf_reset(&canon);
    assert_int_equal(sigv4_canonical_uri(&cfg, WIRE_PATH, &canon), SIGV4_OK);
    assert_string_equal((char *)canon.data, WIRE_PATH);

    /* the full canonical request carries the double-encoded path */
    cfg = sigv4_config_bedrock("us-east-1");
    sigv4_header h[] = {{"Host", BEDROCK_HOST}, {"X-Amz-Date", "20241105T093000Z"}};
    sigv4_request req = {"POST", WIRE_PATH, NULL, h, 2, (const uint8_t *)BODY, strlen(BODY)};
    vbuf creq = VBUF_INIT;
    assert_int_equal(sigv4_canonical_request(&cfg, &req, &creq, NULL), SIGV4_OK);
    assert_non_null(strstr((char *)creq.data, "POST\n" CANON_PATH "\n\n"));

    vbuf_free(&wire);
    vbuf_free(&canon);
    vbuf_free(&creq);
}

static void test_build_path_rejects_dot_segments(void **state)
{
    (void)state;
    vbuf out = VBUF_INIT;
    const char *dot[] = {"model", "..", "x"};
    const char *empty[] = {"model", "", "x"};
    const char *slash[] = {"model", "a/b"};
    assert_int_equal(sigv4_build_path(&out, dot, 3), SIGV4_ERR_INVALID_ARG);
    assert_int_equal(sigv4_build_path(&out, empty, 3), SIGV4_ERR_INVALID_ARG);
    assert_int_equal(sigv4_build_path(&out, slash, 2), SIGV4_OK);
    assert_string_equal((char *)out.data, "/model/a%2Fb");
    assert_int_equal(sigv4_build_path(&out, NULL, 0), SIGV4_OK);
    assert_string_equal((char *)out.data, "/");
    vbuf_free(&out);
}

static void test_uri_encode_segment(void **state)
{
    (void)state;
    vbuf out = VBUF_INIT;
    const char in[] = "aZ09-._~ :/%+*!'()\xe1\x88\xb4";
    assert_int_equal(sigv4_uri_encode_segment(&out, in, strlen(in)), SIGV4_OK);
    assert_non_null(vbuf_cstr(&out));
    assert_string_equal((char *)out.data,
                        "aZ09-._~%20%3A%2F%25%2B%2A%21%27%28%29%E1%88%B4");
    vbuf_free(&out);
}

static void check_uri(const sigv4_config *cfg, const char *path, const char *want)
{
    vbuf out = VBUF_INIT;
    assert_int_equal(sigv4_canonical_uri(cfg, path, &out), SIGV4_OK);
    assert_string_equal((char *)out.data, want);
    vbuf_free(&out);
}

static void test_canonical_uri_normalisation(void **state)
{
    (void)state;
    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    check_uri(&cfg, "", "/");
    check_uri(&cfg, NULL, "/");
    check_uri(&cfg, "/a/b/..", "/a");
    check_uri(&cfg, "/a/./b//c/", "/a/b/c/");
    check_uri(&cfg, "/../..", "/");
    check_uri(&cfg, "/a%2Fb/c", "/a%252Fb/c");
    cfg.normalize_path = false;
    check_uri(&cfg, "//a/./b/../", "//a/./b/../");
    vbuf out = VBUF_INIT;
    assert_int_equal(sigv4_canonical_uri(&cfg, "relative", &out), SIGV4_ERR_INVALID_ARG);
    vbuf_free(&out);
}

static void check_query(const char *q, const char *want)
{
    vbuf out = VBUF_INIT;
    assert_int_equal(sigv4_canonical_query(q, &out), SIGV4_OK);
    assert_string_equal((char *)out.data, want);
    vbuf_free(&out);
}

static void test_canonical_query(void **state)
{
    (void)state;
    check_query(NULL, "");
    check_query("", "");
    /* decoded first, then encoded once: both spellings of '/' agree */
    check_query("b=x%2Fy&a=x/y", "a=x%2Fy&b=x%2Fy");
    check_query("k=a+b", "k=a%2Bb");                /* '+' is a plus, not a space */
    check_query("k=a%20b&k=a%2", "k=a%20b&k=a%252"); /* a stray '%' is literal */
    check_query("flag&&z=1&a=", "a=&flag=&z=1");
    check_query("a=2&a=10&a=1", "a=1&a=10&a=2");
    check_query("%7e=%7E", "~=~");
}

/* ---- signer ---------------------------------------------------------------------- */

static sigv4_request bedrock_request(sigv4_header *h, size_t *n)
{
    h[0] = (sigv4_header){"Host", BEDROCK_HOST};
    h[1] = (sigv4_header){"Content-Type", "application/json"};
    h[2] = (sigv4_header){"Accept", "application/vnd.amazon.eventstream"};
    *n = 3;
    sigv4_request req = {"POST", WIRE_PATH, NULL, h, *n, (const uint8_t *)BODY, strlen(BODY)};
    return req;
}

static void test_signing_key_cached(void **state)
{
    (void)state;
    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    sigv4_signer *s = sigv4_signer_new(&cfg);
    assert_non_null(s);
    sigv4_header h[4];
    size_t n;
    sigv4_request req = bedrock_request(h, &n);
    sigv4_credentials creds = {AKID, SECRET, TOKEN};
    sigv4_signed a, b, c;
    time_t t = T_20150830_123600;

    assert_int_equal(sigv4_signer_derivations(s), 0);
    assert_int_equal(sigv4_sign_request(s, &creds, &req, t, &a), SIGV4_OK);
    assert_int_equal(sigv4_sign_request(s, &creds, &req, t + 3600, &b), SIGV4_OK);
    assert_int_equal(sigv4_signer_derivations(s), 1); /* same day: derived once */
    assert_string_not_equal(a.signature, b.signature);
    sigv4_signed_free(&b);

    /* same result as an uncached derivation */
    uint8_t key[SIGV4_KEY_LEN];
    char sig[SIGV4_HEX_LEN + 1];
    vbuf creq = VBUF_INIT, scope = VBUF_INIT, sts = VBUF_INIT;
    sigv4_header full[6];
    memcpy(full, h, n * sizeof *h);
    full[n] = (sigv4_header){"X-Amz-Date", a.amz_date};
    full[n + 1] = (sigv4_header){"X-Amz-Security-Token", TOKEN};
    sigv4_request freq = req;
    freq.headers = full;
    freq.n_headers = n + 2;
    assert_int_equal(sigv4_canonical_request(&cfg, &freq, &creq, NULL), SIGV4_OK);
    assert_int_equal(sigv4_scope(a.amz_date, "us-east-1", "bedrock", &scope), SIGV4_OK);
    assert_int_equal(sigv4_string_to_sign(a.amz_date, (char *)scope.data, (char *)creq.data,
                                          creq.len, &sts),
                     SIGV4_OK);
    assert_int_equal(sigv4_derive_signing_key(SECRET, a.amz_date, "us-east-1", "bedrock", key),
                     SIGV4_OK);
    assert_int_equal(sigv4_sign_string(key, (char *)sts.data, sts.len, sig), SIGV4_OK);
    assert_string_equal(sig, a.signature);
    vbuf_free(&creq);
    vbuf_free(&scope);
    vbuf_free(&sts);
    sigv4_signed_free(&a);

    /* a new day re-derives */
    assert_int_equal(sigv4_sign_request(s, &creds, &req, t + 86400, &c), SIGV4_OK);
    assert_int_equal(sigv4_signer_derivations(s), 2);
    assert_non_null(strstr(sigv4_signed_get(&c, "Authorization"), "/20150831/us-east-1/bedrock/"));
    sigv4_signed_free(&c);

    /* rotated credentials re-derive: a new secret, then a new access key id */
    sigv4_credentials rotated = {AKID, "another/secret+key", TOKEN};
    assert_int_equal(sigv4_sign_request(s, &rotated, &req, t + 86400, &c), SIGV4_OK);
    assert_int_equal(sigv4_signer_derivations(s), 3);
    sigv4_signed_free(&c);
    rotated.access_key_id = "AKIDOTHER";
    assert_int_equal(sigv4_sign_request(s, &rotated, &req, t + 86400, &c), SIGV4_OK);
    assert_int_equal(sigv4_signer_derivations(s), 4);
    sigv4_signed_free(&c);
    /* a new session token alone does not change the key */
    rotated.session_token = "NEWTOKEN";
    assert_int_equal(sigv4_sign_request(s, &rotated, &req, t + 86400, &c), SIGV4_OK);
    assert_int_equal(sigv4_signer_derivations(s), 4);
    sigv4_signed_free(&c);

    sigv4_signer_free(s);
}

static void test_bedrock_signed_shape(void **state)
{
    (void)state;
    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    sigv4_signer *s = sigv4_signer_new(&cfg);
    sigv4_header h[4];
    size_t n;
    sigv4_request req = bedrock_request(h, &n);
    sigv4_credentials creds = {AKID, SECRET, TOKEN};
    sigv4_signed out;

    assert_int_equal(sigv4_sign_request(s, &creds, &req, T_20150830_123600, &out), SIGV4_OK);
    /* wire order of the added headers (original §3.2), no x-amz-content-sha256 */
    assert_int_equal(out.n_headers, 3);
    assert_string_equal(out.headers[0].name, "X-Amz-Date");
    assert_string_equal(out.headers[0].value, "20150830T123600Z");
    assert_string_equal(out.headers[1].name, "X-Amz-Security-Token");
    assert_string_equal(out.headers[1].value, TOKEN);
    assert_string_equal(out.headers[2].name, "Authorization");
    const char *auth = out.headers[2].value;
    assert_true(strncmp(auth,
                        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/"
                        "aws4_request, SignedHeaders=accept;content-type;host;x-amz-date;"
                        "x-amz-security-token, Signature=",
                        strlen("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
                               "bedrock/aws4_request, SignedHeaders=accept;content-type;host;"
                               "x-amz-date;x-amz-security-token, Signature=")) == 0);
    assert_string_equal(auth + strlen(auth) - SIGV4_HEX_LEN, out.signature);
    assert_true(hex_is_valid(out.signature, SIGV4_HEX_LEN));
    sigv4_signed_free(&out);

    /* without a token there is no token header, and it is not signed */
    sigv4_credentials longterm = {AKID, SECRET, NULL};
    assert_int_equal(sigv4_sign_request(s, &longterm, &req, T_20150830_123600, &out), SIGV4_OK);
    assert_int_equal(out.n_headers, 2);
    assert_null(sigv4_signed_get(&out, "x-amz-security-token"));
    assert_non_null(strstr(sigv4_signed_get(&out, "authorization"),
                           "SignedHeaders=accept;content-type;host;x-amz-date, "));
    sigv4_signed_free(&out);
    sigv4_signer_free(s);
}

static void test_content_sha256_option(void **state)
{
    (void)state;
    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    cfg.add_content_sha256 = true;
    sigv4_signer *s = sigv4_signer_new(&cfg);
    sigv4_header h[4];
    size_t n;
    sigv4_request req = bedrock_request(h, &n);
    sigv4_credentials creds = {AKID, SECRET, NULL};
    sigv4_signed out;
    char hash[SIGV4_HEX_LEN + 1];

    assert_int_equal(sigv4_payload_hash((const uint8_t *)BODY, strlen(BODY), hash), SIGV4_OK);
    assert_int_equal(sigv4_sign_request(s, &creds, &req, T_20150830_123600, &out), SIGV4_OK);
    assert_string_equal(sigv4_signed_get(&out, "X-Amz-Content-SHA256"), hash);
    assert_non_null(strstr(sigv4_signed_get(&out, "Authorization"),
                           "SignedHeaders=accept;content-type;host;x-amz-content-sha256;x-amz-date,"));

    /* verify accepts it, and rejects a content hash that does not match the body */
    sigv4_header all[8];
    memcpy(all, h, n * sizeof *h);
    for (size_t i = 0; i < out.n_headers; i++)
        all[n + i] = (sigv4_header){out.headers[i].name, out.headers[i].value};
    sigv4_request rx = req;
    rx.headers = all;
    rx.n_headers = n + out.n_headers;
    assert_int_equal(sigv4_verify(&cfg, &creds, 1, &rx, T_20150830_123600), SIGV4_OK);
    rx.body_len--;
    assert_int_equal(sigv4_verify(&cfg, &creds, 1, &rx, T_20150830_123600),
                     SIGV4_ERR_SIGNATURE_MISMATCH);
    sigv4_signed_free(&out);
    sigv4_signer_free(s);
}

/* Hop-by-hop and proxy-rewritten headers are left out of the signature, so a
 * request signed with them equals one signed without them. */
static void test_unsigned_headers_skipped(void **state)
{
    (void)state;
    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    sigv4_signer *s = sigv4_signer_new(&cfg);
    sigv4_credentials creds = {AKID, SECRET, TOKEN};
    sigv4_header h[16];
    size_t n;
    sigv4_request plain = bedrock_request(h, &n);
    sigv4_signed a, b;
    assert_int_equal(sigv4_sign_request(s, &creds, &plain, T_20150830_123600, &a), SIGV4_OK);

    sigv4_header noisy[16];
    memcpy(noisy, h, n * sizeof *h);
    size_t m = n;
    noisy[m++] = (sigv4_header){"Content-Length", "57"};
    noisy[m++] = (sigv4_header){"User-Agent", "veil/0.1"};
    noisy[m++] = (sigv4_header){"Connection", "keep-alive"};
    noisy[m++] = (sigv4_header){"Keep-Alive", "timeout=5"};
    noisy[m++] = (sigv4_header){"Proxy-Authorization", "Basic Zm9vOmJhcg=="};
    noisy[m++] = (sigv4_header){"Proxy-Connection", "keep-alive"};
    noisy[m++] = (sigv4_header){"TE", "trailers"};
    noisy[m++] = (sigv4_header){"Trailer", "x"};
    noisy[m++] = (sigv4_header){"Transfer-Encoding", "chunked"};
    noisy[m++] = (sigv4_header){"Upgrade", "h2c"};
    noisy[m++] = (sigv4_header){"Expect", "100-continue"};
    sigv4_request req = plain;
    req.headers = noisy;
    req.n_headers = m;
    assert_int_equal(sigv4_sign_request(s, &creds, &req, T_20150830_123600, &b), SIGV4_OK);
    assert_string_equal(a.signature, b.signature);
    assert_string_equal(sigv4_signed_get(&a, "Authorization"),
                        sigv4_signed_get(&b, "Authorization"));

    /* and the server still verifies it with those headers present */
    sigv4_header all[24];
    memcpy(all, noisy, m * sizeof *noisy);
    for (size_t i = 0; i < b.n_headers; i++)
        all[m + i] = (sigv4_header){b.headers[i].name, b.headers[i].value};
    sigv4_request rx = req;
    rx.headers = all;
    rx.n_headers = m + b.n_headers;
    assert_int_equal(sigv4_verify(&cfg, &creds, 1, &rx, T_20150830_123600), SIGV4_OK);

    sigv4_signed_free(&a);
    sigv4_signed_free(&b);
    sigv4_signer_free(s);
}

static void test_refuses_already_signed(void **state)
{
    (void)state;
    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    sigv4_signer *s = sigv4_signer_new(&cfg);
    sigv4_credentials creds = {AKID, SECRET, TOKEN};
    const char *owned[] = {"Authorization", "X-Amz-Date", "x-amz-date", "AUTHORIZATION",
                           "X-Amz-Security-Token"};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) {
        sigv4_header h[5];
        size_t n;
        sigv4_request req = bedrock_request(h, &n);
        h[n++] = (sigv4_header){owned[i], "whatever"};
        req.n_headers = n;
        sigv4_signed out;
        assert_int_equal(sigv4_sign_request(s, &creds, &req, T_20150830_123600, &out),
                         SIGV4_ERR_ALREADY_SIGNED);
        assert_int_equal(out.n_headers, 0);
        sigv4_signed_free(&out);
    }

    sigv4_header h[1] = {{"Content-Type", "application/json"}};
    sigv4_request nohost = {"POST", "/", NULL, h, 1, NULL, 0};
    sigv4_signed out;
    assert_int_equal(sigv4_sign_request(s, &creds, &nohost, T_20150830_123600, &out),
                     SIGV4_ERR_NO_HOST);
    sigv4_signed_free(&out);

    /* header injection through a value or a name is refused, not signed */
    sigv4_header bad_value[2] = {{"Host", BEDROCK_HOST}, {"X-Custom", "a\r\nAuthorization: x"}};
    sigv4_request r1 = {"POST", "/", NULL, bad_value, 2, NULL, 0};
    assert_int_equal(sigv4_sign_request(s, &creds, &r1, T_20150830_123600, &out),
                     SIGV4_ERR_INVALID_ARG);
    sigv4_signed_free(&out);
    sigv4_header bad_name[2] = {{"Host", BEDROCK_HOST}, {"Bad Name", "v"}};
    sigv4_request r2 = {"POST", "/", NULL, bad_name, 2, NULL, 0};
    assert_int_equal(sigv4_sign_request(s, &creds, &r2, T_20150830_123600, &out),
                     SIGV4_ERR_INVALID_ARG);
    sigv4_signed_free(&out);
    sigv4_signer_free(s);
}

/* ---- verification ------------------------------------------------------------------ */

typedef struct signed_fixture {
    sigv4_config cfg;
    sigv4_header h[16];
    size_t n;
    sigv4_request req;
    sigv4_signed out;
} signed_fixture;

/* A Bedrock request signed at T with token creds, headers ready to "receive". */
static void make_signed(signed_fixture *f, const sigv4_credentials *creds, time_t t)
{
    memset(f, 0, sizeof *f);
    f->cfg = sigv4_config_bedrock("us-east-1");
    sigv4_signer *s = sigv4_signer_new(&f->cfg);
    size_t n;
    f->req = bedrock_request(f->h, &n);
    assert_int_equal(sigv4_sign_request(s, creds, &f->req, t, &f->out), SIGV4_OK);
    for (size_t i = 0; i < f->out.n_headers; i++)
        f->h[n + i] = (sigv4_header){f->out.headers[i].name, f->out.headers[i].value};
    f->n = n + f->out.n_headers;
    f->req.headers = f->h;
    f->req.n_headers = f->n;
    sigv4_signer_free(s);
}

static sigv4_header *find_header(signed_fixture *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcasecmp(f->h[i].name, name) == 0)
            return &f->h[i];
    fail_msg("no header %s", name);
    return NULL;
}

static int verify_with_auth(signed_fixture *f, const sigv4_credentials *known, const char *auth)
{
    sigv4_header *a = find_header(f, "Authorization");
    const char *saved = a->value;
    a->value = auth;
    int rc = sigv4_verify(&f->cfg, known, 1, &f->req, T_20150830_123600);
    a->value = saved;
    return rc;
}

static void test_sign_verify_round_trip(void **state)
{
    (void)state;
    sigv4_credentials creds = {AKID, SECRET, TOKEN};
    signed_fixture f;
    make_signed(&f, &creds, T_20150830_123600);
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, T_20150830_123600), SIGV4_OK);

    /* several known keys: the right one is picked by access key id */
    sigv4_credentials known[3] = {
        {"AKIDFIRST", "first-secret", NULL},
        {"AKIDSECOND", "second-secret", "tok"},
        creds,
    };
    assert_int_equal(sigv4_verify(&f.cfg, known, 3, &f.req, T_20150830_123600), SIGV4_OK);

    /* header names arrive in any case and order */
    sigv4_header shuffled[16];
    for (size_t i = 0; i < f.n; i++)
        shuffled[i] = f.h[f.n - 1 - i];
    shuffled[0].name = "AUTHORIZATION";
    sigv4_request rx = f.req;
    rx.headers = shuffled;
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, T_20150830_123600), SIGV4_OK);
    sigv4_signed_free(&f.out);
}

/* tmpl with every "%s" replaced by sig (a literal format would be simpler, but the
 * templates live in a table and -Wformat=2 rightly refuses non-literal formats) */
static void fill_sig(char *out, size_t cap, const char *tmpl, const char *sig)
{
    vbuf b = VBUF_INIT;
    for (const char *p = tmpl; *p;) {
        const char *at = strstr(p, "%s");
        size_t n = at ? (size_t)(at - p) : strlen(p);
        assert_int_equal(vbuf_append(&b, p, n), 0);
        p += n;
        if (at) {
            assert_int_equal(vbuf_append_str(&b, sig), 0);
            p += 2;
        }
    }
    assert_non_null(vbuf_cstr(&b));
    assert_true(b.len < cap);
    memcpy(out, b.data, b.len + 1);
    vbuf_free(&b);
}

static void test_verify_failure_modes(void **state)
{
    (void)state;
    sigv4_credentials creds = {AKID, SECRET, TOKEN};
    signed_fixture f;
    make_signed(&f, &creds, T_20150830_123600);
    const char *good = sigv4_signed_get(&f.out, "Authorization");
    const time_t t = T_20150830_123600;
    char buf[1024];

    /* missing Authorization */
    sigv4_request none = f.req;
    sigv4_header without[16];
    size_t k = 0;
    for (size_t i = 0; i < f.n; i++)
        if (strcasecmp(f.h[i].name, "authorization") != 0)
            without[k++] = f.h[i];
    none.headers = without;
    none.n_headers = k;
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &none, t), SIGV4_ERR_MISSING_AUTH);

    /* malformed Authorization */
    const char *sig = f.out.signature;
    const char *malformed[] = {
        "",
        "garbage",
        "AWS4-HMAC-SHA1 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock, "
        "SignedHeaders=host;x-amz-date, Signature=%s",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=x-amz-date;host, Signature=%s", /* not sorted */
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=zz",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=%s, Signature=%s",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=%s,",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=Host;x-amz-date, Signature=%s", /* upper case */
        /* host and x-amz-date must both be signed */
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=accept;x-amz-date, Signature=%s",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host, Signature=%s",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        fill_sig(buf, sizeof buf, malformed[i], sig);
        int rc = verify_with_auth(&f, &creds, buf);
        if (rc != SIGV4_ERR_MALFORMED_AUTH)
            fail_msg("case %zu: %s", i, sigv4_strerror(rc));
    }
    /* components in another order are fine */
    snprintf(buf, sizeof buf,
             "AWS4-HMAC-SHA256 Signature=%s,SignedHeaders=accept;content-type;host;x-amz-date;"
             "x-amz-security-token,Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request",
             sig);
    assert_int_equal(verify_with_auth(&f, &creds, buf), SIGV4_OK);

    /* malformed X-Amz-Date */
    sigv4_header *date = find_header(&f, "X-Amz-Date");
    const char *saved_date = date->value;
    date->value = "20150830T123600";
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t), SIGV4_ERR_MALFORMED_AUTH);
    date->value = "20150230T123600Z"; /* February 30th */
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t), SIGV4_ERR_MALFORMED_AUTH);
    date->value = saved_date;

    /* unknown access key */
    sigv4_credentials other = {"AKIDNOTTHIS", SECRET, TOKEN};
    assert_int_equal(sigv4_verify(&f.cfg, &other, 1, &f.req, t), SIGV4_ERR_UNKNOWN_KEY);
    assert_int_equal(sigv4_verify(&f.cfg, NULL, 0, &f.req, t), SIGV4_ERR_UNKNOWN_KEY);

    /* bad scope: region, service, terminator, a day that is not x-amz-date's */
    sigv4_config west = sigv4_config_bedrock("us-west-2");
    assert_int_equal(sigv4_verify(&west, &creds, 1, &f.req, t), SIGV4_ERR_BAD_SCOPE);
    sigv4_config runtime = f.cfg;
    runtime.service = "bedrock-runtime";
    assert_int_equal(sigv4_verify(&runtime, &creds, 1, &f.req, t), SIGV4_ERR_BAD_SCOPE);
    const char *scopes[] = {"20150830/us-east-1/bedrock/aws4_requesx",
                            "20150831/us-east-1/bedrock/aws4_request"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(buf, sizeof buf,
                 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/%s, SignedHeaders=accept;content-type;"
                 "host;x-amz-date;x-amz-security-token, Signature=%s",
                 scopes[i], sig);
        assert_int_equal(verify_with_auth(&f, &creds, buf), SIGV4_ERR_BAD_SCOPE);
    }

    /* stale date: 15 minutes either way is the limit */
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t + 900), SIGV4_OK);
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t - 900), SIGV4_OK);
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t + 901), SIGV4_ERR_STALE_DATE);
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t - 901), SIGV4_ERR_STALE_DATE);

    /* token: wrong, unexpected, missing */
    sigv4_credentials wrong_token = {AKID, SECRET, "not-the-token"};
    assert_int_equal(sigv4_verify(&f.cfg, &wrong_token, 1, &f.req, t), SIGV4_ERR_TOKEN_MISMATCH);
    sigv4_credentials no_token = {AKID, SECRET, NULL};
    assert_int_equal(sigv4_verify(&f.cfg, &no_token, 1, &f.req, t), SIGV4_ERR_TOKEN_MISMATCH);
    signed_fixture g;
    make_signed(&g, &no_token, t);
    assert_int_equal(sigv4_verify(&g.cfg, &no_token, 1, &g.req, t), SIGV4_OK);
    assert_int_equal(sigv4_verify(&g.cfg, &creds, 1, &g.req, t), SIGV4_ERR_TOKEN_MISMATCH);
    sigv4_signed_free(&g.out);
    /* token sent but left out of SignedHeaders */
    snprintf(buf, sizeof buf,
             "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
             "SignedHeaders=accept;content-type;host;x-amz-date, Signature=%s",
             sig);
    assert_int_equal(verify_with_auth(&f, &creds, buf), SIGV4_ERR_TOKEN_MISMATCH);

    /* wrong secret */
    sigv4_credentials wrong_secret = {AKID, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ", TOKEN};
    assert_int_equal(sigv4_verify(&f.cfg, &wrong_secret, 1, &f.req, t),
                     SIGV4_ERR_SIGNATURE_MISMATCH);
    /* a flipped signature digit */
    snprintf(buf, sizeof buf, "%s", good);
    buf[strlen(buf) - 1] = buf[strlen(buf) - 1] == '0' ? '1' : '0';
    assert_int_equal(verify_with_auth(&f, &creds, buf), SIGV4_ERR_SIGNATURE_MISMATCH);

    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t), SIGV4_OK);
    sigv4_signed_free(&f.out);
}

static void test_verify_detects_tampering(void **state)
{
    (void)state;
    sigv4_credentials creds = {AKID, SECRET, TOKEN};
    const time_t t = T_20150830_123600;
    signed_fixture f;
    make_signed(&f, &creds, t);
    sigv4_request rx;

    /* body: one byte changed, one byte dropped */
    char body[sizeof BODY];
    memcpy(body, BODY, sizeof BODY);
    body[5] ^= 1;
    rx = f.req;
    rx.body = (const uint8_t *)body;
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_ERR_SIGNATURE_MISMATCH);
    rx = f.req;
    rx.body_len--;
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_ERR_SIGNATURE_MISMATCH);

    /* path: another model, or the id sent raw instead of encoded */
    rx = f.req;
    rx.path = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream";
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_ERR_SIGNATURE_MISMATCH);
    rx.path = "/model/" MODEL_ID "/converse-stream";
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_ERR_SIGNATURE_MISMATCH);

    /* method and query */
    rx = f.req;
    rx.method = "PUT";
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_ERR_SIGNATURE_MISMATCH);
    rx = f.req;
    rx.query = "x=1";
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_ERR_SIGNATURE_MISMATCH);

    /* a signed header's value, a duplicate of a signed header, a dropped one */
    sigv4_header *ct = find_header(&f, "Content-Type");
    ct->value = "text/plain";
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t), SIGV4_ERR_SIGNATURE_MISMATCH);
    ct->value = "application/json";
    sigv4_header extra[20];
    memcpy(extra, f.h, f.n * sizeof *f.h);
    extra[f.n] = (sigv4_header){"Accept", "text/html"};
    rx = f.req;
    rx.headers = extra;
    rx.n_headers = f.n + 1;
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_ERR_SIGNATURE_MISMATCH);
    size_t k = 0;
    for (size_t i = 0; i < f.n; i++)
        if (strcasecmp(f.h[i].name, "accept") != 0)
            extra[k++] = f.h[i];
    rx.n_headers = k;
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_ERR_SIGNATURE_MISMATCH);

    /* an unsigned header may change freely (a proxy adds Via, Content-Length) */
    memcpy(extra, f.h, f.n * sizeof *f.h);
    extra[f.n] = (sigv4_header){"Content-Length", "57"};
    extra[f.n + 1] = (sigv4_header){"Via", "1.1 veil-proxy"};
    rx = f.req;
    rx.headers = extra;
    rx.n_headers = f.n + 2;
    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &rx, t), SIGV4_OK);

    assert_int_equal(sigv4_verify(&f.cfg, &creds, 1, &f.req, t), SIGV4_OK);
    sigv4_signed_free(&f.out);
}

static void test_strerror_and_dates(void **state)
{
    (void)state;
    const int codes[] = {SIGV4_OK,
                         SIGV4_ERR_INVALID_ARG,
                         SIGV4_ERR_NOMEM,
                         SIGV4_ERR_CRYPTO,
                         SIGV4_ERR_ALREADY_SIGNED,
                         SIGV4_ERR_NO_HOST,
                         SIGV4_ERR_MISSING_AUTH,
                         SIGV4_ERR_MALFORMED_AUTH,
                         SIGV4_ERR_UNKNOWN_KEY,
                         SIGV4_ERR_BAD_SCOPE,
                         SIGV4_ERR_STALE_DATE,
                         SIGV4_ERR_TOKEN_MISMATCH,
                         SIGV4_ERR_SIGNATURE_MISMATCH};
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        assert_true(strlen(sigv4_strerror(codes[i])) > 0);
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(codes[i], codes[j]);
            assert_string_not_equal(sigv4_strerror(codes[i]), sigv4_strerror(codes[j]));
        }
    }
    assert_string_equal(sigv4_strerror(12345), "unknown sigv4 error");

    char d[SIGV4_AMZ_DATE_LEN + 1];
    assert_int_equal(sigv4_format_amz_date(T_20150830_123600, d), SIGV4_OK);
    assert_string_equal(d, "20150830T123600Z");
    assert_int_equal(sigv4_format_amz_date(0, d), SIGV4_OK);
    assert_string_equal(d, "19700101T000000Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_vectors),
        cmocka_unit_test(test_bedrock_colon_path),
        cmocka_unit_test(test_build_path_rejects_dot_segments),
        cmocka_unit_test(test_uri_encode_segment),
        cmocka_unit_test(test_canonical_uri_normalisation),
        cmocka_unit_test(test_canonical_query),
        cmocka_unit_test(test_signing_key_cached),
        cmocka_unit_test(test_bedrock_signed_shape),
        cmocka_unit_test(test_content_sha256_option),
        cmocka_unit_test(test_unsigned_headers_skipped),
        cmocka_unit_test(test_refuses_already_signed),
        cmocka_unit_test(test_sign_verify_round_trip),
        cmocka_unit_test(test_verify_failure_modes),
        cmocka_unit_test(test_verify_detects_tampering),
        cmocka_unit_test(test_strerror_and_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
