/* cbor — the strict subset of CBOR (RFC 8949) that attestation documents and NSM
 * messages use. Internal to src/attest.
 *
 * The reader walks caller-owned bytes through a bounded cursor: it allocates nothing,
 * never recurses, and hands out spans that point into the input. It accepts definite
 * lengths and preferred (shortest) heads only, so every value has one encoding; what a
 * value may be (a map, a null, a tag) is the caller's decision, one head at a time.
 * libcbor 0.8 is not used on untrusted bytes: its cbor_load allocates an array's
 * claimed length before reading a single element (a 9-byte input asks for 512 GiB).
 * The writer appends preferred heads to a vbuf. Prefix acbor_ (libcbor owns cbor_).
 */
#ifndef VEIL_ATTEST_CBOR_H
#define VEIL_ATTEST_CBOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum {
    ACBOR_UINT = 0,
    ACBOR_NINT = 1,  /* the value is -1 - arg */
    ACBOR_BYTES = 2,
    ACBOR_TEXT = 3,
    ACBOR_ARRAY = 4,
    ACBOR_MAP = 5,
    ACBOR_TAG = 6,
    ACBOR_SIMPLE = 7, /* arg is the simple value (20 false, 21 true, 22 null) or a float's bits */
};
#define ACBOR_SIMPLE_NULL 22

typedef struct acbor_head {
    uint8_t major;
    bool is_float; /* major 7 with a 2-, 4- or 8-byte float: never accepted as a value here */
    uint64_t arg;  /* the count, length, integer or simple value */
} acbor_head;

/* Reads one head. For byte and text strings the content is NOT consumed (see
 * acbor_read_span). false: truncated, reserved (28..30), indefinite (31), or a head
 * longer than needed for its value. */
bool acbor_read_head(cursor *c, acbor_head *h);

/* After a BYTES or TEXT head: points *p at its arg bytes and consumes them.
 * false when fewer bytes are left. */
bool acbor_read_span(cursor *c, const acbor_head *h, const uint8_t **p, size_t *n);

/* Writers: 0, or -1 when memory runs out. */
int acbor_put_head(vbuf *b, uint8_t major, uint64_t arg);
int acbor_put_bytes(vbuf *b, const uint8_t *p, size_t n);
int acbor_put_text(vbuf *b, const char *s, size_t n);
int acbor_put_null(vbuf *b);
/* bytes, or null when p is NULL */
int acbor_put_bytes_or_null(vbuf *b, const uint8_t *p, size_t n);

#endif
