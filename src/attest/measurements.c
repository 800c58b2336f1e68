/* measurements — nitro-cli's measurements JSON into expected PCRs. See measurements.h. */
#include "attest/measurements.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"

#define SHA384_LEN 48
#define HASH_ALGORITHM "Sha384" /* nitro-cli prints "Sha384 { ... }" */

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* "PCR<n>", n in 0..31 written without leading zeros; -1 otherwise */
static int pcr_index(const char *key)
{
    if (strncmp(key, "PCR", 3) != 0)
        return -1;
    const char *d = key + 3;
    size_t n = strlen(d);
    if (n < 1 || n > 2 || (n == 2 && d[0] == '0'))
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9')
            return -1;
        v = v * 10 + (d[i] - '0');
    }
    return v < ATTEST_MAX_PCRS ? v : -1;
}

static int parse_measurements(json_t *m, attest_pcr table[ATTEST_MAX_PCRS], uint32_t *present,
                              char *err, size_t errlen)
{
    bool have_alg = false;
    const char *key;
    json_t *v;
    json_object_foreach(m, key, v) {
        if (strcmp(key, "HashAlgorithm") == 0) {
            const char *s = json_string_value(v);
            if (!s || strncmp(s, HASH_ALGORITHM, strlen(HASH_ALGORITHM)) != 0)
                return fail(err, errlen, "HashAlgorithm is not " HASH_ALGORITHM);
            have_alg = true;
            continue;
        }
        int idx = pcr_index(key);
        if (idx < 0)
            return fail(err, errlen, "Measurements has a member that is neither HashAlgorithm nor PCR0..PCR31");
        const char *hexs = json_string_value(v);
        if (!hexs || json_string_length(v) != 2 * SHA384_LEN ||
            hex_decode_exact(hexs, 2 * SHA384_LEN, table[idx].value, SHA384_LEN) != 0)
            return fail(err, errlen, "PCR%d is not %d hex digits", idx, 2 * SHA384_LEN);
        table[idx].index = (unsigned)idx;
        table[idx].len = SHA384_LEN;
        *present |= 1u << idx;
    }
    if (!have_alg)
        return fail(err, errlen, "Measurements has no HashAlgorithm");
    for (int i = 0; i <= 2; i++)
        if (!(*present & 1u << i))
            return fail(err, errlen, "PCR%d is missing", i);
    return 0;
}

int attest_measurements_parse(const char *json, size_t len, attest_pcr out[ATTEST_MAX_PCRS],
                              size_t *n_out, char *err, size_t errlen)
{
    attest_pcr table[ATTEST_MAX_PCRS];
    uint32_t present = 0;
    json_error_t jerr;
    int rc = -1;
    *n_out = 0;
    memset(table, 0, sizeof table);
    if (len > ATTEST_MEASUREMENTS_MAX_FILE)
        return fail(err, errlen, "the measurements are over %d bytes", ATTEST_MEASUREMENTS_MAX_FILE);
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(err, errlen, "not JSON (line %d, column %d)", jerr.line, jerr.column);
    json_t *m = json_object_get(root, "Measurements");
    if (!json_is_object(root) || !json_is_object(m)) {
        fail(err, errlen, "no \"Measurements\" object");
        goto out;
    }
    if (parse_measurements(m, table, &present, err, errlen) != 0)
        goto out;
    size_t n = 0;
    for (int i = 0; i < ATTEST_MAX_PCRS; i++)
        if (present & 1u << i)
            out[n++] = table[i];
    *n_out = n;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int attest_measurements_load(const char *path, attest_pcr out[ATTEST_MAX_PCRS], size_t *n_out,
                             char *err, size_t errlen)
{
    *n_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    char *buf = malloc(ATTEST_MEASUREMENTS_MAX_FILE + 1);
    int rc = -1;
    if (!buf) {
        fail(err, errlen, "out of memory");
        goto out;
    }
    size_t n = fread(buf, 1, ATTEST_MEASUREMENTS_MAX_FILE + 1, f);
    if (ferror(f)) {
        fail(err, errlen, "cannot read %s", path);
        goto out;
    }
    rc = attest_measurements_parse(buf, n, out, n_out, err, errlen);
out:
    free(buf);
    fclose(f);
    return rc;
}
