/* veil-enclave — the daemon inside the Nitro Enclave: the enclave core behind a
 * socket server. Key pair generated at start, memory only. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/nsm.h"
#include "common/addr.h"
#include "common/config.h"
#include "common/log.h"
#include "enclave/enclave.h"
#include "enclave/server.h"
#include "net/evwipe.h"

#define DEFAULT_LISTEN "vsock:ANY:5000"
#define DEFAULT_PROXY "vsock:3:8443" /* the parent is always CID 3 */
#define OPT_POOL 256 /* getopt values of the four --upstream-* limits, past every char */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: veil-enclave [OPTIONS]\n\n"
            "The enclave daemon: holds the transport key pair and the AWS credentials in\n"
            "memory, decrypts client messages, calls Bedrock ConverseStream through the\n"
            "parent's CONNECT proxy with TLS terminating here, and streams encrypted chunks.\n\n"
            "  --listen ADDR          where the parent connects (env ENCLAVE_LISTEN;\n"
            "                         default " DEFAULT_LISTEN ")\n"
            "  --proxy ADDR|none      the parent's CONNECT proxy (env PROXY_ADDR;\n"
            "                         default " DEFAULT_PROXY "); none = connect directly\n"
            "  --region R             AWS region (env AWS_REGION; default us-east-1)\n"
            "  --ca-file F            CA bundle for Bedrock's certificate (env VEIL_CA_FILE;\n"
            "                         default: the system store)\n"
            "  --bedrock-endpoint H:P Bedrock host and port (env BEDROCK_ENDPOINT; default\n"
            "                         bedrock-runtime.<region>.amazonaws.com:443)\n"
            "  --max-streams N        concurrent CHAT/CHAT_STREAM requests (default 1024)\n"
            "  --max-request BYTES    largest request accepted (default 8388608)\n"
            "  --stream-timeout SEC   deadline of one chat request (default 300)\n"
            "  --drain-seconds SEC    on SIGTERM, wait this long for streams (default 30)\n"
            "  --upstream-pool-max-idle N  kept-alive connections to Bedrock waiting for the\n"
            "                         next request (env ENCLAVE_UPSTREAM_POOL_MAX_IDLE; default 8;\n"
            "                         0 = a new connection, CONNECT and TLS handshake per request)\n"
            "  --upstream-idle-timeout SEC  close a kept-alive connection idle this long (env\n"
            "                         ENCLAVE_UPSTREAM_IDLE_TIMEOUT; default 30: AWS closes idle\n"
            "                         connections after about 60 s, and we close first)\n"
            "  --upstream-max-requests N  requests per kept-alive connection (env\n"
            "                         ENCLAVE_UPSTREAM_MAX_REQUESTS; default 1000)\n"
            "  --upstream-max-age SEC no new request on a connection older than this (env\n"
            "                         ENCLAVE_UPSTREAM_MAX_AGE; default 300: DNS changes apply)\n"
            "  --nsm dev|sim:DIR|none the Nitro Security Module that attests the transport key\n"
            "                         (env ENCLAVE_NSM; default dev = /dev/nsm). sim:DIR is a\n"
            "                         SIMULATED NSM for tests and `make run` (its root in DIR/root.pem);\n"
            "                         none: no attestation (GET_ATTESTATION answers an error).\n"
            "                         Without a reachable NSM the enclave refuses to start.\n"
            "  --legacy-requests allow|refuse  unbound requests (CHAT, CHAT_STREAM formats 1 and\n"
            "                         2: the original's clients) are served (allow, the default) or\n"
            "                         refused with legacy_refused (env ENCLAVE_LEGACY_REQUESTS)\n"
            "  --help                 this text\n\n"
            "Addresses: vsock:CID:PORT, unix:PATH, tcp:HOST:PORT. Logs go to stderr\n"
            "(VEIL_LOG_LEVEL); no log line ever holds plaintext or keys.\n");
}

static struct {
    struct event_base *base;
    nsm *nsm;
    enclave_core *core;
    enclave_server *srv;
    struct event *drain_timer;
    time_t drain_deadline;
    long drain_seconds;
    bool draining;
} G;

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    unsigned active = enclave_active_streams(G.core);
    if (active == 0 || time(NULL) >= G.drain_deadline) {
        if (active)
            log_warn(NULL, "event=drain_deadline aborting=%u", active);
        enclave_abort_all(G.core, "Enclave shutting down");
        struct timeval flush = {0, 200000}; /* let the final error events reach the parent */
        event_base_loopexit(G.base, &flush);
        event_del(G.drain_timer);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (G.draining) {
        log_warn(NULL, "event=second_signal exiting=now");
        event_base_loopbreak(G.base);
        return;
    }
    G.draining = true;
    G.drain_deadline = time(NULL) + G.drain_seconds;
    log_info(NULL, "event=shutdown signal=%d active_streams=%u", (int)sig, enclave_active_streams(G.core));
    enclave_server_stop_accepting(G.srv);
    struct timeval tick = {0, 100000};
    event_add(G.drain_timer, &tick);
}

static int parse_endpoint(const char *s, char *host, size_t hlen, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    long p;
    if (!colon || colon == s || (size_t)(colon - s) >= hlen || parse_long(colon + 1, 1, 65535, &p) < 0)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int main(int argc, char **argv)
{
    evwipe_install(); /* before any libevent object: what peers send is wiped when freed */
    char err[256];
    log_init("veil-enclave");
    if (config_load_dotenv(".env", err, sizeof err) < 0) {
        fprintf(stderr, "veil-enclave: %s\n", err);
        return 2;
    }
    log_init("veil-enclave");
    const char *listen = config_str("ENCLAVE_LISTEN", DEFAULT_LISTEN);
    const char *proxy = config_str("PROXY_ADDR", DEFAULT_PROXY);
    const char *region = config_str("AWS_REGION", "us-east-1");
    const char *ca_file = config_str("VEIL_CA_FILE", NULL);
    const char *endpoint = config_str("BEDROCK_ENDPOINT", NULL);
    const char *nsm_spec = config_str("ENCLAVE_NSM", "dev");
    const char *legacy = config_str("ENCLAVE_LEGACY_REQUESTS", "allow");
    long max_streams = 1024, max_request = 8 << 20, stream_timeout = 300, drain = 30;
    /* the upstream pool's limits: env first, flags override (bounds in POOL_LIMITS) */
    static const struct {
        const char *flag, *env;
        long def, lo, hi;
    } POOL_LIMITS[] = {
        {"upstream-pool-max-idle", "ENCLAVE_UPSTREAM_POOL_MAX_IDLE", HTTPS_POOL_DEFAULT_MAX_IDLE, 0, 1024},
        {"upstream-idle-timeout", "ENCLAVE_UPSTREAM_IDLE_TIMEOUT", HTTPS_POOL_DEFAULT_IDLE_MS / 1000, 1, 3600},
        {"upstream-max-requests", "ENCLAVE_UPSTREAM_MAX_REQUESTS", HTTPS_POOL_DEFAULT_MAX_REQUESTS, 1, 1000000},
        {"upstream-max-age", "ENCLAVE_UPSTREAM_MAX_AGE", HTTPS_POOL_DEFAULT_MAX_AGE_MS / 1000, 1, 86400},
    };
    long pool_v[4];
    for (size_t i = 0; i < 4; i++) {
        if (config_long(POOL_LIMITS[i].env, POOL_LIMITS[i].def, POOL_LIMITS[i].lo, POOL_LIMITS[i].hi,
                        &pool_v[i], err, sizeof err) < 0) {
            fprintf(stderr, "veil-enclave: %s\n", err);
            return 2;
        }
    }

    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'}, {"proxy", required_argument, 0, 'p'},
        {"region", required_argument, 0, 'r'}, {"ca-file", required_argument, 0, 'c'},
        {"bedrock-endpoint", required_argument, 0, 'e'}, {"max-streams", required_argument, 0, 'm'},
        {"max-request", required_argument, 0, 'q'}, {"stream-timeout", required_argument, 0, 't'},
        {"drain-seconds", required_argument, 0, 'd'}, {"nsm", required_argument, 0, 'n'},
        {"legacy-requests", required_argument, 0, 'L'},
        {"upstream-pool-max-idle", required_argument, 0, OPT_POOL + 0},
        {"upstream-idle-timeout", required_argument, 0, OPT_POOL + 1},
        {"upstream-max-requests", required_argument, 0, OPT_POOL + 2},
        {"upstream-max-age", required_argument, 0, OPT_POOL + 3},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long *target = NULL, lo = 1, hi = 0;
        switch (o) {
        case 'l': listen = optarg; break;
        case 'p': proxy = optarg; break;
        case 'r': region = optarg; break;
        case 'c': ca_file = optarg; break;
        case 'e': endpoint = optarg; break;
        case 'm': target = &max_streams, hi = 100000; break;
        case 'q': target = &max_request, lo = 1024, hi = 1L << 30; break;
        case 't': target = &stream_timeout, hi = 86400; break;
        case 'd': target = &drain, lo = 0, hi = 3600; break;
        case 'n': nsm_spec = optarg; break;
        case 'L': legacy = optarg; break;
        case OPT_POOL + 0:
        case OPT_POOL + 1:
        case OPT_POOL + 2:
        case OPT_POOL + 3: {
            const int k = o - OPT_POOL;
            if (parse_long(optarg, POOL_LIMITS[k].lo, POOL_LIMITS[k].hi, &pool_v[k]) < 0) {
                fprintf(stderr, "veil-enclave: --%s must be a number in [%ld, %ld]\n", POOL_LIMITS[k].flag,
                        POOL_LIMITS[k].lo, POOL_LIMITS[k].hi);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (target && parse_long(optarg, lo, hi, target) < 0) {
            fprintf(stderr, "veil-enclave: --%s must be a number in [%ld, %ld]\n",
                    opts[o == 'm' ? 5 : o == 'q' ? 6 : o == 't' ? 7 : 8].name, lo, hi);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "veil-enclave: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (strcmp(legacy, "allow") != 0 && strcmp(legacy, "refuse") != 0) {
        fprintf(stderr, "veil-enclave: --legacy-requests must be allow or refuse\n");
        return 2;
    }
    veil_addr laddr, paddr;
    bool direct = strcmp(proxy, "none") == 0;
    if (addr_parse(listen, &laddr, err, sizeof err) < 0 ||
        (!direct && addr_parse(proxy, &paddr, err, sizeof err) < 0)) {
        fprintf(stderr, "veil-enclave: %s\n", err);
        return 2;
    }
    char bhost[256] = "";
    uint16_t bport = 0;
    if (endpoint && parse_endpoint(endpoint, bhost, sizeof bhost, &bport) < 0) {
        fprintf(stderr, "veil-enclave: --bedrock-endpoint must be HOST:PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    enclave_secure_json();
    if (strcmp(nsm_spec, "none") != 0) {
        nsm_err ne = nsm_open(nsm_spec, &G.nsm, err, sizeof err);
        if (ne != NSM_OK) { /* a key nobody can verify is worth less than no enclave */
            fprintf(stderr, "veil-enclave: --nsm %s: %s: %s (use --nsm none to run without attestation)\n",
                    nsm_spec, nsm_strerror(ne), err);
            return 1;
        }
        if ((ne = nsm_seed_rand(G.nsm, 64, err, sizeof err)) != NSM_OK) {
            fprintf(stderr, "veil-enclave: NSM randomness: %s: %s\n", nsm_strerror(ne), err);
            return 1;
        }
        if (nsm_is_simulated(G.nsm))
            log_warn(NULL, "event=nsm backend=simulated detail=\"a SIMULATED NSM signs the attestation "
                           "documents: for tests and local use only\"");
        else
            log_info(NULL, "event=nsm backend=%s", nsm_backend_name(G.nsm));
    } else {
        log_warn(NULL, "event=nsm backend=none detail=\"no attestation: clients cannot verify this enclave\"");
    }
    G.base = event_base_new();
    if (!G.base) {
        fprintf(stderr, "veil-enclave: cannot create the event loop\n");
        return 1;
    }
    https_pool_config pool = {
        .max_idle = (unsigned)pool_v[0], .idle_timeout_ms = (unsigned)pool_v[1] * 1000u,
        .max_requests = (unsigned)pool_v[2], .max_age_ms = (unsigned)pool_v[3] * 1000u,
    };
    enclave_config cfg = {
        .upstream_pool = &pool,
        .nsm = G.nsm, .refuse_legacy = strcmp(legacy, "refuse") == 0, .region = region, .proxy = direct ? NULL : &paddr, .bedrock_host = bhost[0] ? bhost : NULL,
        .bedrock_port = bport, .ca_file = ca_file, .max_streams = (unsigned)max_streams,
        .stream_timeout_ms = (unsigned)stream_timeout * 1000u, .max_request = (size_t)max_request,
    };
    G.core = enclave_core_new(G.base, &cfg, err, sizeof err);
    if (!G.core) {
        fprintf(stderr, "veil-enclave: %s\n", err);
        return 1;
    }
    int lfd = addr_listen(&laddr, 128, err, sizeof err);
    if (lfd < 0) {
        fprintf(stderr, "veil-enclave: listen %s: %s\n", listen, err);
        return 1;
    }
    if (laddr.kind == ADDR_TCP && laddr.port == 0)
        laddr.port = (uint16_t)addr_local_port(lfd);
    enclave_server_config scfg = {.max_request = (size_t)max_request};
    G.srv = enclave_server_new(G.base, G.core, lfd, &scfg, err, sizeof err);
    if (!G.srv) {
        fprintf(stderr, "veil-enclave: %s\n", err);
        return 1;
    }
    G.drain_timer = event_new(G.base, -1, EV_PERSIST, on_drain_tick, NULL);
    struct event *sigterm = evsignal_new(G.base, SIGTERM, on_signal, NULL);
    struct event *sigint = evsignal_new(G.base, SIGINT, on_signal, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    char abuf[160], pbuf[160];
    log_info(NULL, "event=listening addr=%s proxy=%s region=%s bedrock=%s max_streams=%ld legacy_requests=%s "
                   "upstream_pool_max_idle=%ld",
             addr_format(&laddr, abuf, sizeof abuf), direct ? "none" : addr_format(&paddr, pbuf, sizeof pbuf),
             region, endpoint ? endpoint : "default", max_streams, legacy, pool_v[0]);
    G.drain_seconds = drain;
    event_base_dispatch(G.base);
    log_info(NULL, "event=stopped");
    enclave_server_free(G.srv);
    enclave_core_free(G.core);
    nsm_close(G.nsm);
    event_free(sigterm);
    event_free(sigint);
    event_free(G.drain_timer);
    event_base_free(G.base);
    return 0;
}
