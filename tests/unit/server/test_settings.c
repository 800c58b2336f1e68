/* server/settings: veild's configuration from the environment: the documented
 * defaults, the original's variable names and forms (ENCLAVE_MODE, a float
 * ENCLAVE_INFERENCE_TIMEOUT), every bound refused with the variable named, and no
 * start without auth. Each test starts from an empty environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/server.h"
#include "server/http/httpd.h"
#include "server/settings.h"

static server_config cfg;
static char err[300];

static int setup(void **state)
{
    (void)state;
    clearenv();
    setenv("CLERK_ISSUER", "https://clerk.example.com", 1);
    err[0] = '\0';
    return 0;
}

static void test_defaults(void **state)
{
    (void)state;
    assert_int_equal(settings_load(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.listen, "tcp:127.0.0.1:8000");
    assert_string_equal(cfg.project_name, "Isol8 Chat");
    assert_string_equal(cfg.api_prefix, "/api/v1");
    assert_string_equal(cfg.data_dir, "./data");
    assert_string_equal(cfg.database_url, "sqlite:./data/veil.db");
    assert_string_equal(cfg.clerk_issuer, "https://clerk.example.com");
    assert_string_equal(cfg.region, "us-east-1");
    assert_string_equal(cfg.imds_endpoint, "169.254.169.254:80");
    assert_string_equal(cfg.cors_origins, "http://localhost:3000");
    assert_string_equal(cfg.enclave_addr, "");
    assert_int_equal(cfg.mode, ENCLAVE_MOCK);
    assert_int_equal(cfg.jwt_leeway, 30);
    assert_int_equal(cfg.webhook_dedup_seconds, 86400);
    assert_int_equal(cfg.enclave_cid, 0);
    assert_int_equal(cfg.enclave_port, 5000);
    assert_int_equal(cfg.refresh_seconds, 2700);
    assert_int_equal(cfg.stream_timeout, 120);
    assert_int_equal(cfg.max_body, ENCLAVE_DEFAULT_MAX_REQUEST); /* a body veild takes fits the enclave */
    assert_int_equal(cfg.max_head, HTTPD_DEFAULT_MAX_HEAD);
    assert_int_equal(cfg.idle_seconds, 60);
    assert_int_equal(cfg.head_seconds, 10);
    assert_int_equal(cfg.body_seconds, 30);
    assert_int_equal(cfg.max_connections, 0);
    assert_int_equal(cfg.sse_max_buffer, HTTPD_DEFAULT_MAX_OUTPUT);
    assert_int_equal(cfg.sse_stall_seconds, 30);
    assert_int_equal(cfg.user_max_streams, 4);
    assert_int_equal(cfg.user_rate, 20);
    assert_int_equal(cfg.user_burst, 100);
    assert_int_equal(cfg.user_table_max, 100000);
    assert_int_equal(cfg.empty_session_ttl, 86400);
    assert_false(cfg.debug_routes);
    assert_int_equal(cfg.db_workers, SETTINGS_DEFAULT_DB_WORKERS);
    assert_int_equal(cfg.db_queue_max, 256);
    assert_int_equal(cfg.db_timeout_ms, 5000);
    assert_int_equal(cfg.health_db_wait_ms, 2000);
}

static void test_values_from_the_environment(void **state)
{
    (void)state;
    setenv("VEIL_DATA_DIR", "/var/lib/veil", 1);
    setenv("ENCLAVE_MODE", "NiTrO", 1); /* the original compares without case */
    setenv("ENCLAVE_ADDR", "unix:/run/veil/enclave.sock", 1);
    setenv("ENCLAVE_INFERENCE_TIMEOUT", "45.5", 1);
    setenv("VEIL_USER_RATE", "0", 1);
    setenv("VEIL_DEBUG_ROUTES", "true", 1);
    setenv("AWS_REGION", "eu-central-1", 1);
    setenv("VEIL_DB_WORKERS", "2", 1);
    setenv("VEIL_DB_QUEUE_MAX", "3", 1);
    setenv("VEIL_DB_STATEMENT_TIMEOUT_MS", "250", 1);
    assert_int_equal(settings_load(&cfg, err, sizeof err), 0);
    assert_int_equal(cfg.db_workers, 2);
    assert_int_equal(cfg.db_queue_max, 3);
    assert_int_equal(cfg.db_timeout_ms, 250);
    assert_string_equal(cfg.database_url, "sqlite:/var/lib/veil/veil.db"); /* follows the data dir */
    assert_int_equal(cfg.mode, ENCLAVE_NITRO);
    assert_string_equal(cfg.enclave_addr, "unix:/run/veil/enclave.sock");
    assert_int_equal(cfg.stream_timeout, 45);
    assert_int_equal(cfg.user_rate, 0);
    assert_true(cfg.debug_routes);
    assert_string_equal(cfg.region, "eu-central-1");

    setenv("DATABASE_URL", "postgresql://veil@db/veil", 1);
    setenv("ENCLAVE_MODE", "anything-else", 1); /* the original: not "nitro" is mock */
    assert_int_equal(settings_load(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.database_url, "postgresql://veil@db/veil");
    assert_int_equal(cfg.mode, ENCLAVE_MOCK);
}

static void test_bounds_refused(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } BAD[] = {
        {"CLERK_JWT_LEEWAY_SECONDS", "301"},     {"CLERK_JWT_LEEWAY_SECONDS", "-1"},
        {"CLERK_WEBHOOK_DEDUP_SECONDS", "599"},  /* under twice Svix's tolerance */
        {"ENCLAVE_PORT", "0"},                   {"ENCLAVE_CID", "x"},
        {"ENCLAVE_CREDENTIAL_REFRESH_SECONDS", "9"}, {"ENCLAVE_CREDENTIAL_REFRESH_SECONDS", "86401"},
        {"VEIL_MAX_BODY", "1023"},               {"VEIL_HTTP_MAX_HEAD", "1048577"},
        {"VEIL_HTTP_IDLE_SECONDS", "0"},         {"VEIL_HTTP_HEAD_SECONDS", "601"},
        {"VEIL_HTTP_BODY_SECONDS", "3601"},      {"VEIL_MAX_CONNECTIONS", "1000001"},
        {"VEIL_SSE_MAX_BUFFER", "4095"},         {"VEIL_SSE_STALL_SECONDS", "0"},
        {"VEIL_USER_MAX_STREAMS", "0"},          {"VEIL_USER_RATE", "100001"},
        {"VEIL_USER_BURST", "0"},                {"VEIL_USER_TABLE_MAX", "99"},
        {"VEIL_EMPTY_SESSION_TTL_SECONDS", "0"}, {"VEIL_USER_RATE", "20 "},
        {"VEIL_DEBUG_ROUTES", "perhaps"},
        {"VEIL_DB_WORKERS", "0"},                {"VEIL_DB_WORKERS", "65"},
        {"VEIL_DB_QUEUE_MAX", "0"},              {"VEIL_DB_STATEMENT_TIMEOUT_MS", "99"},
        {"VEIL_DB_STATEMENT_TIMEOUT_MS", "600001"}, {"VEIL_HEALTH_DB_WAIT_MS", "60001"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        setup(NULL);
        setenv(BAD[i].name, BAD[i].value, 1);
        err[0] = '\0';
        if (settings_load(&cfg, err, sizeof err) != -1)
            fail_msg("%s=%s accepted", BAD[i].name, BAD[i].value);
        if (!strstr(err, BAD[i].name))
            fail_msg("%s=%s: the error does not name the variable: %s", BAD[i].name, BAD[i].value, err);
    }
    static const char *const timeouts[] = {"0.5", "3601", "ten", "12s", ""};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        setup(NULL);
        setenv("ENCLAVE_INFERENCE_TIMEOUT", timeouts[i], 1);
        int rc = settings_load(&cfg, err, sizeof err);
        if (timeouts[i][0] == '\0') { /* empty is unset: the default */
            assert_int_equal(rc, 0);
            assert_int_equal(cfg.stream_timeout, 120);
            continue;
        }
        assert_int_equal(rc, -1);
        assert_string_equal(err, "ENCLAVE_INFERENCE_TIMEOUT must be seconds in [1, 3600]");
    }
}

static void test_no_start_without_auth(void **state)
{
    (void)state;
    unsetenv("CLERK_ISSUER");
    assert_int_equal(settings_load(&cfg, err, sizeof err), -1);
    assert_string_equal(err, "CLERK_ISSUER is not set: veild refuses to start without auth "
                             "(set CLERK_ISSUER, and CLERK_JWKS_FILE for a local key set)");
}

static void test_too_long(void **state)
{
    (void)state;
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    setenv("CORS_ORIGINS", big, 1);
    assert_int_equal(settings_load(&cfg, err, sizeof err), -1);
    assert_string_equal(err, "CORS_ORIGINS is too long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_values_from_the_environment, setup),
        cmocka_unit_test_setup(test_bounds_refused, setup),
        cmocka_unit_test_setup(test_no_start_without_auth, setup),
        cmocka_unit_test_setup(test_too_long, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
