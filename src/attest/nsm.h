/* nsm — the enclave's Nitro Security Module: attestation documents and randomness.
 *
 * One handle, three backends, chosen by a spec string:
 *   "dev" | "dev:PATH"  the NSM device (/dev/nsm) and its ioctl: only inside a Nitro Enclave;
 *   "sim:DIR"           a SIMULATED NSM for tests and `make run`: a local P-384 chain
 *                       (root -> intermediate -> a leaf that lives 3 hours, all ES384) kept
 *                       in DIR, signing real-format documents whose module_id ends with
 *                       ATTEST_SIM_MODULE_ID_SUFFIX; clients accept them only when given
 *                       DIR/root.pem as their root. nsm_backend_name() says "simulated";
 *   "none"              no NSM: attestation fails with NSM_ERR_NO_NSM.
 * The device's CBOR request encoders and response decoders are pure functions over
 * buffers (tested without a device). A handle may be shared between threads. Documents
 * are malloc'd for the caller (free). Nothing here logs; randomness is wiped after use.
 */
#ifndef VEIL_ATTEST_NSM_H
#define VEIL_ATTEST_NSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attest/document.h"
#include "attest/verify.h"
#include "common/buf.h"

/* the device (aws-nitro-enclaves-nsm-api's driver module and Linux's misc/nsm driver) */
#define NSM_DEV_PATH "/dev/nsm"
#define NSM_IOCTL_MAGIC 0x0A      /* ioctl _IOWR(0x0A, 0, struct {iovec request, response}) */
#define NSM_REQUEST_MAX 0x1000    /* the driver refuses longer requests (EMSGSIZE) */
#define NSM_RESPONSE_MAX 0x3000   /* the response buffer we hand it */
#define NSM_RANDOM_MAX 1024       /* the most nsm_get_random gives per call */

/* the simulator */
#define NSM_SIM_PCRS 16                          /* like a real NSM: PCR0..15, 48 bytes each */
#define NSM_SIM_LEAF_LIFETIME_S (3 * 3600)       /* as AWS's leaves */
#define NSM_SIM_LEAF_RENEW_S (30 * 60)           /* a new leaf when less than this is left */
#define NSM_SIM_INTERMEDIATE_LIFETIME_S (30L * 86400)
#define NSM_SIM_INTERMEDIATE_RENEW_S (86400L)
#define NSM_SIM_ROOT_LIFETIME_S (3650L * 86400)
#define NSM_SIM_BACKDATE_S 300                   /* notBefore this far back: clients' clock skew */

typedef enum nsm_err {
    NSM_OK = 0,
    NSM_ERR_ARG,       /* an unknown spec, or a field over its limit */
    NSM_ERR_NOMEM,
    NSM_ERR_NO_NSM,    /* the "none" backend */
    NSM_ERR_OPEN,      /* the device cannot be opened (not inside an enclave?) */
    NSM_ERR_IOCTL,     /* the device refused the ioctl */
    NSM_ERR_RESPONSE,  /* the device's answer is not the CBOR we asked for */
    NSM_ERR_DEVICE,    /* the NSM answered {"Error": code} (code in err) */
    NSM_ERR_SIM,       /* the simulator's directory, keys or certificates */
} nsm_err;

const char *nsm_strerror(nsm_err e); /* fixed text, never NULL */

typedef struct nsm nsm;

/* Opens a backend (see above). "sim:DIR" creates DIR (0700) and its chain, or loads
 * it (renewing a leaf or intermediate near expiry); two processes may share DIR. */
nsm_err nsm_open(const char *spec, nsm **out, char *err, size_t errlen);
void nsm_close(nsm *n);

/* "nitro", "simulated" or "none": what a log line or a HEALTH answer should say. */
const char *nsm_backend_name(const nsm *n);
bool nsm_is_simulated(const nsm *n);

/* A signed attestation document binding user_data, nonce and public_key (each may be
 * NULL for absent; user_data and nonce 0..1024 bytes, public_key 1..1024). *doc is
 * malloc'd (free), at most ATTEST_MAX_DOC_LEN bytes. */
nsm_err nsm_attest(nsm *n, const uint8_t *user_data, size_t user_data_len, const uint8_t *nonce,
                   size_t nonce_len, const uint8_t *public_key, size_t public_key_len,
                   uint8_t **doc, size_t *doc_len, char *err, size_t errlen);

/* veil's binding: public_key = the X25519 transport key, nonce = the client's
 * (ATTEST_NONCE_MIN..ATTEST_NONCE_MAX bytes), user_data = ATTEST_USER_DATA. */
nsm_err nsm_attest_transport(nsm *n, const uint8_t public_key[ATTEST_PUBLIC_KEY_LEN],
                             const uint8_t *nonce, size_t nonce_len, uint8_t **doc,
                             size_t *doc_len, char *err, size_t errlen);

/* len (<= NSM_RANDOM_MAX) bytes of the NSM's randomness (the simulator: OpenSSL's). */
nsm_err nsm_get_random(nsm *n, uint8_t *out, size_t len, char *err, size_t errlen);

/* Mixes len (<= NSM_RANDOM_MAX) bytes of NSM randomness into OpenSSL's pool (RAND_add),
 * as an enclave should at start: its own entropy sources are thin. */
nsm_err nsm_seed_rand(nsm *n, size_t len, char *err, size_t errlen);

/* ---- the device's messages (pure) ------------------------------------------------- */

/* {"Attestation": {"user_data": bytes|null, "nonce": bytes|null, "public_key": bytes|null}}
 * appended to out. 0 or -1 (ENOMEM). */
int nsm_encode_attestation(const uint8_t *user_data, size_t user_data_len, const uint8_t *nonce,
                           size_t nonce_len, const uint8_t *public_key, size_t public_key_len,
                           vbuf *out);
/* "GetRandom" (a unit request is a bare text string). 0 or -1. */
int nsm_encode_get_random(vbuf *out);

/* {"Attestation": {"document": bytes}} -> *doc (a span into resp). {"Error": "Code"} ->
 * NSM_ERR_DEVICE with the code's name in err. Anything else -> NSM_ERR_RESPONSE. */
nsm_err nsm_decode_attestation(const uint8_t *resp, size_t len, attest_span *doc, char *err,
                               size_t errlen);
/* {"GetRandom": {"random": bytes}} -> *random (a span into resp, at least 1 byte). */
nsm_err nsm_decode_get_random(const uint8_t *resp, size_t len, attest_span *random, char *err,
                              size_t errlen);

/* ---- the simulator's measurements -------------------------------------------------- */

/* The simulator's PCR0, PCR1 and PCR2 for the binary at path (it uses /proc/self/exe):
 * m = SHA-384(the file's bytes), PCRn = SHA-384(48 zero bytes || m || n) with n one
 * byte, i.e. a zeroed register extended once with m || n. PCR3..15 are zero.
 * So `veil attest verify` can expect them: 0, or -1 with err. */
int nsm_sim_pcrs_of_file(const char *path, uint8_t out[3][48], char *err, size_t errlen);

#endif
