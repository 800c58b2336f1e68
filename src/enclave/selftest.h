/* selftest — RUN_TESTS: the cross-platform ECDH and AES-GCM vectors (spec §1.6),
 * embedded, run against the crypto core inside the enclave. */
#ifndef VEIL_ENCLAVE_SELFTEST_H
#define VEIL_ENCLAVE_SELFTEST_H

#include <jansson.h>

/* The RUN_TESTS reply body: {"status","command","results","summary"}. New reference. */
json_t *selftest_run(void);

#endif
