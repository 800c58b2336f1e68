/* measurements — expected PCRs from the JSON that `nitro-cli build-enclave` (or
 * `describe-eif`) prints:
 *   {"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "<96 hex>",
 *                     "PCR1": "<96 hex>", "PCR2": "<96 hex>"}}
 * Other top-level members are ignored (describe-eif prints more); inside Measurements
 * only HashAlgorithm and PCR<n> are allowed, PCR0, PCR1 and PCR2 are required, and
 * every PCR is 48 bytes (SHA-384). The caller owns the output array; nothing is kept.
 */
#ifndef VEIL_ATTEST_MEASUREMENTS_H
#define VEIL_ATTEST_MEASUREMENTS_H

#include <stddef.h>

#include "attest/document.h"

#define ATTEST_MEASUREMENTS_MAX_FILE (64 * 1024)

/* Parses len bytes of JSON into out[] (room for ATTEST_MAX_PCRS entries), sorted by
 * index; *n_out is their count. 0, or -1 with a reason in err (nothing in out). */
int attest_measurements_parse(const char *json, size_t len, attest_pcr out[ATTEST_MAX_PCRS],
                              size_t *n_out, char *err, size_t errlen);

/* The same from a file of at most ATTEST_MEASUREMENTS_MAX_FILE bytes. */
int attest_measurements_load(const char *path, attest_pcr out[ATTEST_MAX_PCRS], size_t *n_out,
                             char *err, size_t errlen);

#endif
