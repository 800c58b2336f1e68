#include "server/http/validate.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/hex.h"
#include "crypto/ep.h"
#include "crypto/primitives.h"

static void reply(api_req *r, const char *type, const char *loc0, const char *loc1, const char *loc2,
                  const char *msg, const json_t *input)
{
    const char *loc[4];
    size_t n = 0;
    loc[n++] = "body";
    if (loc0)
        loc[n++] = loc0;
    if (loc1)
        loc[n++] = loc1;
    if (loc2)
        loc[n++] = loc2;
    api_reply_422(r, type, loc, n, msg, input);
}

bool v_object(api_req *r, const json_t *body)
{
    if (json_is_object(body))
        return true;
    reply(r, "model_attributes_type", NULL, NULL, NULL,
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

static bool check_hex(api_req *r, json_t *v, const char *loc0, const char *loc1, const char *loc2,
                      size_t exact, size_t min)
{
    if (!v) {
        reply(r, "missing", loc0, loc1, loc2, "Field required", NULL);
        return false;
    }
    if (!json_is_string(v)) {
        reply(r, "string_type", loc0, loc1, loc2, "Input should be a valid string", v);
        return false;
    }
    size_t n = json_string_length(v);
    char msg[96];
    size_t lo = exact ? exact : min;
    if (n < lo) {
        snprintf(msg, sizeof msg, "String should have at least %zu character%s", lo, lo == 1 ? "" : "s");
        reply(r, "string_too_short", loc0, loc1, loc2, msg, v);
        return false;
    }
    if (exact && n > exact) {
        snprintf(msg, sizeof msg, "String should have at most %zu characters", exact);
        reply(r, "string_too_long", loc0, loc1, loc2, msg, v);
        return false;
    }
    if (!hex_is_valid(json_string_value(v), n)) {
        reply(r, "value_error", loc0, loc1, loc2, "Value error, Invalid hex string", v);
        return false;
    }
    v_lower(v);
    return true;
}

bool v_hex(api_req *r, json_t *obj, const char *loc0, const char *loc1, const char *name, size_t exact,
           size_t min)
{
    const char *l0 = loc0, *l1 = loc1, *l2 = name;
    if (!l0)
        l0 = name, l1 = NULL, l2 = NULL;
    else if (!l1)
        l1 = name, l2 = NULL;
    return check_hex(r, json_object_get(obj, name), l0, l1, l2, exact, min);
}

bool v_x25519_key(api_req *r, json_t *obj, const char *loc0, const char *name)
{
    if (!v_hex(r, obj, loc0, NULL, name, 64, 0))
        return false;
    const json_t *v = json_object_get(obj, name);
    uint8_t key[32];
    if (hex_decode_exact(json_string_value(v), 64, key, sizeof key) == 0 && x25519_public_key_ok(key))
        return true;
    reply(r, "value_error", loc0 ? loc0 : name, loc0 ? name : NULL, NULL,
          "Value error, not a valid X25519 public key (a low-order point)", v);
    return false;
}

bool v_string(api_req *r, const json_t *obj, const char *loc0, const char *name, size_t max)
{
    const json_t *v = json_object_get(obj, name);
    const char *l0 = loc0 ? loc0 : name, *l1 = loc0 ? name : NULL;
    if (!v) {
        reply(r, "missing", l0, l1, NULL, "Field required", NULL);
        return false;
    }
    if (!json_is_string(v)) {
        reply(r, "string_type", l0, l1, NULL, "Input should be a valid string", v);
        return false;
    }
    if (json_string_length(v) == 0 || json_string_length(v) > max) {
        char msg[96];
        snprintf(msg, sizeof msg, json_string_length(v) == 0 ? "String should have at least 1 character"
                                                             : "String should have at most %zu characters",
                 max);
        reply(r, json_string_length(v) == 0 ? "string_too_short" : "string_too_long", l0, l1, NULL, msg, v);
        return false;
    }
    return true;
}

static bool ep_fields(api_req *r, json_t *payload, const char *l0, const char *l1)
{
    for (size_t i = 0; i < EP_N_FIELDS; i++) {
        const ep_field *f = &EP_FIELDS[i];
        if (!check_hex(r, json_object_get(payload, f->name), l0, l1, f->name, f->hex_len, f->hex_min))
            return false;
    }
    return true;
}

bool v_ep(api_req *r, json_t *obj, const char *loc0, const char *name)
{
    json_t *payload = json_object_get(obj, name);
    const char *l0 = loc0 ? loc0 : name, *l1 = loc0 ? name : NULL;
    if (!payload) {
        reply(r, "missing", l0, l1, NULL, "Field required", NULL);
        return false;
    }
    if (!json_is_object(payload)) {
        reply(r, "model_attributes_type", l0, l1, NULL,
              "Input should be a valid dictionary or object to extract fields from", payload);
        return false;
    }
    return ep_fields(r, payload, l0, l1);
}

bool v_ep_item(api_req *r, json_t *payload, const char *loc0, const char *name, int index)
{
    (void)loc0;
    char idx[16];
    snprintf(idx, sizeof idx, "%d", index);
    if (!json_is_object(payload)) {
        reply(r, "model_attributes_type", name, idx, NULL,
              "Input should be a valid dictionary or object to extract fields from", payload);
        return false;
    }
    return ep_fields(r, payload, name, idx);
}
