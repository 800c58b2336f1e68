#include "enclave/selftest.h"

#include "enclave/protocol.h"

#include <string.h>

#include "common/hex.h"
#include "crypto/ep.h"

/* identical to tests/fixtures/crypto_test_vectors.json (ecdh_derivation, aes_gcm) */
static const struct {
    const char *desc, *priv, *pub, *ctx, *salt, *key;
} ECDH[] = {
    {"Basic ECDH", "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
     "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", "test-context",
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
     "01fb75e5729e6de652f1e68381f46fc832ee8b26fc0b5521cce72de25b635109"},
    {"ECDH with transport context", "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
     "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
     "client-to-enclave-transport", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
     "1e0306eafbcd33da1f613d27240f73fa0611a19be823d58e123d780549e5d772"},
    {"ECDH with storage context", "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
     "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", "user-message-storage",
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
     "979cab9e1b0ebc242ff4673251b96b7f1ee32fa5164539edb7600fee692b06dc"},
    {"ECDH with org-key-distribution context",
     "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
     "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", "org-key-distribution",
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
     "6b269f827a8b2b2c7702aa808f8135f88060a5eeac18729bd1df177e0a98476e"},
};

static const struct {
    const char *desc, *key, *iv, *pt, *ct, *tag, *aad;
} GCM[] = {
    {"Simple encryption", "0000000000000000000000000000000000000000000000000000000000000000",
     "11111111111111111111111111111111", "48656c6c6f2c20576f726c6421", "9b2ee55288f111f35e648a71bb",
     "b60febd361c3d05ee4ac80ec98dc5232", NULL},
    {"Encryption with AAD", "0000000000000000000000000000000000000000000000000000000000000000",
     "11111111111111111111111111111111", "48656c6c6f2c20576f726c6421", "9b2ee55288f111f35e648a71bb",
     "45beff23d7f2c9eebfc3e91e671ca37e", "61757468656e746963617465642064617461"},
    {"Longer message", "0000000000000000000000000000000000000000000000000000000000000000",
     "11111111111111111111111111111111",
     "546869732069732061206c6f6e676572206d65737361676520666f722074657374696e67204145532d47434d20656e6372797074696f6e2077697468206d6f726520646174612e",
     "8723e04dc7b4428450368a7af42a0cec327cf599e18f0a80ff629606302b011f798947bd3744856aede4f5244eaa3d237b0f8931d795f7fa44146990e868c91e6224689ee5eb8f",
     "30a2b4a027c328bb6366620b437fc5fc", NULL},
};

static long unhex(const char *s, uint8_t *out, size_t cap)
{
    return s ? hex_decode(s, strlen(s), out, cap) : 0;
}

static int ecdh_ok(size_t i)
{
    uint8_t priv[32], pub[32], salt[32], want[32], got[32];
    if (unhex(ECDH[i].priv, priv, 32) != 32 || unhex(ECDH[i].pub, pub, 32) != 32 ||
        unhex(ECDH[i].salt, salt, 32) != 32 || unhex(ECDH[i].key, want, 32) != 32)
        return 0;
    return ep_derive_key(priv, pub, salt, ECDH[i].ctx, got) == EP_OK && memcmp(got, want, 32) == 0;
}

static int gcm_ok(size_t i)
{
    uint8_t key[32], iv[16], pt[128], ct[128], tag[16], aad[64], out[128], otag[16];
    long n = unhex(GCM[i].pt, pt, sizeof pt), aad_len = unhex(GCM[i].aad, aad, sizeof aad);
    if (unhex(GCM[i].key, key, 32) != 32 || unhex(GCM[i].iv, iv, 16) != 16 || n < 0 ||
        unhex(GCM[i].ct, ct, sizeof ct) != n || unhex(GCM[i].tag, tag, 16) != 16 || aad_len < 0)
        return 0;
    if (aesgcm_encrypt(key, iv, aad, (size_t)aad_len, pt, (size_t)n, out, otag) < 0 ||
        memcmp(out, ct, (size_t)n) != 0 || memcmp(otag, tag, 16) != 0)
        return 0;
    return aesgcm_decrypt(key, iv, aad, (size_t)aad_len, ct, (size_t)n, tag, out) == 0 &&
           memcmp(out, pt, (size_t)n) == 0;
}

json_t *selftest_run(void)
{
    json_t *ecdh = json_array(), *gcm = json_array();
    int e_ok = 0, gp = 0;
    const int en = (int)(sizeof ECDH / sizeof ECDH[0]), gn = (int)(sizeof GCM / sizeof GCM[0]);
    for (int i = 0; i < en; i++) {
        int ok = ecdh_ok((size_t)i);
        e_ok += ok;
        json_array_append_new(ecdh, json_pack("{s:s, s:b}", "description", ECDH[i].desc, "passed", ok));
    }
    for (int i = 0; i < gn; i++) {
        int ok = gcm_ok((size_t)i);
        gp += ok;
        json_array_append_new(gcm, json_pack("{s:s, s:b}", "description", GCM[i].desc, "passed", ok));
    }
    return json_pack("{s:s, s:s, s:{s:o, s:o}, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:b}}", PF_STATUS,
                     "success", PF_COMMAND, proto_cmd_name(PROTO_CMD_RUN_TESTS), "results", "ecdh_tests", ecdh,
                     "aes_gcm_tests", gcm, "summary", "ecdh_passed", e_ok, "ecdh_total", en,
                     "aes_gcm_passed", gp, "aes_gcm_total", gn, "total_passed", e_ok + gp,
                     "total_tests", en + gn, "all_passed", e_ok + gp == en + gn);
}
