/* veil chat | ask | history | sessions | models: talking to the model with every
 * message sealed to the enclave, and answers decrypted here as they stream in. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/term.h"
#include "cli/trust.h"
#include "cli/userkeys.h"
#include "common/hex.h"
#include "crypto/ep.h"
#include "crypto/stream_v2.h"
#include "enclave/protocol.h"

#define DEFAULT_MODEL "us.anthropic.claude-3-5-haiku-20241022-v1:0"
#define FAIL(verb, ...) cli_fail(verb, 1, __VA_ARGS__)

typedef struct turn {
    char role[16];
    vbuf text; /* plaintext, wiped */
} turn;

typedef struct convo {
    vclient *c;
    cli_trust *trust; /* what the enclave's key must prove before anything is sealed to it */
    char model[160];
    char session_id[64];
    uint8_t enclave_pub[32];
    bool have_key;
    turn *turns;
    size_t n, cap;
    bool live;   /* print chunks as they arrive */
    FILE *out;
} convo;

typedef struct reply {
    vbuf answer;
    char model[160];
    long in_tokens, out_tokens;
    char error[512];
    bool stored, done;
    unsigned chunks;
    x25519_key *transport; /* this request's key: opens every chunk of the answer */
    bool v2;               /* the enclave answered in stream format 2 */
    sv2 sv;
    term_filter tf; /* the live answer, made safe for the terminal */
    convo *cv;
} reply;

static void convo_free(convo *cv)
{
    for (size_t i = 0; i < cv->n; i++)
        vbuf_free_secure(&cv->turns[i].text);
    free(cv->turns);
    cv->turns = NULL;
    cv->n = cv->cap = 0;
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
    return vbuf_append(&t->text, text, len);
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

static json_t *seal_to_enclave(convo *cv, const uint8_t *text, size_t len)
{
    ep e;
    if (ep_seal(cv->enclave_pub, text, len, EP_CTX_CLIENT_TO_ENCLAVE, &e) != EP_OK)
        return NULL;
    json_t *j = ep_to_json(&e);
    ep_clear(&e);
    return j;
}

static void show(reply *rp, const uint8_t *text, size_t len)
{
    vbuf_append(&rp->answer, text, len);
    rp->chunks++;
    if (rp->cv->live) { /* the model's text may carry escape sequences */
        term_fwrite(rp->cv->out, &rp->tf, text, len);
        fflush(rp->cv->out);
    }
}

/* A format 2 element: opened with the stream key, in order (stream_v2.h). */
static int open_v2(reply *rp, const json_t *ev, sv2_kind kind, uint8_t **pt, size_t *len)
{
    if (rp->v2 && sv2_open_json(&rp->sv, kind, ev, pt, len) == 0)
        return 0;
    snprintf(rp->error, sizeof rp->error, "a stream element failed to verify (dropped, reordered or "
                                           "altered in transit)");
    return -1;
}

/* Format 1: one EncryptedPayload per chunk, only the enclave can seal to our key. */
static int open_v1(reply *rp, const json_t *epj, secret *pt)
{
    ep e;
    if (ep_from_json(epj, &e, NULL) != EP_OK) {
        snprintf(rp->error, sizeof rp->error, "malformed chunk from the server");
        return -1;
    }
    ep_err er = ep_open_key(rp->transport, &e, EP_CTX_ENCLAVE_TO_CLIENT, pt);
    ep_clear(&e);
    if (er != EP_OK) {
        snprintf(rp->error, sizeof rp->error, "a chunk failed to decrypt: %s", ep_strerror(er));
        return -1;
    }
    return 0;
}

/* Format 2: the end element proves nothing was cut off. */
static int check_end(reply *rp, const json_t *stream_end)
{
    uint8_t *pt;
    size_t n;
    json_t *probe = json_pack("{s:s, s:O}", "ciphertext", "", "auth_tag",
                              json_object_get(stream_end, "auth_tag") ? json_object_get(stream_end, "auth_tag")
                                                                     : json_null());
    int bad = !stream_end || open_v2(rp, probe, SV2_END, &pt, &n) < 0;
    json_decref(probe);
    if (bad) {
        snprintf(rp->error, sizeof rp->error, "the answer's end could not be verified: it may be cut off");
        return -1;
    }
    free(pt);
    return 0;
}

static int on_event(void *ud, const json_t *json)
{
    reply *rp = ud;
    proto_sse_event ev;
    uint8_t *pt;
    size_t n;
    secret sp;
    switch (proto_parse_sse(json, &ev)) {
    case PROTO_SSE_INVALID:
        snprintf(rp->error, sizeof rp->error, "malformed event from the server");
        return 1;
    case PROTO_SSE_EV_SESSION:
        snprintf(rp->cv->session_id, sizeof rp->cv->session_id, "%s", ev.session_id);
        return 0;
    case PROTO_SSE_EV_STREAM_KEY:
        if (sv2_init_receiver(&rp->sv, rp->transport, ev.epk, ev.salt) < 0) {
            snprintf(rp->error, sizeof rp->error, "malformed stream key from the server");
            return 1;
        }
        rp->v2 = true;
        return 0;
    case PROTO_SSE_EV_CHUNK_V2:
    case PROTO_SSE_EV_THINKING_V2: {
        bool text = ev.kind == PROTO_SSE_EV_CHUNK_V2;
        if (open_v2(rp, ev.elem, text ? SV2_TEXT : SV2_THINKING, &pt, &n) < 0)
            return 1;
        if (text)
            show(rp, pt, n);
        OPENSSL_cleanse(pt, n);
        free(pt);
        return 0;
    }
    case PROTO_SSE_EV_CHUNK:
    case PROTO_SSE_EV_THINKING:
        if (open_v1(rp, ev.ep, &sp) < 0)
            return 1;
        if (ev.kind == PROTO_SSE_EV_CHUNK)
            show(rp, sp.data, sp.len);
        secret_free(&sp);
        return 0;
    case PROTO_SSE_EV_STORED:
        if (rp->v2 && check_end(rp, ev.stream_end) < 0)
            return 1;
        rp->stored = true;
        snprintf(rp->model, sizeof rp->model, "%s", ev.model_used ? ev.model_used : "");
        rp->in_tokens = ev.input_tokens;
        rp->out_tokens = ev.output_tokens;
        return 0;
    case PROTO_SSE_EV_DONE:
        rp->done = true;
        return 0;
    case PROTO_SSE_EV_ERROR:
        snprintf(rp->error, sizeof rp->error, "%s", ev.message);
        return 0;
    case PROTO_SSE_EV_CHUNK_V3:
    case PROTO_SSE_EV_THINKING_V3:
        snprintf(rp->error, sizeof rp->error, "the server answered in a stream format this client did not ask for");
        return 1;
    case PROTO_SSE_EV_OTHER:
        return 0;
    }
    return 0;
}

/* Sends one prompt; on success the turn pair joins the conversation. */
static int convo_send(convo *cv, const char *prompt, reply *rp, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        memset(rp, 0, sizeof *rp);
        rp->cv = cv;
        if (!cv->have_key && fetch_enclave_key(cv, err, errlen) < 0)
            return -1;
        uint8_t tpub[32];
        char tpub_hex[65];
        if (!(rp->transport = x25519_key_generate(tpub))) {
            snprintf(err, errlen, "key generation failed");
            return -1;
        }
        hex_encode(tpub, 32, tpub_hex);
        json_t *hist = json_array();
        for (size_t i = 0; i < cv->n; i++) {
            json_t *e = seal_to_enclave(cv, cv->turns[i].text.data, cv->turns[i].text.len);
            json_object_set_new(e, "role", json_string(cv->turns[i].role));
            json_array_append_new(hist, e);
        }
        json_t *body = json_pack("{s:s, s:o, s:o, s:s}", "model", cv->model, "encrypted_message",
                                 seal_to_enclave(cv, (const uint8_t *)prompt, strlen(prompt)),
                                 PF_ENCRYPTED_HISTORY, hist, "client_transport_public_key", tpub_hex);
        json_object_set_new(body, "session_id", cv->session_id[0] ? json_string(cv->session_id) : json_null());
        /* ask for format 2; a server or enclave that does not know it answers in format 1 */
        json_object_set_new(body, PF_STREAM_FORMAT, json_integer(2));
        int status;
        json_t *r = NULL;
        int rc = vclient_stream(cv->c, "/api/v1/chat/encrypted/stream", body, on_event, rp, &status, &r,
                                err, errlen);
        json_decref(body);
        if (cv->live)
            term_fwrite_end(cv->out, &rp->tf);
        char buf[CLI_ERR_MAX];
        if (rc == 0 && status != 200) {
            const char *d = json_string_value(json_object_get(r, "detail"));
            bool no_keys = d && strcmp(d, "User has not set up encryption keys") == 0;
            snprintf(err, errlen, "%s%s", api_detail(r, status, buf, sizeof buf),
                     no_keys ? ": run `veil keys init` first" : "");
            rc = -1;
        }
        json_decref(r);
        x25519_key_free(rp->transport);
        rp->transport = NULL;
        sv2_wipe(&rp->sv);
        if (rc < 0)
            return -1;
        if (rp->error[0] && strstr(rp->error, "enclave key may have changed") && attempt == 0 && rp->chunks == 0) {
            cv->have_key = false; /* the enclave restarted: learn (and verify) its new key, retry once */
            continue;
        }
        if (rp->error[0]) {
            snprintf(err, errlen, "%s", rp->error);
            return -1;
        }
        if (!rp->done || !rp->stored) {
            snprintf(err, errlen, "the stream ended before the answer was stored");
            return -1;
        }
        convo_add(cv, "user", (const uint8_t *)prompt, strlen(prompt));
        convo_add(cv, "assistant", rp->answer.data, rp->answer.len);
        return 0;
    }
    snprintf(err, errlen, "the enclave key keeps changing");
    return -1;
}

/* Loads a session's stored messages, decrypted with the storage key. */
static int load_session(convo *cv, const char *session, const char *pfile, char *err, size_t errlen)
{
    uint8_t upriv[32], skey[32];
    char org[256], path[512], buf[CLI_ERR_MAX];
    if (userkeys_private(cv->c, pfile, upriv, err, errlen) < 0)
        return -1;
    int rc = -1;
    json_t *r = NULL;
    int status;
    if (userkeys_current_org(cv->c, org, sizeof org, err, errlen) < 0 ||
        userkeys_storage(cv->c, org, upriv, skey, err, errlen) < 0)
        goto out;
    snprintf(path, sizeof path, "/api/v1/chat/sessions/%s/messages", session);
    if (vclient_call(cv->c, "GET", path, NULL, &status, &r, err, errlen) < 0)
        goto out;
    if (status != 200) {
        snprintf(err, errlen, "%s", api_detail(r, status, buf, sizeof buf));
        goto out;
    }
    size_t i;
    const json_t *m;
    json_array_foreach(json_object_get(r, "messages"), i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *ctx = role && strcmp(role, "assistant") == 0 ? EP_CTX_ASSISTANT_STORAGE : EP_CTX_USER_STORAGE;
        ep e;
        secret pt;
        ep_err er = ep_from_json(json_object_get(m, PF_ENCRYPTED_CONTENT), &e, NULL);
        if (er == EP_OK)
            er = ep_open(skey, &e, ctx, &pt);
        ep_clear(&e);
        if (er != EP_OK) {
            snprintf(err, errlen, "message %zu does not decrypt with your storage key: %s", i, ep_strerror(er));
            goto out;
        }
        convo_add(cv, role ? role : "user", pt.data, pt.len);
        secret_free(&pt);
    }
    snprintf(cv->session_id, sizeof cv->session_id, "%s", session);
    rc = 0;
out:
    json_decref(r);
    OPENSSL_cleanse(upriv, 32);
    OPENSSL_cleanse(skey, 32);
    return rc;
}

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
    return 0;
}

#define HELP_ATTESTATION                                                                                \
    "Before the first seal, and whenever the enclave's key changes, the client asks for a\n"           \
    "fresh attestation (a random 32-byte nonce) and verifies it down to the AWS Nitro root:\n"          \
    "the nonce, at most 300 s old, the key it will seal to, veil's statement and the PCRs\n"            \
    "stored by `veil login --measurements FILE` (see `veil keys status`). Nothing is sent\n"            \
    "when a check fails. --no-attestation skips the check (warned about on every run): the\n"          \
    "server could then substitute its own key and read the conversation.\n"

static void help_ask(void)
{
    printf("Usage: veil ask [--model M] [--session ID] [--json] [--passcode-file F] [--no-attestation]\n"
           "                \"PROMPT\"\n\n"
           "Sends one prompt (sealed to the enclave key) and prints the answer as it streams in,\n"
           "decrypted here. --session continues a stored conversation (its history is decrypted\n"
           "with your storage key, so it needs your passcode or `veil keys unlock`). --json prints\n"
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
           "or the organization's key in an org context).\n");
}

static int start_convo(const char *verb, convo *cv, vclient *c, cli_trust *trust, const chat_opts *o)
{
    char err[CLI_ERR_MAX];
    memset(cv, 0, sizeof *cv);
    cv->c = c;
    cv->trust = trust;
    cv->out = stdout;
    snprintf(cv->model, sizeof cv->model, "%s", o->model ? o->model : DEFAULT_MODEL);
    if (cli_trust_load(trust, verb, !o->no_attestation, err, sizeof err) < 0)
        return FAIL(verb, "%s", err);
    if (o->session && load_session(cv, o->session, o->pfile, err, sizeof err) < 0)
        return FAIL(verb, "%s", err);
    return 0;
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
    reply rp;
    if (convo_send(&cv, prompt, &rp, err, sizeof err) < 0) {
        if (cv.live && rp.chunks)
            printf("\n");
        rc = FAIL("ask", "%s", err);
    } else if (o.json) {
        json_t *j = json_pack("{s:s, s:s%, s:s, s:I, s:I}", "session_id", cv.session_id, "answer",
                              (const char *)rp.answer.data ? (const char *)rp.answer.data : "",
                              rp.answer.len, "model", rp.model, "input_tokens", (json_int_t)rp.in_tokens,
                              "output_tokens", (json_int_t)rp.out_tokens);
        /* ASCII-only JSON: control characters arrive escaped, never raw */
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
    } else {
        term_fprintf(stdout, "\n[%s · %ld in · %ld out · session %s]\n", rp.model, rp.in_tokens, rp.out_tokens,
                     cv.session_id);
    }
    vbuf_free_secure(&rp.answer);
    convo_free(&cv);
    vclient_free(&c);
    return rc;
}

/* Before the banner: the server answers, the token is good, the account has keys
 * and the enclave's key is known, so chat never fails only at the first message. */
static int check_ready(convo *cv, char *err, size_t errlen)
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
        rc = cv->have_key ? 0 : fetch_enclave_key(cv, err, errlen);
    json_decref(r);
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
    if (check_ready(&cv, err, sizeof err) < 0) {
        convo_free(&cv);
        vclient_free(&c);
        return FAIL("chat", "%s", err);
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
        reply rp;
        if (convo_send(&cv, line, &rp, err, sizeof err) < 0) {
            if (rp.chunks)
                printf("\n");
            rc = FAIL("chat", "%s", err);
        } else {
            printf("\n");
            fflush(stdout);
            term_fprintf(stderr, "[%s · %ld in · %ld out]\n", rp.model, rp.in_tokens, rp.out_tokens);
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

int cmd_history(int argc, char **argv)
{
    chat_opts o;
    int rc = parse_opts("history", argc, argv, &o, help_history);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (optind != argc - 1)
        return cli_fail("history", EXIT_USAGE, "give one session id (see veil sessions)");
    vclient c;
    char err[CLI_ERR_MAX];
    if (vclient_from_config(&c, err, sizeof err) < 0)
        return FAIL("history", "%s", err);
    convo cv;
    memset(&cv, 0, sizeof cv);
    cv.c = &c;
    if (load_session(&cv, argv[optind], o.pfile, err, sizeof err) < 0) {
        rc = FAIL("history", "%s", err);
    } else if (o.json) {
        json_t *a = json_array();
        for (size_t i = 0; i < cv.n; i++)
            json_array_append_new(a, json_pack("{s:s, s:s%}", "role", cv.turns[i].role, "text",
                                               (const char *)cv.turns[i].text.data ? (const char *)cv.turns[i].text.data : "",
                                               cv.turns[i].text.len));
        char *s = json_dumps(a, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", s ? s : "[]");
        free(s);
        json_decref(a);
    } else {
        for (size_t i = 0; i < cv.n; i++) {
            term_filter tf;
            term_filter_init(&tf);
            term_fprintf(stdout, "%s", cv.turns[i].role); /* alone: a cut sequence cannot eat the ':' */
            fputs(": ", stdout);
            term_fwrite(stdout, &tf, cv.turns[i].text.data, cv.turns[i].text.len);
            term_fwrite_end(stdout, &tf);
            printf("\n\n");
        }
    }
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
