#include "bedrock_sim.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/hex.h"
#include "common/secret.h"

#define DIRECTIVE_OPEN "[[sim:"
#define DIRECTIVE_OPEN_LEN 6
#define DIRECTIVE_CLOSE "]]"

static const char *const MODELS[] = {
    "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "us.anthropic.claude-3-opus-20240229-v1:0",
    "us.meta.llama3-3-70b-instruct-v1:0",
    "us.meta.llama3-2-90b-instruct-v1:0",
    "us.meta.llama3-2-11b-instruct-v1:0",
    "us.meta.llama3-1-70b-instruct-v1:0",
    "us.meta.llama3-1-8b-instruct-v1:0",
    "us.amazon.nova-pro-v1:0",
    "us.amazon.nova-lite-v1:0",
    "us.amazon.nova-micro-v1:0",
};

static const char *const FAULT_NAMES[] = {
    [BSIM_FAULT_NONE] = "none",           [BSIM_FAULT_DROP] = "drop",
    [BSIM_FAULT_BAD_CRC] = "bad-crc",     [BSIM_FAULT_THROTTLE] = "throttle",
    [BSIM_FAULT_VALIDATION] = "validation", [BSIM_FAULT_MODEL_ERROR] = "model-error",
    [BSIM_FAULT_HTTP_429] = "http-429",   [BSIM_FAULT_HTTP_500] = "http-500",
    [BSIM_FAULT_HTTP_400] = "http-400",   [BSIM_FAULT_EMPTY] = "empty",
    [BSIM_FAULT_HANG] = "hang",           [BSIM_FAULT_CLOSE_REUSED] = "close-reused",
};

/* Converse request fields Bedrock knows; anything else is "extraneous" (the original's
 * modelId-in-body rejection, spec §3.1). */
static const char *const TOP_LEVEL_KEYS[] = {
    "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
    "additionalModelRequestFields", "additionalModelResponseFieldPaths", "promptVariables",
    "requestMetadata", "performanceConfig",
};

const char *bsim_fault_name(bsim_fault f)
{
    if ((size_t)f < sizeof FAULT_NAMES / sizeof FAULT_NAMES[0])
        return FAULT_NAMES[f];
    return "?";
}

bool bsim_model_known(const char *model)
{
    for (size_t i = 0; i < sizeof MODELS / sizeof MODELS[0]; i++)
        if (strcmp(model, MODELS[i]) == 0)
            return true;
    return false;
}

/* ---------------------------------------------------------------- directives */

static int parse_num(const char *v, size_t n, long max, long *out)
{
    char tmp[24];
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    return parse_long(tmp, 0, max, out);
}

static bool tok_eq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static int apply_fault(bsim_options *o, const char *v, size_t n)
{
    static const char SLOW[] = "slow-first-byte=";
    if (n > sizeof SLOW - 1 && memcmp(v, SLOW, sizeof SLOW - 1) == 0)
        return parse_num(v + sizeof SLOW - 1, n - (sizeof SLOW - 1), BSIM_MAX_MS,
                         &o->slow_first_byte_ms);
    for (size_t f = 0; f < sizeof FAULT_NAMES / sizeof FAULT_NAMES[0]; f++) {
        if (tok_eq(v, n, FAULT_NAMES[f])) {
            o->fault = (bsim_fault)f;
            return 0;
        }
    }
    return -1;
}

static int apply_token(bsim_options *o, const char *t, size_t n)
{
    const char *eq = memchr(t, '=', n);
    if (!eq)
        return apply_fault(o, t, n); /* a bare token is a fault name */
    size_t klen = (size_t)(eq - t), vlen = n - klen - 1;
    const char *v = eq + 1;
    if (tok_eq(t, klen, "fault"))
        return apply_fault(o, v, vlen);
    if (tok_eq(t, klen, "chunks")) {
        long x;
        if (parse_num(v, vlen, BSIM_MAX_CHUNKS, &x) < 0 || x < 1)
            return -1;
        o->chunks = x;
        return 0;
    }
    if (tok_eq(t, klen, "chunk-size"))
        return parse_num(v, vlen, BSIM_MAX_CHUNK_SIZE, &o->chunk_size);
    if (tok_eq(t, klen, "interval-ms"))
        return parse_num(v, vlen, BSIM_MAX_MS, &o->interval_ms);
    if (tok_eq(t, klen, "slow-first-byte"))
        return parse_num(v, vlen, BSIM_MAX_MS, &o->slow_first_byte_ms);
    return -1;
}

int bsim_apply_directive(bsim_options *o, const char *s, size_t n, char *err, size_t errlen)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        size_t start = i;
        while (i < n && !isspace((unsigned char)s[i]))
            i++;
        if (i == start)
            break;
        if (apply_token(o, s + start, i - start) < 0) {
            int shown = i - start > 64 ? 64 : (int)(i - start);
            snprintf(err, errlen,
                     "Invalid simulator directive '%.*s' (keys: chunks=1..%ld, "
                     "chunk-size=0..%ld, interval-ms=0..%ld, slow-first-byte=0..%ld, "
                     "fault=none|drop|bad-crc|throttle|validation|model-error|http-429|"
                     "http-500|http-400|empty|hang|close-reused|slow-first-byte=MS).",
                     shown, s + start, BSIM_MAX_CHUNKS, BSIM_MAX_CHUNK_SIZE, BSIM_MAX_MS,
                     BSIM_MAX_MS);
            return -1;
        }
    }
    return 0;
}

/* Applies every [[sim: ...]] of text[0..n) and writes the text without them to out
 * (trimmed when at least one was found). */
static int strip_directives(const char *text, size_t n, bsim_options *o, vbuf *out, char *err,
                            size_t errlen)
{
    size_t i = 0;
    bool found = false;
    while (i < n) {
        const char *open = NULL;
        for (size_t k = i; k + DIRECTIVE_OPEN_LEN <= n; k++) {
            if (memcmp(text + k, DIRECTIVE_OPEN, DIRECTIVE_OPEN_LEN) == 0) {
                open = text + k;
                break;
            }
        }
        if (!open)
            break;
        size_t at = (size_t)(open - text), body = at + DIRECTIVE_OPEN_LEN, close = SIZE_MAX;
        for (size_t k = body; k + 2 <= n; k++) {
            if (text[k] == ']' && text[k + 1] == ']') {
                close = k;
                break;
            }
        }
        if (close == SIZE_MAX) {
            snprintf(err, errlen, "Unterminated simulator directive: '[[sim:' without ']]'.");
            return -1;
        }
        if (bsim_apply_directive(o, text + body, close - body, err, errlen) < 0)
            return -1;
        if (vbuf_append(out, text + i, at - i) < 0)
            return -1;
        found = true;
        i = close + 2;
    }
    if (vbuf_append(out, text + i, n - i) < 0)
        return -1;
    if (found) {
        size_t a = 0, b = out->len;
        while (a < b && isspace(out->data[a]))
            a++;
        while (b > a && isspace(out->data[b - 1]))
            b--;
        memmove(out->data, out->data + a, b - a);
        out->len = b - a;
    }
    return 0;
}

/* ---------------------------------------------------------------- routes */

static int percent_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hex_digit_value((unsigned char)s[i + 1])) < 0 ||
                (lo = hex_digit_value((unsigned char)s[i + 2])) < 0)
                return -1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        }
        if (ch == '\0' || o + 1 >= cap)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    return 0;
}

static bool ends_with(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && memcmp(s + n - l, lit, l) == 0;
}

bsim_route bsim_match_route(const char *method, size_t method_len, const char *path,
                            size_t path_len, char *model, size_t model_cap)
{
    static const char PREFIX[] = "/model/";
    static const char STREAM[] = "/converse-stream";
    static const char CONVERSE[] = "/converse";
    const size_t plen = sizeof PREFIX - 1;
    bsim_route r;
    size_t tail;

    if (!tok_eq(method, method_len, "POST") || path_len <= plen || memcmp(path, PREFIX, plen) != 0)
        return BSIM_ROUTE_NONE;
    if (path_len > plen + sizeof STREAM - 1 && ends_with(path, path_len, STREAM)) {
        r = BSIM_ROUTE_STREAM;
        tail = sizeof STREAM - 1;
    } else if (path_len > plen + sizeof CONVERSE - 1 && ends_with(path, path_len, CONVERSE)) {
        r = BSIM_ROUTE_CONVERSE;
        tail = sizeof CONVERSE - 1;
    } else {
        return BSIM_ROUTE_NONE;
    }
    const char *id = path + plen;
    size_t id_len = path_len - plen - tail;
    if (id_len == 0 || memchr(id, '/', id_len))
        return BSIM_ROUTE_NONE;
    if (percent_decode(id, id_len, model, model_cap) < 0)
        return BSIM_ROUTE_NONE;
    return r;
}

/* ---------------------------------------------------------------- the request body */

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i]))
            return false;
    return true;
}

/* Checks one message's content list; adds its text bytes to *bytes and, when text is
 * non-NULL, appends the concatenated text to it. */
static int check_content(json_t *content, size_t mi, unsigned long *bytes, vbuf *text,
                         char *err, size_t errlen)
{
    if (!json_is_array(content) || json_array_size(content) == 0) {
        snprintf(err, errlen,
                 "The content field in the Message object at messages.%zu is empty. Add a "
                 "ContentBlock object to the content field and try again.",
                 mi);
        return -1;
    }
    size_t ci;
    json_t *block;
    json_array_foreach(content, ci, block) {
        json_t *t = json_is_object(block) ? json_object_get(block, "text") : NULL;
        if (!json_is_string(t) || json_object_size(block) != 1) {
            snprintf(err, errlen,
                     "messages.%zu.content.%zu: this simulator accepts only {\"text\": string} "
                     "content blocks.",
                     mi, ci);
            return -1;
        }
        const char *s = json_string_value(t);
        size_t n = json_string_length(t);
        if (blank(s, n)) {
            snprintf(err, errlen,
                     "The text field in the ContentBlock object at messages.%zu.content.%zu is "
                     "blank. Add text to the text field, and try again.",
                     mi, ci);
            return -1;
        }
        *bytes += n;
        if (text && vbuf_append(text, s, n) < 0) {
            snprintf(err, errlen, "Out of memory.");
            return -1;
        }
    }
    return 0;
}

static int check_optional(json_t *root, char *err, size_t errlen)
{
    json_t *sys = json_object_get(root, "system");
    if (sys) {
        size_t i;
        json_t *b;
        if (!json_is_array(sys))
            goto bad_system;
        json_array_foreach(sys, i, b) {
            if (!json_is_object(b) || !json_is_string(json_object_get(b, "text")))
                goto bad_system;
        }
    }
    json_t *ic = json_object_get(root, "inferenceConfig");
    if (ic) {
        json_t *mt = json_is_object(ic) ? json_object_get(ic, "maxTokens") : NULL;
        json_t *temp = json_is_object(ic) ? json_object_get(ic, "temperature") : NULL;
        if (!json_is_object(ic) || (mt && (!json_is_integer(mt) || json_integer_value(mt) < 1)) ||
            (temp && (!json_is_number(temp) || json_number_value(temp) < 0 ||
                      json_number_value(temp) > 1))) {
            snprintf(err, errlen,
                     "Malformed input request: inferenceConfig must be an object with "
                     "maxTokens >= 1 and temperature in [0, 1], please reformat your input "
                     "and try again.");
            return -1;
        }
    }
    return 0;
bad_system:
    snprintf(err, errlen,
             "Malformed input request: system must be a list of {\"text\": string}, please "
             "reformat your input and try again.");
    return -1;
}

int bsim_parse_converse(const uint8_t *body, size_t len, bsim_options *o, bsim_request *out,
                        char *err, size_t errlen)
{
    json_error_t jerr;
    vbuf last = VBUF_INIT, echo = VBUF_INIT;
    unsigned long bytes = 0;
    int rc = -1;

    memset(out, 0, sizeof *out);
    json_t *root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        snprintf(err, errlen,
                 "Malformed input request: the body is not a JSON object, please reformat your "
                 "input and try again.");
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        bool known = false;
        for (size_t k = 0; k < sizeof TOP_LEVEL_KEYS / sizeof TOP_LEVEL_KEYS[0]; k++)
            known = known || strcmp(key, TOP_LEVEL_KEYS[k]) == 0;
        if (!known) {
            snprintf(err, errlen,
                     "Malformed input request: extraneous key [%.64s] is not permitted, please "
                     "reformat your input and try again.",
                     key);
            goto out;
        }
    }
    json_t *msgs = json_object_get(root, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        snprintf(err, errlen,
                 "A conversation must start with a user message. Try again with a conversation "
                 "that starts with a user message.");
        goto out;
    }
    size_t n = json_array_size(msgs), i;
    json_t *m;
    const char *prev = NULL;
    json_array_foreach(msgs, i, m) {
        json_t *role = json_is_object(m) ? json_object_get(m, "role") : NULL;
        const char *r = json_is_string(role) ? json_string_value(role) : "";
        if (strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0) {
            snprintf(err, errlen,
                     "messages.%zu.role: the role must be \"user\" or \"assistant\".", i);
            goto out;
        }
        if (i == 0 && strcmp(r, "user") != 0) {
            snprintf(err, errlen,
                     "A conversation must start with a user message. Try again with a "
                     "conversation that starts with a user message.");
            goto out;
        }
        if (prev && strcmp(prev, r) == 0) {
            snprintf(err, errlen,
                     "A conversation must alternate between user and assistant roles. Make sure "
                     "the conversation alternates between user and assistant roles and try "
                     "again.");
            goto out;
        }
        if (i + 1 == n && strcmp(r, "user") != 0) {
            snprintf(err, errlen,
                     "A conversation must end with a user message. Try again with a "
                     "conversation that ends with a user message.");
            goto out;
        }
        prev = r;
        if (check_content(json_object_get(m, "content"), i, &bytes, i + 1 == n ? &last : NULL,
                          err, errlen) < 0)
            goto out;
    }
    if (check_optional(root, err, errlen) < 0)
        goto out;
    if (strip_directives(last.data ? (const char *)last.data : "", last.len, o, &echo, err,
                         errlen) < 0)
        goto out;
    out->echo = malloc(echo.len + 1);
    if (!out->echo) {
        snprintf(err, errlen, "Out of memory.");
        goto out;
    }
    if (echo.len)
        memcpy(out->echo, echo.data, echo.len);
    out->echo[echo.len] = '\0';
    out->echo_len = echo.len;
    out->input_tokens = bytes / 4;
    rc = 0;
out:
    vbuf_free_secure(&last);
    vbuf_free_secure(&echo);
    json_decref(root);
    return rc;
}

void bsim_request_free(bsim_request *r)
{
    if (!r)
        return;
    if (r->echo) {
        secure_wipe(r->echo, r->echo_len);
        free(r->echo);
    }
    memset(r, 0, sizeof *r);
}

/* ---------------------------------------------------------------- the answer */

int bsim_delta_text(const bsim_request *r, const bsim_options *o, long i, vbuf *out)
{
    if (i == 0) {
        if (vbuf_append_str(out, "Echo: ") < 0)
            return -1;
        return vbuf_append(out, r->echo, r->echo_len);
    }
    size_t before = out->len;
    if (vbuf_printf(out, " chunk %ld", i) < 0)
        return -1;
    size_t have = out->len - before;
    if (o->chunk_size > 0 && (size_t)o->chunk_size > have) {
        size_t pad = (size_t)o->chunk_size - have;
        if (vbuf_reserve(out, pad) < 0)
            return -1;
        memset(out->data + out->len, '.', pad);
        out->len += pad;
    }
    return 0;
}

uint64_t bsim_answer_len(const bsim_request *r, const bsim_options *o)
{
    uint64_t total = 6 + (uint64_t)r->echo_len;
    for (long i = 1; i < o->chunks; i++) {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, " chunk %ld", i);
        uint64_t len = (uint64_t)(n > 0 ? n : 0);
        total += o->chunk_size > 0 && (uint64_t)o->chunk_size > len ? (uint64_t)o->chunk_size : len;
    }
    return total;
}
