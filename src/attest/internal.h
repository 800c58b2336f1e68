/* internal — helpers shared by the files of src/attest only. */
#ifndef VEIL_ATTEST_INTERNAL_H
#define VEIL_ATTEST_INTERNAL_H

#include <stddef.h>

#include "attest/document.h"

/* Writes the formatted reason into err (when err is non-NULL) and returns e. */
attest_err attest_fail(attest_err e, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
