/* veil org: enough of the organization flows to chat in an org context — an
 * admin creates the org key pair and distributes the org private key to members,
 * each copy sealed to the member's personal public key (org-key-distribution). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/term.h"
#include "cli/userkeys.h"
#include "common/hex.h"
#include "crypto/ep.h"
#include "crypto/keywrap.h"

#define FAIL(...) cli_fail("org", 1, __VA_ARGS__)

static json_t *seal_key(const uint8_t pub[32], const uint8_t key[32])
{
    ep e;
    if (ep_seal(pub, key, 32, EP_CTX_ORG_KEY_DISTRIBUTION, &e) != EP_OK)
        return NULL;
    json_t *j = ep_to_json(&e);
    ep_clear(&e);
    return j;
}

static int my_public_key(vclient *c, uint8_t pub[32], char *err, size_t errlen)
{
    int status;
    json_t *r = NULL;
    if (vclient_call(c, "GET", "/api/v1/users/me/encryption-status", NULL, &status, &r, err, errlen) < 0)
        return -1;
    const char *pk = json_string_value(json_object_get(r, "public_key"));
    int rc = status == 200 && pk && hex_decode_exact(pk, strlen(pk), pub, 32) == 0 ? 0 : -1;
    if (rc < 0)
        snprintf(err, errlen, "you have no encryption keys yet: run `veil keys init` first");
    json_decref(r);
    return rc;
}

static int org_keys_init(vclient *c, const char *org, const char *pfile, const char *ofile)
{
    char err[CLI_ERR_MAX], pass[1024], buf[CLI_ERR_MAX], path[512];
    uint8_t opriv[32], opub[32], mypub[32], upriv[32];
    int rc = 1;
    /* the caller must be able to open their own copy later: check the passcode first */
    if (userkeys_private(c, pfile, upriv, err, sizeof err) < 0 || my_public_key(c, mypub, err, sizeof err) < 0)
        return FAIL("%s", err);
    OPENSSL_cleanse(upriv, 32);
    if (cli_read_secret("Organization passcode (admin escrow, 6+ characters)", "VEIL_ORG_PASSCODE", ofile, pass,
                        sizeof pass, err, sizeof err) < 0)
        return FAIL("%s", err);
    if (strlen(pass) < KW_MIN_PASSCODE) {
        OPENSSL_cleanse(pass, sizeof pass);
        return FAIL("the organization passcode must have at least %d characters", KW_MIN_PASSCODE);
    }
    kw_blob escrow;
    if (x25519_keygen(opriv, opub) < 0 || kw_wrap(opriv, pass, &KW_PARAMS_DEFAULT, &escrow) != KW_OK) {
        rc = FAIL("key generation failed");
        goto out;
    }
    char pub_hex[65], ct[65], iv[33], tag[33], salt[65];
    hex_encode(opub, 32, pub_hex);
    hex_encode(escrow.ct, 32, ct);
    hex_encode(escrow.iv, 16, iv);
    hex_encode(escrow.tag, 16, tag);
    hex_encode(escrow.salt, 32, salt);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "org_public_key", pub_hex,
                             "admin_encrypted_private_key", ct, "admin_iv", iv, "admin_tag", tag, "admin_salt",
                             salt, "admin_member_encrypted_key", seal_key(mypub, opriv));
    snprintf(path, sizeof path, "/api/v1/organizations/%s/keys", org);
    int status;
    json_t *r = NULL;
    if (vclient_call(c, "POST", path, body, &status, &r, err, sizeof err) < 0)
        rc = FAIL("%s", err);
    else if (status != 201)
        rc = FAIL("%s", api_detail(r, status, buf, sizeof buf));
    else {
        term_fprintf(stdout, "Organization %s now has encryption keys (public key %s).\n", org, pub_hex);
        rc = 0;
    }
    json_decref(r);
    json_decref(body);
out:
    OPENSSL_cleanse(opriv, 32);
    OPENSSL_cleanse(pass, sizeof pass);
    return rc;
}

static int org_distribute(vclient *c, const char *org, const char *pfile)
{
    char err[CLI_ERR_MAX], buf[CLI_ERR_MAX], path[512];
    uint8_t upriv[32], opriv[32];
    if (userkeys_private(c, pfile, upriv, err, sizeof err) < 0)
        return FAIL("%s", err);
    int rc = userkeys_storage(c, org, upriv, opriv, err, sizeof err);
    OPENSSL_cleanse(upriv, 32);
    if (rc < 0)
        return FAIL("%s", err);
    snprintf(path, sizeof path, "/api/v1/organizations/%s/pending-distributions", org);
    int status;
    json_t *r = NULL;
    rc = 0;
    if (vclient_call(c, "GET", path, NULL, &status, &r, err, sizeof err) < 0 || status != 200) {
        rc = status ? FAIL("%s", api_detail(r, status, buf, sizeof buf)) : FAIL("%s", err);
        goto out;
    }
    size_t i, sent = 0;
    const json_t *m;
    json_array_foreach(json_object_get(r, "ready_for_distribution"), i, m) {
        const char *mid = json_string_value(json_object_get(m, "membership_id"));
        const char *uid = json_string_value(json_object_get(m, "user_id"));
        const char *pk = json_string_value(json_object_get(m, "user_public_key"));
        uint8_t pub[32];
        if (!mid || !pk || hex_decode_exact(pk, strlen(pk), pub, 32) < 0) {
            cli_fail("org", 1, "skipping a member with a malformed public key");
            continue;
        }
        /* without attestation this public key is the server's word (defect §10.16) */
        json_t *body = json_pack("{s:s, s:o}", "membership_id", mid, "encrypted_org_key", seal_key(pub, opriv));
        json_t *d = NULL;
        char p2[512];
        snprintf(p2, sizeof p2, "/api/v1/organizations/%s/distribute-key", org);
        if (vclient_call(c, "POST", p2, body, &status, &d, err, sizeof err) == 0 && status == 200) {
            term_fprintf(stdout, "distributed the org key to %s\n", uid ? uid : mid);
            sent++;
        } else {
            cli_fail("org", 1, "%s: %s", uid ? uid : mid, status ? api_detail(d, status, buf, sizeof buf) : err);
            rc = 1;
        }
        json_decref(d);
        json_decref(body);
    }
    size_t waiting = json_array_size(json_object_get(r, "needs_personal_setup"));
    printf("%zu distributed; %zu member(s) still need to run `veil keys init`.\n", sent, waiting);
out:
    json_decref(r);
    OPENSSL_cleanse(opriv, 32);
    return rc;
}

int cmd_org(int argc, char **argv)
{
    static const struct option opts[] = {
        {"org", required_argument, 0, 'o'}, {"passcode-file", required_argument, 0, 'p'},
        {"org-passcode-file", required_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *org = NULL, *pfile = NULL, *ofile = NULL;
    int o;
    while ((o = cli_getopt("org", argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 'o': org = optarg; break;
        case 'p': pfile = optarg; break;
        case 'q': ofile = optarg; break;
        case 'h':
            printf("Usage: veil org keys-init|distribute [--org ORG] [--passcode-file F]\n"
                   "                [--org-passcode-file F]\n\n"
                   "  keys-init    (admin) create the org's X25519 key pair: the private key is\n"
                   "               escrowed under an org passcode (Argon2id) and sealed to your own\n"
                   "               public key as your member copy\n"
                   "  distribute   (admin) seal the org private key to every member who has\n"
                   "               personal keys but no org key yet\n\n"
                   "ORG defaults to the organization of your token. Members then read the org's\n"
                   "conversations with `veil history` in that org context.\n");
            return 0;
        default: return EXIT_USAGE;
        }
    }
    if (optind != argc - 1)
        return cli_fail("org", EXIT_USAGE, "give one action: keys-init or distribute");
    vclient c;
    char err[CLI_ERR_MAX], cur[256];
    if (vclient_from_config(&c, err, sizeof err) < 0)
        return FAIL("%s", err);
    int rc;
    if (!org) {
        if (userkeys_current_org(&c, cur, sizeof cur, err, sizeof err) < 0 || !cur[0]) {
            vclient_free(&c);
            return cur[0] ? FAIL("%s", err) : cli_fail("org", EXIT_USAGE, "no --org and no org in your token");
        }
        org = cur;
    }
    if (strcmp(argv[optind], "keys-init") == 0)
        rc = org_keys_init(&c, org, pfile, ofile);
    else if (strcmp(argv[optind], "distribute") == 0)
        rc = org_distribute(&c, org, pfile);
    else
        rc = cli_fail("org", EXIT_USAGE, "unknown action '%s'", argv[optind]);
    vclient_free(&c);
    return rc;
}
