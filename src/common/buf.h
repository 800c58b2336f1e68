/* buf — a growable byte buffer and a bounded read cursor.
 *
 * vbuf owns its storage; vbuf_free releases it (vbuf_free_secure wipes first).
 * A vbuf that holds a secret grows only with the _secure calls: plain growth is
 * realloc, which may leave the old bytes in freed memory.
 * A cursor never owns memory: every read is length-checked against what is left
 * (s2n's stuffer idea), so no length taken off the wire is trusted to memcpy.
 */
#ifndef VEIL_BUF_H
#define VEIL_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
} vbuf;

#define VBUF_INIT {NULL, 0, 0}

int vbuf_reserve(vbuf *b, size_t extra);          /* 0 or -1 (ENOMEM/overflow) */
int vbuf_append(vbuf *b, const void *p, size_t n); /* 0 or -1 */
/* The same, but a move to a bigger block wipes the old one before freeing it. */
int vbuf_reserve_secure(vbuf *b, size_t extra);
int vbuf_append_secure(vbuf *b, const void *p, size_t n);
int vbuf_append_str(vbuf *b, const char *s);
int vbuf_printf(vbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int vbuf_append_hex(vbuf *b, const uint8_t *p, size_t n); /* lowercase hex */
/* s as a quoted JSON string, for secrets that must not pass through jansson
 * (whose allocator frees unwiped). Grows like vbuf_append_secure. -1, with
 * nothing appended, when s is not UTF-8 or memory runs out. */
int vbuf_append_json_string(vbuf *b, const char *s);
void vbuf_consume(vbuf *b, size_t n); /* drop n bytes from the front */
void vbuf_reset(vbuf *b);             /* len = 0, keeps storage */
void vbuf_free(vbuf *b);
void vbuf_free_secure(vbuf *b); /* wipes the whole capacity, then frees */
/* NUL-terminates (not counted in len) and returns data as a C string, or NULL. */
char *vbuf_cstr(vbuf *b);

typedef struct cursor {
    const uint8_t *p;
    size_t left;
} cursor;

static inline cursor cursor_make(const void *p, size_t n)
{
    cursor c = {(const uint8_t *)p, n};
    return c;
}
bool cursor_read_u8(cursor *c, uint8_t *v);
bool cursor_read_be16(cursor *c, uint16_t *v);
bool cursor_read_be32(cursor *c, uint32_t *v);
bool cursor_read_be64(cursor *c, uint64_t *v);
/* Points *out at the next n bytes (no copy) and advances. */
bool cursor_read_span(cursor *c, size_t n, const uint8_t **out);
bool cursor_skip(cursor *c, size_t n);

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
