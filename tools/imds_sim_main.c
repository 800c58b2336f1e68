/* veil-imds-sim — a local stand-in for the EC2 instance metadata service (IMDSv2).
 *
 * Plain HTTP like the real 169.254.169.254: a session token from PUT /latest/api/token,
 * then token-guarded GETs of the role, its temporary credentials and the placement.
 * Credentials expire --expiration-seconds after issue; the same set is served until it
 * is within min(300 s, lifetime / 5) of expiry, then a new generation is minted. With
 * --credential-seed the sets come from tools/sim_creds.h, so veil-bedrock-sim can verify
 * them on its own. Never logs a token or a credential.
 */
#include <event2/event.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/addr.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"
#include "common/secret.h"
#include "sim_creds.h"
#include "sim_http.h"

#define PROG "veil-imds-sim"
#define EXIT_USAGE 2
#define IMDS_MAX_TTL 21600            /* seconds, the real service's limit */
#define IMDS_MAX_TOKENS 100000        /* live session tokens kept */
#define IMDS_TOKEN_RAW 42             /* random bytes: 56 base64 chars, like the real ones */
#define IMDS_TOKEN_LEN 56
#define IMDS_MAX_BODY 4096
#define ROTATION_MARGIN_MAX 300       /* seconds before expiry a new set is minted */
#define CREDS_PREFIX "/latest/meta-data/iam/security-credentials"

typedef struct imds_token {
    char text[IMDS_TOKEN_LEN + 1];
    time_t expires;
} imds_token;

typedef struct imds {
    const char *role;
    const char *region;
    long lifetime;
    const char *seed;
    const char *akid, *secret, *token; /* static set, when no seed */

    unsigned long generation; /* 0: nothing issued yet */
    time_t issued, expires;
    sim_creds minted;

    imds_token *tokens;
    size_t n_tokens, cap_tokens;
} imds;

/* ------------------------------------------------------------------- tokens */

static void purge_tokens(imds *m, time_t now)
{
    size_t k = 0;
    if (!m->tokens)
        return;
    for (size_t i = 0; i < m->n_tokens; i++)
        if (m->tokens[i].expires > now)
            m->tokens[k++] = m->tokens[i];
    secure_wipe(m->tokens + k, (m->n_tokens - k) * sizeof *m->tokens);
    m->n_tokens = k;
}

static const imds_token *new_token(imds *m, long ttl, time_t now)
{
    purge_tokens(m, now);
    if (m->n_tokens == IMDS_MAX_TOKENS)
        return NULL;
    if (m->n_tokens == m->cap_tokens) {
        size_t cap = m->cap_tokens ? m->cap_tokens * 2 : 64;
        imds_token *t = realloc(m->tokens, cap * sizeof *t);
        if (!t)
            return NULL;
        m->tokens = t;
        m->cap_tokens = cap;
    }
    unsigned char raw[IMDS_TOKEN_RAW];
    imds_token *t = &m->tokens[m->n_tokens];
    if (RAND_bytes(raw, sizeof raw) != 1 ||
        EVP_EncodeBlock((unsigned char *)t->text, raw, sizeof raw) != IMDS_TOKEN_LEN)
        return NULL;
    secure_wipe(raw, sizeof raw);
    t->expires = now + ttl;
    m->n_tokens++;
    return t;
}

static bool token_live(const imds *m, const char *v, size_t len, time_t now)
{
    if (!v || len != IMDS_TOKEN_LEN)
        return false;
    for (size_t i = 0; i < m->n_tokens; i++)
        if (m->tokens[i].expires > now && CRYPTO_memcmp(m->tokens[i].text, v, len) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------------- credentials */

static int refresh_credentials(imds *m, time_t now)
{
    long margin = m->lifetime / 5 < ROTATION_MARGIN_MAX ? m->lifetime / 5 : ROTATION_MARGIN_MAX;
    if (m->generation && now < m->expires - margin)
        return 0;
    unsigned long gen = m->generation + 1;
    if (m->seed) {
        if (gen > SIM_CREDS_MAX_GENERATION || sim_creds_derive(m->seed, gen, &m->minted) < 0)
            return -1;
    }
    m->generation = gen;
    m->issued = now;
    m->expires = now + m->lifetime;
    log_info(NULL, "event=credentials_issued generation=%lu lifetime_s=%ld", gen, m->lifetime);
    return 0;
}

static int credentials_json(imds *m, vbuf *out)
{
    char updated[21], expires[21];
    const char *akid = m->seed ? m->minted.access_key_id : m->akid;
    const char *secret_key = m->seed ? m->minted.secret_access_key : m->secret;
    const char *token = m->seed ? m->minted.session_token : m->token;
    sim_format_iso8601(m->issued, updated);
    sim_format_iso8601(m->expires, expires);
    if (vbuf_printf(out, "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"%s\",\n"
                         "  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"", updated) < 0 ||
        sim_json_escape(out, akid, strlen(akid)) < 0 ||
        vbuf_append_str(out, "\",\n  \"SecretAccessKey\" : \"") < 0 ||
        sim_json_escape(out, secret_key, strlen(secret_key)) < 0 ||
        vbuf_append_str(out, "\",\n  \"Token\" : \"") < 0 ||
        sim_json_escape(out, token, strlen(token)) < 0 ||
        vbuf_printf(out, "\",\n  \"Expiration\" : \"%s\"\n}", expires) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------- requests */

static bool eq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static void text(sim_conn *c, int status, const char *body)
{
    sim_conn_respond(c, status, "text/plain", NULL, body, strlen(body));
}

static void handle_token(imds *m, sim_conn *c, const http1_request *req, time_t now)
{
    size_t vlen = 0;
    const char *v = http1_header_get(&req->headers, "X-aws-ec2-metadata-token-ttl-seconds", &vlen);
    char tmp[16];
    long ttl;
    if (!v || vlen == 0 || vlen >= sizeof tmp) {
        text(c, 400, "Bad Request");
        return;
    }
    memcpy(tmp, v, vlen);
    tmp[vlen] = '\0';
    if (parse_long(tmp, 1, IMDS_MAX_TTL, &ttl) < 0) {
        text(c, 400, "Bad Request");
        return;
    }
    const imds_token *t = new_token(m, ttl, now);
    if (!t) {
        text(c, 503, "Service Unavailable");
        return;
    }
    char hdr[64];
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token-ttl-seconds: %ld\r\n", ttl);
    sim_conn_respond(c, 200, "text/plain", hdr, t->text, IMDS_TOKEN_LEN);
}

static void handle_request(sim_conn *c, const http1_request *req, const uint8_t *body,
                           size_t body_len, void *user)
{
    (void)body;
    (void)body_len;
    imds *m = user;
    time_t now = time(NULL);
    const char *path = req->path;
    size_t plen = req->path_len;
    bool is_get = eq(req->method, req->method_len, "GET");

    /* a proxied request is never metadata's business (the real IMDS refuses it too) */
    if (http1_header_get(&req->headers, "X-Forwarded-For", NULL)) {
        text(c, 403, "Forbidden");
        return;
    }
    if (eq(path, plen, "/latest/api/token")) {
        if (!eq(req->method, req->method_len, "PUT")) {
            text(c, 405, "Method Not Allowed");
            return;
        }
        handle_token(m, c, req, now);
        return;
    }
    if (!is_get) {
        text(c, 405, "Method Not Allowed");
        return;
    }
    size_t tlen = 0;
    const char *tok = http1_header_get(&req->headers, "X-aws-ec2-metadata-token", &tlen);
    if (!token_live(m, tok, tlen, now)) {
        text(c, 401, "Unauthorized");
        return;
    }
    if (eq(path, plen, CREDS_PREFIX) || eq(path, plen, CREDS_PREFIX "/")) {
        text(c, 200, m->role);
        return;
    }
    size_t cp = strlen(CREDS_PREFIX "/");
    if (plen > cp && memcmp(path, CREDS_PREFIX "/", cp) == 0) {
        if (!eq(path + cp, plen - cp, m->role)) {
            text(c, 404, "Not Found");
            return;
        }
        vbuf out = VBUF_INIT;
        if (refresh_credentials(m, now) < 0 || credentials_json(m, &out) < 0) {
            vbuf_free_secure(&out);
            text(c, 500, "Internal Server Error");
            return;
        }
        sim_conn_respond(c, 200, "text/plain", NULL, out.data, out.len);
        vbuf_free_secure(&out);
        return;
    }
    if (eq(path, plen, "/latest/meta-data/placement/region")) {
        text(c, 200, m->region);
        return;
    }
    if (eq(path, plen, "/latest/meta-data/placement/availability-zone")) {
        char az[80];
        snprintf(az, sizeof az, "%sa", m->region);
        text(c, 200, az);
        return;
    }
    text(c, 404, "Not Found");
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
"Usage: " PROG " --listen tcp:HOST:PORT [OPTIONS]\n"
"\n"
"A local stand-in for the EC2 instance metadata service, IMDSv2, over plain HTTP:\n"
"  PUT /latest/api/token  (X-aws-ec2-metadata-token-ttl-seconds: 1..21600) -> token; else 400\n"
"  GET /latest/meta-data/iam/security-credentials/        -> the role name\n"
"  GET /latest/meta-data/iam/security-credentials/<role>  -> JSON credentials (404 other roles)\n"
"  GET /latest/meta-data/placement/region | availability-zone (region + \"a\")\n"
"Every GET needs X-aws-ec2-metadata-token with a live token (else 401); any request with\n"
"X-Forwarded-For is refused (403), as the real service does.\n"
"\n"
"Options:\n"
"  --listen ADDR              address to listen on, tcp:HOST:PORT (port 0 = any); required\n"
"  --role NAME                instance role name (default veil-enclave-role)\n"
"  --region R                 region (default: $AWS_REGION, else us-east-1)\n"
"  --expiration-seconds N     credential lifetime (default 21600). A set is served until it\n"
"                             is within min(300, N/5) s of expiry; then a new one is minted\n"
"  --credential-seed SEED     mint credentials from SEED (env VEIL_SIM_CREDENTIAL_SEED):\n"
"                             AccessKeyId = ASIAVEILSIM + 9-digit generation, the secret and\n"
"                             token are HMAC-SHA256(SEED, ...) (tools/sim_creds.h), so\n"
"                             veil-bedrock-sim --credential-seed SEED accepts them\n"
"  --access-key-id ID         without a seed: the static set served (env VEIL_SIM_ACCESS_KEY_ID,\n"
"  --secret-access-key S        VEIL_SIM_SECRET_ACCESS_KEY, VEIL_SIM_SESSION_TOKEN), with a\n"
"  --session-token T            fresh expiration at each rotation\n"
"  --help                     this text\n"
"\n"
"Logs: one line per request on stderr; first `event=listening addr=tcp:HOST:PORT`.\n"
".env in the working directory is read if present. SIGTERM/SIGINT: exit 0.\n");
}

static void log_config(void *ud)
{
    const imds *m = ud;
    log_info(NULL, "event=config role=%s region=%s expiration_s=%ld credentials=%s", m->role, m->region,
             m->lifetime, m->seed ? "seeded" : "static");
}

enum { OPT_LISTEN = 1, OPT_ROLE, OPT_REGION, OPT_EXP, OPT_SEED, OPT_AKID, OPT_SECRET, OPT_TOKEN,
       OPT_HELP };

int main(int argc, char **argv)
{
    static const struct option LONG_OPTS[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"role", required_argument, NULL, OPT_ROLE},
        {"region", required_argument, NULL, OPT_REGION},
        {"expiration-seconds", required_argument, NULL, OPT_EXP},
        {"credential-seed", required_argument, NULL, OPT_SEED},
        {"access-key-id", required_argument, NULL, OPT_AKID},
        {"secret-access-key", required_argument, NULL, OPT_SECRET},
        {"session-token", required_argument, NULL, OPT_TOKEN},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    char err[256];
    const char *listen = NULL, *region = NULL;
    imds m = {.role = "veil-enclave-role", .lifetime = IMDS_MAX_TTL};
    int opt;

    log_init(PROG);
    if (config_load_dotenv(".env", err, sizeof err) < 0) {
        fprintf(stderr, PROG ": .env: %s\n", err);
        return EXIT_USAGE;
    }
    while ((opt = getopt_long(argc, argv, "h", LONG_OPTS, NULL)) != -1) {
        switch (opt) {
        case OPT_LISTEN: listen = optarg; break;
        case OPT_ROLE: m.role = optarg; break;
        case OPT_REGION: region = optarg; break;
        case OPT_EXP:
            if (parse_long(optarg, 1, 7L * 24 * 3600, &m.lifetime) < 0) {
                fprintf(stderr, PROG ": --expiration-seconds: expected 1..604800\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_SEED: m.seed = optarg; break;
        case OPT_AKID: m.akid = optarg; break;
        case OPT_SECRET: m.secret = optarg; break;
        case OPT_TOKEN: m.token = optarg; break;
        case 'h':
        case OPT_HELP: usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc || !listen) {
        fprintf(stderr, PROG ": --listen is required (see --help)\n");
        return EXIT_USAGE;
    }
    if (!*m.role || strchr(m.role, '/')) {
        fprintf(stderr, PROG ": --role: a non-empty name without '/'\n");
        return EXIT_USAGE;
    }
    m.region = region ? region : config_str("AWS_REGION", "us-east-1");
    m.seed = m.seed ? m.seed : config_str("VEIL_SIM_CREDENTIAL_SEED", NULL);
    m.akid = m.akid ? m.akid : config_str("VEIL_SIM_ACCESS_KEY_ID", NULL);
    m.secret = m.secret ? m.secret : config_str("VEIL_SIM_SECRET_ACCESS_KEY", NULL);
    m.token = m.token ? m.token : config_str("VEIL_SIM_SESSION_TOKEN", "");
    if (!m.seed && (!m.akid || !m.secret)) {
        fprintf(stderr, PROG ": give --credential-seed, or --access-key-id and "
                        "--secret-access-key (see --help)\n");
        return EXIT_USAGE;
    }

    veil_addr addr;
    if (addr_parse(listen, &addr, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": --listen: %s\n", err);
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    sim_raise_nofile();

    sim_server_config scfg = {NULL, IMDS_MAX_BODY, SIM_ERRORS_TEXT, handle_request, &m, 0}; /* one request per connection */
    int rc = sim_run(&addr, 1024, &scfg, log_config, &m);
    if (m.tokens) {
        secure_wipe(m.tokens, m.cap_tokens * sizeof *m.tokens);
        free(m.tokens);
    }
    sim_creds_wipe(&m.minted);
    return rc;
}
