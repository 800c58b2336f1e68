#include "server/http/validate.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/hex.h"
#include "crypto/ep.h"
#include "crypto/primitives.h"

void v_reply_at(api_req *r, const char *type, v_loc loc, const char *msg, const json_t *input)
{
    const char *l[V_LOC_MAX + 1];
    l[0] = "body";
    for (size_t i = 0; i < loc.n; i++)
        l[i + 1] = loc.p[i];
    api_reply_422(r, type, l, loc.n + 1, msg, input);
}

/* The path of the non-NULL names among a, b, c, in order. */
static v_loc loc_of(const char *a, const char *b, const char *c)
{
    v_loc loc = {{NULL}, 0};
    const char *parts[] = {a, b, c};
    for (size_t i = 0; i < 3; i++)
        if (parts[i])
            loc.p[loc.n++] = parts[i];
    return loc;
}

static v_loc loc_push(v_loc loc, const char *name)
{
    if (loc.n < V_LOC_MAX)
        loc.p[loc.n++] = name;
    return loc;
}

bool v_object(api_req *r, const json_t *body)
{
    if (json_is_object(body))
        return true;
    v_reply_at(r, "model_attributes_type", loc_of(NULL, NULL, NULL),
               "Input should be a valid dictionary or object to extract fields from", body);
    return false;
}

void v_lower(json_t *str)
{
    char buf[8192];
    size_t n = json_string_length(str);
    if (n >= sizeof buf) {
        char *big = strdup(json_string_value(str));
        if (!big)
            return;
        for (char *p = big; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        json_string_set(str, big);
        free(big);
        return;
    }
    memcpy(buf, json_string_value(str), n + 1);
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)tolower((unsigned char)buf[i]);
    json_string_set(str, buf);
}

/* present and a string, else missing / string_type */
static bool string_at(api_req *r, const json_t *v, v_loc loc)
{
    if (!v) {
        v_reply_at(r, "missing", loc, "Field required", NULL);
        return false;
    }
    if (!json_is_string(v)) {
        v_reply_at(r, "string_type", loc, "Input should be a valid string", v);
        return false;
    }
    return true;
}

bool v_hex_at(api_req *r, json_t *v, v_loc loc, size_t exact, size_t min)
{
    if (!string_at(r, v, loc))
        return false;
    size_t n = json_string_length(v);
    char msg[96];
    size_t lo = exact ? exact : min;
    if (n < lo) {
        snprintf(msg, sizeof msg, "String should have at least %zu character%s", lo, lo == 1 ? "" : "s");
        v_reply_at(r, "string_too_short", loc, msg, v);
        return false;
    }
    if (exact && n > exact) {
        snprintf(msg, sizeof msg, "String should have at most %zu characters", exact);
        v_reply_at(r, "string_too_long", loc, msg, v);
        return false;
    }
    if (!hex_is_valid(json_string_value(v), n)) {
        v_reply_at(r, "value_error", loc, "Value error, Invalid hex string", v);
        return false;
    }
    v_lower(v);
    return true;
}

bool v_hex(api_req *r, json_t *obj, const char *loc0, const char *loc1, const char *name, size_t exact,
           size_t min)
{
    return v_hex_at(r, json_object_get(obj, name), loc_of(loc0, loc0 ? loc1 : NULL, name), exact, min);
}

bool v_x25519_key(api_req *r, json_t *obj, const char *loc0, const char *name)
{
    if (!v_hex(r, obj, loc0, NULL, name, 64, 0))
        return false;
    const json_t *v = json_object_get(obj, name);
    uint8_t key[32];
    if (hex_decode_exact(json_string_value(v), 64, key, sizeof key) == 0 && x25519_public_key_ok(key))
        return true;
    v_reply_at(r, "value_error", loc_of(loc0, name, NULL),
               "Value error, not a valid X25519 public key (a low-order point)", v);
    return false;
}

bool v_str_at(api_req *r, const json_t *v, v_loc loc, size_t max)
{
    if (!string_at(r, v, loc))
        return false;
    size_t n = json_string_length(v);
    if (n == 0) {
        v_reply_at(r, "string_too_short", loc, "String should have at least 1 character", v);
        return false;
    }
    if (n > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "String should have at most %zu characters", max);
        v_reply_at(r, "string_too_long", loc, msg, v);
        return false;
    }
    return true;
}

bool v_string(api_req *r, const json_t *obj, const char *loc0, const char *name, size_t max)
{
    return v_str_at(r, json_object_get(obj, name), loc_of(loc0, name, NULL), max);
}

bool v_ep_at(api_req *r, json_t *payload, v_loc loc)
{
    if (!payload) {
        v_reply_at(r, "missing", loc, "Field required", NULL);
        return false;
    }
    if (!json_is_object(payload)) {
        v_reply_at(r, "model_attributes_type", loc,
                   "Input should be a valid dictionary or object to extract fields from", payload);
        return false;
    }
    for (size_t i = 0; i < EP_N_FIELDS; i++) {
        const ep_field *f = &EP_FIELDS[i];
        if (!v_hex_at(r, json_object_get(payload, f->name), loc_push(loc, f->name), f->hex_len, f->hex_min))
            return false;
    }
    return true;
}

bool v_ep(api_req *r, json_t *obj, const char *loc0, const char *name)
{
    return v_ep_at(r, json_object_get(obj, name), loc_of(loc0, name, NULL));
}

bool v_ep_item(api_req *r, json_t *payload, const char *loc0, const char *name, int index)
{
    (void)loc0;
    char idx[16];
    snprintf(idx, sizeof idx, "%d", index);
    return v_ep_at(r, payload, loc_of(name, idx, NULL));
}
