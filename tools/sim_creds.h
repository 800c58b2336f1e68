/* sim_creds — the credentials veil-imds-sim mints from a shared seed, derived so that
 * veil-bedrock-sim (given the same seed) can verify them without talking to the IMDS sim.
 *
 *   AccessKeyId     = "ASIAVEILSIM" + 9-digit generation number (20 chars, like AWS's ASIA…)
 *   SecretAccessKey = first 40 chars of base64(HMAC-SHA256(seed, "secret:" + AccessKeyId))
 *   Token           = hex(HMAC-SHA256(seed, "token:" + AccessKeyId))            (64 chars)
 *
 * Test-only: anyone who knows the seed can mint any generation. Pure functions over
 * caller-owned structs; sim_creds_wipe() clears one. Nothing here logs.
 */
#ifndef VEIL_TOOLS_SIM_CREDS_H
#define VEIL_TOOLS_SIM_CREDS_H

#include <stddef.h>

#define SIM_CREDS_AKID_PREFIX "ASIAVEILSIM"
#define SIM_CREDS_AKID_PREFIX_LEN 11
#define SIM_CREDS_GEN_DIGITS 9
#define SIM_CREDS_MAX_GENERATION 999999999UL
#define SIM_CREDS_AKID_LEN (SIM_CREDS_AKID_PREFIX_LEN + SIM_CREDS_GEN_DIGITS) /* 20 */
#define SIM_CREDS_SECRET_LEN 40
#define SIM_CREDS_TOKEN_LEN 64

typedef struct sim_creds {
    char access_key_id[SIM_CREDS_AKID_LEN + 1];
    char secret_access_key[SIM_CREDS_SECRET_LEN + 1];
    char session_token[SIM_CREDS_TOKEN_LEN + 1];
} sim_creds;

/* Mints generation gen (0..SIM_CREDS_MAX_GENERATION) from seed. 0 or -1. */
int sim_creds_derive(const char *seed, unsigned long gen, sim_creds *out);

/* If akid[0..len) has the minted form, derives its full set into out and returns 0;
 * returns -1 for any other key id. */
int sim_creds_from_akid(const char *seed, const char *akid, size_t len, sim_creds *out);

void sim_creds_wipe(sim_creds *c);

#endif
