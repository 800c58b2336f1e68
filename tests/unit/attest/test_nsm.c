/* attest/nsm: the device's CBOR messages (checked against libcbor, an independent
 * encoder and decoder), a missing or wrong device, the "none" backend, and the
 * simulated NSM: its documents pass with its root and fail with the pinned AWS root,
 * say they are simulated, carry the documented PCRs, reuse and renew its chain, and
 * share a directory between processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cbor.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "attest/nsm.h"
#include "attest/verify.h"

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/veil-nsm-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void sub(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static size_t file_bytes(const char *path, uint8_t *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(out, 1, cap, f);
    fclose(f);
    return n;
}

/* ---- the device's messages ---------------------------------------------------------------- */

/* One field of the request map, as libcbor decodes it. */
static cbor_item_t *field(cbor_item_t *map, const char *name)
{
    struct cbor_pair *pairs = cbor_map_handle(map);
    for (size_t i = 0; i < cbor_map_size(map); i++)
        if (cbor_isa_string(pairs[i].key) && cbor_string_length(pairs[i].key) == strlen(name) &&
            memcmp(cbor_string_handle(pairs[i].key), name, strlen(name)) == 0)
            return pairs[i].value;
    return NULL;
}

/* The request has the shape the NSM's serde decoder expects: {"Attestation": {user_data,
 * nonce, public_key}}, bytes or null; and the exact preferred-form bytes. */
static void test_attestation_request(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    const uint8_t nonce[3] = {1, 2, 3}, pk[32] = {0xaa};
    assert_int_equal(nsm_encode_attestation(NULL, 0, nonce, 3, pk, 32, &b), 0);
    struct cbor_load_result res;
    cbor_item_t *root = cbor_load(b.data, b.len, &res);
    assert_non_null(root);
    assert_int_equal(res.read, b.len);
    assert_true(cbor_isa_map(root) && cbor_map_size(root) == 1);
    cbor_item_t *a = field(root, "Attestation");
    assert_non_null(a);
    assert_true(cbor_isa_map(a) && cbor_map_size(a) == 3);
    assert_true(cbor_is_null(field(a, "user_data")));
    cbor_item_t *n = field(a, "nonce"), *k = field(a, "public_key");
    assert_true(cbor_isa_bytestring(n) && cbor_bytestring_length(n) == 3);
    assert_memory_equal(cbor_bytestring_handle(n), nonce, 3);
    assert_true(cbor_isa_bytestring(k) && cbor_bytestring_length(k) == 32);
    assert_memory_equal(cbor_bytestring_handle(k), pk, 32);
    cbor_decref(&root);

    /* {"Attestation": {"user_data": null, "nonce": h'010203', "public_key": null}} */
    static const uint8_t want[] = {
        0xa1, 0x6b, 'A', 't', 't', 'e', 's', 't', 'a', 't', 'i', 'o', 'n', 0xa3, 0x69, 'u', 's',
        'e', 'r', '_', 'd', 'a', 't', 'a', 0xf6, 0x65, 'n', 'o', 'n', 'c', 'e', 0x43, 1, 2, 3,
        0x6a, 'p', 'u', 'b', 'l', 'i', 'c', '_', 'k', 'e', 'y', 0xf6};
    vbuf_reset(&b);
    assert_int_equal(nsm_encode_attestation(NULL, 0, nonce, 3, NULL, 0, &b), 0);
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);

    /* the largest request veil makes fits the driver's 4 KiB */
    static uint8_t big[ATTEST_MAX_FIELD_LEN];
    vbuf_reset(&b);
    assert_int_equal(nsm_encode_attestation(big, sizeof big, big, sizeof big, big, sizeof big, &b), 0);
    assert_true(b.len <= NSM_REQUEST_MAX);
    vbuf_free(&b);
}

/* A unit request is a bare text string, as serde encodes a unit enum variant. */
static void test_get_random_request(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    assert_int_equal(nsm_encode_get_random(&b), 0);
    static const uint8_t want[] = {0x69, 'G', 'e', 't', 'R', 'a', 'n', 'd', 'o', 'm'};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    vbuf_free(&b);
}

/* {outer: {inner: value}} serialised by libcbor, as the NSM would send it */
static size_t lc_response(const char *outer, const char *inner, cbor_item_t *value, uint8_t **out)
{
    cbor_item_t *root = cbor_new_definite_map(1);
    cbor_item_t *v = value;
    if (inner) {
        v = cbor_new_definite_map(1);
        assert_true(cbor_map_add(v, (struct cbor_pair){cbor_move(cbor_build_string(inner)),
                                                       cbor_move(value)}));
    }
    assert_true(cbor_map_add(root, (struct cbor_pair){cbor_move(cbor_build_string(outer)),
                                                      cbor_move(v)}));
    size_t cap = 0;
    size_t n = cbor_serialize_alloc(root, out, &cap);
    assert_true(n > 0);
    cbor_decref(&root);
    return n;
}

static void test_attestation_response(void **state)
{
    (void)state;
    uint8_t doc[300];
    for (size_t i = 0; i < sizeof doc; i++)
        doc[i] = (uint8_t)i;
    uint8_t *r;
    attest_span s;
    char err[256];
    size_t n = lc_response("Attestation", "document", cbor_build_bytestring(doc, sizeof doc), &r);
    assert_int_equal(nsm_decode_attestation(r, n, &s, err, sizeof err), NSM_OK);
    assert_int_equal(s.n, sizeof doc);
    assert_memory_equal(s.p, doc, sizeof doc);
    /* a trailing byte, a truncation */
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, r, n);
    longer[n] = 0;
    assert_int_equal(nsm_decode_attestation(longer, n + 1, &s, err, sizeof err), NSM_ERR_RESPONSE);
    assert_int_equal(nsm_decode_attestation(r, n - 1, &s, err, sizeof err), NSM_ERR_RESPONSE);
    free(longer);
    free(r);

    /* {"Error": "InvalidArgument"}: the NSM said no, with its code */
    n = lc_response("Error", NULL, cbor_build_string("InvalidArgument"), &r);
    assert_int_equal(nsm_decode_attestation(r, n, &s, err, sizeof err), NSM_ERR_DEVICE);
    assert_string_equal(err, "the NSM answered InvalidArgument");
    free(r);
    /* an unknown code is not echoed */
    n = lc_response("Error", NULL, cbor_build_string("Weird\ncode"), &r);
    assert_int_equal(nsm_decode_attestation(r, n, &s, err, sizeof err), NSM_ERR_DEVICE);
    assert_string_equal(err, "the NSM answered an unknown error code");
    free(r);

    struct {
        const char *outer, *inner;
        cbor_item_t *value;
    } bad[] = {
        {"GetRandom", "random", cbor_build_bytestring(doc, 8)},   /* another answer */
        {"Attestation", "doc", cbor_build_bytestring(doc, 8)},    /* another field */
        {"Attestation", "document", cbor_build_string("text")},   /* not bytes */
        {"Attestation", "document", cbor_build_bytestring(doc, 0)}, /* empty */
        {"Attestation", "document", cbor_new_null()},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = lc_response(bad[i].outer, bad[i].inner, bad[i].value, &r);
        assert_int_equal(nsm_decode_attestation(r, n, &s, err, sizeof err), NSM_ERR_RESPONSE);
        free(r);
    }
    /* a document over the verifier's bound */
    uint8_t *huge = calloc(1, ATTEST_MAX_DOC_LEN + 1);
    n = lc_response("Attestation", "document", cbor_build_bytestring(huge, ATTEST_MAX_DOC_LEN + 1), &r);
    assert_int_equal(nsm_decode_attestation(r, n, &s, err, sizeof err), NSM_ERR_RESPONSE);
    free(r);
    free(huge);
    /* not a map, and a two-entry map */
    assert_int_equal(nsm_decode_attestation((const uint8_t *)"\x69GetRandom", 10, &s, err, sizeof err),
                     NSM_ERR_RESPONSE);
    const uint8_t two[] = {0xa2, 0x65, 'E', 'r', 'r', 'o', 'r', 0x60, 0x61, 'x', 0x60};
    assert_int_equal(nsm_decode_attestation(two, sizeof two, &s, err, sizeof err), NSM_ERR_RESPONSE);
}

static void test_get_random_response(void **state)
{
    (void)state;
    uint8_t rnd[256], *r;
    memset(rnd, 0x5c, sizeof rnd);
    attest_span s;
    char err[256];
    size_t n = lc_response("GetRandom", "random", cbor_build_bytestring(rnd, sizeof rnd), &r);
    assert_int_equal(nsm_decode_get_random(r, n, &s, err, sizeof err), NSM_OK);
    assert_int_equal(s.n, sizeof rnd);
    assert_memory_equal(s.p, rnd, sizeof rnd);
    /* the attestation decoder refuses it */
    assert_int_equal(nsm_decode_attestation(r, n, &s, err, sizeof err), NSM_ERR_RESPONSE);
    free(r);
    /* an empty answer would make a random loop spin: refused */
    n = lc_response("GetRandom", "random", cbor_build_bytestring(rnd, 0), &r);
    assert_int_equal(nsm_decode_get_random(r, n, &s, err, sizeof err), NSM_ERR_RESPONSE);
    free(r);
    n = lc_response("Error", NULL, cbor_build_string("InternalError"), &r);
    assert_int_equal(nsm_decode_get_random(r, n, &s, err, sizeof err), NSM_ERR_DEVICE);
    free(r);
}

/* ---- backends without an NSM ---------------------------------------------------------------- */

static void test_missing_device(void **state)
{
    (void)state;
    nsm *n = (nsm *)1;
    char err[256];
    assert_int_equal(nsm_open("dev:/nonexistent/nsm", &n, err, sizeof err), NSM_ERR_OPEN);
    assert_null(n);
    assert_string_equal(err, "cannot open /nonexistent/nsm: No such file or directory (not inside a "
                             "Nitro Enclave?)");
    if (access(NSM_DEV_PATH, F_OK) != 0) { /* this machine is not an enclave */
        assert_int_equal(nsm_open("dev", &n, err, sizeof err), NSM_ERR_OPEN);
        assert_non_null(strstr(err, NSM_DEV_PATH));
    }
}

/* A file that is not the NSM device: the ioctl is refused, as a clear error. */
static void test_not_a_device(void **state)
{
    (void)state;
    char path[128], spec[140], err[256];
    sub(path, sizeof path, "not-nsm");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(spec, sizeof spec, "dev:%s", path);
    nsm *n;
    assert_int_equal(nsm_open(spec, &n, err, sizeof err), NSM_OK);
    assert_string_equal(nsm_backend_name(n), "nitro");
    assert_false(nsm_is_simulated(n));
    uint8_t *doc = (uint8_t *)1, nonce[8] = {0}, pk[32] = {0};
    size_t len = 1;
    assert_int_equal(nsm_attest_transport(n, pk, nonce, sizeof nonce, &doc, &len, err, sizeof err),
                     NSM_ERR_IOCTL);
    assert_null(doc);
    assert_int_equal(len, 0);
    assert_non_null(strstr(err, "not an NSM device"));
    uint8_t rnd[16];
    assert_int_equal(nsm_get_random(n, rnd, sizeof rnd, err, sizeof err), NSM_ERR_IOCTL);
    assert_int_equal(nsm_seed_rand(n, 32, err, sizeof err), NSM_ERR_IOCTL);
    nsm_close(n);
    unlink(path);
}

static void test_none_backend(void **state)
{
    (void)state;
    nsm *n;
    char err[256];
    assert_int_equal(nsm_open("none", &n, err, sizeof err), NSM_OK);
    assert_string_equal(nsm_backend_name(n), "none");
    assert_false(nsm_is_simulated(n));
    uint8_t *doc, nonce[8] = {0}, pk[32] = {0}, rnd[8];
    size_t len;
    assert_int_equal(nsm_attest_transport(n, pk, nonce, sizeof nonce, &doc, &len, err, sizeof err),
                     NSM_ERR_NO_NSM);
    assert_string_equal(err, "attestation is unavailable: no NSM (none)");
    assert_int_equal(nsm_get_random(n, rnd, sizeof rnd, err, sizeof err), NSM_ERR_NO_NSM);
    nsm_close(n);
    nsm_close(NULL);
}

static void test_bad_specs(void **state)
{
    (void)state;
    const char *bad[] = {"", "sim:", "dev:", "nitro", "SIM:/tmp/x", "none ", "simulated"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nsm *n = (nsm *)1;
        char err[256];
        assert_int_equal(nsm_open(bad[i], &n, err, sizeof err), NSM_ERR_ARG);
        assert_null(n);
    }
    nsm *n;
    assert_int_equal(nsm_open(NULL, &n, NULL, 0), NSM_ERR_ARG);
}

/* ---- the simulator --------------------------------------------------------------------------- */

static nsm *open_sim(const char *dir)
{
    char spec[256], err[256];
    snprintf(spec, sizeof spec, "sim:%s", dir);
    nsm *n = NULL;
    nsm_err e = nsm_open(spec, &n, err, sizeof err);
    if (e != NSM_OK)
        fail_msg("nsm_open(%s): %s", spec, err);
    return n;
}

static void sim_root(const char *dir, uint8_t **der, size_t *len)
{
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/root.pem", dir);
    assert_int_equal(attest_root_load(path, der, len, err, sizeof err), ATTEST_OK);
}

/* The simulator's documents verify with its root (DIR/root.pem) and bind exactly what
 * the enclave asked for; with the pinned AWS root they fail: a client that does not
 * opt in to the simulator never accepts it. */
static void test_sim_documents(void **state)
{
    (void)state;
    char dir[128], err[256];
    sub(dir, sizeof dir, "sim-docs");
    nsm *n = open_sim(dir);
    assert_string_equal(nsm_backend_name(n), "simulated");
    assert_true(nsm_is_simulated(n));
    uint8_t pk[ATTEST_PUBLIC_KEY_LEN], nonce[20];
    memset(pk, 0x11, sizeof pk);
    memset(nonce, 0x22, sizeof nonce);
    uint8_t *doc;
    size_t len;
    assert_int_equal(nsm_attest_transport(n, pk, nonce, sizeof nonce, &doc, &len, err, sizeof err), NSM_OK);
    assert_true(len > 0 && len <= ATTEST_MAX_DOC_LEN);

    uint8_t *root;
    size_t root_len;
    sim_root(dir, &root, &root_len);
    attest_options o = {
        .root_der = root,
        .root_der_len = root_len,
        .nonce = nonce,
        .nonce_len = sizeof nonce,
        .public_key = pk,
        .public_key_len = sizeof pk,
        .user_data = (const uint8_t *)ATTEST_USER_DATA,
        .user_data_len = strlen(ATTEST_USER_DATA),
    };
    attest_doc *d = calloc(1, sizeof *d);
    assert_non_null(d);
    attest_err e = attest_verify(doc, len, &o, d, err, sizeof err);
    if (e != ATTEST_OK)
        fail_msg("%s: %s", attest_check_name(e), err);

    /* it says it is simulated */
    char host[256] = "", want[300];
    gethostname(host, sizeof host);
    snprintf(want, sizeof want, "sim-%s" ATTEST_SIM_MODULE_ID_SUFFIX, host);
    if (strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == strlen(host))
        assert_string_equal(d->module_id, want);
    assert_int_equal(strncmp(d->module_id, "sim-", 4), 0);
    size_t ml = strlen(d->module_id), sl = strlen(ATTEST_SIM_MODULE_ID_SUFFIX);
    assert_string_equal(d->module_id + ml - sl, ATTEST_SIM_MODULE_ID_SUFFIX);
    json_t *j = attest_doc_to_json(d);
    assert_true(json_is_true(json_object_get(j, "simulated")));
    assert_string_equal(json_string_value(json_object_get(j, "user_data_text")), ATTEST_USER_DATA);
    json_decref(j);

    /* shaped like a real NSM's: 16 PCRs of 48 bytes, root -> intermediate -> 3-hour leaf */
    assert_int_equal(d->pcr_present, 0xffff);
    uint8_t pcrs[3][48];
    assert_int_equal(nsm_sim_pcrs_of_file("/proc/self/exe", pcrs, err, sizeof err), 0);
    for (unsigned i = 0; i < NSM_SIM_PCRS; i++) {
        assert_int_equal(d->pcr_len[i], 48);
        if (i < 3) {
            assert_memory_equal(d->pcr[i], pcrs[i], 48);
        } else {
            static const uint8_t zero[48];
            assert_memory_equal(d->pcr[i], zero, 48);
        }
    }
    assert_int_equal(d->n_cabundle, 2);
    assert_int_equal(d->leaf_not_after - d->leaf_not_before, NSM_SIM_LEAF_LIFETIME_S);
    int64_t age = (int64_t)time(NULL) - (int64_t)(d->timestamp_ms / 1000);
    assert_true(age >= 0 && age < 120);

    /* expected PCRs computed from the binary pass */
    attest_pcr exp[3];
    for (unsigned i = 0; i < 3; i++) {
        exp[i] = (attest_pcr){.index = i, .len = 48};
        memcpy(exp[i].value, pcrs[i], 48);
    }
    attest_options op = {.root_der = root, .root_der_len = root_len, .pcrs = exp, .n_pcrs = 3};
    assert_int_equal(attest_verify(doc, len, &op, NULL, err, sizeof err), ATTEST_OK);

    /* without its root: the pinned AWS root refuses it */
    assert_int_equal(attest_verify(doc, len, NULL, NULL, err, sizeof err), ATTEST_ERR_ROOT);
    free(d);
    free(doc);
    free(root);
    nsm_close(n);
}

/* Field limits at the NSM's edge, and documents at the largest sizes still verify. */
static void test_sim_field_limits(void **state)
{
    (void)state;
    char dir[128], err[256];
    sub(dir, sizeof dir, "sim-docs");
    nsm *n = open_sim(dir);
    static uint8_t big[ATTEST_MAX_FIELD_LEN + 1];
    uint8_t *doc = NULL;
    size_t len;
    assert_int_equal(nsm_attest(n, NULL, 0, big, sizeof big, NULL, 0, &doc, &len, err, sizeof err),
                     NSM_ERR_ARG);
    assert_int_equal(nsm_attest(n, big, sizeof big, NULL, 0, NULL, 0, &doc, &len, err, sizeof err),
                     NSM_ERR_ARG);
    assert_int_equal(nsm_attest(n, NULL, 0, NULL, 0, big, 0, &doc, &len, err, sizeof err), NSM_ERR_ARG);
    assert_int_equal(nsm_attest_transport(n, big, big, 0, &doc, &len, err, sizeof err), NSM_ERR_ARG);
    assert_int_equal(nsm_attest_transport(n, big, big, ATTEST_NONCE_MAX + 1, &doc, &len, err, sizeof err),
                     NSM_ERR_ARG);
    assert_null(doc);
    /* 1024 bytes each, as real NSMs allow */
    assert_int_equal(nsm_attest(n, big, 1024, big, 1024, big, 1024, &doc, &len, err, sizeof err), NSM_OK);
    uint8_t *root;
    size_t root_len;
    sim_root(dir, &root, &root_len);
    attest_options o = {.root_der = root, .root_der_len = root_len, .nonce = big, .nonce_len = 1024};
    assert_int_equal(attest_verify(doc, len, &o, NULL, err, sizeof err), ATTEST_OK);
    free(doc);
    /* all absent */
    assert_int_equal(nsm_attest(n, NULL, 0, NULL, 0, NULL, 0, &doc, &len, err, sizeof err), NSM_OK);
    attest_doc *d = calloc(1, sizeof *d);
    assert_int_equal(attest_verify(doc, len, &(attest_options){.root_der = root, .root_der_len = root_len},
                                   d, err, sizeof err), ATTEST_OK);
    assert_false(d->has_nonce || d->has_public_key || d->has_user_data);
    free(d);
    free(doc);
    free(root);
    nsm_close(n);
}

static void test_sim_random(void **state)
{
    (void)state;
    char dir[128], err[256];
    sub(dir, sizeof dir, "sim-docs");
    nsm *n = open_sim(dir);
    uint8_t a[64], b[64], zero[64] = {0};
    assert_int_equal(nsm_get_random(n, a, sizeof a, err, sizeof err), NSM_OK);
    assert_int_equal(nsm_get_random(n, b, sizeof b, err, sizeof err), NSM_OK);
    assert_memory_not_equal(a, zero, sizeof a);
    assert_memory_not_equal(a, b, sizeof a);
    uint8_t over[NSM_RANDOM_MAX + 1];
    assert_int_equal(nsm_get_random(n, over, sizeof over, err, sizeof err), NSM_ERR_ARG);
    assert_int_equal(nsm_seed_rand(n, 64, err, sizeof err), NSM_OK);
    assert_int_equal(nsm_seed_rand(n, NSM_RANDOM_MAX + 1, err, sizeof err), NSM_ERR_ARG);
    nsm_close(n);
}

/* The simulator's PCRs are the documented function of the binary's bytes. */
static void test_sim_pcrs_of_file(void **state)
{
    (void)state;
    char path[128], err[256];
    sub(path, sizeof path, "binary");
    FILE *f = fopen(path, "wb");
    fputs("pretend this is veil-enclave", f);
    fclose(f);
    uint8_t got[3][48], m[48], want[48], zero[48] = {0};
    assert_int_equal(nsm_sim_pcrs_of_file(path, got, err, sizeof err), 0);
    SHA384((const uint8_t *)"pretend this is veil-enclave", 28, m);
    for (uint8_t i = 0; i < 3; i++) {
        uint8_t in[48 + 48 + 1];
        memcpy(in, zero, 48);
        memcpy(in + 48, m, 48);
        in[96] = i;
        SHA384(in, sizeof in, want);
        assert_memory_equal(got[i], want, 48);
    }
    assert_memory_not_equal(got[0], got[1], 48);
    unlink(path);
    assert_int_equal(nsm_sim_pcrs_of_file(path, got, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
}

/* A second open of DIR reuses its chain: the same root and leaf files. */
static void test_sim_reuses_its_chain(void **state)
{
    (void)state;
    char dir[128], path[256];
    sub(dir, sizeof dir, "sim-reuse");
    nsm *n1 = open_sim(dir);
    static uint8_t root1[4096], leaf1[4096], root2[4096], leaf2[4096];
    snprintf(path, sizeof path, "%s/root.pem", dir);
    size_t r1 = file_bytes(path, root1, sizeof root1);
    snprintf(path, sizeof path, "%s/leaf.pem", dir);
    size_t l1 = file_bytes(path, leaf1, sizeof leaf1);
    struct stat st;
    snprintf(path, sizeof path, "%s/root.key", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof path, "%s", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    nsm_close(n1);
    nsm *n2 = open_sim(dir);
    snprintf(path, sizeof path, "%s/root.pem", dir);
    size_t r2 = file_bytes(path, root2, sizeof root2);
    snprintf(path, sizeof path, "%s/leaf.pem", dir);
    size_t l2 = file_bytes(path, leaf2, sizeof leaf2);
    assert_true(r1 > 0 && r1 == r2 && l1 > 0 && l1 == l2);
    assert_memory_equal(root1, root2, r1);
    assert_memory_equal(leaf1, leaf2, l1);
    nsm_close(n2);
}

/* Writes a leaf for DIR's intermediate that ends `left` seconds from now. */
static void plant_leaf(const char *dir, long left)
{
    char path[256];
    snprintf(path, sizeof path, "%s/intermediate.pem", dir);
    FILE *f = fopen(path, "r");
    X509 *inter = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    snprintf(path, sizeof path, "%s/intermediate.key", dir);
    f = fopen(path, "r");
    EVP_PKEY *ik = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(inter);
    assert_non_null(ik);
    EVP_PKEY *lk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 99);
    X509_NAME *nm = X509_NAME_new();
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const uint8_t *)"old leaf", -1, -1, 0);
    X509_set_subject_name(x, nm);
    X509_NAME_free(nm);
    X509_set_issuer_name(x, X509_get_subject_name(inter));
    time_t now = time(NULL);
    ASN1_TIME_set(X509_getm_notBefore(x), now - 3 * 3600);
    ASN1_TIME_set(X509_getm_notAfter(x), now + left);
    X509_set_pubkey(x, lk);
    X509V3_CTX c;
    X509V3_set_ctx_nodb(&c);
    X509V3_set_ctx(&c, inter, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &c, NID_basic_constraints, "critical,CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    assert_true(X509_sign(x, ik, EVP_sha384()) > 0);
    snprintf(path, sizeof path, "%s/leaf.pem", dir);
    f = fopen(path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    snprintf(path, sizeof path, "%s/leaf.key", dir);
    f = fopen(path, "w");
    PEM_write_PrivateKey(f, lk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    X509_free(inter);
    EVP_PKEY_free(ik);
    EVP_PKEY_free(lk);
}

/* A leaf with less than NSM_SIM_LEAF_RENEW_S left is replaced by a fresh 3-hour one
 * (under the same root); one with more is kept. */
static void test_sim_renews_a_leaf_near_expiry(void **state)
{
    (void)state;
    char dir[128], err[256];
    sub(dir, sizeof dir, "sim-renew");
    nsm_close(open_sim(dir));
    uint8_t *root;
    size_t root_len;
    sim_root(dir, &root, &root_len);
    attest_doc *d = calloc(1, sizeof *d);
    assert_non_null(d);
    struct {
        long left;
        bool renewed;
    } cases[] = {{10 * 60, true}, {NSM_SIM_LEAF_RENEW_S - 5, true}, {-60, true}, {2 * 3600, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        plant_leaf(dir, cases[i].left);
        nsm *n = open_sim(dir);
        uint8_t *doc;
        size_t len;
        assert_int_equal(nsm_attest(n, NULL, 0, NULL, 0, NULL, 0, &doc, &len, err, sizeof err), NSM_OK);
        attest_options o = {.root_der = root, .root_der_len = root_len};
        attest_err e = attest_verify(doc, len, &o, d, err, sizeof err);
        if (cases[i].renewed) {
            if (e != ATTEST_OK)
                fail_msg("case %zu: %s: %s", i, attest_check_name(e), err);
            assert_true(d->leaf_not_after - time(NULL) > NSM_SIM_LEAF_LIFETIME_S - 3600);
            assert_non_null(strstr(d->chain_subject[2], d->module_id));
        } else {
            /* the planted leaf (CN=old leaf, no key usage) was kept and signs */
            assert_int_equal(e, ATTEST_OK);
            assert_string_equal(d->chain_subject[2], "CN=old leaf");
        }
        free(doc);
        nsm_close(n);
    }
    free(d);
    free(root);
}

/* A root that exists is never replaced (clients pinned it): without its key the
 * simulator refuses to issue, and says why. */
static void test_sim_keeps_an_existing_root(void **state)
{
    (void)state;
    char dir[128], path[256], spec[160], err[256];
    sub(dir, sizeof dir, "sim-root-only");
    nsm_close(open_sim(dir));
    static uint8_t before[4096], after[4096];
    snprintf(path, sizeof path, "%s/root.pem", dir);
    size_t nb = file_bytes(path, before, sizeof before);
    const char *gone[] = {"root.key", "intermediate.pem", "intermediate.key", "leaf.pem", "leaf.key"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, gone[i]);
        assert_int_equal(unlink(path), 0);
    }
    snprintf(spec, sizeof spec, "sim:%s", dir);
    nsm *n = NULL;
    assert_int_equal(nsm_open(spec, &n, err, sizeof err), NSM_ERR_SIM);
    assert_non_null(strstr(err, "root.key"));
    assert_null(n);
    snprintf(path, sizeof path, "%s/root.pem", dir);
    size_t na = file_bytes(path, after, sizeof after);
    assert_int_equal(na, nb);
    assert_memory_equal(before, after, nb);
    /* a damaged root.pem is an error too, not a reason to start over */
    FILE *f = fopen(path, "w");
    fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    assert_int_equal(nsm_open(spec, &n, err, sizeof err), NSM_ERR_SIM);
    assert_non_null(strstr(err, "root.pem"));
}

/* Processes that open one new DIR at once agree on one chain (DIR/.lock). */
static void test_sim_shared_by_processes(void **state)
{
    (void)state;
    char dir[128], spec[160];
    sub(dir, sizeof dir, "sim-shared");
    snprintf(spec, sizeof spec, "sim:%s", dir);
    enum { KIDS = 4 };
    pid_t pids[KIDS];
    for (int i = 0; i < KIDS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char err[256], out[200];
            nsm *n;
            uint8_t *doc;
            size_t len;
            if (nsm_open(spec, &n, err, sizeof err) != NSM_OK ||
                nsm_attest(n, NULL, 0, NULL, 0, NULL, 0, &doc, &len, err, sizeof err) != NSM_OK)
                _exit(1);
            snprintf(out, sizeof out, "%s/../doc-%d", dir, i);
            FILE *f = fopen(out, "wb");
            if (!f || fwrite(doc, 1, len, f) != len)
                _exit(2);
            fclose(f);
            _exit(0);
        }
    }
    for (int i = 0; i < KIDS; i++) {
        int st;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    uint8_t *root;
    size_t root_len;
    sim_root(dir, &root, &root_len);
    static uint8_t doc[ATTEST_MAX_DOC_LEN];
    for (int i = 0; i < KIDS; i++) {
        char path[200], err[256];
        snprintf(path, sizeof path, "%s/../doc-%d", dir, i);
        size_t len = file_bytes(path, doc, sizeof doc);
        attest_options o = {.root_der = root, .root_der_len = root_len};
        attest_err e = attest_verify(doc, len, &o, NULL, err, sizeof err);
        if (e != ATTEST_OK)
            fail_msg("child %d: %s: %s", i, attest_check_name(e), err);
        unlink(path);
    }
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attestation_request),
        cmocka_unit_test(test_get_random_request),
        cmocka_unit_test(test_attestation_response),
        cmocka_unit_test(test_get_random_response),
        cmocka_unit_test(test_missing_device),
        cmocka_unit_test(test_not_a_device),
        cmocka_unit_test(test_none_backend),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_sim_documents),
        cmocka_unit_test(test_sim_field_limits),
        cmocka_unit_test(test_sim_random),
        cmocka_unit_test(test_sim_pcrs_of_file),
        cmocka_unit_test(test_sim_reuses_its_chain),
        cmocka_unit_test(test_sim_renews_a_leaf_near_expiry),
        cmocka_unit_test(test_sim_keeps_an_existing_root),
        cmocka_unit_test(test_sim_shared_by_processes),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
