#include "common/log.h"

#include <limits.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "common/hex.h"

/* process-wide logging config: set once at start, read everywhere */
static log_level g_level = LOG_INFO;
static char g_prog[32] = "veil";
static int g_fd = STDERR_FILENO;
/* per thread: which worker's lines these are */
static _Thread_local int t_worker = -1;

static const char *const LEVEL_NAMES[] = {"debug", "info", "warn", "error", "off"};

int log_level_parse(const char *s, log_level *out)
{
    for (int i = 0; i <= LOG_OFF; i++) {
        if (strcasecmp(s, LEVEL_NAMES[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_init(const char *prog)
{
    snprintf(g_prog, sizeof g_prog, "%s", prog);
    const char *lv = getenv("VEIL_LOG_LEVEL");
    log_level parsed;
    if (lv && *lv && log_level_parse(lv, &parsed) == 0)
        g_level = parsed;
}

void log_set_level(log_level lvl) { g_level = lvl; }
void log_set_fd(int fd) { g_fd = fd; }
void log_set_worker(int index) { t_worker = index < 0 ? -1 : index; }
bool log_enabled(log_level lvl) { return lvl >= g_level && lvl < LOG_OFF; }

void log_new_rid(char out[LOG_RID_LEN + 1])
{
    unsigned char r[LOG_RID_LEN / 2];
    if (RAND_bytes(r, sizeof r) != 1)
        memset(r, 0, sizeof r);
    hex_encode(r, sizeof r, out);
}

/* ---- the line being built ---- */

/* A fixed buffer; once a write does not fit, the rest of the event is dropped. */
typedef struct line_buf {
    char *p;
    size_t len;
    size_t cap; /* room for text: the final newline has its own byte */
    bool full;
} line_buf;

static size_t room(const line_buf *b) { return b->full ? 0 : b->cap - b->len; }

static void put(line_buf *b, const char *s, size_t n)
{
    if (n > room(b)) {
        n = room(b);
        b->full = true;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* ---- values ---- */

#define TRUNC_MARK "..."
#define TRUNC_MARK_LEN (sizeof TRUNC_MARK - 1)
#define MAX_WIDTH LOG_LINE_MAX /* a wider printf width could not fit a line anyway */
#define FORMAT_ERROR " log_format_error=1" /* a conversion log_emit cannot format */

/* A byte that puts a value in quotes: a field separator, a quote, an escape, or
 * anything outside printable ASCII. A newline written as a space still forged a
 * field (`type=x event=admin_login user=root`, issue F0): quoting is what keeps
 * a value one value. */
static bool needs_quotes(unsigned char c) { return c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= 0x7f; }

/* How byte c is written inside quotes; returns the length (1, 2 or 4). */
static size_t escape_byte(unsigned char c, char out[4])
{
    static const char HEX[] = "0123456789abcdef";
    char e;
    switch (c) {
    case '"': e = '"'; break;
    case '\\': e = '\\'; break;
    case '\n': e = 'n'; break;
    case '\r': e = 'r'; break;
    case '\t': e = 't'; break;
    default:
        if (c >= 0x20 && c < 0x7f) {
            out[0] = (char)c;
            return 1;
        }
        out[0] = '\\';
        out[1] = 'x';
        out[2] = HEX[c >> 4];
        out[3] = HEX[c & 15];
        return 4;
    }
    out[0] = '\\';
    out[1] = e;
    return 2;
}

/* One %s value as printf would produce it: n bytes of s, padded with spaces to the
 * width (after them for the '-' flag). */
typedef struct value {
    const char *s;
    size_t n;
    size_t pad;
    bool pad_after;
    bool in_format_quotes; /* the format wraps it: `key=\"%s\"` */
} value;

static size_t value_len(const value *v) { return v->n + v->pad; }

static unsigned char value_at(const value *v, size_t i)
{
    if (v->pad_after)
        return i < v->n ? (unsigned char)v->s[i] : ' ';
    return i < v->pad ? ' ' : (unsigned char)v->s[i - v->pad];
}

/* Writes a value, escaped, in quotes unless it needs none or the format has them.
 * It takes at most LOG_VALUE_MAX bytes and what the line has left (less one byte
 * for the format's own closing quote); a longer value is cut at a whole escape and
 * ends in "...", inside its quotes. */
static void put_value(line_buf *b, const value *v)
{
    size_t total = value_len(v);
    bool quote = false;
    for (size_t i = 0; i < total && !v->in_format_quotes && !quote; i++)
        quote = needs_quotes(value_at(v, i));
    bool escape = quote || v->in_format_quotes;
    size_t quotes = quote ? 2 : 0;
    size_t budget = room(b);
    if (v->in_format_quotes)
        budget = budget ? budget - 1 : 0;
    if (budget > LOG_VALUE_MAX)
        budget = LOG_VALUE_MAX;

    char e[4];
    size_t need = quotes;
    for (size_t i = 0; i < total && need <= budget; i++)
        need += escape ? escape_byte(value_at(v, i), e) : 1;
    size_t limit = need <= budget ? need : budget < quotes + TRUNC_MARK_LEN ? 0 : budget - quotes - TRUNC_MARK_LEN;
    if (need > budget && limit == 0) {
        if (!v->in_format_quotes)
            b->full = true; /* no room even for `"..."`: the line ends before this value */
        return;
    }
    if (quote)
        put(b, "\"", 1);
    size_t used = 0;
    for (size_t i = 0; i < total; i++) {
        unsigned char c = value_at(v, i);
        size_t k = 1;
        if (escape)
            k = escape_byte(c, e);
        else
            e[0] = (char)c;
        if (need > budget && used + k > limit)
            break;
        put(b, e, k);
        used += k;
    }
    if (need > budget)
        put(b, TRUNC_MARK, TRUNC_MARK_LEN);
    if (quote)
        put(b, "\"", 1);
}

static void put_str_value(line_buf *b, const char *s)
{
    value v = {s, strlen(s), 0, false, false};
    put_value(b, &v);
}

/* ---- the format ---- */

typedef enum { LM_NONE, LM_HH, LM_H, LM_L, LM_LL, LM_J, LM_Z, LM_T, LM_LD } len_mod;

/* One conversion: its printf spec with every '*' replaced by the number it took. */
typedef struct conv {
    char spec[48];
    size_t k;
    long width;     /* -1: none */
    long precision; /* -1: none */
    bool left;
    len_mod lm;
    char c;
} conv;

static int spec_add(conv *cv, const char *s, size_t n)
{
    if (n >= sizeof cv->spec - cv->k)
        return -1;
    memcpy(cv->spec + cv->k, s, n);
    cv->k += n;
    cv->spec[cv->k] = '\0';
    return 0;
}

/* A width or precision: digits, or '*' taken from the arguments. */
static int parse_num(conv *cv, const char **q, va_list *ap, long *out, bool is_width)
{
    long v = -1;
    if (**q == '*') {
        int a = va_arg(*ap, int);
        (*q)++;
        if (a < 0) {
            if (!is_width)
                return 0; /* a negative precision is no precision */
            cv->left = true;
            a = a == INT_MIN ? INT_MAX : -a;
            if (spec_add(cv, "-", 1) < 0)
                return -1;
        }
        v = a;
    } else if (**q >= '0' && **q <= '9') {
        v = 0;
        while (**q >= '0' && **q <= '9') {
            if (v <= MAX_WIDTH)
                v = v * 10 + (**q - '0');
            (*q)++;
        }
    } else if (!is_width) {
        v = 0; /* "%.s": precision 0 */
    }
    if (v < 0)
        return 0;
    if (v > MAX_WIDTH)
        v = MAX_WIDTH;
    char num[24];
    int n = snprintf(num, sizeof num, "%s%ld", is_width ? "" : ".", v);
    *out = v;
    return spec_add(cv, num, (size_t)n);
}

/* Parses the conversion at pct (a '%'); *end is the byte after it. */
static int parse_conv(const char *pct, const char **end, va_list *ap, conv *cv)
{
    memset(cv, 0, sizeof *cv);
    cv->width = cv->precision = -1;
    cv->spec[cv->k++] = '%';
    const char *q = pct + 1;
    while (*q && strchr("-+ #0", *q)) {
        if (*q == '-')
            cv->left = true;
        if (spec_add(cv, q, 1) < 0)
            return -1;
        q++;
    }
    if (parse_num(cv, &q, ap, &cv->width, true) < 0)
        return -1;
    if (*q == '.') {
        q++;
        if (parse_num(cv, &q, ap, &cv->precision, false) < 0)
            return -1;
    }
    const char *lm = q;
    if (q[0] == 'h' && q[1] == 'h') {
        cv->lm = LM_HH;
        q += 2;
    } else if (q[0] == 'l' && q[1] == 'l') {
        cv->lm = LM_LL;
        q += 2;
    } else if (*q && strchr("hljztL", *q)) {
        static const char LMS[] = "hljztL";
        static const len_mod MODS[] = {LM_H, LM_L, LM_J, LM_Z, LM_T, LM_LD};
        cv->lm = MODS[strchr(LMS, *q) - LMS];
        q++;
    }
    if (spec_add(cv, lm, (size_t)(q - lm)) < 0 || !*q)
        return -1;
    cv->c = *q++;
    if (spec_add(cv, &cv->c, 1) < 0)
        return -1;
    *end = q;
    return 0;
}

/* The spec is built from a format that -Wformat already checked at the call site,
 * and the argument is read with the type that spec names. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static int format_number(const conv *cv, va_list *ap, char *out, size_t cap)
{
    const char *f = cv->spec;
    switch (cv->c) {
    case 'd':
    case 'i':
        switch (cv->lm) {
        case LM_NONE: case LM_HH: case LM_H: return snprintf(out, cap, f, va_arg(*ap, int));
        case LM_L: return snprintf(out, cap, f, va_arg(*ap, long));
        case LM_LL: return snprintf(out, cap, f, va_arg(*ap, long long));
        case LM_J: return snprintf(out, cap, f, va_arg(*ap, intmax_t));
        case LM_Z: return snprintf(out, cap, f, va_arg(*ap, ssize_t));
        case LM_T: return snprintf(out, cap, f, va_arg(*ap, ptrdiff_t));
        default: return -1;
        }
    case 'u':
    case 'o':
    case 'x':
    case 'X':
        switch (cv->lm) {
        case LM_NONE: case LM_HH: case LM_H: return snprintf(out, cap, f, va_arg(*ap, unsigned));
        case LM_L: return snprintf(out, cap, f, va_arg(*ap, unsigned long));
        case LM_LL: return snprintf(out, cap, f, va_arg(*ap, unsigned long long));
        case LM_J: return snprintf(out, cap, f, va_arg(*ap, uintmax_t));
        case LM_Z: return snprintf(out, cap, f, va_arg(*ap, size_t));
        case LM_T: return snprintf(out, cap, f, va_arg(*ap, ptrdiff_t));
        default: return -1;
        }
    case 'c':
        return cv->lm == LM_NONE ? snprintf(out, cap, f, va_arg(*ap, int)) : -1;
    case 'p':
        return cv->lm == LM_NONE ? snprintf(out, cap, f, va_arg(*ap, void *)) : -1;
    case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': case 'a': case 'A':
        if (cv->lm == LM_LD)
            return snprintf(out, cap, f, va_arg(*ap, long double));
        return cv->lm == LM_NONE || cv->lm == LM_L ? snprintf(out, cap, f, va_arg(*ap, double)) : -1;
    default:
        return -1; /* %n, wide strings, glibc's %m: not in a log format */
    }
}
#pragma GCC diagnostic pop

/* The fields: fmt with its conversions filled in, every %s escaped as a value.
 * Returns -1 at a conversion it cannot format (the arguments after it cannot be
 * located, so the line stops there). */
static int format_fields(line_buf *b, const char *fmt, va_list *ap)
{
    const char *p = fmt;
    while (*p && !b->full) {
        const char *pct = strchr(p, '%');
        if (!pct) {
            put(b, p, strlen(p));
            break;
        }
        put(b, p, (size_t)(pct - p));
        conv cv;
        const char *end;
        if (parse_conv(pct, &end, ap, &cv) < 0)
            return -1;
        p = end;
        if (cv.c == '%') {
            put(b, "%", 1);
            continue;
        }
        if (cv.c == 's') {
            if (cv.lm != LM_NONE)
                return -1;
            const char *s = va_arg(*ap, const char *);
            if (!s)
                s = "(null)";
            value v = {s, cv.precision >= 0 ? strnlen(s, (size_t)cv.precision) : strlen(s), 0,
                       cv.left, pct > fmt && pct[-1] == '"' && *end == '"'};
            if (cv.width > 0 && (size_t)cv.width > v.n)
                v.pad = (size_t)cv.width - v.n;
            put_value(b, &v);
            continue;
        }
        char num[512];
        int n = format_number(&cv, ap, num, sizeof num);
        if (n < 0)
            return -1;
        put(b, num, (size_t)n < sizeof num ? (size_t)n : sizeof num - 1);
    }
    return 0;
}

void log_emit(log_level lvl, const char *rid, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    line_buf b = {line, 0, sizeof line - 1, false};
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char ts[80];
    int n = snprintf(ts, sizeof ts, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s prog=",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), LEVEL_NAMES[lvl]);
    if (n < 0 || (size_t)n >= sizeof ts)
        return;
    put(&b, ts, (size_t)n);
    put_str_value(&b, g_prog);
    if (t_worker >= 0) {
        char w[24];
        int wn = snprintf(w, sizeof w, " worker=%d", t_worker);
        put(&b, w, (size_t)wn);
    }
    put(&b, " rid=", 5);
    put_str_value(&b, rid && *rid ? rid : "-");
    put(&b, " ", 1);
    va_list ap;
    va_start(ap, fmt);
    if (format_fields(&b, fmt, &ap) < 0)
        put(&b, FORMAT_ERROR, sizeof FORMAT_ERROR - 1);
    va_end(ap);
    /* last line of defence: whatever a format or a %c let through, the line holds
     * printable ASCII only, so it stays one line */
    for (size_t i = 0; i < b.len; i++)
        if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x7f)
            line[i] = '?';
    line[b.len++] = '\n';
    ssize_t w = write(g_fd, line, b.len);
    (void)w;
}
