/* routes_util — the small pieces the route files share: JSON views of
 * store rows (memberships, EncryptedPayloads, user keys), the DB-admin check of
 * the organization routes, transactions that answer 500 on failure, and the 422
 * checks of hex-field tables and optional strings (the rules are validate.h's).
 * JSON returned here is a new reference owned by the caller; store rows stay the
 * caller's. Nothing here logs a key, a token or a body.
 */
#ifndef VEIL_SERVER_ROUTES_UTIL_H
#define VEIL_SERVER_ROUTES_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "server/server_int.h"

/* ---- replies ---- */

/* api_reply_json that answers 500 when body could not be built (NULL). */
void ru_reply(api_req *r, int status, json_t *body);
/* {"detail": <formatted>}: the original's texts that name an id. */
void ru_detailf(api_req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- JSON views of rows ---- */

/* A JSON string, or JSON null for NULL. */
json_t *ru_str(const char *s);

/* The member's org-key EncryptedPayload, or JSON null without a key. */
json_t *ru_ep_json(const org_key_ep *k);
/* Borrows the five EP strings of a validated EncryptedPayload object. */
void ru_ep_borrow(const json_t *payload, org_key_ep *out);
/* {"id","org_id","org_name","role","has_org_key","key_distributed_at","joined_at"} */
json_t *ru_membership_json(const membership_row *m);
/* UserKeysResponse: the five primary fields, the four recovery_* fields null. */
json_t *ru_user_keys_json(const char *public_key, const char *enc_priv, const char *iv, const char *tag,
                          const char *salt);

/* The memberships of user_id (org_id NULL: with org name and slug) or of org_id
 * (user_id NULL: with the users' key state), each mapped by fn, as a new array;
 * NULL after a 500 reply. */
json_t *ru_memberships(api_req *r, const char *user_id, const char *org_id,
                       json_t *(*fn)(const membership_row *m));

/* ---- authorization ---- */

/* The caller's membership of org_id by its DB role (spec §4.5: the /{org_id}/
 * routes check the stored role, not the JWT). Replies 404 `User <u> is not a
 * member of org <o>` / 403 `User <u> is not an admin of org <o>` / 500 and
 * returns false; on true *out (may be NULL) is the caller's to free. */
bool ru_require_db_admin(api_req *r, const char *org_id, membership_row *out);

/* ---- transactions: false means a 500 has been sent (and the store rolled back) ---- */

bool ru_begin(api_req *r);
bool ru_commit(api_req *r);
/* The write's audit row (store_audit's arguments; data is borrowed), then the commit. */
bool ru_audit_commit(api_req *r, const char *event_type, const char *actor, const char *target,
                     const char *org_id, const json_t *data);
/* A store failure inside a transaction: answers 500 and rolls back. */
void ru_fail(api_req *r, const char *op);
/* A refusal inside a transaction (4xx with a detail): rolls back, then replies. */
void ru_abort(api_req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- sessions and the right to send (spec §4.3, §6.2) ---- */

#define RU_NOT_FOUND_SESSION "Session not found or access denied"

/* The caller's organization when the JWT is an org context, else NULL. */
const char *ru_ctx_org(const api_req *r);
/* The session, if it belongs to the caller and to the caller's current context
 * (another user's, or another context's, is STORE_NOT_FOUND); *out is the caller's. */
store_rc ru_own_session(api_req *r, const char *id, session_row *out);
/* ru_own_session, answering 404 or 500 itself when there is no such session. */
bool ru_session_or_reply(api_req *r, const char *id, session_row *out);
/* verify_can_send_encrypted (spec §6.2): NULL when allowed, else the 400 text; NULL
 * with *err set on a store failure. storage_key receives the key the messages are
 * stored under (the user's, or the org's in an org context). */
const char *ru_can_send(api_req *r, char storage_key[65], store_rc *err);

/* ---- many instances: the enclave key a chat was sealed to ---- */

/* Behind a load balancer each veild has its own enclave, with its own key: a chat
 * sealed to another instance's key is answered 409 before anything starts. */
#define RU_OTHER_ENCLAVE_KEY "The request was sealed to another enclave key; verify this instance's attestation and retry"

/* The chat body's optional PF_ENCLAVE_PUBLIC_KEY (64 hex, lower-cased in place)
 * against own_hex, this instance's key: 1 when it names another key, 0 when it is
 * absent, null or ours (or ours is not known yet: the enclave then decides), -1
 * after a 422. */
int ru_sealed_to_other_key(api_req *r, json_t *body, const char *own_hex);
/* 409 {"detail": RU_OTHER_ENCLAVE_KEY, "enclave_public_key": pub_hex,
 * "attestation": doc_b64 or null (an enclave without an NSM)}. */
void ru_reply_other_key(api_req *r, const char *pub_hex, const char *doc_b64);

/* ---- validation ---- */

/* One hex field of a request model. */
typedef struct ru_hex_field {
    const char *name;
    size_t exact; /* exact length, or 0 */
    size_t min;   /* minimum length when exact is 0 */
} ru_hex_field;

/* validate.h's v_hex over a table of top-level body fields. */
bool ru_hex_fields(api_req *r, json_t *body, const ru_hex_field *f, size_t n);

/* An optional string-or-null field of body (e.g. "slug"). */
bool ru_opt_str(api_req *r, const json_t *body, const char *name);
/* ---- context documents (spec §4.5 /context, §4.6) ---- */

/* Replies {"owner_type"?, "context_data": obj|null}; owner_type is included
 * when with_owner is true (the /context router), not for /organizations/context. */
void ru_context_get(api_req *r, const char *owner_type, const char *owner_id, bool with_owner);
/* Reads {"context_data": {...}} (422 unless a dict), replaces the document and
 * replies as ru_context_get does. */
void ru_context_put(api_req *r, const char *owner_type, const char *owner_id, bool with_owner);

#endif
