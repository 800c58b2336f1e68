#include "sim_creds.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "common/hex.h"
#include "common/secret.h"

static int hmac_label(const char *seed, const char *label, const char *akid,
                      unsigned char mac[32])
{
    char msg[64];
    int n = snprintf(msg, sizeof msg, "%s%s", label, akid);
    if (n < 0 || (size_t)n >= sizeof msg)
        return -1;
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), seed, (int)strlen(seed), (const unsigned char *)msg, (size_t)n, mac,
              &maclen) ||
        maclen != 32)
        return -1;
    return 0;
}

int sim_creds_derive(const char *seed, unsigned long gen, sim_creds *out)
{
    unsigned char mac[32];
    char b64[48]; /* base64 of 32 bytes is 44 chars + NUL */
    int rc = -1;

    if (!seed || !*seed || !out || gen > SIM_CREDS_MAX_GENERATION)
        return -1;
    memset(out, 0, sizeof *out);
    snprintf(out->access_key_id, sizeof out->access_key_id, "%s%09lu", SIM_CREDS_AKID_PREFIX,
             gen);
    if (hmac_label(seed, "secret:", out->access_key_id, mac) < 0)
        goto out;
    if (EVP_EncodeBlock((unsigned char *)b64, mac, sizeof mac) != 44)
        goto out;
    memcpy(out->secret_access_key, b64, SIM_CREDS_SECRET_LEN);
    out->secret_access_key[SIM_CREDS_SECRET_LEN] = '\0';
    if (hmac_label(seed, "token:", out->access_key_id, mac) < 0)
        goto out;
    hex_encode(mac, sizeof mac, out->session_token);
    rc = 0;
out:
    secure_wipe(mac, sizeof mac);
    secure_wipe(b64, sizeof b64);
    if (rc < 0)
        sim_creds_wipe(out);
    return rc;
}

int sim_creds_from_akid(const char *seed, const char *akid, size_t len, sim_creds *out)
{
    if (!akid || len != SIM_CREDS_AKID_LEN ||
        memcmp(akid, SIM_CREDS_AKID_PREFIX, SIM_CREDS_AKID_PREFIX_LEN) != 0)
        return -1;
    unsigned long gen = 0;
    for (size_t i = SIM_CREDS_AKID_PREFIX_LEN; i < len; i++) {
        if (akid[i] < '0' || akid[i] > '9')
            return -1;
        gen = gen * 10 + (unsigned long)(akid[i] - '0');
    }
    return sim_creds_derive(seed, gen, out);
}

void sim_creds_wipe(sim_creds *c)
{
    if (c)
        secure_wipe(c, sizeof *c);
}
