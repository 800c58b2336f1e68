/* veil dev-token: mint a Clerk-v2-shaped RS256 token for the local stack and tests.
 *
 * The signing key is a local RSA key (created 0600 on first use); --jwks-out writes
 * the matching public JWKS that veild reads through CLERK_JWKS_FILE. The kid is the
 * key's RFC 7638 thumbprint, so a new key is a new kid. Never for production.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cli/cli.h"
#include "common/config.h"
#include "auth/jwks.h"
#include "auth/jwt.h"

#define VERB "dev-token"
#define DEFAULT_KEY ".run/dev-jwt.key"
#define DEFAULT_ISSUER "https://veil.dev.local"
#define DEFAULT_TTL 3600
#define MAX_TTL (30L * 24 * 3600)
#define DEV_KEY_BITS 2048

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: veil dev-token --sub USER [--org ORG [--role admin|member] [--slug SLUG]]\n"
            "                      [--issuer URL] [--azp ORIGIN] [--ttl SECONDS]\n"
            "                      [--key FILE] [--jwks-out FILE]\n\n"
            "Mints an RS256 session token shaped like Clerk's (v2 claims) for a local veild,\n"
            "and prints it on stdout. For development and tests only.\n\n"
            "  -s, --sub USER        the user id (sub claim), required\n"
            "  -o, --org ORG         active organization id (o.id)\n"
            "  -r, --role ROLE       admin or member (o.rol; default member), needs --org\n"
            "  -g, --slug SLUG       organization slug (o.slg), needs --org\n"
            "  -i, --issuer URL      iss claim (default " DEFAULT_ISSUER ", veild's local default)\n"
            "  -a, --azp ORIGIN      authorized party (azp claim), e.g. http://localhost:3000\n"
            "  -t, --ttl SECONDS     lifetime, 1..%ld (default %d)\n"
            "  -k, --key FILE        RSA private key, PEM (default " DEFAULT_KEY ");\n"
            "                        created as a %d-bit key with mode 0600 if missing\n"
            "  -j, --jwks-out FILE   also write the public JWKS of the key (for CLERK_JWKS_FILE)\n"
            "      --now EPOCH       pretend the time is EPOCH seconds (tests: expired tokens)\n",
            MAX_TTL, DEFAULT_TTL, DEV_KEY_BITS);
}

/* PEM callback: the dev key is never encrypted; never prompt on a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* mkdir -p of path's parent directory (0700 for what it creates). */
static int make_parent(const char *path)
{
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return -1;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(dir, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

static EVP_PKEY *read_key(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_fail(VERB, 1, "cannot read key %s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    ERR_clear_error();
    if (!k) {
        cli_fail(VERB, 1, "%s is not an unencrypted PEM private key", path);
        return NULL;
    }
    if (!EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_get_bits(k) < JWT_MIN_RSA_BITS) {
        cli_fail(VERB, 1, "%s is not an RSA key of at least %d bits", path, JWT_MIN_RSA_BITS);
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

/* Creates the key atomically: written to a private temp file (0600), then linked
 * into place, so a concurrent run never reads a half-written key. */
static EVP_PKEY *create_key(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        cli_fail(VERB, 1, "key path too long");
        return NULL;
    }
    if (make_parent(path) < 0) {
        cli_fail(VERB, 1, "cannot create the directory of %s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = EVP_RSA_gen(DEV_KEY_BITS);
    if (!k) {
        ERR_clear_error();
        cli_fail(VERB, 1, "RSA key generation failed");
        return NULL;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        cli_fail(VERB, 1, "cannot create %s: %s", tmp, strerror(errno));
        EVP_PKEY_free(k);
        return NULL;
    }
    bool ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    ERR_clear_error();
    if (!ok) {
        unlink(tmp);
        cli_fail(VERB, 1, "cannot write %s", tmp);
        EVP_PKEY_free(k);
        return NULL;
    }
    if (link(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        EVP_PKEY_free(k);
        if (e == EEXIST) /* another run created it first: use that one */
            return read_key(path);
        cli_fail(VERB, 1, "cannot create %s: %s", path, strerror(e));
        return NULL;
    }
    unlink(tmp);
    return k;
}

static EVP_PKEY *load_or_create_key(const char *path)
{
    if (access(path, F_OK) == 0)
        return read_key(path);
    if (errno != ENOENT) {
        cli_fail(VERB, 1, "cannot read key %s: %s", path, strerror(errno));
        return NULL;
    }
    return create_key(path);
}

/* Writes text to path atomically (temp file + rename): veild may be re-reading it. */
static int write_file_atomic(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return -1;
    if (make_parent(path) < 0)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1 || close(fd) < 0 || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static char *claims_json(const char *sub, const char *org, const char *role, const char *slug,
                         const char *issuer, const char *azp, long long now, long ttl)
{
    json_t *c = json_object();
    if (!c)
        return NULL;
    int bad = json_object_set_new(c, "sub", json_string(sub));
    bad |= json_object_set_new(c, "iss", json_string(issuer));
    bad |= json_object_set_new(c, "iat", json_integer(now));
    bad |= json_object_set_new(c, "nbf", json_integer(now));
    bad |= json_object_set_new(c, "exp", json_integer(now + ttl));
    bad |= json_object_set_new(c, "v", json_integer(2));
    if (azp)
        bad |= json_object_set_new(c, "azp", json_string(azp));
    if (org) {
        json_t *o = json_object();
        bad |= !o;
        if (o) {
            bad |= json_object_set_new(o, "id", json_string(org));
            bad |= json_object_set_new(o, "rol", json_string(role));
            if (slug)
                bad |= json_object_set_new(o, "slg", json_string(slug));
            bad |= json_object_set_new(c, "o", o);
        }
    }
    char *s = bad ? NULL : json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(c);
    return s;
}

static bool valid_utf8_arg(const char *s)
{
    json_t *j = json_string(s); /* NULL for invalid UTF-8 */
    json_decref(j);
    return j != NULL && strlen(s) < JWT_ID_MAX;
}

int cmd_devtoken(int argc, char **argv)
{
    enum { OPT_NOW = 256 };
    static const struct option opts[] = {
        {"sub", required_argument, 0, 's'},    {"org", required_argument, 0, 'o'},
        {"role", required_argument, 0, 'r'},   {"slug", required_argument, 0, 'g'},
        {"issuer", required_argument, 0, 'i'}, {"azp", required_argument, 0, 'a'},
        {"ttl", required_argument, 0, 't'},    {"key", required_argument, 0, 'k'},
        {"jwks-out", required_argument, 0, 'j'}, {"now", required_argument, 0, OPT_NOW},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *sub = NULL, *org = NULL, *role = NULL, *slug = NULL, *issuer = DEFAULT_ISSUER;
    const char *azp = NULL, *key_path = DEFAULT_KEY, *jwks_out = NULL;
    long ttl = DEFAULT_TTL, now_arg = -1;
    int c;
    optind = 1;
    while ((c = cli_getopt(VERB, argc, argv, "s:o:r:g:i:a:t:k:j:h", opts)) != -1) {
        switch (c) {
        case 's': sub = optarg; break;
        case 'o': org = optarg; break;
        case 'r': role = optarg; break;
        case 'g': slug = optarg; break;
        case 'i': issuer = optarg; break;
        case 'a': azp = optarg; break;
        case 'k': key_path = optarg; break;
        case 'j': jwks_out = optarg; break;
        case 't':
            if (parse_long(optarg, 1, MAX_TTL, &ttl) < 0)
                return cli_fail(VERB, EXIT_USAGE, "--ttl must be 1..%ld seconds", MAX_TTL);
            break;
        case OPT_NOW:
            if (parse_long(optarg, 0, 4102444800L, &now_arg) < 0)
                return cli_fail(VERB, EXIT_USAGE, "--now must be seconds since the epoch");
            break;
        case 'h': usage(stdout); return 0;
        default: return EXIT_USAGE;
        }
    }
    if (optind != argc)
        return cli_fail(VERB, EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!sub || !sub[0])
        return cli_fail(VERB, EXIT_USAGE, "missing --sub (see veil " VERB " --help)");
    if ((role || slug) && !org)
        return cli_fail(VERB, EXIT_USAGE, "--role and --slug need --org");
    if (org && !role)
        role = "member";
    if (role && strcmp(role, "admin") != 0 && strcmp(role, "member") != 0)
        return cli_fail(VERB, EXIT_USAGE, "--role must be admin or member");
    const char *args[] = {sub, org, slug, issuer, azp};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++)
        if (args[i] && (!args[i][0] || !valid_utf8_arg(args[i])))
            return cli_fail(VERB, EXIT_USAGE, "arguments must be non-empty UTF-8, under %d bytes",
                            JWT_ID_MAX);
    if (!key_path[0])
        return cli_fail(VERB, EXIT_USAGE, "--key is empty");

    int rc = 1;
    char *claims = NULL, *token = NULL, *jwks = NULL;
    EVP_PKEY *key = load_or_create_key(key_path);
    if (!key)
        return 1;
    char kid[JWKS_THUMBPRINT_LEN + 1];
    if (jwks_rsa_thumbprint(key, kid) < 0) {
        cli_fail(VERB, 1, "cannot compute the key id");
        goto out;
    }
    long long now = now_arg >= 0 ? now_arg : (long long)time(NULL);
    claims = claims_json(sub, org, role, slug, issuer, azp, now, ttl);
    char header[128];
    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
    if (!claims) {
        cli_fail(VERB, 1, "cannot build the claims");
        goto out;
    }
    jwt_err e = jwt_sign_rs256(key, header, claims, &token);
    if (e != JWT_OK) {
        cli_fail(VERB, 1, "signing failed: %s", jwt_strerror(e));
        goto out;
    }
    if (jwks_out) {
        jwks = jwks_rsa_public_json(key, kid);
        if (!jwks || write_file_atomic(jwks_out, jwks) < 0) {
            cli_fail(VERB, 1, "cannot write %s: %s", jwks_out, jwks ? strerror(errno) : "encoding");
            goto out;
        }
    }
    if (printf("%s\n", token) < 0 || fflush(stdout) != 0) {
        cli_fail(VERB, 1, "cannot write output");
        goto out;
    }
    rc = 0;
out:
    free(jwks);
    free(token);
    free(claims);
    EVP_PKEY_free(key);
    return rc;
}
