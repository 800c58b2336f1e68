/* settings — veild's configuration, from the environment (and `.env`), with the
 * original's variable names where they exist (spec §6.6). Loaded once at start
 * and read-only afterwards; secrets in it are never logged.
 */
#ifndef VEIL_SERVER_SETTINGS_H
#define VEIL_SERVER_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

#define SETTINGS_DEFAULT_DB_WORKERS 4

typedef enum enclave_mode { ENCLAVE_MOCK = 0, ENCLAVE_NITRO } enclave_mode;

typedef struct server_config {
    char listen[300];           /* VEIL_LISTEN, default tcp:127.0.0.1:8000 */
    char project_name[64];      /* PROJECT_NAME, default "Isol8 Chat" */
    char api_prefix[32];        /* API_V1_STR, default /api/v1 */
    char data_dir[512];         /* VEIL_DATA_DIR, default ./data */
    char database_url[1024];    /* DATABASE_URL, default sqlite:<data_dir>/veil.db */
    long db_workers;            /* VEIL_DB_WORKERS threads with a connection each, default 4 */
    long db_queue_max;          /* VEIL_DB_QUEUE_MAX requests waiting for a worker, default 256 (503 past it) */
    long db_timeout_ms;         /* VEIL_DB_STATEMENT_TIMEOUT_MS one statement, default 5000 (503 past it) */
    long health_db_wait_ms;     /* VEIL_HEALTH_DB_WAIT_MS GET /health's wait for a database ping, default 2000 */
    /* auth */
    char clerk_issuer[512];     /* CLERK_ISSUER (required) */
    char clerk_jwks_file[512];  /* CLERK_JWKS_FILE */
    char clerk_jwks_url[512];   /* CLERK_JWKS_URL, default <issuer>/.well-known/jwks.json */
    char clerk_audience[256];   /* CLERK_AUDIENCE */
    char clerk_azp[1024];       /* CLERK_AUTHORIZED_PARTIES, comma-separated */
    char clerk_webhook_secret[256]; /* CLERK_WEBHOOK_SECRET */
    long webhook_dedup_seconds; /* CLERK_WEBHOOK_DEDUP_SECONDS, default 86400 */
    char ca_file[512];          /* VEIL_CA_FILE: CA bundle for JWKS/Bedrock (tests) */
    long jwt_leeway;            /* CLERK_JWT_LEEWAY_SECONDS, default 30 */
    /* enclave */
    enclave_mode mode;          /* ENCLAVE_MODE=mock|nitro */
    char enclave_addr[300];     /* ENCLAVE_ADDR, default vsock:<CID>:<PORT> */
    long enclave_cid;           /* ENCLAVE_CID, 0 = discover with nitro-cli */
    long enclave_port;          /* ENCLAVE_PORT, default 5000 */
    long refresh_seconds;       /* ENCLAVE_CREDENTIAL_REFRESH_SECONDS, default 2700 */
    long stream_timeout;        /* ENCLAVE_INFERENCE_TIMEOUT (seconds), default 120 */
    char region[64];            /* AWS_REGION, default us-east-1 */
    char imds_endpoint[300];    /* VEIL_IMDS_ENDPOINT host:port, default 169.254.169.254:80 */
    char proxy_addr[300];       /* mock mode: PROXY_ADDR for Bedrock, default none */
    char bedrock_endpoint[300]; /* mock mode: BEDROCK_ENDPOINT host:port */
    /* http */
    char cors_origins[1024];    /* CORS_ORIGINS, default http://localhost:3000 */
    bool debug_routes;          /* VEIL_DEBUG_ROUTES: mount /api/v1/debug (admins only) */
    long max_body;              /* VEIL_MAX_BODY bytes, default the enclave's request limit (8 MiB) */
    long max_head;              /* VEIL_HTTP_MAX_HEAD bytes, default 16 KiB (431 past it) */
    long idle_seconds;          /* VEIL_HTTP_IDLE_SECONDS, default 60 */
    long head_seconds;          /* VEIL_HTTP_HEAD_SECONDS, default 10 (408) */
    long body_seconds;          /* VEIL_HTTP_BODY_SECONDS, default 30 (408) */
    long max_connections;       /* VEIL_MAX_CONNECTIONS, default 0 = from the descriptor limit */
    long sse_max_buffer;        /* VEIL_SSE_MAX_BUFFER bytes unsent before a stream pauses, 1 MiB */
    long sse_stall_seconds;     /* VEIL_SSE_STALL_SECONDS a stream may stay paused, default 30 */
    /* per user */
    long user_max_streams;      /* VEIL_USER_MAX_STREAMS, default 4 (429 past it) */
    long user_rate;             /* VEIL_USER_RATE requests per second, default 20 (0: off) */
    long user_burst;            /* VEIL_USER_BURST, default 100 */
    long user_table_max;        /* VEIL_USER_TABLE_MAX users tracked at once, default 100000 */
    long empty_session_ttl;     /* VEIL_EMPTY_SESSION_TTL_SECONDS, default 86400 */
    /* attestation */
    char enclave_nsm[600];      /* ENCLAVE_NSM, mock mode: the in-process core's NSM (default none) */
    long attest_rate;           /* VEIL_ATTEST_RATE: fresh (nonce) attestations per second, all users */
    long attest_user_rate;      /* VEIL_ATTEST_USER_RATE: per user per second (bursts of 5) */
    /* the web page */
    char web_dir[512];          /* VEIL_WEB_DIR: "" = the repository's web/ next to the binary, "none" = off */
    char web_measurements[512]; /* VEIL_WEB_MEASUREMENTS: nitro-cli's JSON the page verifies PCRs against */
    char web_root[512];         /* VEIL_WEB_ATTESTATION_ROOT: a PEM root instead of the AWS Nitro root G1 */
} server_config;

/* Fills cfg from the environment. Returns -1 with a clear message on a bad or
 * missing value (e.g. no auth configured). */
int settings_load(server_config *cfg, char *err, size_t errlen);

#endif
