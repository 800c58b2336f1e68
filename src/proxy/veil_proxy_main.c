/* veil-proxy — the parent-side CONNECT proxy of the enclave (thin main: flags,
 * .env, allowlist; the server is proxy.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/addr.h"
#include "common/config.h"
#include "common/log.h"
#include "proxy/allowlist.h"
#include "proxy/proxy.h"

#define EXIT_USAGE 2
#define DEFAULT_REGION "us-east-1"

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: veil-proxy --listen ADDR [OPTIONS]\n"
        "\n"
        "The parent-side HTTP CONNECT proxy of a veil Nitro Enclave. The enclave dials it\n"
        "(vsock:ANY:8443 in production) and sends `CONNECT host:port HTTP/1.1`; the proxy\n"
        "checks the allowlist, opens TCP to the destination, answers\n"
        "`200 Connection Established` and relays bytes both ways. TLS runs end to end\n"
        "inside the tunnel: the proxy sees only ciphertext and never logs payload.\n"
        "Everything not allowed is denied.\n"
        "\n"
        "Options:\n"
        "  --listen ADDR          where to listen: vsock:CID|ANY:PORT, unix:PATH or\n"
        "                         tcp:HOST:PORT (port 0 picks a free port). Required.\n"
        "  --allow HOST:PORT      allow this destination (repeatable). HOST is a DNS name\n"
        "                         (case-insensitive, trailing dot ignored), a dotted quad or\n"
        "                         [IPv6]; the port must match exactly.\n"
        "  --allowlist FILE       add the entries of an AWS vsock-proxy YAML allowlist:\n"
        "                           allowlist:\n"
        "                           - {address: HOST, port: PORT}\n"
        "                           - address: HOST\n"
        "                             port: PORT\n"
        "                         Any other line is a startup error naming the line.\n"
        "                         Without --allow and --allowlist the only destination is\n"
        "                         bedrock-runtime.REGION.amazonaws.com:443.\n"
        "  --resolve HOST:PORT:IP[,IP...]\n"
        "                         curl's syntax: connect to IP (a dotted quad or [IPv6])\n"
        "                         for HOST:PORT without DNS (repeatable). A pinned address\n"
        "                         is allowed even when special (loopback, private, ...).\n"
        "  --dns-server IP[:PORT] resolve names with this nameserver instead of those in\n"
        "                         /etc/resolv.conf (repeatable; [IPv6]:PORT). /etc/hosts is\n"
        "                         read either way.\n"
        "  --region R             region of the default allowlist entry (default: $AWS_REGION,\n"
        "                         else " DEFAULT_REGION ").\n"
        "  --max-conns N          open client connections at most (default %d); more are\n"
        "                         answered 503 and closed.\n"
        "  --head-timeout SEC     the whole CONNECT head must arrive within SEC of the\n"
        "                         accept (default %d); 504 and close when it passes.\n"
        "  --connect-timeout SEC  deadline for DNS and for each TCP connect attempt\n"
        "                         (default %d); 504 when it passes.\n"
        "  --idle-timeout SEC     close a tunnel with no bytes either way for SEC\n"
        "                         (default %d).\n"
        "  --help                 this text.\n"
        "\n"
        "Destination checks: the CONNECT host:port must be on the allowlist. An IP literal\n"
        "is allowed only when that literal itself is listed. A name is resolved (evdns:\n"
        "/etc/hosts, then DNS) and every address is checked against the IANA\n"
        "special-purpose registries: loopback, link-local (169.254/16, where EC2 IMDS\n"
        "lives; fe80::/10), RFC 1918, 100.64/10, 0/8, 192.0.0/24, 198.18/15, the\n"
        "documentation blocks, multicast, broadcast, 240/4; fc00::/7, 64:ff9b:1::/48,\n"
        "100::/64, 2001::/23 (Teredo included), 2001:db8::/32, 3fff::/20 and all but\n"
        "2000::/3; IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms by the IPv4 address\n"
        "they carry. These are refused unless pinned with --resolve. The addresses left\n"
        "are tried in turn.\n"
        "\n"
        "Statuses: 400 malformed head, 405 not CONNECT, 403 not allowed, 502 resolve or\n"
        "connect failed, 503 over --max-conns, 504 timed out.\n"
        "\n"
        "Environment: AWS_REGION; VEIL_LOG_LEVEL (debug|info|warn|error|off). A .env file\n"
        "in the working directory is read if present (the environment wins).\n"
        "SIGTERM or SIGINT: stop accepting, close all tunnels, exit 0.\n",
        PROXY_DEFAULT_MAX_CONNS, PROXY_DEFAULT_HEAD_TIMEOUT_S, PROXY_DEFAULT_CONNECT_TIMEOUT_S,
        PROXY_DEFAULT_IDLE_TIMEOUT_S);
}

typedef struct strlist {
    const char **v;
    size_t n;
} strlist;

static int strlist_push(strlist *l, const char *s)
{
    const char **nv = realloc(l->v, (l->n + 1) * sizeof *nv);
    if (!nv)
        return -1;
    nv[l->n++] = s;
    l->v = nv;
    return 0;
}

static int parse_num(const char *flag, const char *s, long min, long max, long *out)
{
    if (parse_long(s, min, max, out) == 0)
        return 0;
    fprintf(stderr, "veil-proxy: %s must be an integer in %ld..%ld, got '%s'\n", flag, min, max, s);
    return -1;
}

/* Two descriptors per tunnel: ask for as many as the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

enum { OPT_LISTEN = 256, OPT_ALLOW, OPT_ALLOWLIST, OPT_RESOLVE, OPT_DNS_SERVER, OPT_REGION,
       OPT_MAX_CONNS, OPT_HEAD_TIMEOUT, OPT_CONNECT_TIMEOUT, OPT_IDLE_TIMEOUT, OPT_HELP };

int main(int argc, char **argv)
{
    static const struct option OPTS[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"allow", required_argument, NULL, OPT_ALLOW},
        {"allowlist", required_argument, NULL, OPT_ALLOWLIST},
        {"resolve", required_argument, NULL, OPT_RESOLVE},
        {"dns-server", required_argument, NULL, OPT_DNS_SERVER},
        {"region", required_argument, NULL, OPT_REGION},
        {"max-conns", required_argument, NULL, OPT_MAX_CONNS},
        {"head-timeout", required_argument, NULL, OPT_HEAD_TIMEOUT},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    char err[512];
    int rc = EXIT_USAGE;
    const char *listen = NULL, *region = NULL;
    strlist allows = {NULL, 0}, files = {NULL, 0}, pins = {NULL, 0}, dns = {NULL, 0};
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    proxy_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.max_conns = PROXY_DEFAULT_MAX_CONNS;
    cfg.head_timeout_s = PROXY_DEFAULT_HEAD_TIMEOUT_S;
    cfg.connect_timeout_s = PROXY_DEFAULT_CONNECT_TIMEOUT_S;
    cfg.idle_timeout_s = PROXY_DEFAULT_IDLE_TIMEOUT_S;

    log_init("veil-proxy");
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", OPTS, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case OPT_LISTEN: listen = optarg; break;
        case OPT_ALLOW: bad = strlist_push(&allows, optarg); break;
        case OPT_ALLOWLIST: bad = strlist_push(&files, optarg); break;
        case OPT_RESOLVE: bad = strlist_push(&pins, optarg); break;
        case OPT_DNS_SERVER: bad = strlist_push(&dns, optarg); break;
        case OPT_REGION: region = optarg; break;
        case OPT_MAX_CONNS:
            bad = parse_num("--max-conns", optarg, 1, 1000000, &cfg.max_conns);
            break;
        case OPT_HEAD_TIMEOUT:
            bad = parse_num("--head-timeout", optarg, 1, 3600, &cfg.head_timeout_s);
            break;
        case OPT_CONNECT_TIMEOUT:
            bad = parse_num("--connect-timeout", optarg, 1, 3600, &cfg.connect_timeout_s);
            break;
        case OPT_IDLE_TIMEOUT:
            bad = parse_num("--idle-timeout", optarg, 1, 7 * 86400, &cfg.idle_timeout_s);
            break;
        case OPT_HELP:
            usage(stdout);
            rc = 0;
            goto out;
        default:
            fprintf(stderr, "veil-proxy: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            goto out;
        }
        if (bad)
            goto out;
    }
    if (optind < argc) {
        fprintf(stderr, "veil-proxy: unexpected argument '%s' (see --help)\n", argv[optind]);
        goto out;
    }
    if (config_load_dotenv(".env", err, sizeof err) < 0) {
        fprintf(stderr, "veil-proxy: .env: %s\n", err);
        goto out;
    }
    log_init("veil-proxy"); /* .env may set VEIL_LOG_LEVEL */
    if (!listen) {
        fprintf(stderr, "veil-proxy: --listen ADDR is required (see --help)\n");
        goto out;
    }
    if (addr_parse(listen, &cfg.listen, err, sizeof err) < 0) {
        fprintf(stderr, "veil-proxy: --listen: %s\n", err);
        goto out;
    }
    for (size_t i = 0; i < allows.n; i++) {
        if (proxy_allowlist_add_spec(&al, allows.v[i], err, sizeof err) < 0) {
            fprintf(stderr, "veil-proxy: --allow: %s\n", err);
            goto out;
        }
    }
    for (size_t i = 0; i < files.n; i++) {
        if (proxy_allowlist_load_file(&al, files.v[i], err, sizeof err) < 0) {
            fprintf(stderr, "veil-proxy: --allowlist: %s\n", err);
            goto out;
        }
    }
    if (allows.n == 0 && files.n == 0) {
        if (!region)
            region = config_str("AWS_REGION", DEFAULT_REGION);
        if (proxy_allowlist_add_default(&al, region, err, sizeof err) < 0) {
            fprintf(stderr, "veil-proxy: --region: %s\n", err);
            goto out;
        }
    } else if (region) {
        log_warn(NULL, "event=region_ignored reason=\"--region only chooses the default "
                       "allowlist, and --allow or --allowlist was given\"");
    }
    for (size_t i = 0; i < pins.n; i++) {
        if (proxy_allowlist_add_pin(&al, pins.v[i], err, sizeof err) < 0) {
            fprintf(stderr, "veil-proxy: %s\n", err);
            goto out;
        }
    }
    raise_fd_limit();
    cfg.allow = &al;
    cfg.dns_servers = dns.v;
    cfg.n_dns_servers = dns.n;
    if (proxy_run(&cfg, err, sizeof err) < 0) {
        log_error(NULL, "event=start_failed error=\"%s\"", err);
        fprintf(stderr, "veil-proxy: %s\n", err);
        rc = 1;
        goto out;
    }
    rc = 0;
out:
    free(allows.v);
    free(files.v);
    free(pins.v);
    free(dns.v);
    proxy_allowlist_free(&al);
    return rc;
}
