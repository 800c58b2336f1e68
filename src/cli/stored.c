/* stored — a session's stored messages, as the server gives them (see stored.h). */
#include "cli/stored.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/userkeys.h"
#include "common/config.h"
#include "common/hex.h"
#include "enclave/protocol.h"

#define SESSIONS_PATH "/api/v1/chat/sessions"
#define F_MESSAGES "messages"
#define F_ID "id"

size_t stored_max_messages(void)
{
    long v;
    const char *s = getenv("VEIL_HISTORY_MAX_MESSAGES");
    return s && parse_long(s, 2, 1000000, &v) == 0 ? (size_t)v : CHAIN_DEFAULT_MAX_MESSAGES;
}

/* One message of the list into the parallel arrays at i. */
static int parse_one(stored_msgs *s, size_t i, const json_t *m, char *err, size_t errlen)
{
    const char *role = json_string_value(json_object_get(m, PF_ROLE));
    const json_t *tag = json_object_get(m, PF_HISTORY_TAG);
    s->ids[i] = json_string_value(json_object_get(m, F_ID));
    s->roles[i] = role ? role : "";
    s->msgs[i].assistant = role && strcmp(role, "assistant") == 0;
    s->msgs[i].content = &s->eps[i];
    ep_err e = ep_from_json(json_object_get(m, PF_ENCRYPTED_CONTENT), &s->eps[i], NULL);
    if (e != EP_OK) {
        snprintf(err, errlen, "stored message %zu is malformed: %s", i + 1, ep_strerror(e));
        return -1;
    }
    if (tag && !json_is_null(tag)) {
        /* a tag that is not even hex is as forged as a wrong one: it stays present
         * (all zero here) so the chain reports it */
        s->msgs[i].has_tag = true;
        const char *t = json_string_value(tag);
        if (!t || hex_decode_exact(t, strlen(t), s->msgs[i].tag, HISTORY_TAG_LEN) < 0)
            memset(s->msgs[i].tag, 0, HISTORY_TAG_LEN);
    }
    return 0;
}

int stored_fetch(vclient *c, const char *session_id, stored_msgs *out, char *err, size_t errlen)
{
    char path[256], buf[CLI_ERR_MAX];
    int status;
    memset(out, 0, sizeof *out);
    if (!cli_id_ok(session_id)) {
        snprintf(err, errlen, "'%.80s' is not a session id (see veil sessions)", session_id);
        return -1;
    }
    snprintf(path, sizeof path, SESSIONS_PATH "/%s/messages", session_id);
    if (vclient_call(c, "GET", path, NULL, &status, &out->resp, err, errlen) < 0)
        return -1;
    const json_t *list = json_object_get(out->resp, F_MESSAGES);
    size_t max = stored_max_messages();
    if (status != 200) {
        snprintf(err, errlen, "%s", api_detail(out->resp, status, buf, sizeof buf));
        goto fail;
    }
    if (!json_is_array(list)) {
        snprintf(err, errlen, "the server's list of messages is malformed");
        goto fail;
    }
    if ((out->n = json_array_size(list)) > max) {
        snprintf(err, errlen, "the session has %zu messages, more than this client checks (%zu, "
                 "VEIL_HISTORY_MAX_MESSAGES)", out->n, max);
        goto fail;
    }
    size_t k = out->n ? out->n : 1;
    out->eps = calloc(k, sizeof *out->eps);
    out->msgs = calloc(k, sizeof *out->msgs);
    out->ids = calloc(k, sizeof *out->ids);
    out->roles = calloc(k, sizeof *out->roles);
    if (!out->eps || !out->msgs || !out->ids || !out->roles) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < out->n; i++)
        if (parse_one(out, i, json_array_get(list, i), err, errlen) < 0)
            goto fail;
    return 0;
fail:
    stored_free(out);
    return -1;
}

long stored_find(const stored_msgs *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->ids[i] && strcmp(s->ids[i], id) == 0)
            return (long)i;
    return -1;
}

void stored_free(stored_msgs *s)
{
    for (size_t i = 0; s->eps && i < s->n; i++)
        ep_clear(&s->eps[i]);
    free(s->eps);
    free(s->msgs);
    free(s->ids);
    free(s->roles);
    json_decref(s->resp);
    memset(s, 0, sizeof *s);
}

int stored_create_session(vclient *c, char id[CLI_ID_MAX], char *err, size_t errlen)
{
    int status;
    json_t *r = NULL, *body = json_object();
    char buf[CLI_ERR_MAX];
    int rc = vclient_call(c, "POST", SESSIONS_PATH, body, &status, &r, err, errlen);
    json_decref(body);
    if (rc < 0)
        return -1;
    const char *v = json_string_value(json_object_get(r, F_ID));
    rc = -1;
    if (status != 200 && status != 201)
        snprintf(err, errlen, "%s", api_detail(r, status, buf, sizeof buf));
    else if (!cli_id_ok(v))
        snprintf(err, errlen, "the server returned a malformed session id");
    else {
        snprintf(id, CLI_ID_MAX, "%s", v);
        rc = 0;
    }
    json_decref(r);
    return rc;
}

void stored_delete_session(vclient *c, const char *id)
{
    char path[256], err[CLI_ERR_MAX];
    int status;
    json_t *r = NULL;
    snprintf(path, sizeof path, SESSIONS_PATH "/%s", id);
    if (cli_id_ok(id))
        vclient_call(c, "DELETE", path, NULL, &status, &r, err, sizeof err);
    json_decref(r);
}

int stored_put_tag(vclient *c, const char *session_id, const char *assistant_id, const uint8_t tag[HISTORY_TAG_LEN],
                   char *err, size_t errlen)
{
    char path[256], hex[2 * HISTORY_TAG_LEN + 1], buf[CLI_ERR_MAX];
    int status;
    json_t *r = NULL;
    hex_encode(tag, HISTORY_TAG_LEN, hex);
    snprintf(path, sizeof path, SESSIONS_PATH "/%s/messages/%s/history-tag", session_id, assistant_id);
    json_t *body = json_pack("{s:s}", PF_HISTORY_TAG, hex);
    int rc = vclient_call(c, "PUT", path, body, &status, &r, err, errlen);
    json_decref(body);
    if (rc == 0 && status != 200) {
        snprintf(err, errlen, "%s", api_detail(r, status, buf, sizeof buf));
        rc = -1;
    }
    json_decref(r);
    return rc;
}
