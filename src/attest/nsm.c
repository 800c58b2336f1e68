/* nsm — the backends' dispatch, the device and its messages. See nsm.h.
 * The simulator lives in nsm_sim.c. */
#include "attest/nsm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "attest/cbor.h"
#include "attest/nsm_int.h"
#include "common/secret.h"

/* The ioctl's argument: the request and the response buffer in one message. The driver
 * writes the response's real length back into response.len. Same layout as two struct
 * iovec on the 64-bit machines that run enclaves, and as linux/nsm.h's struct nsm_raw. */
struct nsm_iovec_raw {
    uint64_t addr;
    uint64_t len;
};
struct nsm_raw_msg {
    struct nsm_iovec_raw request;
    struct nsm_iovec_raw response;
};
_Static_assert(sizeof(struct nsm_raw_msg) == 32, "the NSM ioctl message is 32 bytes");
#define NSM_IOCTL_RAW _IOWR(NSM_IOCTL_MAGIC, 0, struct nsm_raw_msg)

#define REQ_ATTESTATION "Attestation"
#define REQ_GET_RANDOM "GetRandom"
#define RESP_ERROR "Error"
#define KEY_USER_DATA "user_data"
#define KEY_NONCE "nonce"
#define KEY_PUBLIC_KEY "public_key"
#define KEY_DOCUMENT "document"
#define KEY_RANDOM "random"
#define DEV_SPEC_PATH_MAX 256

/* the NSM's ErrorCode names (aws-nitro-enclaves-nsm-api's api module) */
static const char *const NSM_ERROR_CODES[] = {
    "Success",          "InvalidArgument", "InvalidIndex", "InvalidResponse", "ReadOnlyIndex",
    "InvalidOperation", "BufferTooSmall",  "InputTooLarge", "InternalError",
};

typedef enum { BACKEND_NONE, BACKEND_DEV, BACKEND_SIM } backend;

struct nsm {
    backend kind;
    int fd;
    nsm_sim *sim;
    pthread_mutex_t lock;
};

const char *nsm_strerror(nsm_err e)
{
    switch (e) {
    case NSM_OK: return "ok";
    case NSM_ERR_ARG: return "invalid NSM spec or argument";
    case NSM_ERR_NOMEM: return "out of memory";
    case NSM_ERR_NO_NSM: return "no NSM is configured (backend none)";
    case NSM_ERR_OPEN: return "the NSM device cannot be opened";
    case NSM_ERR_IOCTL: return "the NSM device refused the request";
    case NSM_ERR_RESPONSE: return "the NSM's response is malformed";
    case NSM_ERR_DEVICE: return "the NSM answered with an error";
    case NSM_ERR_SIM: return "the simulated NSM failed";
    }
    return "unknown error";
}

nsm_err nsm_fail(nsm_err e, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return e;
}

/* ---- messages ------------------------------------------------------------------------ */

static int put_key(vbuf *b, const char *k)
{
    return acbor_put_text(b, k, strlen(k));
}

int nsm_encode_attestation(const uint8_t *user_data, size_t user_data_len, const uint8_t *nonce,
                           size_t nonce_len, const uint8_t *public_key, size_t public_key_len,
                           vbuf *out)
{
    int r = 0;
    r |= acbor_put_head(out, ACBOR_MAP, 1);
    r |= put_key(out, REQ_ATTESTATION);
    r |= acbor_put_head(out, ACBOR_MAP, 3);
    r |= put_key(out, KEY_USER_DATA);
    r |= acbor_put_bytes_or_null(out, user_data, user_data_len);
    r |= put_key(out, KEY_NONCE);
    r |= acbor_put_bytes_or_null(out, nonce, nonce_len);
    r |= put_key(out, KEY_PUBLIC_KEY);
    r |= acbor_put_bytes_or_null(out, public_key, public_key_len);
    return r ? -1 : 0;
}

int nsm_encode_get_random(vbuf *out)
{
    return put_key(out, REQ_GET_RANDOM);
}

static bool read_text(cursor *c, const uint8_t **p, size_t *n)
{
    acbor_head h;
    return acbor_read_head(c, &h) && h.major == ACBOR_TEXT && acbor_read_span(c, &h, p, n);
}

static bool text_is(const uint8_t *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* {variant: {field: bytes}} or {"Error": "Code"}; *out spans the bytes */
static nsm_err decode_response(const uint8_t *resp, size_t len, const char *variant,
                               const char *field, attest_span *out, char *err, size_t errlen)
{
    cursor c = cursor_make(resp, len);
    acbor_head h;
    const uint8_t *k;
    size_t kn;
    if (!acbor_read_head(&c, &h) || h.major != ACBOR_MAP || h.arg != 1 || !read_text(&c, &k, &kn))
        return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "the response is not a one-entry CBOR map");
    if (text_is(k, kn, RESP_ERROR)) {
        const uint8_t *code;
        size_t cn;
        if (!read_text(&c, &code, &cn) || c.left)
            return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "an Error response without a code");
        for (size_t i = 0; i < sizeof NSM_ERROR_CODES / sizeof NSM_ERROR_CODES[0]; i++)
            if (text_is(code, cn, NSM_ERROR_CODES[i]))
                return nsm_fail(NSM_ERR_DEVICE, err, errlen, "the NSM answered %s", NSM_ERROR_CODES[i]);
        return nsm_fail(NSM_ERR_DEVICE, err, errlen, "the NSM answered an unknown error code");
    }
    if (!text_is(k, kn, variant))
        return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "the response is not %s", variant);
    if (!acbor_read_head(&c, &h) || h.major != ACBOR_MAP || h.arg != 1 || !read_text(&c, &k, &kn) ||
        !text_is(k, kn, field))
        return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "%s is not {\"%s\": bytes}", variant, field);
    if (!acbor_read_head(&c, &h) || h.major != ACBOR_BYTES || !acbor_read_span(&c, &h, &out->p, &out->n))
        return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "%s.%s is not a byte string", variant, field);
    if (c.left)
        return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "bytes after the response");
    if (out->n == 0)
        return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "%s.%s is empty", variant, field);
    return NSM_OK;
}

nsm_err nsm_decode_attestation(const uint8_t *resp, size_t len, attest_span *doc, char *err,
                               size_t errlen)
{
    nsm_err e = decode_response(resp, len, REQ_ATTESTATION, KEY_DOCUMENT, doc, err, errlen);
    if (e == NSM_OK && doc->n > ATTEST_MAX_DOC_LEN)
        return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "the document is over %d bytes",
                        ATTEST_MAX_DOC_LEN);
    return e;
}

nsm_err nsm_decode_get_random(const uint8_t *resp, size_t len, attest_span *random, char *err,
                              size_t errlen)
{
    return decode_response(resp, len, REQ_GET_RANDOM, KEY_RANDOM, random, err, errlen);
}

/* ---- the device ------------------------------------------------------------------------ */

/* One request through the ioctl; *resp_len is what the driver wrote. */
static nsm_err dev_call(int fd, const vbuf *req, uint8_t *resp, size_t *resp_len, char *err,
                        size_t errlen)
{
    if (req->len > NSM_REQUEST_MAX)
        return nsm_fail(NSM_ERR_ARG, err, errlen, "the request is over %d bytes", NSM_REQUEST_MAX);
    struct nsm_raw_msg msg = {
        .request = {(uint64_t)(uintptr_t)req->data, req->len},
        .response = {(uint64_t)(uintptr_t)resp, NSM_RESPONSE_MAX},
    };
    if (ioctl(fd, NSM_IOCTL_RAW, &msg) != 0)
        return nsm_fail(NSM_ERR_IOCTL, err, errlen, "NSM ioctl: %s%s", strerror(errno),
                        errno == ENOTTY ? " (not an NSM device)" : "");
    if (msg.response.len > NSM_RESPONSE_MAX)
        return nsm_fail(NSM_ERR_RESPONSE, err, errlen, "the driver reports an oversized response");
    *resp_len = (size_t)msg.response.len;
    return NSM_OK;
}

static nsm_err dev_attest(nsm *n, const vbuf *req, uint8_t **doc, size_t *doc_len, char *err,
                          size_t errlen)
{
    uint8_t *resp = malloc(NSM_RESPONSE_MAX);
    size_t rlen = 0;
    attest_span d;
    if (!resp)
        return NSM_ERR_NOMEM;
    nsm_err e = dev_call(n->fd, req, resp, &rlen, err, errlen);
    if (e == NSM_OK)
        e = nsm_decode_attestation(resp, rlen, &d, err, errlen);
    if (e == NSM_OK) {
        if ((*doc = malloc(d.n))) {
            memcpy(*doc, d.p, d.n);
            *doc_len = d.n;
        } else {
            e = NSM_ERR_NOMEM;
        }
    }
    free(resp);
    return e;
}

static nsm_err dev_random(nsm *n, uint8_t *out, size_t len, char *err, size_t errlen)
{
    vbuf req = VBUF_INIT;
    uint8_t *resp = malloc(NSM_RESPONSE_MAX);
    nsm_err e = NSM_OK;
    if (!resp || nsm_encode_get_random(&req) != 0) {
        e = NSM_ERR_NOMEM;
        goto out;
    }
    /* each answer carries at least one byte (decode_response), so this ends */
    for (size_t got = 0; got < len;) {
        size_t rlen = 0;
        attest_span r;
        if ((e = dev_call(n->fd, &req, resp, &rlen, err, errlen)) != NSM_OK ||
            (e = nsm_decode_get_random(resp, rlen, &r, err, errlen)) != NSM_OK)
            break;
        size_t take = r.n < len - got ? r.n : len - got;
        memcpy(out + got, r.p, take);
        got += take;
    }
out:
    if (resp)
        secure_wipe(resp, NSM_RESPONSE_MAX);
    free(resp);
    vbuf_free(&req);
    return e;
}

/* ---- the handle ------------------------------------------------------------------------- */

static nsm_err open_dev(nsm *n, const char *path, char *err, size_t errlen)
{
    n->fd = open(path, O_RDWR | O_CLOEXEC);
    if (n->fd < 0)
        return nsm_fail(NSM_ERR_OPEN, err, errlen, "cannot open %s: %s%s", path, strerror(errno),
                        errno == ENOENT ? " (not inside a Nitro Enclave?)" : "");
    return NSM_OK;
}

nsm_err nsm_open(const char *spec, nsm **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!spec)
        return nsm_fail(NSM_ERR_ARG, err, errlen, "no NSM spec");
    nsm *n = calloc(1, sizeof *n);
    if (!n)
        return NSM_ERR_NOMEM;
    n->fd = -1;
    nsm_err e = NSM_OK;
    if (strcmp(spec, "none") == 0) {
        n->kind = BACKEND_NONE;
    } else if (strcmp(spec, "dev") == 0) {
        n->kind = BACKEND_DEV;
        e = open_dev(n, NSM_DEV_PATH, err, errlen);
    } else if (strncmp(spec, "dev:", 4) == 0 && spec[4] && strlen(spec + 4) < DEV_SPEC_PATH_MAX) {
        n->kind = BACKEND_DEV;
        e = open_dev(n, spec + 4, err, errlen);
    } else if (strncmp(spec, "sim:", 4) == 0 && spec[4]) {
        n->kind = BACKEND_SIM;
        e = nsm_sim_open(spec + 4, &n->sim, err, errlen);
    } else {
        e = nsm_fail(NSM_ERR_ARG, err, errlen, "the NSM is dev, dev:PATH, sim:DIR or none");
    }
    if (e == NSM_OK && pthread_mutex_init(&n->lock, NULL) != 0)
        e = NSM_ERR_NOMEM;
    if (e != NSM_OK) {
        if (n->fd >= 0)
            close(n->fd);
        nsm_sim_close(n->sim);
        free(n);
        return e;
    }
    *out = n;
    return NSM_OK;
}

void nsm_close(nsm *n)
{
    if (!n)
        return;
    if (n->fd >= 0)
        close(n->fd);
    nsm_sim_close(n->sim);
    pthread_mutex_destroy(&n->lock);
    free(n);
}

const char *nsm_backend_name(const nsm *n)
{
    switch (n->kind) {
    case BACKEND_DEV: return "nitro";
    case BACKEND_SIM: return "simulated";
    default: return "none";
    }
}

bool nsm_is_simulated(const nsm *n)
{
    return n->kind == BACKEND_SIM;
}

static nsm_err check_fields(const uint8_t *user_data, size_t user_data_len, const uint8_t *nonce,
                            size_t nonce_len, const uint8_t *public_key, size_t public_key_len,
                            char *err, size_t errlen)
{
    if ((user_data && user_data_len > ATTEST_MAX_FIELD_LEN) ||
        (nonce && nonce_len > ATTEST_MAX_FIELD_LEN))
        return nsm_fail(NSM_ERR_ARG, err, errlen, "user_data and nonce are 0..%d bytes",
                        ATTEST_MAX_FIELD_LEN);
    if (public_key && (public_key_len < 1 || public_key_len > ATTEST_MAX_FIELD_LEN))
        return nsm_fail(NSM_ERR_ARG, err, errlen, "public_key is 1..%d bytes", ATTEST_MAX_FIELD_LEN);
    return NSM_OK;
}

nsm_err nsm_attest(nsm *n, const uint8_t *user_data, size_t user_data_len, const uint8_t *nonce,
                   size_t nonce_len, const uint8_t *public_key, size_t public_key_len,
                   uint8_t **doc, size_t *doc_len, char *err, size_t errlen)
{
    *doc = NULL;
    *doc_len = 0;
    if (err && errlen)
        err[0] = '\0';
    nsm_err e = check_fields(user_data, user_data_len, nonce, nonce_len, public_key,
                             public_key_len, err, errlen);
    if (e != NSM_OK)
        return e;
    if (n->kind == BACKEND_NONE)
        return nsm_fail(NSM_ERR_NO_NSM, err, errlen, "attestation is unavailable: no NSM (none)");
    vbuf req = VBUF_INIT;
    pthread_mutex_lock(&n->lock);
    if (n->kind == BACKEND_SIM) {
        e = nsm_sim_attest(n->sim, user_data, user_data_len, nonce, nonce_len, public_key,
                           public_key_len, doc, doc_len, err, errlen);
    } else if (nsm_encode_attestation(user_data, user_data_len, nonce, nonce_len, public_key,
                                      public_key_len, &req) != 0) {
        e = NSM_ERR_NOMEM;
    } else {
        e = dev_attest(n, &req, doc, doc_len, err, errlen);
    }
    pthread_mutex_unlock(&n->lock);
    vbuf_free(&req);
    return e;
}

nsm_err nsm_attest_transport(nsm *n, const uint8_t public_key[ATTEST_PUBLIC_KEY_LEN],
                             const uint8_t *nonce, size_t nonce_len, uint8_t **doc,
                             size_t *doc_len, char *err, size_t errlen)
{
    if (!public_key || !nonce || nonce_len < ATTEST_NONCE_MIN || nonce_len > ATTEST_NONCE_MAX) {
        *doc = NULL;
        *doc_len = 0;
        return nsm_fail(NSM_ERR_ARG, err, errlen, "the nonce is %d..%d bytes", ATTEST_NONCE_MIN,
                        ATTEST_NONCE_MAX);
    }
    return nsm_attest(n, (const uint8_t *)ATTEST_USER_DATA, strlen(ATTEST_USER_DATA), nonce,
                      nonce_len, public_key, ATTEST_PUBLIC_KEY_LEN, doc, doc_len, err, errlen);
}

nsm_err nsm_get_random(nsm *n, uint8_t *out, size_t len, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (len > NSM_RANDOM_MAX)
        return nsm_fail(NSM_ERR_ARG, err, errlen, "at most %d random bytes per call", NSM_RANDOM_MAX);
    switch (n->kind) {
    case BACKEND_NONE:
        return nsm_fail(NSM_ERR_NO_NSM, err, errlen, "no NSM randomness: no NSM (none)");
    case BACKEND_SIM:
        return RAND_bytes(out, (int)len) == 1 ? NSM_OK
                                              : nsm_fail(NSM_ERR_SIM, err, errlen, "RAND_bytes failed");
    default: {
        pthread_mutex_lock(&n->lock);
        nsm_err e = dev_random(n, out, len, err, errlen);
        pthread_mutex_unlock(&n->lock);
        return e;
    }
    }
}

nsm_err nsm_seed_rand(nsm *n, size_t len, char *err, size_t errlen)
{
    uint8_t buf[NSM_RANDOM_MAX];
    if (len > sizeof buf)
        return nsm_fail(NSM_ERR_ARG, err, errlen, "at most %d random bytes per call", NSM_RANDOM_MAX);
    nsm_err e = nsm_get_random(n, buf, len, err, errlen);
    if (e == NSM_OK)
        RAND_add(buf, (int)len, (double)len);
    secure_wipe(buf, sizeof buf);
    return e;
}
