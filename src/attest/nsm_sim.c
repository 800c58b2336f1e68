/* nsm_sim — the simulated NSM: a local chain shaped like AWS's, real-format documents.
 *
 * DIR holds root.pem/root.key, intermediate.pem/intermediate.key and leaf.pem/leaf.key
 * (keys 0600, P-384, PEM). A missing chain is created; an intermediate or a leaf near
 * its end (or no longer issued by its parent) is replaced, under an flock on DIR/.lock
 * so processes sharing DIR agree. A root that exists is never replaced: clients pinned it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "attest/nsm_int.h"
#include "common/secret.h"

#define ROOT_CERT "root.pem"
#define ROOT_KEY "root.key"
#define INTER_CERT "intermediate.pem"
#define INTER_KEY "intermediate.key"
#define LEAF_CERT "leaf.pem"
#define LEAF_KEY "leaf.key"
#define LOCK_FILE ".lock"
#define SELF_EXE "/proc/self/exe"
#define SHA384_LEN 48
#define HOSTNAME_MAX 64
#define ORG_NAME "veil SIMULATED NSM (not AWS)"
#define ROOT_CN "veil simulated NSM root"
#define INTER_CN "veil simulated NSM intermediate"
#define MODULE_ID_PREFIX "sim-"

struct nsm_sim {
    char dir[PATH_MAX];
    char module_id[ATTEST_MODULE_ID_MAX + 1];
    attest_pcr pcrs[NSM_SIM_PCRS];
    X509 *root, *inter, *leaf;
    EVP_PKEY *leaf_key;
    uint8_t *root_der, *inter_der, *leaf_der; /* OPENSSL_malloc'd (i2d_X509) */
    size_t root_der_len, inter_der_len, leaf_der_len;
};

/* ---- files ------------------------------------------------------------------------------ */

static int path_of(const nsm_sim *s, const char *name, char out[PATH_MAX])
{
    int n = snprintf(out, PATH_MAX, "%s/%s", s->dir, name);
    return n > 0 && n < PATH_MAX ? 0 : -1;
}

static bool exists(const nsm_sim *s, const char *name)
{
    char p[PATH_MAX];
    return path_of(s, name, p) == 0 && access(p, F_OK) == 0;
}

static X509 *load_cert(const nsm_sim *s, const char *name)
{
    char p[PATH_MAX];
    X509 *x = NULL;
    if (path_of(s, name, p) != 0)
        return NULL;
    FILE *f = fopen(p, "r");
    if (f) {
        x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    return x;
}

static EVP_PKEY *load_key(const nsm_sim *s, const char *name)
{
    char p[PATH_MAX];
    EVP_PKEY *k = NULL;
    if (path_of(s, name, p) != 0)
        return NULL;
    FILE *f = fopen(p, "r");
    if (f) {
        k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    return k;
}

/* Written to a temporary name, then renamed: a reader sees the old file or the new one. */
static int write_atomic(const nsm_sim *s, const char *name, const char *data, size_t n, mode_t mode)
{
    char p[PATH_MAX], tmp[PATH_MAX];
    if (path_of(s, name, p) != 0 || snprintf(tmp, sizeof tmp, "%s.tmp.%d", p, (int)getpid()) >= PATH_MAX)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int ok = off == n && fsync(fd) == 0;
    if (close(fd) != 0)
        ok = 0;
    if (!ok || rename(tmp, p) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int write_pem(const nsm_sim *s, const char *name, X509 *x, EVP_PKEY *k)
{
    /* secmem: the buffer holding a private key is wiped when freed */
    BIO *b = BIO_new(k ? BIO_s_secmem() : BIO_s_mem());
    char *data;
    int rc = -1;
    if (!b)
        return -1;
    int ok = k ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)
               : PEM_write_bio_X509(b, x);
    long n = BIO_get_mem_data(b, &data);
    if (ok == 1 && n > 0)
        rc = write_atomic(s, name, data, (size_t)n, k ? 0600 : 0644);
    BIO_free(b);
    return rc;
}

/* ---- certificates ------------------------------------------------------------------------ */

static EVP_PKEY *new_p384(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ext && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static int set_serial(X509 *x)
{
    BIGNUM *bn = BN_new();
    int ok = bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
             BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok ? 0 : -1;
}

/* A v3 certificate for key, issued by issuer (NULL: self-signed with key), ES384. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       time_t not_before, time_t not_after, const char *basic, const char *usage)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    int ok = x && name && X509_set_version(x, X509_VERSION_3) == 1 && set_serial(x) == 0 &&
             X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const uint8_t *)ORG_NAME, -1, -1, 0) == 1 &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0) == 1 &&
             X509_set_subject_name(x, name) == 1 &&
             X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1 &&
             ASN1_TIME_set(X509_getm_notBefore(x), not_before) &&
             ASN1_TIME_set(X509_getm_notAfter(x), not_after) && X509_set_pubkey(x, key) == 1 &&
             add_ext(x, issuer, NID_basic_constraints, basic) == 0 &&
             add_ext(x, issuer, NID_key_usage, usage) == 0 &&
             add_ext(x, issuer, NID_subject_key_identifier, "hash") == 0 &&
             (!issuer || add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") == 0) &&
             X509_sign(x, issuer ? issuer_key : key, EVP_sha384()) > 0;
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int64_t seconds_left(X509 *x, time_t now)
{
    int day = 0, sec = 0;
    ASN1_TIME *t = ASN1_TIME_adj(NULL, now, 0, 0);
    int ok = t && ASN1_TIME_diff(&day, &sec, t, X509_get0_notAfter(x)) == 1;
    ASN1_TIME_free(t);
    return ok ? (int64_t)day * 86400 + sec : -1;
}

/* x is usable: issued and signed by parent, with key, and more than renew_s left */
static bool usable(X509 *x, EVP_PKEY *key, X509 *parent, time_t now, int64_t renew_s)
{
    return x && key && X509_check_private_key(x, key) == 1 &&
           X509_check_issued(parent, x) == X509_V_OK &&
           X509_verify(x, X509_get0_pubkey(parent)) == 1 &&
           X509_cmp_time(X509_get0_notBefore(x), &now) < 0 && seconds_left(x, now) > renew_s;
}

static int set_der(X509 *x, uint8_t **der, size_t *len)
{
    uint8_t *d = NULL;
    int n = i2d_X509(x, &d);
    if (n <= 0)
        return -1;
    OPENSSL_free(*der);
    *der = d;
    *len = (size_t)n;
    return 0;
}

/* ---- the chain ------------------------------------------------------------------------------ */

static nsm_err load_or_make_root(nsm_sim *s, time_t now, char *err, size_t errlen)
{
    if (!exists(s, ROOT_CERT) && !exists(s, ROOT_KEY)) {
        EVP_PKEY *k = new_p384();
        X509 *x = k ? make_cert(k, ROOT_CN, NULL, NULL, now - NSM_SIM_BACKDATE_S,
                                now + NSM_SIM_ROOT_LIFETIME_S, "critical,CA:TRUE",
                                "critical,keyCertSign,cRLSign")
                    : NULL;
        /* the key first: a root.pem without its key could never issue again */
        int ok = x && write_pem(s, ROOT_KEY, NULL, k) == 0 && write_pem(s, ROOT_CERT, x, NULL) == 0;
        EVP_PKEY_free(k);
        if (!ok) {
            X509_free(x);
            return nsm_fail(NSM_ERR_SIM, err, errlen, "cannot create the simulated root in %s",
                            s->dir);
        }
        s->root = x;
        return NSM_OK;
    }
    s->root = load_cert(s, ROOT_CERT);
    if (!s->root)
        return nsm_fail(NSM_ERR_SIM, err, errlen,
                        "%s/" ROOT_CERT " is missing or unreadable (remove the directory to start over)",
                        s->dir);
    if (seconds_left(s->root, now) <= NSM_SIM_INTERMEDIATE_LIFETIME_S)
        return nsm_fail(NSM_ERR_SIM, err, errlen,
                        "the simulated root in %s is (nearly) expired: remove the directory", s->dir);
    return NSM_OK;
}

static nsm_err ensure_intermediate(nsm_sim *s, time_t now, EVP_PKEY **inter_key, char *err,
                                   size_t errlen)
{
    X509 *x = load_cert(s, INTER_CERT);
    EVP_PKEY *k = load_key(s, INTER_KEY);
    if (!usable(x, k, s->root, now, NSM_SIM_INTERMEDIATE_RENEW_S)) {
        X509_free(x);
        EVP_PKEY_free(k);
        x = NULL;
        EVP_PKEY *root_key = load_key(s, ROOT_KEY);
        if (root_key && X509_check_private_key(s->root, root_key) == 1 && (k = new_p384()))
            x = make_cert(k, INTER_CN, s->root, root_key, now - NSM_SIM_BACKDATE_S,
                          now + NSM_SIM_INTERMEDIATE_LIFETIME_S, "critical,CA:TRUE,pathlen:0",
                          "critical,keyCertSign,cRLSign");
        EVP_PKEY_free(root_key);
        if (!x || write_pem(s, INTER_KEY, NULL, k) != 0 || write_pem(s, INTER_CERT, x, NULL) != 0) {
            X509_free(x);
            EVP_PKEY_free(k);
            return nsm_fail(NSM_ERR_SIM, err, errlen,
                            "cannot issue a simulated intermediate in %s (is root.key there?)", s->dir);
        }
    }
    X509_free(s->inter);
    s->inter = x;
    *inter_key = k;
    return NSM_OK;
}

static nsm_err ensure_leaf(nsm_sim *s, time_t now, EVP_PKEY *inter_key, char *err, size_t errlen)
{
    X509 *x = load_cert(s, LEAF_CERT);
    EVP_PKEY *k = load_key(s, LEAF_KEY);
    if (!usable(x, k, s->inter, now, NSM_SIM_LEAF_RENEW_S)) {
        X509_free(x);
        EVP_PKEY_free(k);
        x = NULL;
        if ((k = new_p384()))
            x = make_cert(k, s->module_id, s->inter, inter_key, now - NSM_SIM_BACKDATE_S,
                          now - NSM_SIM_BACKDATE_S + NSM_SIM_LEAF_LIFETIME_S, "critical,CA:FALSE",
                          "critical,digitalSignature");
        if (!x || write_pem(s, LEAF_KEY, NULL, k) != 0 || write_pem(s, LEAF_CERT, x, NULL) != 0) {
            X509_free(x);
            EVP_PKEY_free(k);
            return nsm_fail(NSM_ERR_SIM, err, errlen, "cannot issue a simulated leaf in %s", s->dir);
        }
    }
    X509_free(s->leaf);
    EVP_PKEY_free(s->leaf_key);
    s->leaf = x;
    s->leaf_key = k;
    return NSM_OK;
}

/* Loads what DIR has and makes what it lacks, under DIR's lock. */
static nsm_err ensure_chain(nsm_sim *s, char *err, size_t errlen)
{
    char lp[PATH_MAX];
    EVP_PKEY *inter_key = NULL;
    nsm_err e;
    if (path_of(s, LOCK_FILE, lp) != 0)
        return nsm_fail(NSM_ERR_SIM, err, errlen, "the simulator's directory path is too long");
    int lfd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0 || flock(lfd, LOCK_EX) != 0) {
        e = nsm_fail(NSM_ERR_SIM, err, errlen, "cannot lock %s: %s", lp, strerror(errno));
        goto out;
    }
    time_t now = time(NULL);
    if (!s->root && (e = load_or_make_root(s, now, err, errlen)) != NSM_OK)
        goto out;
    if ((e = ensure_intermediate(s, now, &inter_key, err, errlen)) != NSM_OK)
        goto out;
    if ((e = ensure_leaf(s, now, inter_key, err, errlen)) != NSM_OK)
        goto out;
    if (set_der(s->root, &s->root_der, &s->root_der_len) != 0 ||
        set_der(s->inter, &s->inter_der, &s->inter_der_len) != 0 ||
        set_der(s->leaf, &s->leaf_der, &s->leaf_der_len) != 0)
        e = NSM_ERR_NOMEM;
out:
    EVP_PKEY_free(inter_key);
    if (lfd >= 0)
        close(lfd); /* releases the flock */
    ERR_clear_error();
    return e;
}

/* ---- measurements and identity ------------------------------------------------------------- */

int nsm_sim_pcrs_of_file(const char *path, uint8_t out[3][48], char *err, size_t errlen)
{
    uint8_t m[SHA384_LEN], buf[64 * 1024];
    unsigned mlen = 0;
    int rc = -1;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    FILE *f = fopen(path, "rb");
    if (!f) {
        nsm_fail(NSM_ERR_SIM, err, errlen, "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    if (!md || EVP_DigestInit_ex(md, EVP_sha384(), NULL) != 1)
        goto out;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        if (EVP_DigestUpdate(md, buf, n) != 1)
            goto out;
    if (ferror(f) || EVP_DigestFinal_ex(md, m, &mlen) != 1) {
        nsm_fail(NSM_ERR_SIM, err, errlen, "cannot read %s", path);
        goto out;
    }
    for (uint8_t i = 0; i < 3; i++) {
        static const uint8_t zero[SHA384_LEN];
        if (EVP_DigestInit_ex(md, EVP_sha384(), NULL) != 1 ||
            EVP_DigestUpdate(md, zero, sizeof zero) != 1 || EVP_DigestUpdate(md, m, sizeof m) != 1 ||
            EVP_DigestUpdate(md, &i, 1) != 1 || EVP_DigestFinal_ex(md, out[i], &mlen) != 1)
            goto out;
    }
    rc = 0;
out:
    if (f)
        fclose(f);
    EVP_MD_CTX_free(md);
    return rc;
}

static void make_module_id(char out[ATTEST_MODULE_ID_MAX + 1])
{
    char host[HOSTNAME_MAX + 1] = "";
    if (gethostname(host, sizeof host) != 0 || !host[0])
        strcpy(host, "localhost");
    host[HOSTNAME_MAX] = '\0';
    /* the module_id is printed and logged: letters, digits, '-' and '.' only */
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-'))
            *p = '-';
    snprintf(out, ATTEST_MODULE_ID_MAX + 1, MODULE_ID_PREFIX "%s" ATTEST_SIM_MODULE_ID_SUFFIX, host);
}

/* ---- the simulator ------------------------------------------------------------------------ */

nsm_err nsm_sim_open(const char *dir, nsm_sim **out, char *err, size_t errlen)
{
    *out = NULL;
    if (strlen(dir) >= PATH_MAX - 32)
        return nsm_fail(NSM_ERR_ARG, err, errlen, "the simulator's directory path is too long");
    nsm_sim *s = calloc(1, sizeof *s);
    if (!s)
        return NSM_ERR_NOMEM;
    strcpy(s->dir, dir);
    make_module_id(s->module_id);
    nsm_err e = NSM_OK;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        e = nsm_fail(NSM_ERR_SIM, err, errlen, "cannot create %s: %s", dir, strerror(errno));
        goto out;
    }
    uint8_t m[3][48];
    if (nsm_sim_pcrs_of_file(SELF_EXE, m, err, errlen) != 0) {
        e = NSM_ERR_SIM;
        goto out;
    }
    for (unsigned i = 0; i < NSM_SIM_PCRS; i++) {
        s->pcrs[i].index = i;
        s->pcrs[i].len = SHA384_LEN;
        if (i < 3)
            memcpy(s->pcrs[i].value, m[i], SHA384_LEN);
    }
    e = ensure_chain(s, err, errlen);
out:
    if (e != NSM_OK) {
        nsm_sim_close(s);
        return e;
    }
    *out = s;
    return NSM_OK;
}

void nsm_sim_close(nsm_sim *s)
{
    if (!s)
        return;
    X509_free(s->root);
    X509_free(s->inter);
    X509_free(s->leaf);
    EVP_PKEY_free(s->leaf_key);
    OPENSSL_free(s->root_der);
    OPENSSL_free(s->inter_der);
    OPENSSL_free(s->leaf_der);
    free(s);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

nsm_err nsm_sim_attest(nsm_sim *s, const uint8_t *user_data, size_t user_data_len,
                       const uint8_t *nonce, size_t nonce_len, const uint8_t *public_key,
                       size_t public_key_len, uint8_t **doc, size_t *doc_len, char *err,
                       size_t errlen)
{
    time_t now = time(NULL);
    if (seconds_left(s->leaf, now) <= NSM_SIM_LEAF_RENEW_S ||
        seconds_left(s->inter, now) <= NSM_SIM_INTERMEDIATE_RENEW_S) {
        nsm_err e = ensure_chain(s, err, errlen);
        if (e != NSM_OK)
            return e;
    }
    const uint8_t *bundle[2] = {s->root_der, s->inter_der};
    const size_t bundle_len[2] = {s->root_der_len, s->inter_der_len};
    attest_doc_fields f = {
        .module_id = s->module_id,
        .timestamp_ms = now_ms(),
        .pcrs = s->pcrs,
        .n_pcrs = NSM_SIM_PCRS,
        .certificate = s->leaf_der,
        .certificate_len = s->leaf_der_len,
        .cabundle = bundle,
        .cabundle_len = bundle_len,
        .n_cabundle = 2,
        .public_key = public_key,
        .public_key_len = public_key_len,
        .user_data = user_data,
        .user_data_len = user_data_len,
        .nonce = nonce,
        .nonce_len = nonce_len,
    };
    vbuf out = VBUF_INIT;
    if (attest_doc_sign(&f, s->leaf_key, &out) != 0) {
        vbuf_free(&out);
        ERR_clear_error();
        return nsm_fail(NSM_ERR_SIM, err, errlen, "the simulator could not sign the document");
    }
    *doc = out.data; /* the vbuf's malloc'd storage becomes the caller's */
    *doc_len = out.len;
    return NSM_OK;
}
