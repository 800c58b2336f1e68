/* validate — request-body checks with the original's 422 shapes (pydantic):
 * each failure replies {"detail":[{type, loc, msg, input}]} and returns false.
 * Hex fields must be [0-9a-fA-F] of the exact or minimum length (no whitespace,
 * defect §10.25) and are lower-cased in place.
 */
#ifndef VEIL_SERVER_VALIDATE_H
#define VEIL_SERVER_VALIDATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "server/http/api.h"

/* A 422 location: the path below "body", e.g. {"distributions", "0", "membership_id"}. */
#define V_LOC_MAX 6
typedef struct v_loc {
    const char *p[V_LOC_MAX];
    size_t n;
} v_loc;

/* 422 with one pydantic-style error at body.<loc>. */
void v_reply_at(api_req *r, const char *type, v_loc loc, const char *msg, const json_t *input);

/* The checks below at any location (the named-field forms further down are these
 * at body.name or body.loc0.name); v may be NULL (missing). */
bool v_str_at(api_req *r, const json_t *v, v_loc loc, size_t max);
bool v_hex_at(api_req *r, json_t *v, v_loc loc, size_t exact, size_t min);
bool v_ep_at(api_req *r, json_t *payload, v_loc loc);

/* The body must be a JSON object (else 422 model_attributes_type). */
bool v_object(api_req *r, const json_t *body);

/* A required string field, hex of exactly `exact` chars (or at least `min` when
 * exact is 0). loc0 is "body" or a parent path element; may be NULL. */
bool v_hex(api_req *r, json_t *obj, const char *loc0, const char *loc1, const char *name, size_t exact,
           size_t min);
/* A required X25519 public key: 64 hex chars (v_hex), and not one of the small-order
 * points every agreement with which is zero (x25519_public_key_ok): a key nobody
 * can seal to is refused here, not midway through a chat (F0). */
bool v_x25519_key(api_req *r, json_t *obj, const char *loc0, const char *name);

/* A required string field of 1..max chars. */
bool v_string(api_req *r, const json_t *obj, const char *loc0, const char *name, size_t max);
/* An EncryptedPayload object at obj[name] (API rules: 64/32/32/64 hex, ciphertext
 * at least 2 hex chars). loc0 may be NULL. */
bool v_ep(api_req *r, json_t *obj, const char *loc0, const char *name);
/* An EncryptedPayload object itself (e.g. an array item); loc: body,name,index. */
bool v_ep_item(api_req *r, json_t *payload, const char *loc0, const char *name, int index);

/* Lower-cases a JSON string value in place (hex normalisation). */
void v_lower(json_t *str);

#endif
