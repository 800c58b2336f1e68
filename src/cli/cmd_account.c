/* veil login | keys: the account side of the client. */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "attest/measurements.h"
#include "attest/verify.h"
#include "cli/term.h"
#include "cli/trust.h"
#include "cli/userkeys.h"
#include "common/hex.h"
#include "crypto/keywrap.h"

#define FAIL(verb, ...) cli_fail(verb, 1, __VA_ARGS__)

static void help_login(void)
{
    printf("Usage: veil login [--server URL] [--token TOKEN|-] [--ca-file FILE]\n"
           "                  [--measurements FILE] [--attestation-root PEM|aws]\n\n"
           "Stores the server URL and a bearer token (a Clerk session token, or one from\n"
           "`veil dev-token` for the local stack) in the config file, mode 0600:\n"
           "$VEIL_CONFIG, else $XDG_CONFIG_HOME/veil/config.json, else\n"
           "~/.config/veil/config.json. --token - reads the token from stdin (keeps it\n"
           "out of the process list). The token is checked against the server first.\n\n"
           "URL is https:// for any host; plain http:// only to this machine (localhost,\n"
           "127.0.0.0/8, [::1]): the token would otherwise cross the network in clear.\n\n"
           "What chat and ask verify of the enclave before they seal anything to its key:\n"
           "  --measurements FILE     the JSON the operator published, as `nitro-cli\n"
           "                          build-enclave` prints it (PCR0, PCR1, PCR2, ...);\n"
           "                          without it chat and ask refuse (or --no-attestation)\n"
           "  --attestation-root PEM  trust this root instead of the pinned AWS Nitro root:\n"
           "                          ONLY for a simulated NSM (make run, tests), said on\n"
           "                          stderr on every use; `aws` goes back to the pinned root\n"
           "The values are stored, not the paths. Logging in again to the same server keeps\n"
           "the token, CA file, measurements and root you do not give again; another server\n"
           "starts afresh.\n");
}

/* The attestation options into cfg: the values, read now. 0, or the exit status. */
static int login_attestation(cli_config *cfg, const char *measurements, const char *root)
{
    char why[512];
    if (measurements && attest_measurements_load(measurements, cfg->pcrs, &cfg->n_pcrs, why, sizeof why) < 0)
        return FAIL("login", "--measurements %s: %s", measurements, why);
    if (root && strcmp(root, "aws") == 0) {
        cfg->root_der_len = 0;
    } else if (root) {
        uint8_t *der = NULL;
        size_t len = 0;
        if (attest_root_load(root, &der, &len, why, sizeof why) != ATTEST_OK)
            return FAIL("login", "--attestation-root %s: %s", root, why);
        if (len > sizeof cfg->root_der) {
            free(der);
            return FAIL("login", "--attestation-root %s: the certificate is over %d bytes", root, CLI_ROOT_MAX);
        }
        memcpy(cfg->root_der, der, len);
        cfg->root_der_len = len;
        free(der);
    }
    return 0;
}

/* The new config: the options given, and for the same server what was stored before. */
static int login_config(cli_config *cfg, const char *server, const char *token, const char *ca,
                        const char *measurements, const char *root)
{
    char err[CLI_ERR_MAX];
    bool same = false;
    if (cli_config_load_file(cfg, err, sizeof err) < 0) { /* a damaged policy is not carried over */
        cfg->n_pcrs = 0;
        cfg->root_der_len = 0;
    }
    if (!server && !cfg->server[0])
        return cli_fail("login", EXIT_USAGE, "missing --server (see veil login --help)");
    same = !server || strcmp(server, cfg->server) == 0;
    if (!same) {
        char keep[sizeof cfg->server];
        snprintf(keep, sizeof keep, "%s", server);
        OPENSSL_cleanse(cfg, sizeof *cfg);
        snprintf(cfg->server, sizeof cfg->server, "%s", keep);
    }
    if (ca)
        snprintf(cfg->ca_file, sizeof cfg->ca_file, "%s", ca);
    if (token && strcmp(token, "-") == 0) {
        if (!fgets(cfg->token, sizeof cfg->token, stdin))
            return FAIL("login", "no token on stdin");
        cfg->token[strcspn(cfg->token, "\r\n")] = '\0';
    } else if (token) {
        snprintf(cfg->token, sizeof cfg->token, "%s", token);
    }
    if (!cfg->token[0])
        return cli_fail("login", EXIT_USAGE, "missing --token");
    return login_attestation(cfg, measurements, root);
}

int cmd_login(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, 0, 's'}, {"token", required_argument, 0, 't'},
        {"ca-file", required_argument, 0, 'c'}, {"measurements", required_argument, 0, 'm'},
        {"attestation-root", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *server = NULL, *token = NULL, *ca = NULL, *measurements = NULL, *root = NULL;
    int o;
    while ((o = cli_getopt("login", argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 's': server = optarg; break;
        case 't': token = optarg; break;
        case 'c': ca = optarg; break;
        case 'm': measurements = optarg; break;
        case 'r': root = optarg; break;
        case 'h': help_login(); return 0;
        default: return EXIT_USAGE;
        }
    }
    if (optind != argc)
        return cli_fail("login", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    cli_config cfg;
    int rc = login_config(&cfg, server, token, ca, measurements, root);
    if (rc) {
        OPENSSL_cleanse(&cfg, sizeof cfg);
        return rc;
    }
    char err[CLI_ERR_MAX];
    vclient c;
    if (vclient_init(&c, cfg.server, cfg.token, cfg.ca_file[0] ? cfg.ca_file : NULL, err, sizeof err) < 0) {
        OPENSSL_cleanse(&cfg, sizeof cfg);
        return FAIL("login", "%s", err);
    }
    int status;
    json_t *r = NULL;
    rc = vclient_call(&c, "GET", "/protected", NULL, &status, &r, err, sizeof err);
    char buf[CLI_ERR_MAX];
    if (rc < 0)
        rc = FAIL("login", "%s", err);
    else if (status != 200)
        rc = FAIL("login", "the server refused the token: %s", api_detail(r, status, buf, sizeof buf));
    else {
        /* make sure the account exists server-side, as the web client does */
        json_t *s = NULL;
        int st2 = 0;
        if (vclient_call(&c, "POST", "/api/v1/users/sync", NULL, &st2, &s, err, sizeof err) == 0 && st2 == 200) {
            rc = cli_config_save(&cfg, err, sizeof err) < 0 ? FAIL("login", "%s", err) : 0;
            if (rc == 0) {
                char path[600], name[512];
                const char *uid = json_string_value(json_object_get(r, "user_id"));
                term_fprintf(stdout, "logged in to %s as %s (config %s)\n", cfg.server, uid ? uid : "?",
                             cli_config_path(path, sizeof path));
                cli_trust_describe(stdout, &cfg);
                if (cfg.root_der_len) {
                    cli_trust_root_name(cfg.root_der, cfg.root_der_len, name, sizeof name);
                    term_fprintf(stderr, "veil login: warning: chat and ask will trust %s instead of the pinned AWS "
                                         "Nitro root: only for a simulated NSM (make run, tests), never for a real "
                                         "enclave\n", name);
                }
            }
        } else {
            rc = FAIL("login", "user sync failed: %s", st2 ? api_detail(s, st2, buf, sizeof buf) : err);
        }
        json_decref(s);
    }
    json_decref(r);
    vclient_free(&c);
    OPENSSL_cleanse(&cfg, sizeof cfg);
    return rc;
}

/* ---- keys ---- */

static void put_blob(json_t *body, const kw_blob *b, const char *prefix)
{
    /* the original's field names: encrypted_private_key, iv, tag, salt and the
     * recovery_* twins (spec §4.4); the Argon2id parameters are the defaults both
     * clients use, so they are not sent */
    char ct[65], iv[33], tag[33], salt[65], k[64];
    hex_encode(b->ct, 32, ct);
    hex_encode(b->iv, 16, iv);
    hex_encode(b->tag, 16, tag);
    hex_encode(b->salt, 32, salt);
    snprintf(k, sizeof k, "%sencrypted_private_key", prefix);
    json_object_set_new(body, k, json_string(ct));
    snprintf(k, sizeof k, "%siv", prefix);
    json_object_set_new(body, k, json_string(iv));
    snprintf(k, sizeof k, "%stag", prefix);
    json_object_set_new(body, k, json_string(tag));
    snprintf(k, sizeof k, "%ssalt", prefix);
    json_object_set_new(body, k, json_string(salt));
}

static int new_passcode(const char *file, char *out, size_t n, char *err, size_t errlen)
{
    char again[1024];
    if (cli_read_secret("New passcode (6+ characters)", "VEIL_PASSCODE", file, out, n, err, errlen) < 0)
        return -1;
    if (strlen(out) < KW_MIN_PASSCODE) {
        snprintf(err, errlen, "the passcode must have at least %d characters", KW_MIN_PASSCODE);
        return -1;
    }
    if (!getenv("VEIL_PASSCODE") && !file) {
        if (cli_read_secret("Repeat the passcode", NULL, NULL, again, sizeof again, err, errlen) < 0)
            return -1;
        int same = strcmp(again, out) == 0;
        OPENSSL_cleanse(again, sizeof again);
        if (!same) {
            snprintf(err, errlen, "the passcodes differ");
            return -1;
        }
    }
    return 0;
}

/* The upload body: priv wrapped under passcode and under a fresh recovery code,
 * which comes back formatted in recovery (the caller shows it and wipes it). */
static json_t *wrap_keys(const uint8_t priv[32], const char *passcode, char recovery[KW_RECOVERY_FORMATTED + 1],
                         char *err, size_t errlen)
{
    uint8_t pub[32];
    char digits[KW_RECOVERY_DIGITS + 1], pub_hex[65];
    kw_blob main_blob, rec_blob;
    json_t *body = NULL;
    if (x25519_public(priv, pub) < 0 || kw_recovery_generate(digits) < 0) {
        snprintf(err, errlen, "key derivation failed");
        return NULL;
    }
    kw_err ke = kw_wrap(priv, passcode, &KW_PARAMS_DEFAULT, &main_blob);
    if (ke == KW_OK)
        ke = kw_wrap(priv, digits, &KW_PARAMS_DEFAULT, &rec_blob);
    if (ke != KW_OK) {
        snprintf(err, errlen, "%s", kw_strerror(ke));
        goto out;
    }
    hex_encode(pub, 32, pub_hex);
    body = json_pack("{s:s}", "public_key", pub_hex);
    put_blob(body, &main_blob, "");
    put_blob(body, &rec_blob, "recovery_");
    kw_recovery_format(digits, recovery);
out:
    OPENSSL_cleanse(digits, sizeof digits);
    return body;
}

static int keys_init(vclient *c, const char *pfile)
{
    char err[CLI_ERR_MAX], passcode[1024], recovery[KW_RECOVERY_FORMATTED + 1], buf[CLI_ERR_MAX];
    uint8_t priv[32], pub[32];
    int st;
    json_t *r = NULL, *body = NULL;
    if (vclient_call(c, "POST", "/api/v1/users/sync", NULL, &st, &r, err, sizeof err) < 0)
        return FAIL("keys", "%s", err);
    json_decref(r);
    r = NULL;
    if (new_passcode(pfile, passcode, sizeof passcode, err, sizeof err) < 0)
        return FAIL("keys", "%s", err);
    int rc = 1;
    if (x25519_keygen(priv, pub) < 0)
        rc = FAIL("keys", "key generation failed");
    else if (!(body = wrap_keys(priv, passcode, recovery, err, sizeof err)))
        rc = FAIL("keys", "%s", err);
    else if (vclient_call(c, "POST", "/api/v1/users/me/keys", body, &st, &r, err, sizeof err) < 0)
        rc = FAIL("keys", "%s", err);
    else if (st == 409)
        rc = FAIL("keys", "this account already has keys (see veil keys recover)");
    else if (st != 201)
        rc = FAIL("keys", "%s", api_detail(r, st, buf, sizeof buf));
    else {
        printf("Encryption keys created.\n\nRecovery code (shown once; write it down):\n\n    %s\n\n"
               "It unlocks your key if you forget the passcode (veil keys recover).\n", recovery);
        rc = 0;
    }
    json_decref(r);
    json_decref(body);
    OPENSSL_cleanse(priv, sizeof priv);
    OPENSSL_cleanse(passcode, sizeof passcode);
    OPENSSL_cleanse(recovery, sizeof recovery);
    return rc;
}

static int keys_unlock(vclient *c, const char *pfile, bool cache)
{
    char err[CLI_ERR_MAX], path[640];
    uint8_t priv[32];
    userkeys_cache_path(path, sizeof path);
    if (userkeys_unwrap(c, pfile, priv, err, sizeof err) < 0) /* always checks the passcode */
        return FAIL("keys", "%s", err);
    int rc = 0;
    if (cache) {
        rc = userkeys_cache_write(priv, err, sizeof err) < 0 ? FAIL("keys", "%s", err) : 0;
        if (rc == 0)
            printf("Unlocked: the private key is cached in %s (mode 0600) until `veil keys lock`.\n", path);
    } else {
        printf("Passcode correct: the key unwraps and matches the account.\n");
    }
    OPENSSL_cleanse(priv, sizeof priv);
    return rc;
}

/* The private key from the recovery copy: fetched, allowlist-checked, unwrapped
 * with the code, and checked against the account's public key. */
static int recover_private(vclient *c, const char *rfile, uint8_t priv[32], char *err, size_t errlen)
{
    char code[128], digits[KW_RECOVERY_DIGITS + 1], buf[CLI_ERR_MAX];
    json_t *keys = NULL;
    kw_blob blob;
    int status, rc = -1;
    if (vclient_call(c, "GET", "/api/v1/users/me/keys/recovery", NULL, &status, &keys, err, errlen) < 0)
        return -1;
    if (status != 200) {
        snprintf(err, errlen, "%s", api_detail(keys, status, buf, sizeof buf));
        goto out;
    }
    /* the recovery route returns the recovery material in the primary fields */
    if (userkeys_blob_from_json(keys, &blob, err, errlen) < 0 ||
        cli_read_secret("Recovery code", "VEIL_RECOVERY_CODE", rfile, code, sizeof code, err, errlen) < 0)
        goto out;
    if (kw_recovery_normalize(code, digits) != KW_OK) {
        snprintf(err, errlen, "a recovery code is 20 digits (dashes and spaces are ignored)");
        goto out;
    }
    rc = userkeys_unwrap_blob(keys, digits, priv, err, errlen);
out:
    OPENSSL_cleanse(code, sizeof code);
    OPENSSL_cleanse(digits, sizeof digits);
    json_decref(keys);
    return rc;
}

/* Recovery never has a moment without keys on the server: the key is cached here
 * first, the new recovery code is shown before anything changes, and both wrapped
 * copies are replaced with one PUT (never DELETE then POST: if the POST failed,
 * the key pair and every stored conversation were gone). */
static int keys_recover(vclient *c, const char *pfile, const char *rfile)
{
    char err[CLI_ERR_MAX], passcode[1024], recovery[KW_RECOVERY_FORMATTED + 1], path[640], buf[CLI_ERR_MAX];
    uint8_t priv[32];
    json_t *body = NULL, *r = NULL;
    int status = 0, rc = 1;
    if (recover_private(c, rfile, priv, err, sizeof err) < 0)
        return FAIL("keys", "%s", err);
    if (userkeys_cache_write(priv, err, sizeof err) < 0) {
        rc = FAIL("keys", "%s; nothing changed on the server", err);
        goto out;
    }
    if (new_passcode(pfile, passcode, sizeof passcode, err, sizeof err) < 0 ||
        !(body = wrap_keys(priv, passcode, recovery, err, sizeof err))) {
        rc = FAIL("keys", "%s; nothing changed on the server", err);
        goto out;
    }
    printf("The recovery code opened your key; it is cached in %s (mode 0600) until `veil keys lock`.\n\n"
           "New recovery code (write it down):\n\n    %s\n\n"
           "It takes effect once the upload succeeds; until then your old passcode and old recovery code "
           "still work.\n",
           userkeys_cache_path(path, sizeof path), recovery);
    fflush(stdout);
    int cr = vclient_call(c, "PUT", "/api/v1/users/me/keys", body, &status, &r, err, sizeof err);
    if (cr == 0 && status == 200) {
        printf("Uploaded: the same key pair, now under the new passcode and the new recovery code; the old "
               "ones no longer work.\n");
        rc = 0;
        goto out;
    }
    if (cr == 0)
        snprintf(err, sizeof err, "%s", status == 405 ? "this server cannot replace keys (it predates PUT "
                                                        "/users/me/keys)"
                                                      : api_detail(r, status, buf, sizeof buf));
    rc = FAIL("keys", "the upload failed: %s. Nothing changed on the server: your old passcode and old recovery "
                      "code still work, and the new code above is not in effect. Run `veil keys recover` again "
                      "to retry.",
              err);
out:
    json_decref(r);
    json_decref(body);
    OPENSSL_cleanse(priv, sizeof priv);
    OPENSSL_cleanse(passcode, sizeof passcode);
    OPENSSL_cleanse(recovery, sizeof recovery);
    return rc;
}

/* "yes" when this machine's key cache holds the account's key, else "no" and,
 * when something is there, why it does not count. */
static void unlocked_here(const char *pk, char *out, size_t n)
{
    char err[CLI_ERR_MAX];
    uint8_t priv[32], pub[32], want[32];
    int rc = userkeys_cache_read(priv, err, sizeof err);
    if (rc < 0)
        snprintf(out, n, "no (%s)", err);
    else if (rc > 0)
        snprintf(out, n, "no");
    else if (!pk || hex_decode_exact(pk, strlen(pk), want, 32) < 0 || x25519_public(priv, pub) < 0 ||
             memcmp(pub, want, 32) != 0)
        snprintf(out, n, "no (the cached key is not this account's: run `veil keys lock`)");
    else
        snprintf(out, n, "yes");
    OPENSSL_cleanse(priv, sizeof priv);
}

static int keys_status(vclient *c)
{
    char err[CLI_ERR_MAX], buf[CLI_ERR_MAX];
    int status;
    json_t *r = NULL;
    if (vclient_call(c, "GET", "/api/v1/users/me/encryption-status", NULL, &status, &r, err, sizeof err) < 0)
        return FAIL("keys", "%s", err);
    if (status != 200) {
        int rc = FAIL("keys", "%s", api_detail(r, status, buf, sizeof buf));
        json_decref(r);
        return rc;
    }
    const char *pk = json_string_value(json_object_get(r, "public_key"));
    char here[CLI_ERR_MAX + 16];
    unlocked_here(pk, here, sizeof here);
    term_fprintf(stdout, "has_encryption_keys: %s\npublic_key: %s\nunlocked here: %s\n",
                 json_is_true(json_object_get(r, "has_encryption_keys")) ? "yes" : "no", pk ? pk : "-", here);
    json_decref(r);
    /* what chat and ask will verify of the enclave before sealing to it */
    cli_config cfg;
    if (cli_config_load(&cfg, err, sizeof err) == 0)
        cli_trust_describe(stdout, &cfg);
    OPENSSL_cleanse(&cfg, sizeof cfg);
    return 0;
}

int cmd_keys(int argc, char **argv)
{
    static const struct option opts[] = {
        {"passcode-file", required_argument, 0, 'p'}, {"recovery-file", required_argument, 0, 'r'},
        {"no-cache", no_argument, 0, 'n'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *pfile = NULL, *rfile = NULL;
    bool cache = true;
    int o;
    while ((o = cli_getopt("keys", argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 'p': pfile = optarg; break;
        case 'r': rfile = optarg; break;
        case 'n': cache = false; break;
        case 'h':
            printf("Usage: veil keys init|unlock|lock|recover|status [OPTIONS]\n\n"
                   "  init      create your X25519 key pair, wrap the private key under a passcode\n"
                   "            (Argon2id t=4 m=128MiB p=2 + AES-256-GCM, the web client's format)\n"
                   "            and under a 20-digit recovery code, upload both, and print the\n"
                   "            recovery code once\n"
                   "  unlock    check the passcode and cache the private key in the config\n"
                   "            directory (mode 0600) for chat and history; --no-cache only checks\n"
                   "  lock      remove the cached private key\n"
                   "  recover   unwrap with the recovery code, cache the key here, then set a new\n"
                   "            passcode and a new recovery code (same key pair: old messages stay\n"
                   "            readable). The new code is shown before the upload; both copies are\n"
                   "            replaced at once (PUT), so a failed upload changes nothing\n"
                   "  status    show whether the account has keys and whether they are unlocked\n"
                   "            here (the key cached by unlock), and what chat verifies of the\n"
                   "            enclave (the attestation root and the stored measurements)\n\n"
                   "  --passcode-file F    read the passcode from F (else $VEIL_PASSCODE, else a prompt)\n"
                   "  --recovery-file F    read the recovery code from F (else $VEIL_RECOVERY_CODE)\n\n"
                   "A wrapped key from the server is opened only with argon2id v19, t=4,\n"
                   "m=131072 KiB, p=2 (what veil writes); other parameters are refused. The cache\n"
                   "is used only if it is a regular file of yours, mode 0600, not a link, and\n"
                   "holds this account's key.\n");
            return 0;
        default: return EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return cli_fail("keys", EXIT_USAGE, "missing action (init, unlock, lock, recover, status)");
    const char *action = argv[optind];
    if (strcmp(action, "lock") == 0) {
        char path[640];
        userkeys_cache_path(path, sizeof path);
        if (unlink(path) == 0)
            printf("Locked: removed %s.\n", path);
        else
            printf("Nothing to lock.\n");
        return 0;
    }
    vclient c;
    char err[CLI_ERR_MAX];
    if (vclient_from_config(&c, err, sizeof err) < 0)
        return FAIL("keys", "%s", err);
    int rc;
    if (strcmp(action, "init") == 0)
        rc = keys_init(&c, pfile);
    else if (strcmp(action, "unlock") == 0)
        rc = keys_unlock(&c, pfile, cache);
    else if (strcmp(action, "recover") == 0)
        rc = keys_recover(&c, pfile, rfile);
    else if (strcmp(action, "status") == 0)
        rc = keys_status(&c);
    else
        rc = cli_fail("keys", EXIT_USAGE, "unknown action '%s'", action);
    vclient_free(&c);
    return rc;
}
