/* libFuzzer target for the enclave's request path: JSON object framing over split
 * input, then what veil-enclave's server does with the object it found (src/enclave/
 * server.c: jansson, and the "Invalid JSON" reply when that fails), and the
 * EncryptedPayload parser.
 *
 * The first byte picks a split point (framing must find the same object whether
 * the bytes arrive at once or in two pieces); the object found is loaded as the
 * server loads it and handed to ep_parse. Checks: no crash, framing agrees with
 * itself, every refusal has its one-line JSON reply (the parent waits for one per
 * request), a parsed EP has the exact field lengths and re-serialises to JSON that
 * parses back identically.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/ep.h"
#include "enclave/enclave.h"
#include "enclave/framing.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A refusal's reply is one JSON object saying "error", whatever the detail was. */
static void check_reply(int (*fn)(const char *, vbuf *), const char *detail)
{
    vbuf out = VBUF_INIT;
    CHECK(fn(detail, &out) == 0 && out.len > 0);
    json_t *r = json_loadb((const char *)out.data, out.len, 0, NULL);
    const char *status = json_string_value(json_object_get(r, "status"));
    CHECK(status && strcmp(status, "error") == 0);
    json_decref(r);
    vbuf_free(&out);
}

/* What the server does with a framed object: load it, or answer why not. */
static void check_load(const char *obj, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(obj, len, 0, &jerr);
    if (!req)
        check_reply(enclave_invalid_json_reply, jerr.text);
    json_decref(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = data[0] % (size);
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    char *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    if (cut > len)
        cut = len;

    jf_scanner a, b;
    jf_reset(&a);
    jf_reset(&b);
    size_t s1 = 0, e1 = 0, s2 = 0, e2 = 0;
    jf_status r1 = jf_scan(&a, copy, len, &s1, &e1);
    jf_status r2 = jf_scan(&b, copy, cut, &s2, &e2);
    if (r2 == JF_NEED_MORE)
        r2 = jf_scan(&b, copy, len, &s2, &e2);
    CHECK(r1 == r2);
    if (r1 == JF_COMPLETE) {
        CHECK(s1 == s2 && e1 == e2 && s1 < e1 && e1 <= len);
        CHECK(copy[s1] == '{');
        check_load(copy + s1, e1 - s1);
        ep e;
        if (ep_parse(copy + s1, e1 - s1, &e, NULL) == EP_OK) {
            vbuf out = VBUF_INIT;
            CHECK(ep_write_json(&e, &out) == 0);
            ep back;
            CHECK(ep_parse((const char *)out.data, out.len, &back, NULL) == EP_OK);
            CHECK(back.ct_len == e.ct_len);
            CHECK(memcmp(back.epk, e.epk, sizeof e.epk) == 0 && memcmp(back.iv, e.iv, sizeof e.iv) == 0 &&
                  memcmp(back.tag, e.tag, sizeof e.tag) == 0 && memcmp(back.salt, e.salt, sizeof e.salt) == 0);
            CHECK(e.ct_len == 0 || memcmp(back.ct, e.ct, e.ct_len) == 0);
            ep_clear(&back);
            vbuf_free(&out);
            ep_clear(&e);
        }
    }
    if (r1 == JF_NOT_OBJECT || r1 == JF_TOO_DEEP)
        check_reply(enclave_invalid_json_reply, r1 == JF_TOO_DEEP ? "nesting too deep" : "expected a JSON object");
    free(copy);
    return 0;
}
