/* veil attest verify | sim-measurements: a saved attestation document checked offline
 * with the client's own verifier (attest/verify.h), and the simulated NSM's PCRs for
 * a binary, for the local stack. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "attest/measurements.h"
#include "attest/nsm.h"
#include "attest/verify.h"
#include "cli/cli.h"
#include "cli/term.h"
#include "common/base64.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/hex.h"
#include "enclave/protocol.h"

#define VERB "attest verify"
#define INPUT_MAX (64 * 1024) /* a document is at most 16 KiB; its hex spelling 32 KiB */
#define SIM_HASH_ALGORITHM "Sha384 { ... }"
#define AT_MAX 253402300799L /* --at: 9999-12-31T23:59:59Z */

/* `veil attest verify: CHECK: reason`, exit 1 */
static int refuse(const char *check, const char *reason)
{
    return cli_fail(VERB, 1, "%s: %s", check, reason);
}

static void help_verify(void)
{
    printf("Usage: veil attest verify [FILE|-] [--root PEM] [--at now|doc|UNIX_SECONDS]\n"
           "                          [--max-age SEC|none] [--nonce HEX] [--public-key HEX]\n"
           "                          [--user-data HEX] [--expect-pcr N=HEX]... [--measurements FILE]\n\n"
           "Verifies an AWS Nitro attestation document (FILE, or stdin): raw CBOR, base64 or\n"
           "hex (detected), or veild's /enclave/info JSON (its \"attestation\" member). The\n"
           "certificate chain must lead to the pinned AWS Nitro root G1, the COSE signature\n"
           "must verify, the document must be at most --max-age old (300 s) at the check\n"
           "time, and every expectation given must hold. Valid: its decoded fields as JSON on\n"
           "stdout (module_id, timestamp, digest, pcrs, public_key, user_data, nonce, the\n"
           "chain's subjects), exit 0. Otherwise one line, `veil attest verify: CHECK: reason`\n"
           "(CHECK is root, chain, validity, signature, freshness, nonce, public-key,\n"
           "user-data, pcr, cose, ...), exit 1.\n\n"
           "  --at now|doc|T     check the certificates now (default), at the document's own\n"
           "                     time (an archived document), or at unix time T\n"
           "  --root PEM         trust this root instead of the pinned AWS root: only for\n"
           "                     veil's simulated NSM (its DIR/root.pem); said on stderr\n"
           "  --expect-pcr N=HEX a PCR the document must carry (repeatable); --measurements\n"
           "                     FILE adds those of a `nitro-cli build-enclave` JSON\n"
           "  --nonce, --public-key, --user-data HEX   the exact bytes the document must bind\n");
}

static void help_attest(void)
{
    printf("Usage: veil attest verify [FILE|-] [OPTIONS]   (see veil attest verify --help)\n"
           "       veil attest sim-measurements BINARY\n\n"
           "verify checks a saved attestation document down to the AWS Nitro root and prints\n"
           "its fields. sim-measurements prints the PCR0-2 that veil's SIMULATED NSM\n"
           "(veil-enclave --nsm sim:DIR) reports for BINARY, in the shape `nitro-cli\n"
           "build-enclave` prints, for `veil login --measurements` on the local stack. They\n"
           "are not a Nitro Enclave's measurements: those come from nitro-cli.\n");
}

static int read_input(const char *path, vbuf *in, char *err, size_t errlen)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t chunk[4096];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (in->len + n > INPUT_MAX || vbuf_append(in, chunk, n) < 0)
            rc = -1;
    if (rc < 0) {
        snprintf(err, errlen, "the input is over %d bytes", INPUT_MAX);
    } else if (ferror(f)) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (f != stdin)
        fclose(f);
    return rc;
}

static bool is_text(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x09 || (p[i] > 0x0d && p[i] < 0x20) || p[i] > 0x7e)
            return false;
    return true;
}

/* Base64 (either alphabet, padding optional) or hex text into *out (malloc'd). */
static int decode_text(const char *t, size_t n, uint8_t **out, size_t *len)
{
    uint8_t *b = malloc(n + 4);
    char *pad = malloc(n + 4);
    long got = -1;
    if (!b || !pad)
        goto out;
    if (hex_is_valid(t, n)) {
        got = hex_decode(t, n, b, n);
    } else if (strcspn(t, "-_") < n) {
        while (n && t[n - 1] == '=')
            n--;
        got = base64_decode(B64_URL, t, n, b, n + 4);
    } else {
        memcpy(pad, t, n);
        while (n % 4)
            pad[n++] = '=';
        got = base64_decode(B64_STD, pad, n, b, n + 4);
    }
out:
    free(pad);
    if (got <= 0) {
        free(b);
        return -1;
    }
    *out = b;
    *len = (size_t)got;
    return 0;
}

/* The document's bytes: raw CBOR as given, else text without its whitespace, where
 * a JSON object means veild's /enclave/info answer. */
static int document_of(const vbuf *in, uint8_t **doc, size_t *len, char *err, size_t errlen)
{
    char *t = malloc(in->len + 1); /* the text without whitespace; the raw bytes when not text */
    size_t n = 0;
    int rc = -1;
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!is_text(in->data, in->len)) {
        memcpy(t, in->data, in->len);
        *doc = (uint8_t *)t;
        *len = in->len;
        return 0;
    }
    for (size_t i = 0; i < in->len; i++)
        if (in->data[i] > ' ')
            t[n++] = (char)in->data[i];
    t[n] = '\0';
    if (n == 0) { /* attest_verify names it: size */
        *len = 0;
        rc = (*doc = malloc(1)) ? 0 : -1;
    } else if (t[0] == '{') {
        json_t *j = json_loadb((const char *)in->data, in->len, 0, NULL);
        const char *a = json_string_value(json_object_get(j, PF_ATTESTATION));
        if (!a)
            snprintf(err, errlen, "the JSON has no \"%s\" string", PF_ATTESTATION);
        else if ((rc = decode_text(a, strlen(a), doc, len)) < 0)
            snprintf(err, errlen, "the JSON's \"%s\" is not base64", PF_ATTESTATION);
        json_decref(j);
    } else if ((rc = decode_text(t, n, doc, len)) < 0) {
        snprintf(err, errlen, "the input is neither CBOR, base64 nor hex");
    }
    free(t);
    return rc;
}

typedef struct verify_args {
    const char *file, *root;
    attest_options opt;
    attest_pcr pcrs[ATTEST_MAX_PCRS];
    uint8_t nonce[ATTEST_MAX_FIELD_LEN], pub[ATTEST_MAX_FIELD_LEN], udata[ATTEST_MAX_FIELD_LEN];
} verify_args;

/* --nonce, --public-key, --user-data: 1..1024 bytes of hex. */
static int hex_arg(const char *opt, const char *hex, uint8_t *out, const uint8_t **p, size_t *len)
{
    long n = hex_decode(hex, strlen(hex), out, ATTEST_MAX_FIELD_LEN);
    if (n <= 0)
        return cli_fail(VERB, EXIT_USAGE, "--%s must be 1 to %d bytes of hex", opt, ATTEST_MAX_FIELD_LEN);
    *p = out;
    *len = (size_t)n;
    return 0;
}

static int add_pcrs(verify_args *a, const attest_pcr *p, size_t n)
{
    if (a->opt.n_pcrs + n > ATTEST_MAX_PCRS)
        return cli_fail(VERB, EXIT_USAGE, "at most %d expected PCRs", ATTEST_MAX_PCRS);
    memcpy(a->pcrs + a->opt.n_pcrs, p, n * sizeof *p);
    a->opt.n_pcrs += n;
    return 0;
}

static int verify_opt(verify_args *a, int c, const char *arg)
{
    char why[256];
    long v;
    attest_pcr pcr, m[ATTEST_MAX_PCRS];
    size_t nm;
    switch (c) {
    case 'r': a->root = arg; return 0;
    case 'a':
        if (strcmp(arg, "now") == 0)
            a->opt.at = ATTEST_AT_NOW;
        else if (strcmp(arg, "doc") == 0)
            a->opt.at = ATTEST_AT_DOC;
        else if (parse_long(arg, 1, AT_MAX, &v) == 0)
            a->opt.at = ATTEST_AT_TIME, a->opt.at_unix = v;
        else
            return cli_fail(VERB, EXIT_USAGE, "--at is now, doc or unix seconds");
        return 0;
    case 'g':
        if (strcmp(arg, "none") == 0)
            a->opt.max_age_s = ATTEST_MAX_AGE_UNLIMITED;
        else if (parse_long(arg, 1, ATTEST_MAX_AGE_LIMIT_S, &v) == 0)
            a->opt.max_age_s = v;
        else
            return cli_fail(VERB, EXIT_USAGE, "--max-age is 1 to %ld seconds, or none", ATTEST_MAX_AGE_LIMIT_S);
        return 0;
    case 'n': return hex_arg("nonce", arg, a->nonce, &a->opt.nonce, &a->opt.nonce_len);
    case 'k': return hex_arg("public-key", arg, a->pub, &a->opt.public_key, &a->opt.public_key_len);
    case 'u': return hex_arg("user-data", arg, a->udata, &a->opt.user_data, &a->opt.user_data_len);
    case 'p':
        if (attest_pcr_parse(arg, &pcr, why, sizeof why) < 0)
            return cli_fail(VERB, EXIT_USAGE, "--expect-pcr %s: %s", arg, why);
        return add_pcrs(a, &pcr, 1);
    case 'm':
        if (attest_measurements_load(arg, m, &nm, why, sizeof why) < 0)
            return cli_fail(VERB, EXIT_USAGE, "--measurements %s: %s", arg, why);
        return add_pcrs(a, m, nm);
    }
    return EXIT_USAGE;
}

static int attest_verify_cmd(int argc, char **argv)
{
    static const struct option opts[] = {
        {"root", required_argument, 0, 'r'}, {"at", required_argument, 0, 'a'},
        {"max-age", required_argument, 0, 'g'}, {"nonce", required_argument, 0, 'n'},
        {"public-key", required_argument, 0, 'k'}, {"user-data", required_argument, 0, 'u'},
        {"expect-pcr", required_argument, 0, 'p'}, {"measurements", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    verify_args *a = calloc(1, sizeof *a);
    if (!a)
        return cli_fail(VERB, 1, "out of memory");
    a->opt.pcrs = a->pcrs;
    int c, rc = 0;
    while (rc == 0 && (c = cli_getopt(VERB, argc, argv, "h", opts)) != -1) {
        if (c == 'h') {
            help_verify();
            free(a);
            return 0;
        }
        rc = c == '?' ? EXIT_USAGE : verify_opt(a, c, optarg);
    }
    if (rc == 0 && argc - optind > 1)
        rc = cli_fail(VERB, EXIT_USAGE, "give one document (a file, or - for stdin)");
    a->file = rc == 0 && optind < argc ? argv[optind] : "-";
    vbuf in = VBUF_INIT;
    uint8_t *root = NULL, *doc = NULL;
    size_t root_len = 0, len = 0;
    char why[512];
    attest_doc *d = NULL;
    json_t *j = NULL;
    if (rc)
        goto out;
    if (a->root) {
        attest_err e = attest_root_load(a->root, &root, &root_len, why, sizeof why);
        if (e != ATTEST_OK) {
            rc = refuse(attest_check_name(e), why);
            goto out;
        }
        a->opt.root_der = root;
        a->opt.root_der_len = root_len;
        term_fprintf(stderr, "veil %s: note: trusting the root in %s instead of the pinned AWS Nitro root G1 "
                             "(only for veil's simulated NSM)\n", VERB, a->root);
    }
    if (read_input(a->file, &in, why, sizeof why) < 0 || document_of(&in, &doc, &len, why, sizeof why) < 0) {
        rc = refuse("input", why);
        goto out;
    }
    if (!(d = malloc(sizeof *d))) {
        rc = refuse("memory", "out of memory");
        goto out;
    }
    attest_err e = attest_verify(doc, len, &a->opt, d, why, sizeof why);
    if (e != ATTEST_OK) {
        rc = refuse(attest_check_name(e), why);
        goto out;
    }
    char *s = (j = attest_doc_to_json(d)) ? json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII) : NULL;
    if (!s) {
        rc = refuse("memory", "out of memory");
        goto out;
    }
    printf("%s\n", s);
    free(s);
out:
    json_decref(j);
    free(d);
    free(doc);
    free(root);
    vbuf_free(&in);
    free(a);
    return rc;
}

/* nitro-cli's shape, plus a top-level member (ignored by measurements parsers) that
 * says whose PCRs these are. */
static int attest_sim_measurements(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = cli_getopt("attest sim-measurements", argc, argv, "h", opts)) != -1) {
        if (c != 'h')
            return EXIT_USAGE;
        help_attest();
        return 0;
    }
    if (argc - optind != 1)
        return cli_fail("attest sim-measurements", EXIT_USAGE, "give the enclave binary (e.g. build/veil-enclave)");
    uint8_t pcr[3][48];
    char why[512], h[97];
    if (nsm_sim_pcrs_of_file(argv[optind], pcr, why, sizeof why) < 0)
        return cli_fail("attest sim-measurements", 1, "%s", why);
    json_t *m = json_pack("{s:s}", "HashAlgorithm", SIM_HASH_ALGORITHM);
    for (int i = 0; i < 3; i++) {
        char k[8];
        snprintf(k, sizeof k, "PCR%d", i);
        hex_encode(pcr[i], sizeof pcr[i], h);
        json_object_set_new(m, k, json_string(h));
    }
    json_t *o = json_pack("{s:o, s:s}", "Measurements", m, "Simulated",
                          "veil's simulated NSM (veil-enclave --nsm sim:DIR), not a Nitro Enclave");
    char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    if (!s)
        return cli_fail("attest sim-measurements", 1, "out of memory");
    printf("%s\n", s);
    free(s);
    return 0;
}

int cmd_attest(int argc, char **argv)
{
    if (argc < 2)
        return cli_fail("attest", EXIT_USAGE, "missing action (verify, sim-measurements)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        help_attest();
        return 0;
    }
    if (strcmp(argv[1], "verify") == 0)
        return attest_verify_cmd(argc - 1, argv + 1);
    if (strcmp(argv[1], "sim-measurements") == 0)
        return attest_sim_measurements(argc - 1, argv + 1);
    if (argv[1][0] == '-') /* an option before the action: the usual wording */
        return cli_getopt("attest", argc, argv, "h", (const struct option[]){{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}}) == '?'
                   ? EXIT_USAGE
                   : cli_fail("attest", EXIT_USAGE, "missing action (verify, sim-measurements)");
    return cli_fail("attest", EXIT_USAGE, "unknown action '%s' (verify, sim-measurements)", argv[1]);
}
