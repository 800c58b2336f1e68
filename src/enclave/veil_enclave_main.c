/* veil-enclave — the daemon inside the Nitro Enclave: the enclave core behind a
 * socket server, on one event loop per vCPU (workers.c). Key pair generated at
 * start, memory only. This file owns the process: options, the NSM, signals. */
#include <event2/event.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attest/nsm.h"
#include "common/addr.h"
#include "common/config.h"
#include "common/log.h"
#include "enclave/enclave.h"
#include "enclave/server.h"
#include "enclave/workers.h"
#include "net/evwipe.h"

#define DEFAULT_LISTEN "vsock:ANY:5000"
#define DEFAULT_PROXY "vsock:3:8443" /* the parent is always CID 3 */
#define OPT_NUM 256 /* getopt values of the numeric options (LIMITS below), past every char */

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
            "  --workers N            event loops, one thread each (env ENCLAVE_WORKERS; default\n"
            "                         the online CPUs; 1 = one loop). Connections go to the one\n"
            "                         with the fewest; the limits below are the whole process's\n"
            "  --max-streams N        concurrent CHAT/CHAT_STREAM requests (default 1024)\n"
            "  --max-connections N    parent connections at once (env ENCLAVE_MAX_CONNECTIONS;\n"
            "                         default 4096); the next one gets a busy error line and is\n"
            "                         closed. Each takes a descriptor: keep it under the open-files\n"
            "                         limit\n"
            "  --replay-max N         format-3 request ids remembered at once, each for 300 s\n"
            "                         (env ENCLAVE_REPLAY_MAX; default 65536); when all are in\n"
            "                         their window a new bound request is answered busy\n"
            "  --max-request BYTES    largest request accepted (default 8388608)\n"
            "  --stream-timeout SEC   deadline of one chat request (default 300)\n"
            "  --drain-seconds SEC    on SIGTERM, wait this long for streams (default 30)\n"
            "  --upstream-pool-max-idle N  kept-alive connections to Bedrock waiting for the\n"
            "                         next request, per worker (env ENCLAVE_UPSTREAM_POOL_MAX_IDLE;\n"
            "                         default 8; 0 = a new connection, CONNECT and TLS handshake\n"
            "                         per request)\n"
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
            "(VEIL_LOG_LEVEL; a worker's lines carry worker=N); no log line ever holds\n"
            "plaintext or keys.\n");
}

/* The numeric options: the environment first (where a variable exists), then the flag. */
enum {
    L_WORKERS, L_MAX_STREAMS, L_MAX_CONNECTIONS, L_REPLAY_MAX, L_MAX_REQUEST, L_STREAM_TIMEOUT, L_DRAIN,
    L_POOL_MAX_IDLE, L_POOL_IDLE_TIMEOUT, L_POOL_MAX_REQUESTS, L_POOL_MAX_AGE, L_N
};
static const struct {
    const char *flag, *env;
    long def, lo, hi;
} LIMITS[L_N] = {
    [L_WORKERS] = {"workers", "ENCLAVE_WORKERS", 0 /* the online CPUs */, 1, ENCLAVE_MAX_WORKERS},
    [L_MAX_STREAMS] = {"max-streams", NULL, ESTATE_DEFAULT_MAX_STREAMS, 1, 100000},
    [L_MAX_CONNECTIONS] = {"max-connections", "ENCLAVE_MAX_CONNECTIONS", ESTATE_DEFAULT_MAX_CONNECTIONS, 1, 1000000},
    [L_REPLAY_MAX] = {"replay-max", "ENCLAVE_REPLAY_MAX", ESTATE_DEFAULT_REPLAY_MAX, 1, 1L << 22},
    [L_MAX_REQUEST] = {"max-request", NULL, ENCLAVE_DEFAULT_MAX_REQUEST, 1024, 1L << 30},
    [L_STREAM_TIMEOUT] = {"stream-timeout", NULL, 300, 1, 86400},
    [L_DRAIN] = {"drain-seconds", NULL, 30, 0, 3600},
    [L_POOL_MAX_IDLE] = {"upstream-pool-max-idle", "ENCLAVE_UPSTREAM_POOL_MAX_IDLE", HTTPS_POOL_DEFAULT_MAX_IDLE,
                         0, 1024},
    [L_POOL_IDLE_TIMEOUT] = {"upstream-idle-timeout", "ENCLAVE_UPSTREAM_IDLE_TIMEOUT",
                             HTTPS_POOL_DEFAULT_IDLE_MS / 1000, 1, 3600},
    [L_POOL_MAX_REQUESTS] = {"upstream-max-requests", "ENCLAVE_UPSTREAM_MAX_REQUESTS",
                             HTTPS_POOL_DEFAULT_MAX_REQUESTS, 1, 1000000},
    [L_POOL_MAX_AGE] = {"upstream-max-age", "ENCLAVE_UPSTREAM_MAX_AGE", HTTPS_POOL_DEFAULT_MAX_AGE_MS / 1000, 1, 86400},
};

static struct {
    struct event_base *base; /* the control loop: the acceptor and the signals */
    nsm *nsm;
    enclave_workers *workers;
    long drain_seconds;
    bool draining;
} G;

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (G.draining) {
        log_warn(NULL, "event=second_signal exiting=now");
        enclave_workers_stop(G.workers);
        return;
    }
    G.draining = true;
    log_info(NULL, "event=shutdown signal=%d active_streams=%u", (int)sig, enclave_workers_active_streams(G.workers));
    /* every worker drains its own streams; the control loop ends with the last */
    enclave_workers_drain(G.workers, time(NULL) + G.drain_seconds);
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

static int opts_error(const char *what)
{
    fprintf(stderr, "veil-enclave: %s\n", what);
    return 2;
}

int main(int argc, char **argv)
{
    evwipe_install(); /* before any libevent object: what peers send is wiped when freed */
    char err[256];
    log_init("veil-enclave");
    if (config_load_dotenv(".env", err, sizeof err) < 0)
        return opts_error(err);
    log_init("veil-enclave");
    const char *listen = config_str("ENCLAVE_LISTEN", DEFAULT_LISTEN);
    const char *proxy = config_str("PROXY_ADDR", DEFAULT_PROXY);
    const char *region = config_str("AWS_REGION", "us-east-1");
    const char *ca_file = config_str("VEIL_CA_FILE", NULL);
    const char *endpoint = config_str("BEDROCK_ENDPOINT", NULL);
    const char *nsm_spec = config_str("ENCLAVE_NSM", "dev");
    const char *legacy = config_str("ENCLAVE_LEGACY_REQUESTS", "allow");
    long v[L_N];
    for (int i = 0; i < L_N; i++) {
        long def = LIMITS[i].def;
        if (i == L_WORKERS) { /* one loop per vCPU the enclave was given */
            long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            def = cpus < 1 ? 1 : cpus > ENCLAVE_MAX_WORKERS ? ENCLAVE_MAX_WORKERS : cpus;
        }
        v[i] = def;
        if (LIMITS[i].env && config_long(LIMITS[i].env, def, LIMITS[i].lo, LIMITS[i].hi, &v[i], err, sizeof err) < 0)
            return opts_error(err);
    }

    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'}, {"proxy", required_argument, 0, 'p'},
        {"region", required_argument, 0, 'r'}, {"ca-file", required_argument, 0, 'c'},
        {"bedrock-endpoint", required_argument, 0, 'e'}, {"nsm", required_argument, 0, 'n'},
        {"legacy-requests", required_argument, 0, 'L'},
        {"workers", required_argument, 0, OPT_NUM + L_WORKERS},
        {"max-streams", required_argument, 0, OPT_NUM + L_MAX_STREAMS},
        {"max-connections", required_argument, 0, OPT_NUM + L_MAX_CONNECTIONS},
        {"replay-max", required_argument, 0, OPT_NUM + L_REPLAY_MAX},
        {"max-request", required_argument, 0, OPT_NUM + L_MAX_REQUEST},
        {"stream-timeout", required_argument, 0, OPT_NUM + L_STREAM_TIMEOUT},
        {"drain-seconds", required_argument, 0, OPT_NUM + L_DRAIN},
        {"upstream-pool-max-idle", required_argument, 0, OPT_NUM + L_POOL_MAX_IDLE},
        {"upstream-idle-timeout", required_argument, 0, OPT_NUM + L_POOL_IDLE_TIMEOUT},
        {"upstream-max-requests", required_argument, 0, OPT_NUM + L_POOL_MAX_REQUESTS},
        {"upstream-max-age", required_argument, 0, OPT_NUM + L_POOL_MAX_AGE},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'l': listen = optarg; break;
        case 'p': proxy = optarg; break;
        case 'r': region = optarg; break;
        case 'c': ca_file = optarg; break;
        case 'e': endpoint = optarg; break;
        case 'n': nsm_spec = optarg; break;
        case 'L': legacy = optarg; break;
        case 'h': usage(stdout); return 0;
        default:
            if (o < OPT_NUM || o >= OPT_NUM + L_N) {
                usage(stderr);
                return 2;
            }
            const int k = o - OPT_NUM;
            if (parse_long(optarg, LIMITS[k].lo, LIMITS[k].hi, &v[k]) < 0) {
                fprintf(stderr, "veil-enclave: --%s must be a number in [%ld, %ld]\n", LIMITS[k].flag, LIMITS[k].lo,
                        LIMITS[k].hi);
                return 2;
            }
        }
    }
    if (optind != argc) {
        fprintf(stderr, "veil-enclave: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (strcmp(legacy, "allow") != 0 && strcmp(legacy, "refuse") != 0)
        return opts_error("--legacy-requests must be allow or refuse");
    veil_addr laddr, paddr;
    bool direct = strcmp(proxy, "none") == 0;
    if (addr_parse(listen, &laddr, err, sizeof err) < 0 ||
        (!direct && addr_parse(proxy, &paddr, err, sizeof err) < 0))
        return opts_error(err);
    char bhost[256] = "";
    uint16_t bport = 0;
    if (endpoint && parse_endpoint(endpoint, bhost, sizeof bhost, &bport) < 0)
        return opts_error("--bedrock-endpoint must be HOST:PORT");
    signal(SIGPIPE, SIG_IGN);
    enclave_secure_json();
    json_object_seed(0); /* jansson's hash seed, once, before the worker threads */
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
        .max_idle = (unsigned)v[L_POOL_MAX_IDLE], .idle_timeout_ms = (unsigned)v[L_POOL_IDLE_TIMEOUT] * 1000u,
        .max_requests = (unsigned)v[L_POOL_MAX_REQUESTS], .max_age_ms = (unsigned)v[L_POOL_MAX_AGE] * 1000u,
    };
    enclave_config cfg = {
        .upstream_pool = &pool, .nsm = G.nsm, .refuse_legacy = strcmp(legacy, "refuse") == 0, .region = region,
        .proxy = direct ? NULL : &paddr, .bedrock_host = bhost[0] ? bhost : NULL, .bedrock_port = bport,
        .ca_file = ca_file, .max_streams = (unsigned)v[L_MAX_STREAMS],
        .stream_timeout_ms = (unsigned)v[L_STREAM_TIMEOUT] * 1000u, .max_request = (size_t)v[L_MAX_REQUEST],
        .replay_max = (size_t)v[L_REPLAY_MAX], .max_connections = (unsigned)v[L_MAX_CONNECTIONS],
    };
    int lfd = addr_listen(&laddr, 128, err, sizeof err);
    if (lfd < 0) {
        fprintf(stderr, "veil-enclave: listen %s: %s\n", listen, err);
        return 1;
    }
    if (laddr.kind == ADDR_TCP && laddr.port == 0)
        laddr.port = (uint16_t)addr_local_port(lfd);
    enclave_server_config scfg = {.max_request = (size_t)v[L_MAX_REQUEST]};
    enclave_workers_config wcfg = {.workers = (unsigned)v[L_WORKERS], .core = &cfg, .server = &scfg};
    G.workers = enclave_workers_new(G.base, lfd, &wcfg, err, sizeof err);
    if (!G.workers || enclave_workers_start(G.workers, err, sizeof err) < 0) {
        fprintf(stderr, "veil-enclave: %s\n", err);
        enclave_workers_free(G.workers);
        return 1;
    }
    G.drain_seconds = v[L_DRAIN];
    struct event *sigterm = evsignal_new(G.base, SIGTERM, on_signal, NULL);
    struct event *sigint = evsignal_new(G.base, SIGINT, on_signal, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    char abuf[160], pbuf[160];
    log_info(NULL, "event=listening addr=%s proxy=%s region=%s bedrock=%s workers=%ld max_streams=%ld "
                   "max_connections=%ld replay_max=%ld legacy_requests=%s upstream_pool_max_idle=%ld",
             addr_format(&laddr, abuf, sizeof abuf), direct ? "none" : addr_format(&paddr, pbuf, sizeof pbuf),
             region, endpoint ? endpoint : "default", v[L_WORKERS], v[L_MAX_STREAMS], v[L_MAX_CONNECTIONS],
             v[L_REPLAY_MAX], legacy, v[L_POOL_MAX_IDLE]);
    event_base_dispatch(G.base);
    enclave_workers_free(G.workers);
    log_info(NULL, "event=stopped");
    nsm_close(G.nsm);
    event_free(sigterm);
    event_free(sigint);
    event_base_free(G.base);
    return 0;
}
