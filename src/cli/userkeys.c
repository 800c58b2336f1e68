#include "cli/userkeys.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/hex.h"
#include "crypto/ep.h"
#include "crypto/keywrap.h"

/* "prefix msg (HTTP status)" in buf; a msg too long for buf is cut at a character
 * boundary with a visible " [...]", never silently mid-word. */
static void put_detail(char *buf, size_t n, const char *prefix, const char *msg, int status)
{
    static const char MARK[] = " [...]";
    char tail[32];
    snprintf(tail, sizeof tail, " (HTTP %d)", status);
    size_t fixed = strlen(prefix) + strlen(tail) + 1, len = strlen(msg);
    if (fixed + sizeof MARK >= n) {
        snprintf(buf, n, "HTTP %d", status);
        return;
    }
    if (len + fixed <= n) {
        snprintf(buf, n, "%s%s%s", prefix, msg, tail);
        return;
    }
    size_t keep = n - fixed - (sizeof MARK - 1);
    while (keep && ((unsigned char)msg[keep] & 0xC0) == 0x80)
        keep--;
    snprintf(buf, n, "%s%.*s%s%s", prefix, (int)keep, msg, MARK, tail);
}

const char *api_detail(const json_t *resp, int status, char *buf, size_t n)
{
    const json_t *d = json_object_get(resp, "detail");
    if (json_is_string(d))
        put_detail(buf, n, "", json_string_value(d), status);
    else if (json_is_array(d) && json_array_size(d)) {
        const json_t *e = json_array_get(d, 0);
        const char *msg = json_string_value(json_object_get(e, "msg"));
        put_detail(buf, n, "invalid request: ", msg ? msg : "?", status);
    } else
        snprintf(buf, n, "HTTP %d", status);
    return buf;
}

/* A kdf field for the refusal message: its value, "-" when absent. */
static void kdf_field(const json_t *kdf, const char *name, char *out, size_t n)
{
    const json_t *v = json_object_get(kdf, name);
    if (!v)
        snprintf(out, n, "-");
    else if (json_is_integer(v))
        snprintf(out, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_string(v))
        snprintf(out, n, "%.40s", json_string_value(v));
    else
        snprintf(out, n, "?");
}

static bool kdf_allowed(const json_t *kdf)
{
    /* automatic storage: KW_PARAMS_DEFAULT is a compound literal */
    const kw_params allowed[] = {KW_PARAMS_DEFAULT};
    const json_t *alg = json_object_get(kdf, "algorithm"), *ver = json_object_get(kdf, "version");
    const json_t *t = json_object_get(kdf, "time_cost"), *m = json_object_get(kdf, "memory_cost");
    const json_t *p = json_object_get(kdf, "parallelism");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), "argon2id") != 0 ||
        (ver && (!json_is_integer(ver) || json_integer_value(ver) != KW_ARGON2_VERSION)) ||
        !json_is_integer(t) || !json_is_integer(m) || !json_is_integer(p))
        return false;
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (json_integer_value(t) == allowed[i].t_cost && json_integer_value(m) == allowed[i].m_cost_kib &&
            json_integer_value(p) == allowed[i].parallelism)
            return true;
    return false;
}

int userkeys_blob_from_json(const json_t *keys, kw_blob *out, char *err, size_t errlen)
{
    const json_t *kdf = json_object_get(keys, "kdf"); /* absent: the original's defaults */
    if (kdf && (!json_is_object(kdf) || !kdf_allowed(kdf))) {
        char alg[48], ver[48], t[48], m[48], p[48];
        kdf_field(kdf, "algorithm", alg, sizeof alg);
        kdf_field(kdf, "version", ver, sizeof ver);
        kdf_field(kdf, "time_cost", t, sizeof t);
        kdf_field(kdf, "memory_cost", m, sizeof m);
        kdf_field(kdf, "parallelism", p, sizeof p);
        snprintf(err, errlen,
                 "refusing the server's key-derivation parameters (algorithm=%s version=%s time_cost=%s "
                 "memory_cost=%s KiB parallelism=%s): this client accepts only argon2id version=19 "
                 "time_cost=4 memory_cost=131072 KiB parallelism=2",
                 alg, ver, t, m, p);
        return -1;
    }
    if (kw_blob_from_json(keys, out) != KW_OK) {
        snprintf(err, errlen, "the server's key blob is malformed");
        return -1;
    }
    return 0;
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

int cli_read_secret(const char *prompt, const char *env, const char *file, char *out, size_t n,
                    char *err, size_t errlen)
{
    const char *v = env ? getenv(env) : NULL;
    if (v && *v) {
        if (strlen(v) >= n) {
            snprintf(err, errlen, "%s is too long", env);
            return -1;
        }
        snprintf(out, n, "%s", v);
        return 0;
    }
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f || !fgets(out, (int)n, f)) {
            if (f)
                fclose(f);
            snprintf(err, errlen, "cannot read %s", file);
            return -1;
        }
        fclose(f);
        chomp(out);
        return 0;
    }
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "no terminal to ask for the %s: set %s or use --passcode-file", prompt,
                 env ? env : "it");
        return -1;
    }
    struct termios old, quiet;
    bool tty = tcgetattr(fd, &old) == 0;
    if (tty) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    dprintf(fd, "%s: ", prompt);
    size_t len = 0;
    char ch;
    while (len + 1 < n && read(fd, &ch, 1) == 1 && ch != '\n')
        out[len++] = ch;
    out[len] = '\0';
    if (tty)
        tcsetattr(fd, TCSAFLUSH, &old);
    dprintf(fd, "\n");
    close(fd);
    return 0;
}

const char *userkeys_cache_path(char *out, size_t n)
{
    return cli_config_sibling("private_key", out, n);
}

#define CACHE_REMEDY "remove it with `veil keys lock`, then `veil keys unlock` again"

/* The cache holds the private key: a link could point it at a file another user
 * reads, and a loose mode means someone else may already have it. */
static int cache_check(int fd, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot read the key cache %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode))
        snprintf(err, errlen, "refusing the key cache %s: not a regular file (" CACHE_REMEDY ")", path);
    else if (st.st_uid != geteuid())
        snprintf(err, errlen, "refusing the key cache %s: owned by uid %u, not by you (" CACHE_REMEDY ")", path,
                 (unsigned)st.st_uid);
    else if (st.st_mode & 077)
        snprintf(err, errlen, "refusing the key cache %s: mode %04o lets others read it; it must be 0600 (" CACHE_REMEDY
                 ")", path, (unsigned)(st.st_mode & 07777));
    else
        return 0;
    return -1;
}

int userkeys_cache_read(uint8_t priv[32], char *err, size_t errlen)
{
    char path[640], hex[80] = "";
    userkeys_cache_path(path, sizeof path);
    /* O_NONBLOCK: a FIFO planted here must not hang the client */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0) {
        if (errno == ELOOP)
            snprintf(err, errlen, "refusing the key cache %s: it is a symbolic link (" CACHE_REMEDY ")", path);
        else
            snprintf(err, errlen, "cannot read the key cache %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = cache_check(fd, path, err, errlen);
    if (rc == 0) {
        ssize_t n = read(fd, hex, sizeof hex - 1);
        hex[n > 0 ? n : 0] = '\0';
        chomp(hex);
        if (hex_decode_exact(hex, strlen(hex), priv, 32) < 0) {
            snprintf(err, errlen, "the key cache %s is malformed (" CACHE_REMEDY ")", path);
            rc = -1;
        }
    }
    close(fd);
    OPENSSL_cleanse(hex, sizeof hex);
    return rc;
}

int userkeys_cache_write(const uint8_t priv[32], char *err, size_t errlen)
{
    char path[640], hex[66];
    struct stat st;
    userkeys_cache_path(path, sizeof path);
    if (lstat(path, &st) == 0) {
        if (S_ISLNK(st.st_mode) || !S_ISREG(st.st_mode)) {
            snprintf(err, errlen, "refusing to write the key cache %s: it is %s (" CACHE_REMEDY ")", path,
                     S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file");
            return -1;
        }
        unlink(path); /* a new file, created exclusively below: never reuse what is there */
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write the key cache %s: %s%s", path, strerror(errno),
                 errno == ENOENT ? " (run veil login first)" : "");
        return -1;
    }
    hex_encode(priv, 32, hex);
    hex[64] = '\n';
    int rc = write(fd, hex, 65) == 65 ? 0 : -1;
    if (close(fd) < 0 || rc < 0) {
        snprintf(err, errlen, "cannot write the key cache %s: %s", path, strerror(errno));
        unlink(path);
        rc = -1;
    }
    OPENSSL_cleanse(hex, sizeof hex);
    return rc;
}

static int get_keys(vclient *c, const char *path, json_t **keys, char *err, size_t errlen)
{
    int status;
    char buf[CLI_ERR_MAX];
    if (vclient_call(c, "GET", path, NULL, &status, keys, err, errlen) < 0)
        return -1;
    if (status != 200) {
        snprintf(err, errlen, "%s", status == 404 ? "no encryption keys yet: run `veil keys init`"
                                                  : api_detail(*keys, status, buf, sizeof buf));
        json_decref(*keys);
        *keys = NULL;
        return -1;
    }
    return 0;
}

/* The cache sits next to the config, whichever account that names: a key cached
 * for another account must not be used for this one. */
static int cache_matches_account(vclient *c, const uint8_t priv[32], char *err, size_t errlen)
{
    int status;
    json_t *r = NULL;
    char buf[CLI_ERR_MAX], path[640];
    uint8_t pub[32], want[32];
    if (vclient_call(c, "GET", "/api/v1/users/me/encryption-status", NULL, &status, &r, err, errlen) < 0)
        return -1;
    const char *pk = json_string_value(json_object_get(r, "public_key"));
    int rc = -1;
    if (status != 200)
        snprintf(err, errlen, "%s", api_detail(r, status, buf, sizeof buf));
    else if (!pk || hex_decode_exact(pk, strlen(pk), want, 32) < 0 || x25519_public(priv, pub) < 0 ||
             memcmp(pub, want, 32) != 0)
        snprintf(err, errlen, "the key cached in %s is not this account's: run `veil keys lock`, then `veil keys "
                 "unlock`", userkeys_cache_path(path, sizeof path));
    else
        rc = 0;
    json_decref(r);
    return rc;
}

int userkeys_private(vclient *c, const char *passcode_file, uint8_t priv[32], char *err, size_t errlen)
{
    int rc = userkeys_cache_read(priv, err, errlen);
    if (rc == 0 && cache_matches_account(c, priv, err, errlen) < 0) {
        OPENSSL_cleanse(priv, 32);
        return -1;
    }
    return rc <= 0 ? rc : userkeys_unwrap(c, passcode_file, priv, err, errlen);
}

int userkeys_unwrap_blob(const json_t *keys, const char *passphrase, uint8_t priv[32], char *err, size_t errlen)
{
    kw_blob blob;
    if (userkeys_blob_from_json(keys, &blob, err, errlen) < 0)
        return -1;
    kw_err ke = kw_unwrap(&blob, passphrase, priv);
    if (ke != KW_OK) {
        snprintf(err, errlen, "%s", kw_strerror(ke));
        return -1;
    }
    uint8_t pub[32], want[32];
    const char *pk = json_string_value(json_object_get(keys, "public_key"));
    if (!pk || hex_decode_exact(pk, strlen(pk), want, 32) < 0 || x25519_public(priv, pub) < 0 ||
        memcmp(pub, want, 32) != 0) {
        snprintf(err, errlen, "the unwrapped key does not match the account's public key");
        OPENSSL_cleanse(priv, 32);
        return -1;
    }
    return 0;
}

int userkeys_unwrap(vclient *c, const char *passcode_file, uint8_t priv[32], char *err, size_t errlen)
{
    json_t *keys = NULL;
    if (get_keys(c, "/api/v1/users/me/keys", &keys, err, errlen) < 0)
        return -1;
    char passcode[1024];
    int rc = -1;
    kw_blob check;
    /* the blob's shape before the prompt: a broken account asks for no passcode */
    if (userkeys_blob_from_json(keys, &check, err, errlen) == 0 &&
        cli_read_secret("Passcode", "VEIL_PASSCODE", passcode_file, passcode, sizeof passcode, err, errlen) == 0)
        rc = userkeys_unwrap_blob(keys, passcode, priv, err, errlen);
    OPENSSL_cleanse(passcode, sizeof passcode);
    json_decref(keys);
    return rc;
}

int userkeys_current_org(vclient *c, char *org, size_t n, char *err, size_t errlen)
{
    int status;
    json_t *r = NULL;
    char buf[CLI_ERR_MAX];
    if (vclient_call(c, "GET", "/api/v1/organizations/current", NULL, &status, &r, err, errlen) < 0)
        return -1;
    if (status != 200) {
        snprintf(err, errlen, "%s", api_detail(r, status, buf, sizeof buf));
        json_decref(r);
        return -1;
    }
    const char *o = json_string_value(json_object_get(r, "org_id"));
    snprintf(org, n, "%s", o ? o : "");
    json_decref(r);
    return 0;
}

int userkeys_storage(vclient *c, const char *org_id, const uint8_t user_priv[32], uint8_t out[32],
                     char *err, size_t errlen)
{
    if (!org_id || !*org_id) {
        memcpy(out, user_priv, 32);
        return 0;
    }
    char path[512], buf[CLI_ERR_MAX];
    snprintf(path, sizeof path, "/api/v1/organizations/%s/membership", org_id);
    int status;
    json_t *r = NULL;
    if (vclient_call(c, "GET", path, NULL, &status, &r, err, errlen) < 0)
        return -1;
    int rc = -1;
    const json_t *k = json_object_get(r, "encrypted_org_key");
    if (status != 200) {
        snprintf(err, errlen, "%s", api_detail(r, status, buf, sizeof buf));
    } else if (!json_is_object(k)) {
        snprintf(err, errlen, "the organization key has not been distributed to you yet");
    } else {
        ep e;
        secret pt;
        ep_err ee = ep_from_json(k, &e, NULL);
        if (ee == EP_OK)
            ee = ep_open(user_priv, &e, EP_CTX_ORG_KEY_DISTRIBUTION, &pt);
        ep_clear(&e);
        if (ee != EP_OK) {
            snprintf(err, errlen, "cannot open your copy of the org key: %s", ep_strerror(ee));
        } else if (pt.len != 32) {
            snprintf(err, errlen, "your copy of the org key is not 32 bytes");
            secret_free(&pt);
        } else {
            memcpy(out, pt.data, 32);
            secret_free(&pt);
            rc = 0;
        }
    }
    json_decref(r);
    return rc;
}
