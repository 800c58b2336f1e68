/* trust — what the CLI checks before it seals anything to an enclave key.
 *
 * The client trusts only the AWS Nitro root and the measurements the operator
 * published (design.md, "Trust model"). Before the first seal, and again whenever
 * the enclave's key changes, it sends a fresh random nonce to /enclave/info and
 * verifies the document it gets back (attest/verify.h): down to the pinned root (or
 * the root `veil login --attestation-root` stored, for a simulated NSM only), at most
 * ATTEST_DEFAULT_MAX_AGE_S old, its nonce, its public_key equal to the key about to
 * be sealed to, its user_data ATTEST_USER_DATA, and PCR0..n equal to the stored
 * measurements. Opting out (--no-attestation) is explicit and warned about.
 * Failures come back as "attestation: CHECK: reason". Nothing here keeps a key.
 */
#ifndef VEIL_CLI_TRUST_H
#define VEIL_CLI_TRUST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "attest/document.h"
#include "cli/client.h"

#define CLI_ATTEST_NONCE_LEN 32 /* bytes of fresh randomness per check */

typedef struct cli_trust {
    const char *verb;          /* for the notices: "veil VERB: ..." */
    bool verify;               /* false: --no-attestation */
    attest_pcr pcrs[ATTEST_MAX_PCRS];
    size_t n_pcrs;
    uint8_t root_der[CLI_ROOT_MAX];
    size_t root_der_len;       /* 0: the pinned AWS Nitro root G1 */
    bool root_noted;           /* the custom-root notice was printed in this run */
} cli_trust;

/* The policy stored in the config (cli_config_load). verify false is --no-attestation:
 * warned about on stderr here, on every run. -1 with err when the config cannot be read. */
int cli_trust_load(cli_trust *t, const char *verb, bool verify, char *err, size_t errlen);

/* The enclave's transport key: with verify, fetched with a fresh nonce and accepted
 * only when its attestation verifies (else -1, err "attestation: CHECK: reason"), and
 * refused at once when no measurements are stored (err says how to store them);
 * without verify, taken from the server as is. -1 with err on transport or server errors. */
int cli_trust_enclave_key(cli_trust *t, vclient *c, uint8_t pub[32], char *err, size_t errlen);

/* A 409 from the chat route (another instance's enclave, behind a load balancer):
 * its body names that instance's key and a document binding it, made earlier for
 * veild's own nonce. With verify, the document must pass every check of the policy
 * but the nonce and the age (root, chain, signature, key, veil's statement, PCRs):
 * a server whose 409 offers a key its document does not bind is lying, and the
 * client stops there (-1, err "attestation: CHECK: reason"). It is never sealed to:
 * the key the retry uses comes from cli_trust_enclave_key, with a fresh nonce.
 * Without verify only the key's form is checked. */
int cli_trust_check_offered(cli_trust *t, const json_t *body, char *err, size_t errlen);

/* Two lines for people: which root and which PCRs the client verifies. */
void cli_trust_describe(FILE *out, const cli_config *cfg);

/* "custom certificate <subject>, SHA-256 <hex>" for a DER root, for notices. */
void cli_trust_root_name(const uint8_t *der, size_t len, char *out, size_t n);

#endif
