/* veil chat | ask | history | sessions | models: the verbs of talking to the model
 * (the conversation itself, in stream format 3, is convo.h's) and of reading a stored
 * conversation back with its history chain's verdict marked (chain.h). Nothing that
 * failed a check is shown as genuine. Plaintext and keys are wiped after use. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli/chain.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/convo.h"
#include "cli/term.h"
#include "cli/trust.h"
#include "cli/userkeys.h"

#define DEFAULT_MODEL "us.anthropic.claude-3-5-haiku-20241022-v1:0"
#define FAIL(verb, ...) cli_fail(verb, 1, __VA_ARGS__)
#define UNVERIFIED "the answer could not be verified: "

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
    "when a check fails. Behind a load balancer, an instance whose enclave has another key\n"         \
    "answers 409 with it: the client checks its document, attests that enclave afresh and\n"           \
    "reseals once. --no-attestation skips the checks (warned about on every run): the\n"              \
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
    convo_init(cv, c, trust, o->model ? o->model : DEFAULT_MODEL);
    if (cli_trust_load(trust, verb, !o->no_attestation, err, sizeof err) < 0 ||
        (strcmp(verb, "chat") == 0 && check_keys(cv, err, sizeof err) < 0) ||
        convo_attest(cv, err, sizeof err) < 0 || convo_open_storage(cv, o->pfile, err, sizeof err) < 0 ||
        (o->session && convo_load_session(cv, o->session, err, sizeof err) < 0)) {
        convo_free(cv);
        return FAIL(verb, "%s", err);
    }
    return 0;
}

static void print_warning(const char *verb, const convo_reply *rp)
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
    convo_reply rp = {0};
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
        convo_reply rp = {0};
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

static void print_text(const convo_history *h)
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

static void print_json(const convo_history *h)
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
    convo_history h;
    convo_init(&cv, &c, NULL, DEFAULT_MODEL);
    if (convo_open_storage(&cv, o.pfile, err, sizeof err) < 0 || convo_history_load(&cv, session, &h, err, sizeof err) < 0) {
        rc = FAIL("history", "%s", err);
        goto out;
    }
    if (o.json)
        print_json(&h);
    else
        print_text(&h);
    fflush(stdout);
    if (chain_broken(&h.rep)) {
        convo_describe_breaks(&h.rep, what, sizeof what);
        rc = FAIL("history", "the stored history does not verify: %s (marked in the output)", what);
    } else if (h.rep.untagged || h.rep.unpaired) {
        fprintf(stderr, "veil history: note: %zu exchange(s) and %zu message(s) without a history tag are not "
                        "verified\n", h.rep.untagged, h.rep.unpaired);
    }
    convo_history_free(&h);
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
