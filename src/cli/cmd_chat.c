/* veil chat | ask | history | sessions | models: talking to the model in stream
 * format 3 — the whole request sealed to the attested enclave key, the answer checked
 * element by element and against the stored messages (answer.h), each stored
 * exchange tagged with a key only the client holds (chain.h) — and reading a stored
 * conversation back with its history chain checked. Nothing that failed a check is
 * shown as genuine. Plaintext and keys are wiped after use. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli/answer.h"
#include "cli/chain.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/stored.h"
#include "cli/tagrec.h"
#include "cli/term.h"
#include "cli/trust.h"
#include "cli/userkeys.h"
#include "common/hex.h"
#include "crypto/ep.h"
#include "crypto/history_tag.h"
#include "crypto/stream_v3.h"
#include "enclave/protocol.h"

#define DEFAULT_MODEL "us.anthropic.claude-3-5-haiku-20241022-v1:0"
#define STREAM_PATH "/api/v1/chat/encrypted/stream"
#define F_TRANSPORT_KEY "client_transport_public_key" /* the stream route's body (routes_chat.c) */
#define F_MODEL "model"
#define FAIL(verb, ...) cli_fail(verb, 1, __VA_ARGS__)
#define UNVERIFIED "the answer could not be verified: "

typedef struct turn {
    char role[16];
    vbuf text; /* plaintext, wiped */
} turn;

typedef struct convo {
    vclient *c;
    cli_trust *trust; /* what the enclave's key must prove before anything is sealed to it */
    char model[160];
    char session_id[CLI_ID_MAX];
    uint8_t enclave_pub[32];
    bool have_key;
    /* The storage key: the user's own, or the organization's in an org context. The
     * public half is derived here from the private key the client opened itself,
     * never taken from the server; the chain's key comes from the private half. */
    uint8_t storage_priv[32];
    char storage_pub[65];
    uint8_t tag_key[32];
    bool has_last; /* the session's last tag: the next exchange chains to it */
    uint8_t last_tag[HISTORY_TAG_LEN];
    turn *turns;
    size_t n, cap;
    bool live; /* print chunks as they arrive */
    FILE *out;
} convo;

typedef struct reply {
    vbuf answer;    /* the opened text, wiped */
    answer ans;
    bool shown;     /* some of it reached the terminal */
    term_filter tf; /* the live answer, made safe for the terminal */
    char warning[CLI_ERR_MAX]; /* a verified answer whose tag could not be kept */
    convo *cv;
} reply;

static void convo_free(convo *cv)
{
    for (size_t i = 0; i < cv->n; i++)
        vbuf_free_secure(&cv->turns[i].text);
    free(cv->turns);
    cv->turns = NULL;
    cv->n = cv->cap = 0;
    OPENSSL_cleanse(cv->storage_priv, sizeof cv->storage_priv);
    OPENSSL_cleanse(cv->tag_key, sizeof cv->tag_key);
}

static int convo_add(convo *cv, const char *role, const uint8_t *text, size_t len)
{
    if (cv->n == cv->cap) {
        size_t cap = cv->cap ? cv->cap * 2 : 16;
        turn *t = realloc(cv->turns, cap * sizeof *t);
        if (!t)
            return -1;
        cv->turns = t;
        cv->cap = cap;
    }
    turn *t = &cv->turns[cv->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->role, sizeof t->role, "%s", role);
    return vbuf_append_secure(&t->text, text, len);
}

/* Every key the client seals to passes through here: attested unless --no-attestation
 * (trust.h), the first one and each new one after the enclave restarted. */
static int fetch_enclave_key(convo *cv, char *err, size_t errlen)
{
    if (cli_trust_enclave_key(cv->trust, cv->c, cv->enclave_pub, err, errlen) < 0)
        return -1;
    cv->have_key = true;
    return 0;
}

/* The storage key pair and the chain's key, from the user's private key (the cache or
 * the passcode) and, in an org context, the org key opened from the membership copy. */
static int open_storage(convo *cv, const char *pfile, char *err, size_t errlen)
{
    uint8_t upriv[32], pub[32];
    char org[256];
    if (userkeys_private(cv->c, pfile, upriv, err, errlen) < 0)
        return -1;
    int rc = -1;
    if (userkeys_current_org(cv->c, org, sizeof org, err, errlen) < 0 ||
        userkeys_storage(cv->c, org, upriv, cv->storage_priv, err, errlen) < 0)
        goto out;
    if (x25519_public(cv->storage_priv, pub) < 0 || history_tag_key(cv->storage_priv, cv->tag_key) < 0) {
        snprintf(err, errlen, "key derivation failed");
        goto out;
    }
    hex_encode(pub, 32, cv->storage_pub);
    rc = 0;
out:
    OPENSSL_cleanse(upriv, sizeof upriv);
    return rc;
}

/* ---- a session's stored history, with its chain checked ---- */

typedef struct history {
    stored_msgs s;
    chain_report rep;
    secret *texts; /* each message, opened with the storage key */
} history;

static void history_free(history *h)
{
    for (size_t i = 0; h->texts && i < h->s.n; i++)
        secret_free(&h->texts[i]);
    free(h->texts);
    chain_report_free(&h->rep);
    stored_free(&h->s);
}

/* Fetches, checks the chain (with this machine's record) and opens the session's messages. */
static int history_load(convo *cv, const char *session, history *h, char *err, size_t errlen)
{
    uint8_t rec[HISTORY_TAG_LEN];
    memset(h, 0, sizeof *h);
    if (stored_fetch(cv->c, session, &h->s, err, errlen) < 0)
        return -1;
    int has_rec = tagrec_get(session, rec, err, errlen);
    if (has_rec < 0)
        goto fail;
    if (chain_check(cv->tag_key, session, h->s.msgs, h->s.n, has_rec == 0 ? rec : NULL, &h->rep) < 0 ||
        !(h->texts = calloc(h->s.n ? h->s.n : 1, sizeof *h->texts))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < h->s.n; i++) {
        const char *ctx = h->s.msgs[i].assistant ? EP_CTX_ASSISTANT_STORAGE : EP_CTX_USER_STORAGE;
        ep_err er = ep_open(cv->storage_priv, &h->s.eps[i], ctx, &h->texts[i]);
        if (er != EP_OK) {
            snprintf(err, errlen, "message %zu does not decrypt with your storage key: %s", i + 1, ep_strerror(er));
            goto fail;
        }
    }
    return 0;
fail:
    history_free(h);
    return -1;
}

/* "2 forged, 1 out of order, the last exchange missing" */
static void describe_breaks(const chain_report *r, char *out, size_t n)
{
    snprintf(out, n, "%zu forged, %zu out of order%s", r->forged, r->reordered,
             r->record_missing ? ", the last exchange missing" : "");
}

/* --session: the stored history joins the conversation, only if its chain holds. */
static int load_session(convo *cv, const char *session, char *err, size_t errlen)
{
    history h;
    char what[160];
    if (history_load(cv, session, &h, err, errlen) < 0)
        return -1;
    int rc = -1;
    if (chain_broken(&h.rep)) {
        describe_breaks(&h.rep, what, sizeof what);
        snprintf(err, errlen, "the stored history of session %s does not verify (%s): see `veil history %s`",
                 session, what, session);
        goto out;
    }
    for (size_t i = 0; i < h.s.n; i++)
        if (convo_add(cv, h.s.msgs[i].assistant ? "assistant" : "user", h.texts[i].data, h.texts[i].len) < 0) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    snprintf(cv->session_id, sizeof cv->session_id, "%s", session);
    if ((cv->has_last = h.rep.has_last))
        memcpy(cv->last_tag, h.rep.last, HISTORY_TAG_LEN);
    rc = 0;
out:
    history_free(&h);
    return rc;
}

/* ---- one bound request and its answer ---- */

/* The sealed request (format 3): message, plain history, both keys, model, session,
 * a fresh request id and the time, as one envelope under SV3_REQUEST_CONTEXT. */
static json_t *seal_request(convo *cv, const char *prompt, const char *tpub_hex, uint8_t request_hash[SV3_HASH_LEN],
                            char *err, size_t errlen)
{
    uint8_t rid[PROTO_REQUEST_ID_LEN];
    char rid_hex[2 * PROTO_REQUEST_ID_LEN + 1];
    json_t *hist = json_array(), *inner = NULL, *sealed = NULL;
    char *text = NULL;
    for (size_t i = 0; hist && i < cv->n; i++) {
        const turn *t = &cv->turns[i];
        json_t *o = json_pack("{s:s, s:s%}", PF_ROLE, t->role, PF_CONTENT, t->text.data ? (const char *)t->text.data : "",
                              t->text.len);
        if (!o || json_array_append_new(hist, o) < 0) {
            snprintf(err, errlen, "turn %zu of the conversation is not UTF-8 text", i + 1);
            goto out;
        }
    }
    if (random_bytes(rid, sizeof rid) < 0) {
        snprintf(err, errlen, "no randomness for the request id");
        goto out;
    }
    hex_encode(rid, sizeof rid, rid_hex);
    inner = proto_bound_request_json(prompt, hist, tpub_hex, cv->storage_pub, cv->model, cv->session_id, rid_hex,
                                     (long long)time(NULL));
    if (!inner || !(text = json_dumps(inner, JSON_COMPACT))) {
        snprintf(err, errlen, "the message is not UTF-8 text");
        goto out;
    }
    ep e;
    if (ep_seal(cv->enclave_pub, (const uint8_t *)text, strlen(text), SV3_REQUEST_CONTEXT, &e) != EP_OK) {
        snprintf(err, errlen, "sealing the request failed");
        goto out;
    }
    sv3_ep_hash(&e, request_hash);
    sealed = ep_to_json(&e);
    ep_clear(&e);
    if (!sealed)
        snprintf(err, errlen, "out of memory");
out:
    if (text) {
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
    json_decref(inner); /* jansson's blocks are wiped as they are freed (veil_main.c) */
    json_decref(hist);
    return sealed;
}

static void show(void *ud, const uint8_t *text, size_t len)
{
    reply *rp = ud;
    vbuf_append_secure(&rp->answer, text, len);
    if (rp->cv->live && len) { /* the model's text may carry escape sequences */
        term_fwrite(rp->cv->out, &rp->tf, text, len);
        fflush(rp->cv->out);
        rp->shown = true;
    }
}

static int on_event(void *ud, const json_t *ev)
{
    reply *rp = ud;
    return answer_feed(&rp->ans, ev, show, rp);
}

static void unverified(const reply *rp, const char *why, char *err, size_t errlen)
{
    snprintf(err, errlen, UNVERIFIED "%.2048s%s", why, rp->shown ? "; the text shown above is not an authentic answer" : "");
}

/* The stored pair the end element names, from the server's list, then its history
 * tag (chained to the session's last) stored there and recorded here. */
static int check_stored(convo *cv, reply *rp, char *err, size_t errlen)
{
    stored_msgs s;
    char why[1024];
    if (stored_fetch(cv->c, cv->session_id, &s, why, sizeof why) < 0) {
        char msg[sizeof why + 64];
        snprintf(msg, sizeof msg, "the stored messages cannot be read back (%s)", why);
        unverified(rp, msg, err, errlen);
        return -1;
    }
    long u = stored_find(&s, rp->ans.user_id), a = stored_find(&s, rp->ans.assistant_id);
    int rc = -1;
    if (u < 0 || a < 0) {
        unverified(rp, "the session does not hold the stored messages the answer names", err, errlen);
        goto out;
    }
    if (answer_check_stored(&rp->ans, &s.eps[u], &s.eps[a]) < 0) {
        unverified(rp, rp->ans.error, err, errlen);
        goto out;
    }
    uint8_t tag[HISTORY_TAG_LEN];
    if (history_tag(cv->tag_key, cv->session_id, cv->has_last ? cv->last_tag : NULL, &s.eps[u], &s.eps[a], tag) < 0) {
        snprintf(err, errlen, "computing the history tag failed");
        goto out;
    }
    /* the answer is verified: a tag that cannot be kept is a warning, and the next
     * exchange still chains to it (veil history then reports the gap) */
    if (stored_put_tag(cv->c, cv->session_id, rp->ans.assistant_id, tag, why, sizeof why) < 0)
        snprintf(rp->warning, sizeof rp->warning, "the history tag was not stored on the server (%s): `veil history` "
                 "will report this exchange", why);
    else if (tagrec_put(cv->session_id, tag, why, sizeof why) < 0)
        snprintf(rp->warning, sizeof rp->warning, "the history tag was not recorded here (%s)", why);
    memcpy(cv->last_tag, tag, HISTORY_TAG_LEN);
    cv->has_last = true;
    rc = 0;
out:
    stored_free(&s);
    return rc;
}

enum { SENT_OK = 0, SENT_FAILED = -1, SENT_RETRY = 1 };

/* One bound request: its sealing, its stream, its answer's checks. */
static int send_once(convo *cv, const char *prompt, reply *rp, bool created, char *err, size_t errlen)
{
    uint8_t tpub[32], rh[SV3_HASH_LEN];
    char tpub_hex[65], buf[CLI_ERR_MAX];
    x25519_key *tk = x25519_key_generate(tpub); /* this request's key: the answer is bound to it */
    if (!tk) {
        snprintf(err, errlen, "key generation failed");
        return SENT_FAILED;
    }
    hex_encode(tpub, 32, tpub_hex);
    json_t *sealed = seal_request(cv, prompt, tpub_hex, rh, err, errlen);
    if (!sealed) {
        x25519_key_free(tk);
        return SENT_FAILED;
    }
    json_t *body = json_pack("{s:i, s:o, s:s, s:s, s:s}", PF_STREAM_FORMAT, 3, PF_ENCRYPTED_REQUEST, sealed,
                             F_TRANSPORT_KEY, tpub_hex, F_MODEL, cv->model, PF_SESSION_ID, cv->session_id);
    answer_init(&rp->ans, tk, cv->enclave_pub, rh, cv->session_id);
    int status = 0;
    json_t *r = NULL;
    int rc = body ? vclient_stream(cv->c, STREAM_PATH, body, on_event, rp, &status, &r, err, errlen) : -1;
    json_decref(body);
    if (cv->live)
        term_fwrite_end(cv->out, &rp->tf);
    x25519_key_free(tk);
    rp->ans.transport = NULL;
    int out = SENT_FAILED;
    if (rc < 0) {
        if (rp->shown) { /* the connection broke mid-answer */
            snprintf(buf, sizeof buf, "the stream broke off (%.1024s)", err);
            unverified(rp, buf, err, errlen);
        }
    } else if (status != 200) {
        const char *d = json_string_value(json_object_get(r, "detail"));
        bool no_keys = d && strcmp(d, "User has not set up encryption keys") == 0;
        snprintf(err, errlen, "%s%s", api_detail(r, status, buf, sizeof buf),
                 no_keys ? ": run `veil keys init` first" : "");
        if (created) { /* refused before anything started: the new session stays empty */
            stored_delete_session(cv->c, cv->session_id);
            cv->session_id[0] = '\0';
        }
    } else if (answer_finish(&rp->ans) == 0) {
        out = check_stored(cv, rp, err, errlen) == 0 ? SENT_OK : SENT_FAILED;
    } else if (rp->ans.state == ANSWER_FAILED) {
        unverified(rp, rp->ans.error, err, errlen);
    } else if (strcmp(rp->ans.error, enclave_err_client_message(ENCLAVE_ERR_DECRYPT_FAILED, NULL)) == 0 &&
               !rp->ans.text_elements) {
        out = SENT_RETRY; /* sealed to a key the enclave no longer has: it restarted */
    } else {
        snprintf(err, errlen, "%s", rp->ans.error); /* the server's error event */
    }
    json_decref(r);
    answer_wipe(&rp->ans);
    return out;
}

/* Sends one prompt; on success the turn pair joins the conversation. */
static int convo_send(convo *cv, const char *prompt, reply *rp, char *err, size_t errlen)
{
    bool created = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        vbuf_free_secure(&rp->answer);
        memset(rp, 0, sizeof *rp);
        rp->cv = cv;
        if (!cv->have_key && fetch_enclave_key(cv, err, errlen) < 0)
            return -1;
        if (!cv->session_id[0]) { /* the request names its session: it must exist first */
            if (stored_create_session(cv->c, cv->session_id, err, errlen) < 0)
                return -1;
            created = true;
        }
        int rc = send_once(cv, prompt, rp, created, err, errlen);
        if (rc == SENT_RETRY) {
            cv->have_key = false; /* the enclave restarted: learn (and verify) its new key, retry once */
            continue;
        }
        if (rc < 0)
            return -1;
        if (convo_add(cv, "user", (const uint8_t *)prompt, strlen(prompt)) < 0 ||
            convo_add(cv, "assistant", rp->answer.data, rp->answer.len) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "the enclave key keeps changing");
    return -1;
}

/* ---- the verbs ---- */

typedef struct chat_opts {
    const char *model, *session, *pfile;
    bool json;
    bool no_attestation;
} chat_opts;

static int parse_opts(const char *verb, int argc, char **argv, chat_opts *o, void (*help)(void))
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"session", required_argument, 0, 's'},
        {"passcode-file", required_argument, 0, 'p'}, {"json", no_argument, 0, 'j'},
        {"no-attestation", no_argument, 0, 'A'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    int c;
    while ((c = cli_getopt(verb, argc, argv, "m:s:h", opts)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 's': o->session = optarg; break;
        case 'p': o->pfile = optarg; break;
        case 'j': o->json = true; break;
        case 'A': o->no_attestation = true; break;
        case 'h': help(); return 1;
        default: return EXIT_USAGE;
        }
    }
    if (o->session && !cli_id_ok(o->session))
        return cli_fail(verb, EXIT_USAGE, "'%.80s' is not a session id (see veil sessions)", o->session);
    return 0;
}

#define HELP_ATTESTATION                                                                                \
    "Before the first seal, and whenever the enclave's key changes, the client asks for a\n"           \
    "fresh attestation (a random 32-byte nonce) and verifies it down to the AWS Nitro root:\n"          \
    "the nonce, at most 300 s old, the key it will seal to, veil's statement and the PCRs\n"            \
    "stored by `veil login --measurements FILE` (see `veil keys status`). Nothing is sent\n"            \
    "when a check fails. --no-attestation skips the check (warned about on every run): the\n"          \
    "server could then substitute its own key and read the conversation.\n\n"                          \
    "Each request is bound (stream format 3): the message, the history, this request's\n"              \
    "key, your storage key (derived here from your private key, or the org key you opened),\n"         \
    "the model, the session, a fresh request id and the time travel as one envelope sealed\n"           \
    "to the attested key. The answer must come in format 3 and every element must verify\n"           \
    "against that key and this request, then the end element against the stored messages;\n"          \
    "anything else is refused (`the answer could not be verified: ...`), never shown as\n"            \
    "genuine. Each verified exchange gets a history tag (see veil history). This needs\n"             \
    "your private key: the passcode ($VEIL_PASSCODE, --passcode-file, a prompt) or\n"                 \
    "`veil keys unlock`.\n"

static void help_ask(void)
{
    printf("Usage: veil ask [--model M] [--session ID] [--json] [--passcode-file F] [--no-attestation]\n"
           "                \"PROMPT\"\n\n"
           "Sends one prompt (sealed to the enclave key) and prints the answer as it streams in,\n"
           "decrypted here. --session continues a stored conversation (its history is decrypted\n"
           "with your storage key and its chain checked first). --json prints\n"
           "{\"session_id\",\"answer\",\"model\",\"input_tokens\",\"output_tokens\"} at the end instead.\n"
           "Default model: " DEFAULT_MODEL " (see veil models).\n\n" HELP_ATTESTATION);
}

static void help_chat(void)
{
    printf("Usage: veil chat [--model M] [--session ID] [--passcode-file F] [--no-attestation]\n\n"
           "An interactive conversation: each line you type is sealed to the enclave and the\n"
           "answer prints live as the encrypted chunks arrive and are decrypted. Empty line or\n"
           "Ctrl-D ends. --session continues a stored conversation.\n\n" HELP_ATTESTATION);
}

static void help_history(void)
{
    printf("Usage: veil history [--json] [--passcode-file F] SESSION_ID\n\n"
           "Prints a stored conversation, decrypted here with your storage key (your own key,\n"
           "or the organization's key in an org context), and checks its history chain: each\n"
           "exchange veil's client stored carries a tag only your storage key can make, chained\n"
           "to the one before. An exchange that does not match its tag (altered, or one before\n"
           "it removed) is marked NOT AUTHENTIC, one out of place OUT OF ORDER, and a missing\n"
           "last exchange (the last tag this machine recorded, in history_tags beside the\n"
           "config) MISSING: then the exit status is 1. Exchanges without a tag (the original's\n"
           "clients, older ones) are marked unverified. --json adds \"exchange\" and \"status\"\n"
           "(verified, untagged, unpaired, forged, reordered) to each message.\n"
           "At most $VEIL_HISTORY_MAX_MESSAGES messages (default %d) are checked.\n",
           CHAIN_DEFAULT_MAX_MESSAGES);
}

/* Before the banner (chat): the server answers, the token is good and the account
 * has keys, so chat never fails only at the first message. */
static int check_keys(convo *cv, char *err, size_t errlen)
{
    int status;
    json_t *r = NULL;
    char buf[CLI_ERR_MAX];
    if (vclient_call(cv->c, "GET", "/api/v1/users/me/encryption-status", NULL, &status, &r, err, errlen) < 0)
        return -1;
    int rc = -1;
    if (status != 200)
        snprintf(err, errlen, "%s", api_detail(r, status, buf, sizeof buf));
    else if (!json_is_true(json_object_get(r, "has_encryption_keys")))
        snprintf(err, errlen, "no encryption keys yet: run `veil keys init` first");
    else
        rc = 0;
    json_decref(r);
    return rc;
}

/* The policy, (chat: the keys,) the attested enclave key, the storage key, the session:
 * attestation first, so a refused enclave never costs a passcode. */
static int start_convo(const char *verb, convo *cv, vclient *c, cli_trust *trust, const chat_opts *o)
{
    char err[CLI_ERR_MAX];
    memset(cv, 0, sizeof *cv);
    cv->c = c;
    cv->trust = trust;
    cv->out = stdout;
    snprintf(cv->model, sizeof cv->model, "%s", o->model ? o->model : DEFAULT_MODEL);
    if (cli_trust_load(trust, verb, !o->no_attestation, err, sizeof err) < 0 ||
        (strcmp(verb, "chat") == 0 && check_keys(cv, err, sizeof err) < 0) ||
        fetch_enclave_key(cv, err, sizeof err) < 0 || open_storage(cv, o->pfile, err, sizeof err) < 0 ||
        (o->session && load_session(cv, o->session, err, sizeof err) < 0)) {
        convo_free(cv);
        return FAIL(verb, "%s", err);
    }
    return 0;
}

static void print_warning(const char *verb, const reply *rp)
{
    if (rp->warning[0])
        term_fprintf(stderr, "veil %s: warning: %s\n", verb, rp->warning);
}

int cmd_ask(int argc, char **argv)
{
    chat_opts o;
    int rc = parse_opts("ask", argc, argv, &o, help_ask);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (optind != argc - 1)
        return cli_fail("ask", EXIT_USAGE, "give exactly one prompt (quote it)");
    const char *prompt = argv[optind];
    if (!*prompt)
        return cli_fail("ask", EXIT_USAGE, "the prompt is empty");
    vclient c;
    char err[CLI_ERR_MAX];
    if (vclient_from_config(&c, err, sizeof err) < 0)
        return FAIL("ask", "%s", err);
    convo cv;
    cli_trust trust;
    if ((rc = start_convo("ask", &cv, &c, &trust, &o)) != 0) {
        vclient_free(&c);
        return rc;
    }
    cv.live = !o.json;
    reply rp = {0};
    if (convo_send(&cv, prompt, &rp, err, sizeof err) < 0) {
        if (rp.shown)
            printf("\n");
        fflush(stdout);
        rc = FAIL("ask", "%s", err);
    } else if (o.json) {
        json_t *j = json_pack("{s:s, s:s%, s:s, s:I, s:I}", "session_id", cv.session_id, "answer",
                              (const char *)rp.answer.data ? (const char *)rp.answer.data : "",
                              rp.answer.len, "model", rp.ans.model, "input_tokens", (json_int_t)rp.ans.in_tokens,
                              "output_tokens", (json_int_t)rp.ans.out_tokens);
        /* ASCII-only JSON: control characters arrive escaped, never raw */
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
        print_warning("ask", &rp);
    } else {
        term_fprintf(stdout, "\n[%s · %ld in · %ld out · session %s]\n", rp.ans.model, rp.ans.in_tokens,
                     rp.ans.out_tokens, cv.session_id);
        print_warning("ask", &rp);
    }
    vbuf_free_secure(&rp.answer);
    convo_free(&cv);
    vclient_free(&c);
    return rc;
}

int cmd_chat(int argc, char **argv)
{
    chat_opts o;
    int rc = parse_opts("chat", argc, argv, &o, help_chat);
    if (rc)
        return rc == 1 ? 0 : rc;
    vclient c;
    char err[CLI_ERR_MAX];
    if (vclient_from_config(&c, err, sizeof err) < 0)
        return FAIL("chat", "%s", err);
    convo cv;
    cli_trust trust;
    if ((rc = start_convo("chat", &cv, &c, &trust, &o)) != 0) {
        vclient_free(&c);
        return rc;
    }
    cv.live = true;
    bool tty = isatty(STDIN_FILENO);
    term_fprintf(stderr, "veil chat · %s%s%s · sealed to the enclave · empty line to quit\n", cv.model,
                 cv.session_id[0] ? " · session " : "", cv.session_id);
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (tty)
            fprintf(stderr, "\n> ");
        ssize_t n = getline(&line, &cap, stdin);
        if (n <= 0)
            break;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            break;
        reply rp = {0};
        if (convo_send(&cv, line, &rp, err, sizeof err) < 0) {
            if (rp.shown)
                printf("\n");
            fflush(stdout);
            rc = FAIL("chat", "%s", err);
        } else {
            printf("\n");
            fflush(stdout);
            term_fprintf(stderr, "[%s · %ld in · %ld out]\n", rp.ans.model, rp.ans.in_tokens, rp.ans.out_tokens);
            print_warning("chat", &rp);
            rc = 0;
        }
        vbuf_free_secure(&rp.answer);
        OPENSSL_cleanse(line, cap);
    }
    free(line);
    if (cv.session_id[0])
        term_fprintf(stderr, "session %s\n", cv.session_id);
    convo_free(&cv);
    vclient_free(&c);
    return rc;
}

/* The mark before an exchange that is not verified, or NULL. */
static const char *mark_of(const chain_entry *e, char *buf, size_t n)
{
    switch (e->status) {
    case CHAIN_VERIFIED:
        return NULL;
    case CHAIN_UNTAGGED:
        snprintf(buf, n, "[exchange %zu: unverified: no history tag (an older or another client's exchange)]",
                 e->exchange);
        break;
    case CHAIN_UNPAIRED:
        snprintf(buf, n, "[message %zu: unverified: not part of a complete exchange]", e->first + 1);
        break;
    case CHAIN_FORGED:
        if (e->n_msgs == 1)
            snprintf(buf, n, "[message %zu: NOT AUTHENTIC: a tagged answer without its question (a message was "
                     "removed)]", e->first + 1);
        else
            snprintf(buf, n, "[exchange %zu: NOT AUTHENTIC: it does not match its history tag (it was altered, or "
                     "an exchange before it was removed)]", e->exchange);
        break;
    case CHAIN_REORDERED:
        if (e->after)
            snprintf(buf, n, "[exchange %zu: OUT OF ORDER: its history tag places it right after exchange %zu]",
                     e->exchange, e->after);
        else
            snprintf(buf, n, "[exchange %zu: OUT OF ORDER: its history tag places it first]", e->exchange);
        break;
    }
    return buf;
}

#define MISSING_MARK "[MISSING: the last exchange this machine tagged in this session is not on the server: it " \
                     "was removed]"

static void print_text(const history *h)
{
    char mark[256];
    for (size_t k = 0; k < h->rep.n; k++) {
        const chain_entry *e = &h->rep.entries[k];
        if (mark_of(e, mark, sizeof mark))
            printf("%s\n", mark);
        for (size_t i = e->first; i < e->first + e->n_msgs; i++) {
            term_filter tf;
            term_filter_init(&tf);
            term_fprintf(stdout, "%s", h->s.roles[i]); /* alone: a cut sequence cannot eat the ':' */
            fputs(": ", stdout);
            term_fwrite(stdout, &tf, h->texts[i].data, h->texts[i].len);
            term_fwrite_end(stdout, &tf);
            printf("\n\n");
        }
    }
    if (h->rep.record_missing)
        printf("%s\n", MISSING_MARK);
}

static void print_json(const history *h)
{
    json_t *a = json_array();
    for (size_t k = 0; k < h->rep.n; k++) {
        const chain_entry *e = &h->rep.entries[k];
        for (size_t i = e->first; i < e->first + e->n_msgs; i++)
            json_array_append_new(a, json_pack("{s:s, s:s%, s:o, s:s}", "role", h->s.roles[i], "text",
                                               h->texts[i].data ? (const char *)h->texts[i].data : "",
                                               h->texts[i].len, "exchange",
                                               e->exchange ? json_integer((json_int_t)e->exchange) : json_null(),
                                               "status", chain_status_name(e->status)));
    }
    char *s = json_dumps(a, JSON_COMPACT | JSON_ENSURE_ASCII);
    printf("%s\n", s ? s : "[]");
    free(s);
    json_decref(a);
}

int cmd_history(int argc, char **argv)
{
    chat_opts o;
    int rc = parse_opts("history", argc, argv, &o, help_history);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (optind != argc - 1)
        return cli_fail("history", EXIT_USAGE, "give one session id (see veil sessions)");
    const char *session = argv[optind];
    if (!cli_id_ok(session))
        return cli_fail("history", EXIT_USAGE, "'%.80s' is not a session id (see veil sessions)", session);
    vclient c;
    char err[CLI_ERR_MAX], what[160];
    if (vclient_from_config(&c, err, sizeof err) < 0)
        return FAIL("history", "%s", err);
    convo cv;
    history h;
    memset(&cv, 0, sizeof cv);
    cv.c = &c;
    if (open_storage(&cv, o.pfile, err, sizeof err) < 0 || history_load(&cv, session, &h, err, sizeof err) < 0) {
        rc = FAIL("history", "%s", err);
        goto out;
    }
    if (o.json)
        print_json(&h);
    else
        print_text(&h);
    fflush(stdout);
    if (chain_broken(&h.rep)) {
        describe_breaks(&h.rep, what, sizeof what);
        rc = FAIL("history", "the stored history does not verify: %s (marked in the output)", what);
    } else if (h.rep.untagged || h.rep.unpaired) {
        fprintf(stderr, "veil history: note: %zu exchange(s) and %zu message(s) without a history tag are not "
                        "verified\n", h.rep.untagged, h.rep.unpaired);
    }
    history_free(&h);
out:
    convo_free(&cv);
    vclient_free(&c);
    return rc;
}

/* A string field for printing: "" when absent (printf of NULL is undefined). */
static const char *json_str(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static int simple_get(const char *verb, const char *path, json_t **out)
{
    vclient c;
    char err[CLI_ERR_MAX], buf[CLI_ERR_MAX];
    if (vclient_from_config(&c, err, sizeof err) < 0)
        return FAIL(verb, "%s", err);
    int status, rc = 0;
    if (vclient_call(&c, "GET", path, NULL, &status, out, err, sizeof err) < 0)
        rc = FAIL(verb, "%s", err);
    else if (status != 200)
        rc = FAIL(verb, "%s", api_detail(*out, status, buf, sizeof buf));
    vclient_free(&c);
    return rc;
}

/* A verb without arguments: -1 to go on, else the exit status (help or usage). */
static int no_args(const char *verb, int argc, char **argv, const char *usage)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = cli_getopt(verb, argc, argv, "h", opts)) != -1) {
        if (c != 'h')
            return EXIT_USAGE;
        fputs(usage, stdout);
        return 0;
    }
    if (optind != argc)
        return cli_fail(verb, EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    return -1;
}

int cmd_sessions(int argc, char **argv)
{
    int rc = no_args("sessions", argc, argv, "Usage: veil sessions\n\nLists your conversations in the current context "
                                 "(newest first).\n");
    if (rc >= 0)
        return rc;
    json_t *r = NULL;
    rc = simple_get("sessions", "/api/v1/chat/sessions?limit=100", &r);
    if (rc == 0) {
        size_t i;
        const json_t *s;
        json_array_foreach(json_object_get(r, "sessions"), i, s)
            term_fprintf(stdout, "%s  %s  %s\n", json_str(s, "id"), json_str(s, "updated_at"), json_str(s, "name"));
    }
    json_decref(r);
    return rc;
}

int cmd_models(int argc, char **argv)
{
    int rc = no_args("models", argc, argv, "Usage: veil models\n\nLists the models the server offers.\n");
    if (rc >= 0)
        return rc;
    json_t *r = NULL;
    rc = simple_get("models", "/api/v1/chat/models", &r);
    if (rc == 0) {
        size_t i;
        const json_t *m;
        json_array_foreach(r, i, m)
            term_fprintf(stdout, "%-48s %s\n", json_str(m, "id"), json_str(m, "name"));
    }
    json_decref(r);
    return rc;
}
