/* test_web_assets — the web page's files and config.json as veild loads them at start:
 * only flat names of known types (no dot files, no symbolic links, nothing outside the
 * directory), strong ETags of the bytes, the operator's measurements and root checked
 * (a malformed file or a root the page cannot verify stops veild with the reason). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/hex.h"
#include "server/http/web_assets.h"

static char dir[64];

static void put(const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/veil-web-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char v[128];
    snprintf(v, sizeof v, "%s/vendor", dir);
    mkdir(v, 0700);
    put("index.html", "<!doctype html>");
    put("app.js", "export {};");
    put("README.md", "not served");
    put(".env", "SECRET=1");
    put("vendor/lib.js", "lib");
    put("vendor/LICENSE", "MIT");
    char link[128];
    snprintf(link, sizeof link, "%s/passwd.js", dir);
    assert_int_equal(symlink("/etc/passwd", link), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static server_config cfg_for(const char *web_dir, const char *meas, const char *root)
{
    server_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.web_dir, sizeof c.web_dir, "%s", web_dir);
    snprintf(c.web_measurements, sizeof c.web_measurements, "%s", meas ? meas : "");
    snprintf(c.web_root, sizeof c.web_root, "%s", root ? root : "");
    return c;
}

static json_t *config_of(const web_assets *w)
{
    const web_file *f = web_assets_find(w, WEB_CONFIG_NAME);
    assert_non_null(f);
    json_t *j = json_loadb((const char *)f->data, f->len, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_files(void **state)
{
    (void)state;
    char err[512] = "";
    server_config c = cfg_for(dir, NULL, NULL);
    web_assets *w = web_assets_load(&c, err, sizeof err);
    assert_non_null(w);
    /* index.html, app.js, vendor/lib.js, vendor/LICENSE and config.json; no README.md
     * (not a served type), no dot file, no symbolic link */
    assert_int_equal(web_assets_count(w), 5);
    assert_null(web_assets_find(w, "README.md"));
    assert_null(web_assets_find(w, ".env"));
    assert_null(web_assets_find(w, "passwd.js"));
    assert_null(web_assets_find(w, "../index.html"));
    assert_null(web_assets_find(w, "lib.js"));
    const web_file *f = web_assets_find(w, "vendor/lib.js");
    assert_non_null(f);
    assert_string_equal(f->type, "text/javascript; charset=utf-8");
    assert_string_equal(web_assets_find(w, "vendor/LICENSE")->type, "text/plain; charset=utf-8");
    f = web_assets_find(w, "index.html");
    assert_string_equal(f->type, "text/html; charset=utf-8");
    assert_int_equal(f->len, strlen("<!doctype html>"));
    uint8_t md[32];
    char want[40], hex[33];
    SHA256((const uint8_t *)"<!doctype html>", 15, md);
    hex_encode(md, 16, hex);
    snprintf(want, sizeof want, "\"%s\"", hex);
    assert_string_equal(f->etag, want);
    assert_string_equal(web_assets_dir(w), dir);
    web_assets_free(w);
}

static void test_config_default(void **state)
{
    (void)state;
    char err[512] = "";
    server_config c = cfg_for(dir, NULL, NULL);
    web_assets *w = web_assets_load(&c, err, sizeof err);
    json_t *j = config_of(w);
    json_t *a = json_object_get(j, "attestation");
    assert_string_equal(json_string_value(json_object_get(json_object_get(a, "root"), "source")), "built-in");
    assert_string_equal(json_string_value(json_object_get(json_object_get(a, "root"), "sha256")),
                        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b");
    assert_true(json_is_null(json_object_get(a, "measurements")));
    assert_int_equal(json_integer_value(json_object_get(a, "max_age_seconds")), 300);
    assert_string_equal(json_string_value(json_object_get(a, "user_data")), "veil-transport-v1");
    json_decref(j);
    web_assets_free(w);
}

static void test_config_operator(void **state)
{
    (void)state;
    char err[512] = "";
    server_config c = cfg_for(dir, VEIL_FIXTURES "/attestation/measurements/ok_describe_eif.json",
                              VEIL_FIXTURES "/attestation/aws_nitro_root_g1.pem");
    web_assets *w = web_assets_load(&c, err, sizeof err);
    assert_non_null(w);
    json_t *j = config_of(w);
    json_t *a = json_object_get(j, "attestation");
    json_t *m = json_object_get(a, "measurements");
    assert_string_equal(json_string_value(json_object_get(m, "source")), "VEIL_WEB_MEASUREMENTS");
    assert_string_equal(json_string_value(json_object_get(m, "file")), "ok_describe_eif.json");
    json_t *pcrs = json_object_get(m, "pcrs");
    assert_true(json_object_size(pcrs) >= 3);
    assert_int_equal(json_string_length(json_object_get(pcrs, "0")), 96);
    json_t *r = json_object_get(a, "root");
    assert_string_equal(json_string_value(json_object_get(r, "source")), "VEIL_WEB_ATTESTATION_ROOT");
    assert_string_equal(json_string_value(json_object_get(r, "sha256")),
                        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b");
    assert_non_null(strstr(json_string_value(json_object_get(r, "subject")), "CN=aws.nitro-enclaves"));
    assert_non_null(strstr(json_string_value(json_object_get(r, "pem")), "-----BEGIN CERTIFICATE-----"));
    json_decref(j);
    web_assets_free(w);
}

/* A self-signed P-256 certificate: the page checks chains with P-384 only. */
static void write_p256_root(const char *path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(k);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"p256", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, k);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void test_refusals(void **state)
{
    (void)state;
    char err[512] = "";
    server_config c = cfg_for(dir, VEIL_FIXTURES "/attestation/measurements/bad_missing_pcr1.json", NULL);
    assert_null(web_assets_load(&c, err, sizeof err));
    assert_non_null(strstr(err, "VEIL_WEB_MEASUREMENTS"));
    c = cfg_for(dir, NULL, VEIL_FIXTURES "/attestation/measurements/ok_describe_eif.json");
    assert_null(web_assets_load(&c, err, sizeof err));
    assert_non_null(strstr(err, "not a PEM certificate"));
    char p256[128];
    snprintf(p256, sizeof p256, "%s/p256.pem", dir);
    write_p256_root(p256);
    c = cfg_for(dir, NULL, p256);
    assert_null(web_assets_load(&c, err, sizeof err));
    assert_non_null(strstr(err, "P-384"));
    unlink(p256);
    c = cfg_for("/nonexistent/veil-web", NULL, NULL);
    assert_null(web_assets_load(&c, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/veil-web"));
    /* a file over the size limit */
    char big[128];
    snprintf(big, sizeof big, "%s/big.js", dir);
    FILE *f = fopen(big, "w");
    assert_int_equal(ftruncate(fileno(f), WEB_MAX_FILE + 1), 0);
    fclose(f);
    c = cfg_for(dir, NULL, NULL);
    assert_null(web_assets_load(&c, err, sizeof err));
    assert_non_null(strstr(err, "big.js"));
    unlink(big);
}

static void test_off(void **state)
{
    (void)state;
    char err[512] = "";
    server_config c = cfg_for("none", VEIL_FIXTURES "/attestation/measurements/bad_missing_pcr1.json", NULL);
    web_assets *w = web_assets_load(&c, err, sizeof err);
    assert_non_null(w); /* off: nothing is read, not even the settings of the page */
    assert_int_equal(web_assets_count(w), 0);
    assert_string_equal(web_assets_dir(w), "");
    assert_null(web_assets_find(w, "index.html"));
    web_assets_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files),     cmocka_unit_test(test_config_default), cmocka_unit_test(test_config_operator),
        cmocka_unit_test(test_refusals), cmocka_unit_test(test_off),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
