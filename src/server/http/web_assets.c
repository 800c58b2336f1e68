/* web_assets — the web page's files and configuration, read at start. See web_assets.h. */
#include "server/http/web_assets.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attest/measurements.h"
#include "attest/verify.h"
#include "common/hex.h"

struct web_assets {
    char dir[PATH_MAX];
    web_file files[WEB_MAX_FILES];
    size_t n;
};

static const struct {
    const char *ext;
    const char *type;
} TYPES[] = {
    {".html", "text/html; charset=utf-8"},  {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},    {".json", "application/json"},
    {".wasm", "application/wasm"},          {".png", "image/png"},
    {".svg", "image/svg+xml"},              {".txt", "text/plain; charset=utf-8"},
    {".ico", "image/x-icon"},
};
#define TEXT_PLAIN "text/plain; charset=utf-8" /* LICENSE, SHA256SUMS */

/* A name a request may ask for: flat, no dot first, a known type. */
static const char *type_of(const char *name)
{
    if (!name[0] || name[0] == '.' || strlen(name) >= 96 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(name))
        return NULL;
    const char *dot = strrchr(name, '.');
    if (!dot)
        return TEXT_PLAIN;
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (strcmp(dot, TYPES[i].ext) == 0)
            return TYPES[i].type;
    return NULL;
}

/* A whole regular file of at most max bytes (never through a symbolic link). */
static uint8_t *read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    uint8_t *data = NULL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        snprintf(err, errlen, "%s: not a regular file of at most %zu bytes", path, max);
        goto out;
    }
    size_t n = (size_t)st.st_size, got = 0;
    if (!(data = malloc(n ? n : 1))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    while (got < n) {
        ssize_t k = read(fd, data + got, n - got);
        if (k <= 0) {
            snprintf(err, errlen, "%s: %s", path, k < 0 ? strerror(errno) : "shorter than its size");
            free(data);
            data = NULL;
            goto out;
        }
        got += (size_t)k;
    }
    *len = n;
out:
    if (fd >= 0)
        close(fd);
    return data;
}

static int add_file(web_assets *w, const char *prefix, const char *name, const char *path, char *err,
                    size_t errlen)
{
    const char *type = type_of(name);
    if (!type)
        return 0; /* not a file the page serves (README.md, editor backups...) */
    if (w->n >= WEB_MAX_FILES) {
        snprintf(err, errlen, "%s: more than %d files", w->dir, WEB_MAX_FILES);
        return -1;
    }
    web_file *f = &w->files[w->n];
    if (!(f->data = read_file(path, WEB_MAX_FILE, &f->len, err, errlen)))
        return -1;
    snprintf(f->name, sizeof f->name, "%s%s", prefix, name);
    f->type = type;
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(f->data, f->len, md);
    char hex[33];
    hex_encode(md, 16, hex);
    snprintf(f->etag, sizeof f->etag, "\"%s\"", hex);
    w->n++;
    return 0;
}

/* The files of dir (not its subfolders) under names prefix + name. */
static int add_dir(web_assets *w, const char *dir, const char *prefix, bool required, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (!required && errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        char path[PATH_MAX + 256];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        rc = add_file(w, prefix, e->d_name, path, err, errlen);
    }
    closedir(d);
    return rc;
}

/* Without VEIL_WEB_DIR: the repository's web/ beside the build directory that holds
 * veild (build/veild -> web/), or an installed share/veil/web. */
static void find_dir(char *out, size_t n)
{
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    out[0] = '\0';
    if (k <= 0)
        return;
    exe[k] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = '\0';
    static const char *const CANDIDATES[] = {"../web", "../share/veil/web"};
    for (size_t i = 0; i < sizeof CANDIDATES / sizeof CANDIDATES[0]; i++) {
        char path[PATH_MAX + 32], real[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s/index.html", exe, CANDIDATES[i]);
        if (access(path, R_OK) == 0 && realpath(path, real)) {
            *strrchr(real, '/') = '\0';
            snprintf(out, n, "%s", real);
            return;
        }
    }
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* {"source","file","subject","sha256","pem"} of the operator's root: a P-384
 * certificate, since the page checks chains with WebCrypto's ECDSA P-384. */
static json_t *custom_root(const char *path, char *err, size_t errlen)
{
    json_t *o = NULL;
    size_t len = 0;
    uint8_t *pem = read_file(path, 64 * 1024, &len, err, errlen);
    if (!pem)
        return NULL;
    BIO *in = BIO_new_mem_buf(pem, (int)len), *out = BIO_new(BIO_s_mem()), *subj = BIO_new(BIO_s_mem());
    X509 *x = in ? PEM_read_bio_X509(in, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = x ? X509_get0_pubkey(x) : NULL;
    char group[32] = "";
    size_t glen = 0;
    if (!x) {
        snprintf(err, errlen, "VEIL_WEB_ATTESTATION_ROOT %s: not a PEM certificate", path);
        goto out;
    }
    if (!k || EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof group, &glen) != 1 ||
        strcmp(group, "secp384r1") != 0) {
        snprintf(err, errlen, "VEIL_WEB_ATTESTATION_ROOT %s: not a P-384 (secp384r1) key, as Nitro roots are",
                 path);
        goto out;
    }
    unsigned char *der = NULL;
    int dlen = i2d_X509(x, &der);
    if (dlen <= 0 || !out || !subj || PEM_write_bio_X509(out, x) != 1 ||
        X509_NAME_print_ex(subj, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0) {
        OPENSSL_free(der);
        snprintf(err, errlen, "VEIL_WEB_ATTESTATION_ROOT %s: cannot encode the certificate", path);
        goto out;
    }
    uint8_t md[SHA256_DIGEST_LENGTH];
    char hex[65];
    SHA256(der, (size_t)dlen, md);
    OPENSSL_free(der);
    hex_encode(md, sizeof md, hex);
    char *p, *s;
    long plen = BIO_get_mem_data(out, &p), slen = BIO_get_mem_data(subj, &s);
    o = json_pack("{s:s, s:s, s:s%, s:s, s:s%}", "source", "VEIL_WEB_ATTESTATION_ROOT", "file", base_name(path),
                  "subject", s, (size_t)slen, "sha256", hex, "pem", p, (size_t)plen);
out:
    X509_free(x);
    BIO_free(in);
    BIO_free(out);
    BIO_free(subj);
    free(pem);
    return o;
}

static json_t *measurements(const char *path, char *err, size_t errlen)
{
    attest_pcr pcrs[ATTEST_MAX_PCRS];
    size_t n = 0;
    char why[256];
    if (attest_measurements_load(path, pcrs, &n, why, sizeof why) < 0) {
        snprintf(err, errlen, "VEIL_WEB_MEASUREMENTS %s: %s", path, why);
        return NULL;
    }
    json_t *m = json_object();
    for (size_t i = 0; i < n; i++) {
        char idx[8], hex[2 * ATTEST_MAX_PCR_LEN + 1];
        snprintf(idx, sizeof idx, "%u", pcrs[i].index);
        hex_encode(pcrs[i].value, pcrs[i].len, hex);
        json_object_set_new(m, idx, json_string(hex));
    }
    return json_pack("{s:s, s:s, s:o}", "source", "VEIL_WEB_MEASUREMENTS", "file", base_name(path), "pcrs", m);
}

/* config.json: what the page verifies the enclave against, and where it came from. */
static int add_config(web_assets *w, const server_config *cfg, char *err, size_t errlen)
{
    json_t *root = cfg->web_root[0] ? custom_root(cfg->web_root, err, errlen)
                                    : json_pack("{s:s, s:s, s:s}", "source", "built-in", "name",
                                                "AWS Nitro Enclaves root G1", "sha256", ATTEST_AWS_ROOT_SHA256);
    if (!root)
        return -1;
    json_t *meas = cfg->web_measurements[0] ? measurements(cfg->web_measurements, err, errlen) : json_null();
    if (!meas) {
        json_decref(root);
        return -1;
    }
    json_t *c = json_pack("{s:{s:o, s:o, s:i, s:s, s:i}}", "attestation", "root", root, "measurements", meas,
                          "max_age_seconds", ATTEST_DEFAULT_MAX_AGE_S, "user_data", ATTEST_USER_DATA,
                          "max_future_seconds", ATTEST_MAX_FUTURE_S);
    char *s = c ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(c);
    if (!s || w->n >= WEB_MAX_FILES) {
        free(s);
        snprintf(err, errlen, "cannot make the page's config.json");
        return -1;
    }
    web_file *f = &w->files[w->n++];
    snprintf(f->name, sizeof f->name, "%s", WEB_CONFIG_NAME);
    f->type = "application/json";
    f->data = (uint8_t *)s;
    f->len = strlen(s);
    uint8_t md[SHA256_DIGEST_LENGTH];
    char hex[33];
    SHA256(f->data, f->len, md);
    hex_encode(md, 16, hex);
    snprintf(f->etag, sizeof f->etag, "\"%s\"", hex);
    return 0;
}

web_assets *web_assets_load(const server_config *cfg, char *err, size_t errlen)
{
    web_assets *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (strcmp(cfg->web_dir, "none") == 0)
        return w;
    if (cfg->web_dir[0])
        snprintf(w->dir, sizeof w->dir, "%s", cfg->web_dir);
    else
        find_dir(w->dir, sizeof w->dir);
    if (!w->dir[0])
        return w; /* not found: the page is not served (veild says so at start) */
    char vendor[PATH_MAX + 16];
    snprintf(vendor, sizeof vendor, "%s/vendor", w->dir);
    char why[PATH_MAX + 128];
    if (add_dir(w, w->dir, "", true, why, sizeof why) < 0 || add_dir(w, vendor, "vendor/", false, why, sizeof why) < 0 ||
        add_config(w, cfg, why, sizeof why) < 0) {
        snprintf(err, errlen, "web page: %s", why);
        web_assets_free(w);
        return NULL;
    }
    return w;
}

void web_assets_free(web_assets *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->files[i].data);
    free(w);
}

const web_file *web_assets_find(const web_assets *w, const char *name)
{
    for (size_t i = 0; w && i < w->n; i++)
        if (strcmp(w->files[i].name, name) == 0)
            return &w->files[i];
    return NULL;
}

const char *web_assets_dir(const web_assets *w)
{
    return w && w->n ? w->dir : "";
}

size_t web_assets_count(const web_assets *w)
{
    return w ? w->n : 0;
}
