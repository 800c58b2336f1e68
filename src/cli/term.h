/* term — text that came from the server or the model, made safe for a terminal.
 *
 * A hostile server (or a model coaxed by a prompt) could otherwise send escape
 * sequences that retitle the window, rewrite what is on screen, set clipboard
 * contents (OSC 52) or fake a prompt. Everything the CLI prints from the wire goes
 * through here: ESC sequences (CSI, OSC, DCS, ...) are removed whole, C0 controls
 * except \n and \t, DEL and C1 controls (U+0080-U+009F, and raw 0x80-0x9F bytes)
 * are dropped, and bytes that are not valid UTF-8 become U+FFFD. The output is
 * valid UTF-8. The filter is incremental: a sequence or a character split between
 * two chunks of a streamed answer is handled as if it had come in one piece.
 */
#ifndef VEIL_CLI_TERM_H
#define VEIL_CLI_TERM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/buf.h"

typedef struct term_filter {
    uint8_t state;   /* text, or inside an escape sequence */
    uint8_t pend[4]; /* a UTF-8 character not yet complete */
    uint8_t npend, total, lo, hi; /* bytes held, bytes expected, range of the next one */
} term_filter;

void term_filter_init(term_filter *f);
/* Appends the safe form of in to out: 0, or -1 when out cannot grow. */
int term_filter_feed(term_filter *f, const void *in, size_t n, vbuf *out);
/* The end of the text: an unfinished character becomes U+FFFD; the filter is reset. */
int term_filter_finish(term_filter *f, vbuf *out);

/* The safe form of one whole text, NUL-terminated; the caller frees. NULL on ENOMEM. */
char *term_safe(const void *in, size_t n);

/* fprintf whose whole output is made safe (the format's own \n and \t pass). */
int term_fprintf(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Streams n bytes of a longer text through flt to f; the temporary copy is wiped
 * (it may be a model's answer). */
int term_fwrite(FILE *f, term_filter *flt, const void *p, size_t n);
/* Ends a streamed text started with term_fwrite. */
int term_fwrite_end(FILE *f, term_filter *flt);

#endif
