#include "crypto/ep.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"

const char *const EP_KNOWN_CONTEXTS[] = {
    EP_CTX_CLIENT_TO_ENCLAVE, EP_CTX_ENCLAVE_TO_CLIENT, EP_CTX_USER_STORAGE,
    EP_CTX_ASSISTANT_STORAGE, EP_CTX_ORG_KEY_DISTRIBUTION, EP_CTX_RECOVERY_KEY,
    EP_CTX_TEST, NULL,
};

const ep_field EP_FIELDS[EP_N_FIELDS] = {
    [EP_FIELD_EPK] = {EP_F_EPK, 2 * X25519_KEY_LEN, 2 * X25519_KEY_LEN},
    [EP_FIELD_IV] = {EP_F_IV, 2 * GCM_IV_LEN, 2 * GCM_IV_LEN},
    [EP_FIELD_CT] = {EP_F_CT, 0, 2},
    [EP_FIELD_TAG] = {EP_F_TAG, 2 * GCM_TAG_LEN, 2 * GCM_TAG_LEN},
    [EP_FIELD_SALT] = {EP_F_SALT, 2 * HKDF_SALT_LEN, 2 * HKDF_SALT_LEN},
};

const char *ep_strerror(ep_err e)
{
    switch (e) {
    case EP_OK: return "ok";
    case EP_ERR_NOMEM: return "out of memory";
    case EP_ERR_CRYPTO: return "cryptographic operation failed";
    case EP_ERR_CONTEXT: return "invalid context string";
    case EP_ERR_KEY: return "invalid public key (low-order point)";
    case EP_ERR_AUTH: return "decryption failed: wrong key, wrong context or tampered data";
    case EP_ERR_JSON: return "encrypted payload must be a JSON object";
    case EP_ERR_MISSING: return "encrypted payload field missing";
    case EP_ERR_TYPE: return "encrypted payload field must be a string";
    case EP_ERR_HEX: return "encrypted payload field must be hex of even length";
    case EP_ERR_EPK_LEN: return EP_F_EPK " must be 32 bytes (64 hex)";
    case EP_ERR_IV_LEN: return EP_F_IV " must be 16 bytes (32 hex)";
    case EP_ERR_TAG_LEN: return EP_F_TAG " must be 16 bytes (32 hex)";
    case EP_ERR_SALT_LEN: return EP_F_SALT " must be 32 bytes (64 hex)";
    case EP_ERR_TOO_LARGE: return "ciphertext too large";
    }
    return "unknown error";
}

bool ep_context_is_known(const char *context)
{
    for (size_t i = 0; EP_KNOWN_CONTEXTS[i]; i++)
        if (strcmp(context, EP_KNOWN_CONTEXTS[i]) == 0)
            return true;
    return false;
}

static bool context_ok(const char *c)
{
    size_t n = c ? strlen(c) : 0;
    if (n == 0 || n > EP_CONTEXT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (c[i] < 0x20 || c[i] > 0x7e)
            return false;
    return true;
}

/* X25519 with a held key, then HKDF-SHA512 with info = context. */
static ep_err derive_with(const x25519_key *k, const uint8_t pub[X25519_KEY_LEN],
                          const uint8_t salt[HKDF_SALT_LEN], const char *context,
                          uint8_t key[AES256_KEY_LEN])
{
    if (!context_ok(context))
        return EP_ERR_CONTEXT;
    uint8_t ss[X25519_KEY_LEN];
    int rc = x25519_key_shared(k, pub, ss);
    if (rc == -2)
        return EP_ERR_KEY;
    if (rc < 0)
        return EP_ERR_CRYPTO;
    rc = hkdf_sha512(ss, sizeof ss, salt, HKDF_SALT_LEN, (const uint8_t *)context,
                     strlen(context), key, AES256_KEY_LEN);
    OPENSSL_cleanse(ss, sizeof ss);
    return rc == 0 ? EP_OK : EP_ERR_CRYPTO;
}

ep_err ep_derive_key(const uint8_t priv[X25519_KEY_LEN], const uint8_t pub[X25519_KEY_LEN],
                     const uint8_t salt[HKDF_SALT_LEN], const char *context,
                     uint8_t key[AES256_KEY_LEN])
{
    x25519_key *k = x25519_key_new(priv);
    if (!k)
        return EP_ERR_CRYPTO;
    ep_err e = derive_with(k, pub, salt, context, key);
    x25519_key_free(k);
    return e;
}

void ep_clear(ep *e)
{
    free(e->ct);
    memset(e, 0, sizeof *e);
}

ep_err ep_seal(const uint8_t recipient_pub[X25519_KEY_LEN], const uint8_t *pt, size_t len,
               const char *context, ep *out)
{
    uint8_t key[AES256_KEY_LEN];
    x25519_key *eph = NULL;
    ep_err err = EP_ERR_CRYPTO;
    memset(out, 0, sizeof *out);
    if (!context_ok(context))
        return EP_ERR_CONTEXT;
    if (len > EP_MAX_PLAINTEXT)
        return EP_ERR_TOO_LARGE;
    /* two scalar multiplications: the ephemeral public key, then the agreement */
    if (!(eph = x25519_key_generate(out->epk)) || random_bytes(out->salt, sizeof out->salt) < 0 ||
        random_bytes(out->iv, sizeof out->iv) < 0)
        goto out;
    if ((err = derive_with(eph, recipient_pub, out->salt, context, key)) != EP_OK)
        goto out;
    out->ct = malloc(len ? len : 1);
    if (!out->ct) {
        err = EP_ERR_NOMEM;
        goto out;
    }
    out->ct_len = len;
    if (aesgcm_encrypt(key, out->iv, NULL, 0, pt, len, out->ct, out->tag) < 0) {
        err = EP_ERR_CRYPTO;
        goto out;
    }
    err = EP_OK;
out:
    x25519_key_free(eph); /* the ephemeral private key is discarded */
    OPENSSL_cleanse(key, sizeof key);
    if (err != EP_OK)
        ep_clear(out);
    return err;
}

ep_err ep_open_key(const x25519_key *k, const ep *in, const char *context, secret *pt)
{
    uint8_t key[AES256_KEY_LEN];
    pt->data = NULL;
    pt->len = 0;
    if (in->ct_len > EP_MAX_PLAINTEXT)
        return EP_ERR_TOO_LARGE;
    ep_err err = derive_with(k, in->epk, in->salt, context, key);
    if (err != EP_OK)
        return err;
    if (secret_alloc(pt, in->ct_len) < 0) {
        err = EP_ERR_NOMEM;
        goto out;
    }
    if (aesgcm_decrypt(key, in->iv, NULL, 0, in->ct, in->ct_len, in->tag, pt->data) < 0) {
        secret_free(pt);
        err = EP_ERR_AUTH;
    }
out:
    OPENSSL_cleanse(key, sizeof key);
    return err;
}

ep_err ep_open(const uint8_t priv[X25519_KEY_LEN], const ep *in, const char *context, secret *pt)
{
    pt->data = NULL;
    pt->len = 0;
    x25519_key *k = x25519_key_new(priv);
    if (!k)
        return EP_ERR_CRYPTO;
    ep_err err = ep_open_key(k, in, context, pt);
    x25519_key_free(k);
    return err;
}

/* One fixed-length field: present, a string, hex, then exactly n bytes. */
static ep_err get_fixed(const json_t *obj, const char *name, uint8_t *out, size_t n,
                        ep_err len_err, const char **field)
{
    const json_t *v = json_object_get(obj, name);
    *field = name;
    if (!v)
        return EP_ERR_MISSING;
    if (!json_is_string(v))
        return EP_ERR_TYPE;
    const char *s = json_string_value(v);
    size_t sl = json_string_length(v);
    if (!hex_is_valid(s, sl))
        return EP_ERR_HEX;
    if (hex_decode_exact(s, sl, out, n) < 0)
        return len_err;
    return EP_OK;
}

ep_err ep_from_json(const json_t *obj, ep *out, const char **field)
{
    const char *f = NULL;
    ep_err err;
    memset(out, 0, sizeof *out);
    if (!field)
        field = &f;
    *field = NULL;
    if (!json_is_object(obj))
        return EP_ERR_JSON;
    if ((err = get_fixed(obj, EP_F_EPK, out->epk, sizeof out->epk, EP_ERR_EPK_LEN, field)) ||
        (err = get_fixed(obj, EP_F_IV, out->iv, sizeof out->iv, EP_ERR_IV_LEN, field)) ||
        (err = get_fixed(obj, EP_F_TAG, out->tag, sizeof out->tag, EP_ERR_TAG_LEN, field)) ||
        (err = get_fixed(obj, EP_F_SALT, out->salt, sizeof out->salt, EP_ERR_SALT_LEN, field)))
        goto fail;
    *field = EP_F_CT;
    const json_t *v = json_object_get(obj, EP_F_CT);
    err = !v ? EP_ERR_MISSING : !json_is_string(v) ? EP_ERR_TYPE : EP_OK;
    if (err)
        goto fail;
    const char *s = json_string_value(v);
    size_t sl = json_string_length(v);
    if (!hex_is_valid(s, sl)) {
        err = EP_ERR_HEX;
        goto fail;
    }
    if (sl / 2 > EP_MAX_PLAINTEXT) {
        err = EP_ERR_TOO_LARGE;
        goto fail;
    }
    out->ct_len = sl / 2;
    out->ct = malloc(out->ct_len ? out->ct_len : 1);
    if (!out->ct) {
        err = EP_ERR_NOMEM;
        goto fail;
    }
    hex_decode(s, sl, out->ct, out->ct_len);
    *field = NULL;
    return EP_OK;
fail:
    ep_clear(out);
    return err;
}

ep_err ep_parse(const char *json, size_t len, ep *out, const char **field)
{
    json_error_t jerr;
    json_t *obj = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (field)
        *field = NULL;
    if (!obj) {
        memset(out, 0, sizeof *out);
        return EP_ERR_JSON;
    }
    ep_err err = ep_from_json(obj, out, field);
    json_decref(obj);
    return err;
}

int ep_write_json(const ep *e, vbuf *out)
{
    /* hand-written rather than through jansson: this runs once per streamed chunk */
    if (vbuf_reserve(out, 2 * (e->ct_len + 96) + 96) < 0)
        return -1;
    vbuf_append_str(out, "{\"" EP_F_EPK "\":\"");
    vbuf_append_hex(out, e->epk, sizeof e->epk);
    vbuf_append_str(out, "\",\"" EP_F_IV "\":\"");
    vbuf_append_hex(out, e->iv, sizeof e->iv);
    vbuf_append_str(out, "\",\"" EP_F_CT "\":\"");
    vbuf_append_hex(out, e->ct, e->ct_len);
    vbuf_append_str(out, "\",\"" EP_F_TAG "\":\"");
    vbuf_append_hex(out, e->tag, sizeof e->tag);
    vbuf_append_str(out, "\",\"" EP_F_SALT "\":\"");
    vbuf_append_hex(out, e->salt, sizeof e->salt);
    return vbuf_append_str(out, "\"}");
}

json_t *ep_to_json(const ep *e)
{
    vbuf b = VBUF_INIT;
    json_t *obj = NULL;
    if (ep_write_json(e, &b) == 0)
        obj = json_loadb((const char *)b.data, b.len, 0, NULL);
    vbuf_free(&b);
    return obj;
}
