/* client — the veil CLI's connection to veild: JSON calls and the SSE chat
 * stream over HTTP or HTTPS (the project's own client, on a private event loop),
 * plus the CLI's config file (server URL, bearer token and what chat verifies of
 * the enclave, mode 0600).
 *
 * Never prints or logs the token. Response bodies are owned by the caller. The
 * server's cookies (a load balancer's stickiness) are kept for the run, in memory.
 */
#ifndef VEIL_CLI_CLIENT_H
#define VEIL_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attest/document.h"
#include "cli/cookies.h"
#include "net/https.h"

typedef struct vclient {
    char url[512];      /* as given: for messages */
    bool tls;
    char host[256];
    uint16_t port;
    char prefix[256];   /* path prefix of the server URL, without a trailing '/' */
    char token[16384];
    struct event_base *base;
    https_ctx *https;
    unsigned timeout_ms; /* per call; streams use it as the idle deadline */
    https_pool *pin;     /* while pinned: one kept-alive connection for every call */
    cookie_jar cookies;  /* a load balancer's (stickiness), sent back for this run */
} vclient;

/* url: http(s)://host[:port][/prefix], host may be [IPv6]. Plain http:// only to a
 * loopback host (the token would cross the network in clear). ca_file NULL: the
 * system store. */
int vclient_init(vclient *c, const char *url, const char *token, const char *ca_file, char *err,
                 size_t errlen);
void vclient_free(vclient *c);
/* localhost, 127.0.0.0/8 or ::1. */
bool vclient_host_is_loopback(const char *host);

/* Until vclient_unpin, the calls share one kept-alive connection (a new one only if
 * it closes): behind a load balancer that routes by connection they reach one veild,
 * and so one enclave. Otherwise each call has a connection of its own. -1 with err. */
int vclient_pin(vclient *c, char *err, size_t errlen);
void vclient_unpin(vclient *c);

/* One request: body may be NULL; *resp gets the parsed JSON body (or NULL when
 * empty / not JSON). Returns 0 when a response arrived (any status), -1 with err. */
int vclient_call(vclient *c, const char *method, const char *path, const json_t *body, int *status,
                 json_t **resp, char *err, size_t errlen);

/* POST with an SSE response: cb gets each `data:` event as JSON (borrowed) and
 * returns non-zero to stop. A non-200 answer comes back in *status / *resp. */
typedef int (*vclient_sse_cb)(void *ud, const json_t *event);
int vclient_stream(vclient *c, const char *path, const json_t *body, vclient_sse_cb cb, void *ud,
                   int *status, json_t **resp, char *err, size_t errlen);

/* Every call sends back the cookies the server set earlier in this run (cookies.h):
 * a load balancer with sticky sessions keeps the run on one instance. */

/* ---- the CLI config: $VEIL_CONFIG or $XDG_CONFIG_HOME/veil/config.json or ~/.config/veil/config.json ---- */

#define CLI_ROOT_MAX (16 * 1024) /* a stored attestation root's DER (a real one is ~600 bytes) */

typedef struct cli_config {
    char server[512];
    char token[16384];
    char ca_file[512];
    /* What chat and ask verify of the enclave (veil login --measurements and
     * --attestation-root): the values themselves, never paths to files that could
     * change after login. Stored as "measurements" (nitro-cli's Measurements object)
     * and "attestation_root" (PEM). */
    attest_pcr pcrs[ATTEST_MAX_PCRS];
    size_t n_pcrs;             /* 0: no measurements stored */
    uint8_t root_der[CLI_ROOT_MAX];
    size_t root_der_len;       /* 0: the pinned AWS Nitro root G1 */
} cli_config;

const char *cli_config_path(char *out, size_t n);
/* A file named name in the config file's folder (the key cache, the history tags). */
const char *cli_config_sibling(const char *name, char *out, size_t n);
/* Fills cfg; VEIL_SERVER / VEIL_TOKEN / VEIL_CA_FILE override the file. -1 when no
 * server is known, or when the stored measurements or root are malformed. */
int cli_config_load(cli_config *cfg, char *err, size_t errlen);
/* The file alone (no environment, no server required): a missing file is an empty
 * config (0); -1 when its measurements or root are malformed. */
int cli_config_load_file(cli_config *cfg, char *err, size_t errlen);
/* Writes the file with mode 0600 (parent directories 0700). */
int cli_config_save(const cli_config *cfg, char *err, size_t errlen);
/* A connected client from the config, or -1 with err ("run veil login first"). */
int vclient_from_config(vclient *c, char *err, size_t errlen);

#endif
