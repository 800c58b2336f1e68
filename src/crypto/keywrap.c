#include "crypto/keywrap.h"

#include <argon2.h>
#include <openssl/crypto.h>
#include <string.h>

#include "common/hex.h"

const char *kw_strerror(kw_err e)
{
    switch (e) {
    case KW_OK: return "ok";
    case KW_ERR_PASSCODE: return "passcode must not be empty";
    case KW_ERR_PARAMS: return "Argon2id parameters out of range";
    case KW_ERR_KDF: return "Argon2id key derivation failed";
    case KW_ERR_CRYPTO: return "cryptographic operation failed";
    case KW_ERR_AUTH: return "wrong passcode or recovery code";
    case KW_ERR_FORMAT: return "malformed key blob or recovery code";
    }
    return "unknown error";
}

int kw_params_valid(const kw_params *p)
{
    return p->t_cost >= 1 && p->t_cost <= 64 && p->parallelism >= 1 && p->parallelism <= 16 &&
           p->m_cost_kib >= 8 * p->parallelism && p->m_cost_kib <= (4u << 20); /* <= 4 GiB */
}

kw_err kw_derive(const char *passcode, size_t len, const uint8_t salt[KW_SALT_LEN],
                 const kw_params *p, uint8_t key[KW_KEY_LEN])
{
    if (!passcode || len == 0)
        return KW_ERR_PASSCODE;
    if (!kw_params_valid(p))
        return KW_ERR_PARAMS;
    argon2_context ctx = {
        .out = key,
        .outlen = KW_KEY_LEN,
        .pwd = (uint8_t *)passcode,
        .pwdlen = (uint32_t)len,
        .salt = (uint8_t *)salt,
        .saltlen = KW_SALT_LEN,
        .t_cost = p->t_cost,
        .m_cost = p->m_cost_kib,
        .lanes = p->parallelism,
        .threads = p->parallelism,
        .version = KW_ARGON2_VERSION,
        .flags = ARGON2_DEFAULT_FLAGS,
    };
    return argon2id_ctx(&ctx) == ARGON2_OK ? KW_OK : KW_ERR_KDF;
}

kw_err kw_wrap(const uint8_t priv[X25519_KEY_LEN], const char *passcode, const kw_params *p,
               kw_blob *out)
{
    uint8_t key[KW_KEY_LEN];
    memset(out, 0, sizeof *out);
    out->params = *p;
    if (random_bytes(out->salt, sizeof out->salt) < 0 || random_bytes(out->iv, sizeof out->iv) < 0)
        return KW_ERR_CRYPTO;
    kw_err err = kw_derive(passcode, passcode ? strlen(passcode) : 0, out->salt, p, key);
    if (err == KW_OK &&
        aesgcm_encrypt(key, out->iv, NULL, 0, priv, X25519_KEY_LEN, out->ct, out->tag) < 0)
        err = KW_ERR_CRYPTO;
    OPENSSL_cleanse(key, sizeof key);
    return err;
}

kw_err kw_unwrap(const kw_blob *blob, const char *passcode, uint8_t priv[X25519_KEY_LEN])
{
    uint8_t key[KW_KEY_LEN];
    kw_err err = kw_derive(passcode, passcode ? strlen(passcode) : 0, blob->salt, &blob->params, key);
    if (err == KW_OK &&
        aesgcm_decrypt(key, blob->iv, NULL, 0, blob->ct, X25519_KEY_LEN, blob->tag, priv) < 0)
        err = KW_ERR_AUTH;
    OPENSSL_cleanse(key, sizeof key);
    return err;
}

json_t *kw_blob_to_json(const kw_blob *b)
{
    char ct[2 * X25519_KEY_LEN + 1], iv[2 * GCM_IV_LEN + 1], tag[2 * GCM_TAG_LEN + 1],
        salt[2 * KW_SALT_LEN + 1];
    hex_encode(b->ct, sizeof b->ct, ct);
    hex_encode(b->iv, sizeof b->iv, iv);
    hex_encode(b->tag, sizeof b->tag, tag);
    hex_encode(b->salt, sizeof b->salt, salt);
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:i, s:i, s:i, s:i}}",
                     "encrypted_private_key", ct, "iv", iv, "tag", tag, "salt", salt, "kdf",
                     "algorithm", "argon2id", "version", KW_ARGON2_VERSION, "time_cost",
                     (int)b->params.t_cost, "memory_cost", (int)b->params.m_cost_kib,
                     "parallelism", (int)b->params.parallelism);
}

static int get_hex(const json_t *obj, const char *name, uint8_t *out, size_t n)
{
    const json_t *v = json_object_get(obj, name);
    if (!json_is_string(v))
        return -1;
    return hex_decode_exact(json_string_value(v), json_string_length(v), out, n);
}

static int get_u32(const json_t *obj, const char *name, uint32_t *out)
{
    const json_t *v = json_object_get(obj, name);
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > UINT32_MAX)
        return -1;
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

kw_err kw_blob_from_json(const json_t *obj, kw_blob *out)
{
    memset(out, 0, sizeof *out);
    out->params = KW_PARAMS_DEFAULT;
    if (!json_is_object(obj) || get_hex(obj, "encrypted_private_key", out->ct, sizeof out->ct) ||
        get_hex(obj, "iv", out->iv, sizeof out->iv) ||
        get_hex(obj, "tag", out->tag, sizeof out->tag) ||
        get_hex(obj, "salt", out->salt, sizeof out->salt))
        return KW_ERR_FORMAT;
    const json_t *kdf = json_object_get(obj, "kdf");
    if (kdf) {
        const json_t *alg = json_object_get(kdf, "algorithm");
        const json_t *ver = json_object_get(kdf, "version");
        if (!json_is_string(alg) || strcmp(json_string_value(alg), "argon2id") != 0 ||
            (ver && (!json_is_integer(ver) || json_integer_value(ver) != KW_ARGON2_VERSION)) ||
            get_u32(kdf, "time_cost", &out->params.t_cost) ||
            get_u32(kdf, "memory_cost", &out->params.m_cost_kib) ||
            get_u32(kdf, "parallelism", &out->params.parallelism))
            return KW_ERR_FORMAT;
    }
    return kw_params_valid(&out->params) ? KW_OK : KW_ERR_PARAMS;
}

int kw_recovery_generate(char out[KW_RECOVERY_DIGITS + 1])
{
    size_t n = 0;
    uint8_t r[32];
    while (n < KW_RECOVERY_DIGITS) {
        if (random_bytes(r, sizeof r) < 0)
            return -1;
        for (size_t i = 0; i < sizeof r && n < KW_RECOVERY_DIGITS; i++)
            if (r[i] < 250) /* 250 = 25 * 10: accept only an unbiased range */
                out[n++] = (char)('0' + r[i] % 10);
    }
    out[n] = '\0';
    OPENSSL_cleanse(r, sizeof r);
    return 0;
}

void kw_recovery_format(const char digits[KW_RECOVERY_DIGITS + 1], char out[KW_RECOVERY_FORMATTED + 1])
{
    size_t o = 0;
    for (size_t i = 0; i < KW_RECOVERY_DIGITS; i++) {
        if (i && i % 4 == 0)
            out[o++] = '-';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

kw_err kw_recovery_normalize(const char *in, char out[KW_RECOVERY_DIGITS + 1])
{
    size_t n = 0;
    for (; *in; in++) {
        if (*in == '-' || *in == ' ')
            continue;
        if (*in < '0' || *in > '9' || n == KW_RECOVERY_DIGITS)
            return KW_ERR_FORMAT;
        out[n++] = *in;
    }
    out[n] = '\0';
    return n == KW_RECOVERY_DIGITS ? KW_OK : KW_ERR_FORMAT;
}
