/* veil keygen | seal | open: the envelope from a shell. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/hex.h"
#include "crypto/ep.h"

#define EP_JSON_MAX (2 * (size_t)EP_MAX_PLAINTEXT + 4096)

static void print_contexts(FILE *f)
{
    fprintf(f, "Contexts:\n");
    for (size_t i = 0; EP_KNOWN_CONTEXTS[i]; i++)
        fprintf(f, "  %s\n", EP_KNOWN_CONTEXTS[i]);
}

static int check_context(const char *verb, const char *ctx)
{
    if (!ctx)
        return cli_fail(verb, EXIT_USAGE, "missing --context (see veil %s --help)", verb);
    if (!ep_context_is_known(ctx))
        return cli_fail(verb, EXIT_USAGE, "unknown context '%s' (see veil %s --help)", ctx, verb);
    return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = cli_getopt("keygen", argc, argv, "h", opts)) != -1) {
        if (c == 'h') {
            printf("Usage: veil keygen\n\n"
                   "Generates an X25519 key pair and prints\n"
                   "  {\"public_key\": \"<64 hex>\", \"private_key\": \"<64 hex>\"}\n"
                   "Keep the private key secret: anyone holding it reads what is sealed to the\n"
                   "public key.\n");
            return 0;
        }
        return EXIT_USAGE; /* cli_getopt has said why */
    }
    if (optind != argc)
        return cli_fail("keygen", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    uint8_t priv[32], pub[32];
    char priv_hex[65], pub_hex[65];
    if (x25519_keygen(priv, pub) < 0)
        return cli_fail("keygen", 1, "key generation failed");
    hex_encode(priv, 32, priv_hex);
    hex_encode(pub, 32, pub_hex);
    printf("{\"public_key\": \"%s\", \"private_key\": \"%s\"}\n", pub_hex, priv_hex);
    fflush(stdout);
    secure_wipe(priv, sizeof priv);
    secure_wipe(priv_hex, sizeof priv_hex);
    return 0;
}

int cmd_seal(int argc, char **argv)
{
    static const struct option opts[] = {
        {"to", required_argument, 0, 't'},
        {"context", required_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *to = NULL, *ctx = NULL;
    int c;
    while ((c = cli_getopt("seal", argc, argv, "t:c:h", opts)) != -1) {
        switch (c) {
        case 't': to = optarg; break;
        case 'c': ctx = optarg; break;
        case 'h':
            printf("Usage: veil seal --to PUBHEX --context CTX < plaintext > payload.json\n\n"
                   "Encrypts stdin to an X25519 public key and prints the EncryptedPayload JSON:\n"
                   "ephemeral X25519, HKDF-SHA512 (random 32-byte salt, info = CTX),\n"
                   "AES-256-GCM (random 16-byte IV, 16-byte tag, no AAD).\n\n"
                   "  -t, --to PUBHEX      recipient public key, 64 hex characters\n"
                   "  -c, --context CTX    HKDF context string (one of the list below)\n\n");
            print_contexts(stdout);
            return 0;
        default: return EXIT_USAGE;
        }
    }
    if (optind != argc)
        return cli_fail("seal", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    uint8_t pub[32];
    int rc = cli_key_arg("seal", "--to public key", to, NULL, pub);
    if (rc || (rc = check_context("seal", ctx)))
        return rc;
    vbuf in = VBUF_INIT, out = VBUF_INIT;
    ep e;
    if (cli_read_stdin(&in, EP_MAX_PLAINTEXT) < 0) {
        rc = cli_fail("seal", 1, "cannot read stdin (limit %u bytes)", EP_MAX_PLAINTEXT);
        goto out;
    }
    ep_err err = ep_seal(pub, in.data, in.len, ctx, &e);
    if (err != EP_OK) {
        rc = cli_fail("seal", 1, "%s", ep_strerror(err));
        goto out;
    }
    if (ep_write_json(&e, &out) < 0 || vbuf_append(&out, "\n", 1) < 0 ||
        write_all(STDOUT_FILENO, out.data, out.len) < 0)
        rc = cli_fail("seal", 1, "cannot write output");
    ep_clear(&e);
out:
    vbuf_free_secure(&in);
    vbuf_free(&out);
    return rc;
}

int cmd_open(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, 0, 'k'},
        {"key-file", required_argument, 0, 'f'},
        {"context", required_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *key = NULL, *key_file = NULL, *ctx = NULL;
    int c;
    while ((c = cli_getopt("open", argc, argv, "k:f:c:h", opts)) != -1) {
        switch (c) {
        case 'k': key = optarg; break;
        case 'f': key_file = optarg; break;
        case 'c': ctx = optarg; break;
        case 'h':
            printf("Usage: veil open (--key PRIVHEX | --key-file FILE) --context CTX < payload.json\n\n"
                   "Decrypts an EncryptedPayload JSON object from stdin and writes the plaintext\n"
                   "to stdout, byte for byte. Fails if the key, the context or any field is wrong.\n\n"
                   "  -k, --key PRIVHEX    recipient private key, 64 hex characters\n"
                   "  -f, --key-file FILE  read the private key from FILE instead (keeps it out\n"
                   "                       of the process list)\n"
                   "  -c, --context CTX    HKDF context string used when sealing\n\n");
            print_contexts(stdout);
            return 0;
        default: return EXIT_USAGE;
        }
    }
    if (optind != argc)
        return cli_fail("open", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    uint8_t priv[32];
    int rc = cli_key_arg("open", "private key", key, key_file, priv);
    if (rc || (rc = check_context("open", ctx)))
        return rc;
    vbuf in = VBUF_INIT;
    ep e = {0};
    secret pt = {0};
    const char *field = NULL;
    if (cli_read_stdin(&in, EP_JSON_MAX) < 0) {
        rc = cli_fail("open", 1, "cannot read stdin");
        goto out;
    }
    ep_err err = ep_parse((const char *)in.data, in.len, &e, &field);
    if (err != EP_OK) {
        rc = field ? cli_fail("open", 1, "%s: %s", field, ep_strerror(err))
                   : cli_fail("open", 1, "%s", ep_strerror(err));
        goto out;
    }
    if ((err = ep_open(priv, &e, ctx, &pt)) != EP_OK) {
        rc = cli_fail("open", 1, "%s", ep_strerror(err));
        goto out;
    }
    if (write_all(STDOUT_FILENO, pt.data, pt.len) < 0)
        rc = cli_fail("open", 1, "cannot write output");
out:
    secure_wipe(priv, sizeof priv);
    secret_free(&pt);
    ep_clear(&e);
    vbuf_free(&in);
    return rc;
}
