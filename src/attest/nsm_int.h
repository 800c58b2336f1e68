/* nsm_int — what nsm.c and nsm_sim.c share; internal to src/attest. */
#ifndef VEIL_ATTEST_NSM_INT_H
#define VEIL_ATTEST_NSM_INT_H

#include <stddef.h>
#include <stdint.h>

#include "attest/nsm.h"

/* Writes the formatted reason into err (when non-NULL) and returns e. */
nsm_err nsm_fail(nsm_err e, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The simulator (nsm_sim.c). Not thread-safe by itself: nsm.c holds its lock. */
typedef struct nsm_sim nsm_sim;
nsm_err nsm_sim_open(const char *dir, nsm_sim **out, char *err, size_t errlen);
void nsm_sim_close(nsm_sim *s); /* NULL is fine */
nsm_err nsm_sim_attest(nsm_sim *s, const uint8_t *user_data, size_t user_data_len,
                       const uint8_t *nonce, size_t nonce_len, const uint8_t *public_key,
                       size_t public_key_len, uint8_t **doc, size_t *doc_len, char *err,
                       size_t errlen);

#endif
