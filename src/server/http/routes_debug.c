/* routes_debug — GET /api/v1/debug/encryption/report (spec §4.8): the caller's
 * key material as stored (all of it ciphertext or public), the enclave's transport
 * key, the protocol constants and a few stored message envelopes, so a user can
 * check the encryption by hand.
 *
 * Off unless VEIL_DEBUG_ROUTES is set (404 as if not mounted), and an org's
 * wrapped private key and its salt are shown only to that org's admins by DB
 * role: the original gave them to every member (defect §10.18).
 */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/ep.h"
#include "crypto/keywrap.h"
#include "crypto/primitives.h"
#include "server/http/routes_util.h"

#define SAMPLE_SESSIONS 3
#define SAMPLE_MESSAGES_PER_SESSION 2
#define SAMPLE_CIPHERTEXT_HEX 100

static json_t *user_section(const user_row *u)
{
    const user_keys *k = &u->keys;
    kw_params kdf = KW_PARAMS_DEFAULT;
    return json_pack("{s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:{s:s, s:i, s:i, s:i, s:i}, s:b, s:b}", "user_id",
                     u->id, "public_key_hex", k->public_key, "encrypted_private_key_hex", k->encrypted_private_key,
                     "encrypted_private_key_iv_hex", k->iv, "encrypted_private_key_tag_hex", k->tag, "key_salt_hex",
                     k->salt, "key_derivation", "algorithm", "Argon2id", "time_cost", (int)kdf.t_cost,
                     "memory_cost_kb", (int)kdf.m_cost_kib, "parallelism", (int)kdf.parallelism, "output_length",
                     KW_KEY_LEN, "has_encryption_keys", u->has_encryption_keys, "has_recovery_keys",
                     k->recovery_encrypted_private_key != NULL);
}

/* One org of the caller; NULL (and *rc set) on a store failure. */
static json_t *org_entry(api_req *r, const membership_row *m, store_rc *rc)
{
    org_row o = {0};
    *rc = store_org_get(r->db, m->org_id, &o);
    if (*rc == STORE_NOT_FOUND) { /* gone between the two reads: skip it */
        *rc = STORE_OK;
        return json_null();
    }
    if (*rc != STORE_OK)
        return NULL;
    const org_key_ep *k = &m->org_key;
    json_t *e = json_pack("{s:s, s:s?, s:s?, s:b}", "org_id", o.id, "org_name", o.name, "org_public_key_hex",
                          o.org_public_key, "has_encryption_keys", o.has_encryption_keys);
    /* the org's passcode-wrapped private key is an offline brute-force target:
     * only admins by DB role see it (defect §10.18) */
    if (e && strcmp(m->role, ROLE_ADMIN) == 0) {
        json_object_set_new(e, "admin_encrypted_private_key_hex", ru_str(o.admin_encrypted_private_key));
        json_object_set_new(e, "admin_encrypted_private_key_iv_hex", ru_str(o.admin_iv));
        json_object_set_new(e, "admin_encrypted_private_key_tag_hex", ru_str(o.admin_tag));
        json_object_set_new(e, "admin_key_salt_hex", ru_str(o.admin_salt));
    }
    if (e)
        json_object_set_new(e, "membership",
                            json_pack("{s:s, s:b, s:s?, s:s?, s:s?, s:s?, s:s?}", "role", m->role, "has_org_key",
                                      m->has_org_key, "encrypted_org_key_ephemeral_hex", k->ephemeral_public_key,
                                      "encrypted_org_key_iv_hex", k->iv, "encrypted_org_key_ciphertext_hex",
                                      k->ciphertext, "encrypted_org_key_tag_hex", k->auth_tag,
                                      "encrypted_org_key_hkdf_salt_hex", k->hkdf_salt));
    org_row_free(&o);
    return e;
}

static store_rc organizations_section(api_req *r, json_t *out)
{
    membership_row *list = NULL;
    size_t n = 0;
    store_rc rc = store_memberships_for_user(r->db, r->auth.user_id, &list, &n);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        json_t *e = org_entry(r, &list[i], &rc);
        if (json_is_object(e))
            json_array_append(out, e);
        json_decref(e);
    }
    membership_list_free(list, n);
    return rc;
}

static json_t *sample_message(const message_row *m)
{
    char ct[SAMPLE_CIPHERTEXT_HEX + 4];
    size_t len = strlen(m->ciphertext);
    snprintf(ct, sizeof ct, "%.*s%s", SAMPLE_CIPHERTEXT_HEX, m->ciphertext,
             len > SAMPLE_CIPHERTEXT_HEX ? "..." : "");
    return json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s, s:s, s:s, s:s}", "message_id", m->id, "session_id",
                     m->session_id, "role", m->role, "created_at", m->created_at, "ephemeral_public_key_hex",
                     m->ephemeral_public_key, "iv_hex", m->iv, "ciphertext_hex", ct, "auth_tag_hex", m->auth_tag,
                     "hkdf_salt_hex", m->hkdf_salt);
}

/* The newest messages of the newest sessions of the caller's current context. */
static store_rc samples_section(api_req *r, json_t *out)
{
    session_row *sessions = NULL;
    size_t ns = 0;
    long total = 0;
    const char *org = jwt_auth_is_org(&r->auth) ? r->auth.org_id : NULL;
    store_rc rc = store_sessions_list(r->db, r->auth.user_id, org, SAMPLE_SESSIONS, 0, &sessions, &ns, &total);
    for (size_t i = 0; rc == STORE_OK && i < ns; i++) {
        message_row *msgs = NULL;
        size_t nm = 0;
        rc = store_messages_list(r->db, sessions[i].id, &msgs, &nm);
        if (rc != STORE_OK)
            break;
        /* oldest first from the store: take the tail, newest first */
        for (size_t j = 0; j < nm && j < SAMPLE_MESSAGES_PER_SESSION; j++)
            json_array_append_new(out, sample_message(&msgs[nm - 1 - j]));
        message_list_free(msgs, nm);
    }
    if (sessions)
        session_list_free(sessions, ns);
    return rc;
}

static json_t *static_sections(json_t *report)
{
    json_object_set_new(report, "encryption_contexts",
                        json_pack("{s:s, s:s, s:s, s:s, s:s}", "client_to_enclave", EP_CTX_CLIENT_TO_ENCLAVE,
                                  "enclave_to_client", EP_CTX_ENCLAVE_TO_CLIENT, "user_message_storage",
                                  EP_CTX_USER_STORAGE, "assistant_message_storage", EP_CTX_ASSISTANT_STORAGE,
                                  "org_key_distribution", EP_CTX_ORG_KEY_DISTRIBUTION));
    json_object_set_new(report, "encryption_algorithm",
                        json_pack("{s:s, s:i, s:i, s:i}", "cipher", "AES-256-GCM", "key_length", AES256_KEY_LEN,
                                  "iv_length", GCM_IV_LEN, "tag_length", GCM_TAG_LEN));
    json_object_set_new(report, "key_exchange",
                        json_pack("{s:s, s:s, s:i, s:i}", "algorithm", "X25519 ECDH", "kdf", "HKDF-SHA512",
                                  "kdf_salt_length", HKDF_SALT_LEN, "derived_key_length", AES256_KEY_LEN));
    return report;
}

static json_t *guide_sections(json_t *report)
{
    json_object_set_new(
        report, "verification_steps",
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "step_1_unlock_private_key",
                  "Derive a 32-byte key with Argon2id(passcode, key_salt_hex) and the parameters above, then "
                  "AES-256-GCM-decrypt encrypted_private_key_hex with its iv and tag: the result is your X25519 "
                  "private key, whose public key must equal public_key_hex.",
                  "step_2_derive_message_key",
                  "For a stored message: X25519(private key, ephemeral_public_key_hex) -> shared secret; "
                  "HKDF-SHA512(shared secret, salt = hkdf_salt_hex, info = the storage context) -> 32-byte key.",
                  "step_3_decrypt_message",
                  "AES-256-GCM-decrypt ciphertext_hex with iv_hex and auth_tag_hex (16-byte IV, 16-byte tag).",
                  "step_4_check_transport_key",
                  "Messages you send are sealed to enclave.transport_public_key_hex with the client_to_enclave "
                  "context; the server stores and relays ciphertext only.",
                  "step_5_org_key",
                  "An org key copy (membership.encrypted_org_key_*) opens with your private key and the "
                  "org_key_distribution context; org messages are then stored to org_public_key_hex."));
    json_object_set_new(report, "online_tools",
                        json_pack("{s:s, s:s, s:s}", "argon2", "https://argon2.online/", "aes_gcm_and_hkdf",
                                  "https://gchq.github.io/CyberChef/", "x25519",
                                  "https://cryptography.io/en/latest/hazmat/primitives/asymmetric/x25519/"));
    return report;
}

/* The enclave's key as the loop knew it when the request came (the enclave client
 * is the loop's): the report's store part runs on a DB worker. */
typedef struct report_st {
    char tpk[80];
    bool has_tpk;
} report_st;

static void report_work(api_req *r)
{
    const report_st *rs = r->state;
    user_row u = {0};
    store_rc rc = store_user_get(r->db, r->auth.user_id, &u);
    if (rc == STORE_NOT_FOUND) {
        api_reply_detail(r, 404, "User not found");
        return;
    }
    if (rc != STORE_OK) {
        api_store_error(r, "user_get");
        return;
    }
    const char *tpk = rs->has_tpk ? rs->tpk : NULL;
    json_t *report = json_object(), *orgs = json_array(), *samples = json_array();
    json_object_set_new(report, "user", user_section(&u));
    user_row_free(&u);
    json_object_set_new(report, "enclave", json_pack("{s:s?}", "transport_public_key_hex", tpk));
    static_sections(report);
    json_object_set_new(report, "organizations", orgs);
    json_object_set_new(report, "sample_messages", samples);
    guide_sections(report);
    if (organizations_section(r, orgs) != STORE_OK) {
        api_store_error(r, "debug_organizations");
        goto out;
    }
    if (samples_section(r, samples) != STORE_OK) {
        api_store_error(r, "debug_samples");
        goto out;
    }
    ru_reply(r, 200, json_incref(report));
out:
    json_decref(report);
}

static void report_then(api_req *r)
{
    free(r->state);
    r->state = NULL;
}

static void get_report(api_req *r)
{
    if (!r->srv->cfg.debug_routes) {
        api_reply_detail(r, 404, "Not Found");
        return;
    }
    report_st *rs = calloc(1, sizeof *rs);
    if (!rs) {
        api_reply_detail(r, 503, "Service busy, please retry");
        return;
    }
    const char *tpk = r->srv->ec ? ec_public_key(r->srv->ec) : NULL;
    if (tpk) {
        snprintf(rs->tpk, sizeof rs->tpk, "%s", tpk);
        rs->has_tpk = true;
    }
    r->state = rs;
    api_db_job(r, report_work, report_then, 0);
}

const route ROUTES_DEBUG[] = {
    {EVHTTP_REQ_GET, "/api/v1/debug/encryption/report", get_report, ROUTE_AUTH},
};
const size_t N_ROUTES_DEBUG = sizeof ROUTES_DEBUG / sizeof ROUTES_DEBUG[0];
