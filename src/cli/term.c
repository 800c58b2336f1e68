#include "cli/term.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"

enum {
    T_TEXT,
    T_ESC,        /* after ESC */
    T_ESC_INTER,  /* ESC and intermediate bytes, waiting for the final byte */
    T_CSI,        /* ESC [ or C1 CSI: parameters until a final byte */
    T_STRING,     /* OSC, DCS, SOS, PM, APC: until BEL or ST */
    T_STRING_ESC, /* ESC inside a string: ST is ESC \ */
};

static const uint8_t REPLACEMENT[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */

void term_filter_init(term_filter *f)
{
    memset(f, 0, sizeof *f);
}

static bool is_c1_string(uint32_t cp)
{
    return cp == 0x90 || cp == 0x98 || cp == 0x9D || cp == 0x9E || cp == 0x9F; /* DCS SOS OSC PM APC */
}

static bool printable(uint32_t cp)
{
    if (cp == '\n' || cp == '\t')
        return true;
    return cp >= 0x20 && cp != 0x7F && !(cp >= 0x80 && cp <= 0x9F);
}

/* One decoded character (its UTF-8 bytes in b). Nothing but printable
 * characters is ever written, so no output can form a sequence; the states only
 * drop a sequence's parameters along with its introducer. */
static int on_char(term_filter *f, uint32_t cp, const uint8_t *b, size_t n, vbuf *out)
{
    for (;;) {
        switch (f->state) {
        case T_TEXT:
            if (cp == 0x1B)
                f->state = T_ESC;
            else if (cp == 0x9B)
                f->state = T_CSI;
            else if (is_c1_string(cp))
                f->state = T_STRING;
            else if (printable(cp))
                return vbuf_append(out, b, n);
            return 0;
        case T_ESC:
            if (cp == '[')
                f->state = T_CSI;
            else if (cp == ']' || cp == 'P' || cp == 'X' || cp == '^' || cp == '_')
                f->state = T_STRING;
            else if (cp >= 0x20 && cp <= 0x2F)
                f->state = T_ESC_INTER;
            else if (cp >= 0x30 && cp <= 0x7E)
                f->state = T_TEXT; /* a two-byte sequence (ESC c, ESC 7, ...) */
            else {
                f->state = T_TEXT;
                continue;
            }
            return 0;
        case T_ESC_INTER:
            if (cp >= 0x20 && cp <= 0x2F)
                return 0;
            f->state = T_TEXT;
            if (cp >= 0x30 && cp <= 0x7E)
                return 0;
            continue;
        case T_CSI:
            if (cp >= 0x20 && cp <= 0x3F)
                return 0;
            f->state = T_TEXT;
            if (cp >= 0x40 && cp <= 0x7E)
                return 0;
            continue; /* malformed: the rest is plain text again */
        case T_STRING:
            if (cp == 0x07 || cp == 0x9C)
                f->state = T_TEXT;
            else if (cp == 0x1B)
                f->state = T_STRING_ESC;
            else if (cp == '\n') { /* unterminated: hide at most the rest of its line */
                f->state = T_TEXT;
                continue;
            }
            return 0;
        case T_STRING_ESC:
            if (cp == '\\') {
                f->state = T_TEXT;
                return 0;
            }
            f->state = T_ESC;
            continue;
        default:
            f->state = T_TEXT;
            continue;
        }
    }
}

/* The character held in pend is complete. */
static int flush_char(term_filter *f, vbuf *out)
{
    uint32_t cp = f->pend[0] & (0xFF >> (f->total + 1));
    for (size_t i = 1; i < f->total; i++)
        cp = cp << 6 | (f->pend[i] & 0x3F);
    int rc = on_char(f, cp, f->pend, f->total, out);
    f->npend = f->total = 0;
    return rc;
}

/* A lead byte: how many bytes its character has and the range of the second
 * (no overlong forms, no surrogates, nothing above U+10FFFF). 0: not a lead. */
static uint8_t lead(term_filter *f, uint8_t c)
{
    f->lo = 0x80;
    f->hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0)
            f->lo = 0xA0;
        if (c == 0xED)
            f->hi = 0x9F;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0)
            f->lo = 0x90;
        if (c == 0xF4)
            f->hi = 0x8F;
        return 4;
    }
    return 0;
}

int term_filter_feed(term_filter *f, const void *in, size_t n, vbuf *out)
{
    const uint8_t *p = in;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (f->npend) {
            if (c >= f->lo && c <= f->hi) {
                f->pend[f->npend++] = c;
                f->lo = 0x80;
                f->hi = 0xBF;
                if (f->npend == f->total && flush_char(f, out) < 0)
                    return -1;
                continue;
            }
            /* a broken character: one U+FFFD for it, then c on its own */
            f->npend = f->total = 0;
            if (on_char(f, 0xFFFD, REPLACEMENT, sizeof REPLACEMENT, out) < 0)
                return -1;
        }
        if (c < 0x80) {
            if (on_char(f, c, &c, 1, out) < 0)
                return -1;
        } else if ((f->total = lead(f, c)) != 0) {
            f->pend[0] = c;
            f->npend = 1;
        } else if (c > 0x9F) { /* a stray 0x80-0x9F byte is an 8-bit C1 control: dropped */
            if (on_char(f, 0xFFFD, REPLACEMENT, sizeof REPLACEMENT, out) < 0)
                return -1;
        }
    }
    return 0;
}

int term_filter_finish(term_filter *f, vbuf *out)
{
    int rc = 0;
    if (f->npend)
        rc = on_char(f, 0xFFFD, REPLACEMENT, sizeof REPLACEMENT, out);
    secure_wipe(f, sizeof *f);
    return rc;
}

char *term_safe(const void *in, size_t n)
{
    term_filter f;
    vbuf out = VBUF_INIT;
    term_filter_init(&f);
    if (term_filter_feed(&f, in, n, &out) < 0 || term_filter_finish(&f, &out) < 0 ||
        vbuf_reserve(&out, 1) < 0) {
        vbuf_free_secure(&out);
        return NULL;
    }
    out.data[out.len] = '\0';
    return (char *)out.data;
}

int term_fprintf(FILE *f, const char *fmt, ...)
{
    va_list ap;
    char *raw = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&raw, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    char *safe = term_safe(raw, (size_t)n);
    secure_wipe(raw, (size_t)n);
    free(raw);
    if (!safe)
        return -1;
    int rc = fputs(safe, f) < 0 ? -1 : 0;
    secure_wipe(safe, strlen(safe));
    free(safe);
    return rc;
}

int term_fwrite(FILE *f, term_filter *flt, const void *p, size_t n)
{
    vbuf out = VBUF_INIT;
    int rc = term_filter_feed(flt, p, n, &out);
    if (rc == 0 && out.len && fwrite(out.data, 1, out.len, f) != out.len)
        rc = -1;
    vbuf_free_secure(&out);
    return rc;
}

int term_fwrite_end(FILE *f, term_filter *flt)
{
    vbuf out = VBUF_INIT;
    int rc = term_filter_finish(flt, &out);
    if (rc == 0 && out.len && fwrite(out.data, 1, out.len, f) != out.len)
        rc = -1;
    vbuf_free_secure(&out);
    return rc;
}
