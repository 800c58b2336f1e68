/* veild — the API server between clients and the enclave. It stores and relays
 * ciphertext only. This file is the process: options and environment, the event
 * base, signals, the drain and the timers; server.h builds and frees the server. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "common/config.h"
#include "common/log.h"
#include "enclave/enclave.h"
#include "net/evwipe.h"
#include "server/server.h"

#define HEALTH_PROBE_S 10 /* nitro: notice an enclave restart within this long (VEIL_ENCLAVE_PROBE_SECONDS) */
#define DRAIN_TICK_MS 100

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: veild [--help]\n\n"
            "The veil API server: Clerk-authenticated REST + SSE routes, SQLite or PostgreSQL,\n"
            "and the enclave client. Configured by environment variables (and ./.env):\n\n"
            "  VEIL_LISTEN            listen address (default tcp:127.0.0.1:8000)\n"
            "  VEIL_DATA_DIR          data directory (default ./data)\n"
            "  DATABASE_URL           sqlite:PATH (default sqlite:$VEIL_DATA_DIR/veil.db) or\n"
            "                         postgresql://user@host:port/db\n"
            "  VEIL_DB_WORKERS        threads with a database connection each; the event loop\n"
            "                         never waits on the database (default 4)\n"
            "  VEIL_DB_QUEUE_MAX      requests waiting for a DB worker, 503 past it (default 256)\n"
            "  VEIL_DB_STATEMENT_TIMEOUT_MS  the longest one statement may take: PostgreSQL's\n"
            "                         statement_timeout and veild's own wait (+1 s); 503 past it\n"
            "                         (default 5000)\n"
            "  VEIL_HEALTH_DB_WAIT_MS how long GET /health waits for a database ping\n"
            "                         (default 2000)\n"
            "  CLERK_ISSUER           required: the token issuer (iss)\n"
            "  CLERK_JWKS_FILE        a local JWKS instead of CLERK_ISSUER/.well-known/jwks.json\n"
            "  CLERK_JWKS_URL         override the JWKS URL\n"
            "  CLERK_AUDIENCE         required aud (default: tokens carrying aud are refused)\n"
            "  CLERK_AUTHORIZED_PARTIES  comma-separated azp values to accept (default: any)\n"
            "  CLERK_JWT_LEEWAY_SECONDS  clock skew allowed (default 30)\n"
            "  CLERK_WEBHOOK_SECRET   whsec_... Svix secret; webhooks are refused without it\n"
            "  CLERK_WEBHOOK_DEDUP_SECONDS  a repeated svix-id is dropped this long after it was\n"
            "                         applied (default 86400, at least 600)\n"
            "  ENCLAVE_MODE           mock (in-process enclave core, default) or nitro\n"
            "  ENCLAVE_ADDR           nitro: vsock:CID:PORT | unix:PATH | tcp:HOST:PORT\n"
            "  ENCLAVE_CID            nitro: the enclave CID (default: nitro-cli describe-enclaves)\n"
            "  ENCLAVE_PORT           nitro: the enclave vsock port (default 5000)\n"
            "  ENCLAVE_CREDENTIAL_REFRESH_SECONDS  credential push interval (default 2700)\n"
            "  ENCLAVE_INFERENCE_TIMEOUT  deadline of one chat, seconds (default 120)\n"
            "  AWS_REGION             region (default us-east-1)\n"
            "  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,\n"
            "  AWS_CREDENTIAL_EXPIRATION  static credentials (else EC2 IMDSv2)\n"
            "  VEIL_IMDS_ENDPOINT     IMDS host:port (default 169.254.169.254:80)\n"
            "  PROXY_ADDR             mock: CONNECT proxy for Bedrock (default: direct)\n"
            "  BEDROCK_ENDPOINT       mock: Bedrock host:port (default bedrock-runtime.<region>...:443)\n"
            "  VEIL_CA_FILE           CA bundle for Bedrock and JWKS TLS (default: system)\n"
            "  CORS_ORIGINS           comma-separated allowed origins (default http://localhost:3000);\n"
            "                         * lets any origin read answers, never with credentials\n"
            "  VEIL_DEBUG_ROUTES      true: mount /api/v1/debug/encryption/report (admins only)\n"
            "  VEIL_MAX_BODY          largest request body in bytes, 413 past it (default 8388608,\n"
            "                         the enclave's request limit)\n"
            "  VEIL_HTTP_MAX_HEAD     request line + headers in bytes, 431 past it (default 16384)\n"
            "  VEIL_HTTP_IDLE_SECONDS a connection with no request in progress (default 60)\n"
            "  VEIL_HTTP_HEAD_SECONDS the whole head, from its first byte; 408 (default 10)\n"
            "  VEIL_HTTP_BODY_SECONDS the whole body, from the end of the head; 408 (default 30)\n"
            "  VEIL_MAX_CONNECTIONS   open connections, 503 past it (default 0: from the\n"
            "                         descriptor limit, with headroom)\n"
            "  VEIL_SSE_MAX_BUFFER    unsent bytes of a stream before veild stops taking the\n"
            "                         answer from the enclave (default 1048576)\n"
            "  VEIL_SSE_STALL_SECONDS a client that far behind this long is cut off (default 30)\n"
            "  VEIL_USER_MAX_STREAMS  concurrent chat streams per user, 429 past it (default 4)\n"
            "  VEIL_USER_RATE         requests per second per user, 429 past it (default 20; 0 off)\n"
            "  VEIL_USER_BURST        bursts of this many requests (default 100)\n"
            "  VEIL_USER_TABLE_MAX    users tracked at once for the two above (default 100000)\n"
            "  VEIL_EMPTY_SESSION_TTL_SECONDS  a new chat left empty by a failed first message\n"
            "                         is deleted after this long (default 86400)\n"
            "  VEIL_ATTEST_RATE       fresh attestations (/enclave/info?nonce=) per second, all\n"
            "                         users (default 20); VEIL_ATTEST_USER_RATE per user (default 1)\n"
            "  ENCLAVE_NSM            mock: the in-process core's NSM, none (default) or sim:DIR\n"
            "  VEIL_WEB_DIR           the web chat page served at /app/ (default: web/ beside the\n"
            "                         build directory of veild; none: no page)\n"
            "  VEIL_WEB_MEASUREMENTS  nitro-cli's measurements JSON the page checks PCR0-2 against\n"
            "                         (default: none, and the page refuses to chat)\n"
            "  VEIL_WEB_ATTESTATION_ROOT  a PEM root the page verifies attestations against instead\n"
            "                         of the AWS Nitro root G1 it embeds (the simulated NSM only)\n"
            "  VEIL_DRAIN_SECONDS     on SIGTERM, wait this long for streams (default 30)\n"
            "  VEIL_ENCLAVE_PROBE_SECONDS  nitro: HEALTH probe interval that notices an enclave\n"
            "                         restart and re-pushes credentials (default 10)\n"
            "  VEIL_LOG_LEVEL         debug|info|warn|error (default info)\n");
}

static struct {
    struct event_base *base;
    server *srv;
    struct event *probe, *drain, *sweep;
    time_t drain_deadline;
    long drain_seconds;
    long probe_seconds;
    bool stopping;
} G;

static void on_probe(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    server_probe_enclave(G.srv);
}

/* Sessions that a failed or cancelled first message left empty (the row exists
 * from the stream's start, so that the client can retry in it) go after a while. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    server_sweep_empty_sessions(G.srv);
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    unsigned held = server_held(G.srv);
    if (held == 0 || time(NULL) >= G.drain_deadline) {
        if (held)
            log_warn(NULL, "event=drain_deadline open_requests=%u", held);
        event_base_loopexit(G.base, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (G.stopping) {
        event_base_loopbreak(G.base);
        return;
    }
    G.stopping = true;
    log_info(NULL, "event=shutdown signal=%d open_requests=%u", (int)sig, server_held(G.srv));
    server_stop_accepting(G.srv);
    if (G.probe)
        event_del(G.probe);
    G.drain_deadline = time(NULL) + G.drain_seconds;
    struct timeval tv = {0, DRAIN_TICK_MS * 1000};
    event_add(G.drain, &tv);
}

/* Every open connection is a descriptor (two with its enclave link): take the
 * hard limit, and let the HTTP layer size its connection cap from it. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    evwipe_install(); /* before any libevent object: what peers send is wiped when freed */
    char err[512];
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == 'h') {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return 2;
    }
    if (config_load_dotenv(".env", err, sizeof err) < 0) {
        fprintf(stderr, "veild: %s\n", err);
        return 2;
    }
    log_init("veild");
    server_config cfg;
    if (settings_load(&cfg, err, sizeof err) < 0 ||
        config_long("VEIL_DRAIN_SECONDS", 30, 0, 3600, &G.drain_seconds, err, sizeof err) < 0 ||
        config_long("VEIL_ENCLAVE_PROBE_SECONDS", HEALTH_PROBE_S, 1, 3600, &G.probe_seconds, err, sizeof err) < 0) {
        fprintf(stderr, "veild: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (cfg.mode == ENCLAVE_MOCK)
        enclave_secure_json(); /* the in-process enclave handles plaintext */
    if (!(G.base = event_base_new())) {
        fprintf(stderr, "veild: cannot create the event loop\n");
        return 1;
    }
    if (!(G.srv = server_new(G.base, &cfg, err, sizeof err))) {
        fprintf(stderr, "veild: %s\n", err);
        event_base_free(G.base);
        return 1;
    }
    char bound[320];
    if (server_listen(G.srv, bound, sizeof bound, err, sizeof err) < 0) {
        fprintf(stderr, "veild: listen: %s\n", err);
        server_free(G.srv);
        event_base_free(G.base);
        return 1;
    }
    server_start(G.srv);
    if (cfg.mode == ENCLAVE_NITRO) {
        G.probe = event_new(G.base, -1, EV_PERSIST, on_probe, NULL);
        struct timeval tv = {G.probe_seconds, 0};
        event_add(G.probe, &tv);
    }
    G.drain = event_new(G.base, -1, EV_PERSIST, on_drain, NULL);
    G.sweep = event_new(G.base, -1, EV_PERSIST, on_sweep, NULL);
    long every = cfg.empty_session_ttl / 2 < 1 ? 1 : cfg.empty_session_ttl / 2 > 300 ? 300 : cfg.empty_session_ttl / 2;
    struct timeval sweep_tv = {every, 0};
    event_add(G.sweep, &sweep_tv);
    struct event *sigterm = evsignal_new(G.base, SIGTERM, on_signal, NULL);
    struct event *sigint = evsignal_new(G.base, SIGINT, on_signal, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    server_log_listening(G.srv, bound);
    event_base_dispatch(G.base);
    log_info(NULL, "event=stopped");
    server_free(G.srv);
    if (G.probe)
        event_free(G.probe);
    event_free(G.drain);
    event_free(G.sweep);
    event_free(sigterm);
    event_free(sigint);
    event_base_free(G.base);
    return 0;
}
