/* libFuzzer target for aws/sigv4: the verifier's Authorization / X-Amz-Date parsing
 * (untrusted input in the Bedrock simulator) and the canonical query and URI builders.
 *
 * The first input byte picks the mode (style.md, aws-c-http's fuzz_*_correct/_random):
 *   even: the rest, split at '\n', is the Authorization value, the X-Amz-Date value,
 *         the path and the query of a request that is then verified (random input);
 *   odd:  a correctly signed request whose Authorization value is mutated by the
 *         remaining bytes, 3 at a time: op, position, value.
 * Besides "no crash", it checks contracts and traps when one breaks: verify returns
 * one of its codes, the unmutated request verifies, and canonicalising the canonical
 * query (or a normalised, not re-encoded, path) changes nothing.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aws/sigv4.h"
#include "common/buf.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define T0 ((time_t)1440938160) /* 20150830T123600Z */
#define MAX_AUTH 1024

static const sigv4_credentials KNOWN = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                        "session-token"};

static bool is_verify_code(int rc)
{
    return rc <= SIGV4_OK && rc >= SIGV4_ERR_SIGNATURE_MISMATCH;
}

static char *dup_n(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    CHECK(s);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void check_idempotent(const char *query, const char *path)
{
    vbuf a = VBUF_INIT, b = VBUF_INIT;
    if (sigv4_canonical_query(query, &a) == SIGV4_OK) {
        CHECK(sigv4_canonical_query((const char *)a.data, &b) == SIGV4_OK);
        CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    }
    vbuf_reset(&a);
    vbuf_reset(&b);
    sigv4_config cfg = {"us-east-1", "bedrock", false, true, false};
    if (sigv4_canonical_uri(&cfg, path, &a) == SIGV4_OK) {
        CHECK(a.len && a.data[0] == '/');
        CHECK(sigv4_canonical_uri(&cfg, (const char *)a.data, &b) == SIGV4_OK);
        CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    }
    vbuf_free(&a);
    vbuf_free(&b);
}

static void run_random(const uint8_t *d, size_t n)
{
    char *field[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4; i++) {
        const uint8_t *nl = i < 3 ? memchr(d, '\n', n) : NULL;
        size_t len = nl ? (size_t)(nl - d) : n;
        field[i] = dup_n(d, len);
        d += nl ? len + 1 : len;
        n -= nl ? len + 1 : len;
    }
    sigv4_header h[] = {{"Host", "bedrock-runtime.us-east-1.amazonaws.com"},
                        {"Authorization", field[0]},
                        {"X-Amz-Date", field[1]},
                        {"X-Amz-Security-Token", "session-token"}};
    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    sigv4_request req = {"POST", field[2], field[3], h, 4, d, n};
    CHECK(is_verify_code(sigv4_verify(&cfg, &KNOWN, 1, &req, T0)));
    check_idempotent(field[3], field[2]);
    for (int i = 0; i < 4; i++)
        free(field[i]);
}

static void run_mutated(const uint8_t *d, size_t n)
{
    sigv4_config cfg = sigv4_config_bedrock("us-east-1");
    sigv4_signer *s = sigv4_signer_new(&cfg);
    CHECK(s);
    sigv4_header h[8] = {{"Host", "bedrock-runtime.us-east-1.amazonaws.com"},
                         {"Content-Type", "application/json"}};
    static const uint8_t body[] = "{\"messages\":[]}";
    sigv4_request req = {"POST", "/model/m%3A0/converse-stream", NULL, h, 2, body,
                         sizeof body - 1};
    sigv4_signed out;
    CHECK(sigv4_sign_request(s, &KNOWN, &req, T0, &out) == SIGV4_OK);
    for (size_t i = 0; i < out.n_headers; i++)
        h[2 + i] = (sigv4_header){out.headers[i].name, out.headers[i].value};
    req.n_headers = 2 + out.n_headers;
    CHECK(sigv4_verify(&cfg, &KNOWN, 1, &req, T0) == SIGV4_OK);

    char auth[MAX_AUTH + 1];
    const char *orig = sigv4_signed_get(&out, "Authorization");
    size_t len = strlen(orig);
    CHECK(len <= MAX_AUTH);
    memcpy(auth, orig, len);
    for (size_t i = 0; i + 3 <= n; i += 3) {
        size_t pos = len ? d[i + 1] % (len + 1) : 0;
        char v = (char)(d[i + 2] ? d[i + 2] : 'x'); /* keep it a C string */
        switch (d[i] % 3) {
        case 0: /* overwrite */
            if (pos < len)
                auth[pos] = v;
            break;
        case 1: /* insert */
            if (len < MAX_AUTH) {
                memmove(auth + pos + 1, auth + pos, len - pos);
                auth[pos] = v;
                len++;
            }
            break;
        default: /* delete */
            if (pos < len) {
                memmove(auth + pos, auth + pos + 1, len - pos - 1);
                len--;
            }
        }
    }
    auth[len] = '\0';
    for (size_t i = 0; i < req.n_headers; i++)
        if (strcmp(h[i].name, "Authorization") == 0)
            h[i].value = auth;
    CHECK(is_verify_code(sigv4_verify(&cfg, &KNOWN, 1, &req, T0)));
    sigv4_signed_free(&out);
    sigv4_signer_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t *copy = malloc(size); /* exactly sized, so ASan sees any over-read */
    CHECK(copy);
    memcpy(copy, data, size);
    if (copy[0] & 1)
        run_mutated(copy + 1, size - 1);
    else
        run_random(copy + 1, size - 1);
    free(copy);
    return 0;
}
