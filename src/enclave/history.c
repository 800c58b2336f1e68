#include "enclave/history.h"

#include <stdlib.h>
#include <string.h>

static const char *const ROLE_NAMES[] = {"user", "assistant"};

int turn_role_parse(const char *s)
{
    if (strcmp(s, "user") == 0)
        return ROLE_USER;
    if (strcmp(s, "assistant") == 0)
        return ROLE_ASSISTANT;
    return -1;
}

void history_init(history *h)
{
    memset(h, 0, sizeof *h);
}

static void refresh_views(history *h)
{
    for (size_t i = 0; i < h->n; i++) {
        h->msgs[i].text = (const char *)h->texts[i].data;
        h->msgs[i].len = h->texts[i].len;
    }
}

int history_add(history *h, turn_role role, const char *text, size_t len)
{
    if (h->n && strcmp(h->msgs[h->n - 1].role, ROLE_NAMES[role]) == 0) {
        vbuf *t = &h->texts[h->n - 1];
        /* the merged turn grows: secure growth leaves no copy of the older text */
        if (vbuf_append_secure(t, "\n\n", 2) < 0 || vbuf_append_secure(t, text, len) < 0)
            return -1;
        refresh_views(h);
        return 0;
    }
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        bedrock_message *m = realloc(h->msgs, cap * sizeof *m);
        if (!m)
            return -1;
        h->msgs = m;
        vbuf *t = realloc(h->texts, cap * sizeof *t);
        if (!t)
            return -1;
        h->texts = t;
        h->cap = cap;
    }
    vbuf nb = VBUF_INIT;
    if (vbuf_append_secure(&nb, text, len) < 0 || vbuf_cstr(&nb) == NULL) {
        vbuf_free_secure(&nb);
        return -1;
    }
    h->texts[h->n] = nb;
    h->msgs[h->n].role = ROLE_NAMES[role];
    h->n++;
    refresh_views(h);
    return 0;
}

const char *history_check(const history *h)
{
    if (h->n == 0)
        return "no messages";
    if (strcmp(h->msgs[0].role, "user") != 0)
        return "history must start with a user message";
    if (strcmp(h->msgs[h->n - 1].role, "user") != 0)
        return "the last message must be from the user";
    return NULL; /* alternation holds by construction: history_add merges repeats */
}

void history_free(history *h)
{
    for (size_t i = 0; i < h->n; i++)
        vbuf_free_secure(&h->texts[i]);
    free(h->texts);
    free(h->msgs);
    memset(h, 0, sizeof *h);
}
