#include "server/settings.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "enclave/server.h"
#include "server/http/httpd.h"

static int copy(char *dst, size_t n, const char *name, const char *def, char *err, size_t errlen)
{
    const char *v = config_str(name, def);
    if (strlen(v) >= n) {
        snprintf(err, errlen, "%s is too long", name);
        return -1;
    }
    snprintf(dst, n, "%s", v);
    return 0;
}

#define COPY(field, name, def)                                                   \
    do {                                                                         \
        if (copy(cfg->field, sizeof cfg->field, name, def, err, errlen) < 0)     \
            return -1;                                                           \
    } while (0)

int settings_load(server_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    COPY(listen, "VEIL_LISTEN", "tcp:127.0.0.1:8000");
    COPY(project_name, "PROJECT_NAME", "Isol8 Chat");
    COPY(api_prefix, "API_V1_STR", "/api/v1");
    COPY(data_dir, "VEIL_DATA_DIR", "./data");
    char def_db[600];
    snprintf(def_db, sizeof def_db, "sqlite:%s/veil.db", cfg->data_dir);
    COPY(database_url, "DATABASE_URL", def_db);
    COPY(clerk_issuer, "CLERK_ISSUER", "");
    COPY(clerk_jwks_file, "CLERK_JWKS_FILE", "");
    COPY(clerk_jwks_url, "CLERK_JWKS_URL", "");
    COPY(clerk_audience, "CLERK_AUDIENCE", "");
    COPY(clerk_azp, "CLERK_AUTHORIZED_PARTIES", "");
    COPY(clerk_webhook_secret, "CLERK_WEBHOOK_SECRET", "");
    COPY(ca_file, "VEIL_CA_FILE", "");
    COPY(region, "AWS_REGION", "us-east-1");
    COPY(imds_endpoint, "VEIL_IMDS_ENDPOINT", "169.254.169.254:80");
    COPY(proxy_addr, "PROXY_ADDR", "");
    COPY(bedrock_endpoint, "BEDROCK_ENDPOINT", "");
    COPY(cors_origins, "CORS_ORIGINS", "http://localhost:3000");
    COPY(enclave_addr, "ENCLAVE_ADDR", "");
    COPY(enclave_nsm, "ENCLAVE_NSM", "none");
    COPY(web_dir, "VEIL_WEB_DIR", "");
    COPY(web_measurements, "VEIL_WEB_MEASUREMENTS", "");
    COPY(web_root, "VEIL_WEB_ATTESTATION_ROOT", "");
    if (config_long("CLERK_JWT_LEEWAY_SECONDS", 30, 0, 300, &cfg->jwt_leeway, err, errlen) < 0 ||
        /* at least twice Svix's ±5 minutes: one signed delivery can be replayed that long */
        config_long("CLERK_WEBHOOK_DEDUP_SECONDS", 86400, 600, 30L * 86400, &cfg->webhook_dedup_seconds, err,
                    errlen) < 0 ||
        config_long("ENCLAVE_CID", 0, 0, 0xFFFFFFFFL, &cfg->enclave_cid, err, errlen) < 0 ||
        config_long("ENCLAVE_PORT", 5000, 1, 0xFFFFFFFFL, &cfg->enclave_port, err, errlen) < 0 ||
        config_long("ENCLAVE_CREDENTIAL_REFRESH_SECONDS", 2700, 10, 86400, &cfg->refresh_seconds,
                    err, errlen) < 0 ||
        /* one limit from the other: a body veild accepts fits the enclave's request limit */
        config_long("VEIL_MAX_BODY", ENCLAVE_DEFAULT_MAX_REQUEST, 1024, 1L << 30, &cfg->max_body, err, errlen) < 0 ||
        config_long("VEIL_HTTP_MAX_HEAD", HTTPD_DEFAULT_MAX_HEAD, 1024, 1L << 20, &cfg->max_head, err, errlen) < 0 ||
        config_long("VEIL_HTTP_IDLE_SECONDS", HTTPD_DEFAULT_IDLE_MS / 1000, 1, 3600, &cfg->idle_seconds, err, errlen) < 0 ||
        config_long("VEIL_HTTP_HEAD_SECONDS", HTTPD_DEFAULT_HEAD_MS / 1000, 1, 600, &cfg->head_seconds, err, errlen) < 0 ||
        config_long("VEIL_HTTP_BODY_SECONDS", HTTPD_DEFAULT_BODY_MS / 1000, 1, 3600, &cfg->body_seconds, err, errlen) < 0 ||
        config_long("VEIL_MAX_CONNECTIONS", 0, 0, 1000000, &cfg->max_connections, err, errlen) < 0 ||
        config_long("VEIL_SSE_MAX_BUFFER", HTTPD_DEFAULT_MAX_OUTPUT, 4096, 1L << 30, &cfg->sse_max_buffer, err, errlen) < 0 ||
        config_long("VEIL_SSE_STALL_SECONDS", HTTPD_DEFAULT_STALL_MS / 1000, 1, 3600, &cfg->sse_stall_seconds, err, errlen) < 0 ||
        config_long("VEIL_USER_MAX_STREAMS", 4, 1, 1024, &cfg->user_max_streams, err, errlen) < 0 ||
        config_long("VEIL_USER_RATE", 20, 0, 100000, &cfg->user_rate, err, errlen) < 0 ||
        config_long("VEIL_USER_BURST", 100, 1, 100000, &cfg->user_burst, err, errlen) < 0 ||
        config_long("VEIL_USER_TABLE_MAX", 100000, 100, 10000000, &cfg->user_table_max, err, errlen) < 0 ||
        config_long("VEIL_ATTEST_RATE", 20, 1, 10000, &cfg->attest_rate, err, errlen) < 0 ||
        config_long("VEIL_ATTEST_USER_RATE", 1, 1, 1000, &cfg->attest_user_rate, err, errlen) < 0 ||
        config_long("VEIL_EMPTY_SESSION_TTL_SECONDS", 86400, 1, 365L * 86400, &cfg->empty_session_ttl, err, errlen) < 0 ||
        config_long("VEIL_DB_WORKERS", SETTINGS_DEFAULT_DB_WORKERS, 1, 64, &cfg->db_workers, err, errlen) < 0 ||
        config_long("VEIL_DB_QUEUE_MAX", 256, 1, 100000, &cfg->db_queue_max, err, errlen) < 0 ||
        config_long("VEIL_DB_STATEMENT_TIMEOUT_MS", 5000, 100, 600000, &cfg->db_timeout_ms, err, errlen) < 0 ||
        config_long("VEIL_HEALTH_DB_WAIT_MS", 2000, 100, 60000, &cfg->health_db_wait_ms, err, errlen) < 0 ||
        config_bool("VEIL_DEBUG_ROUTES", false, &cfg->debug_routes, err, errlen) < 0)
        return -1;
    /* the original's ENCLAVE_INFERENCE_TIMEOUT is a float in seconds */
    const char *t = config_str("ENCLAVE_INFERENCE_TIMEOUT", "120");
    double secs = 0;
    char tail;
    if (sscanf(t, "%lf%c", &secs, &tail) != 1 || secs < 1 || secs > 3600) {
        snprintf(err, errlen, "ENCLAVE_INFERENCE_TIMEOUT must be seconds in [1, 3600]");
        return -1;
    }
    cfg->stream_timeout = (long)secs;
    /* the original: "nitro" selects the enclave, anything else is mock */
    const char *mode = config_str("ENCLAVE_MODE", "mock");
    cfg->mode = strcasecmp(mode, "nitro") == 0 ? ENCLAVE_NITRO : ENCLAVE_MOCK;
    if (!cfg->clerk_issuer[0]) {
        snprintf(err, errlen, "CLERK_ISSUER is not set: veild refuses to start without auth "
                              "(set CLERK_ISSUER, and CLERK_JWKS_FILE for a local key set)");
        return -1;
    }
    return 0;
}
