#include "enclave/framing.h"

void jf_reset(jf_scanner *s)
{
    s->pos = 0;
    s->start = 0;
    s->depth = 0;
    s->started = s->in_string = s->escape = false;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

jf_status jf_scan(jf_scanner *s, const char *buf, size_t len, size_t *start, size_t *end)
{
    for (; s->pos < len; s->pos++) {
        char c = buf[s->pos];
        if (!s->started) {
            if (is_space(c))
                continue;
            if (c != '{')
                return JF_NOT_OBJECT;
            s->started = true;
            s->start = s->pos;
            s->depth = 1;
            continue;
        }
        if (s->in_string) {
            if (s->escape)
                s->escape = false;
            else if (c == '\\')
                s->escape = true;
            else if (c == '"')
                s->in_string = false;
            continue;
        }
        if (c == '"') {
            s->in_string = true;
        } else if (c == '{' || c == '[') {
            if (++s->depth > JF_MAX_DEPTH)
                return JF_TOO_DEEP;
        } else if (c == '}' || c == ']') {
            if (--s->depth == 0) {
                *start = s->start;
                *end = ++s->pos;
                return JF_COMPLETE;
            }
        }
    }
    return JF_NEED_MORE;
}
