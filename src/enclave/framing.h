/* framing — finds where one JSON object ends in a byte stream, so the enclave
 * accepts both the original's unframed requests (an object, no delimiter) and
 * newline-terminated ones, split across any number of reads.
 *
 * A small state machine over bytes: it tracks strings, escapes and brace depth,
 * and never needs the whole stream at once. It does not validate JSON (jansson
 * does that on the span it finds). Pure: no allocation, no I/O.
 */
#ifndef VEIL_ENCLAVE_FRAMING_H
#define VEIL_ENCLAVE_FRAMING_H

#include <stdbool.h>
#include <stddef.h>

typedef enum jf_status {
    JF_NEED_MORE = 0, /* no complete object yet */
    JF_COMPLETE,      /* an object ends at *end */
    JF_NOT_OBJECT,    /* the first non-space byte is not '{' */
    JF_TOO_DEEP,      /* nesting beyond JF_MAX_DEPTH */
} jf_status;

#define JF_MAX_DEPTH 512

typedef struct jf_scanner {
    size_t pos;   /* bytes of the current buffer already scanned */
    size_t start; /* offset of the object's '{' */
    int depth;
    bool started, in_string, escape;
} jf_scanner;

void jf_reset(jf_scanner *s);

/* Scans buf[0..len) from where the previous call stopped (the buffer may have
 * grown in between, but its prefix must be unchanged). On JF_COMPLETE, *start and
 * *end delimit the object [start, end). Leading whitespace (and newlines left
 * from a previous request) is skipped. */
jf_status jf_scan(jf_scanner *s, const char *buf, size_t len, size_t *start, size_t *end);

#endif
