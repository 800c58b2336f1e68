/* veil — the command-line client: the chat client and the envelope verbs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/secret.h"

static const cli_verb VERBS[] = {
    {"keygen", cmd_keygen, "generate an X25519 key pair"},
    {"seal", cmd_seal, "encrypt stdin to a public key (EncryptedPayload JSON)"},
    {"open", cmd_open, "decrypt an EncryptedPayload JSON from stdin"},
    {"dev-token", cmd_devtoken, "mint a local RS256 test token (Clerk-shaped) for veild"},
    {"login", cmd_login, "store the server URL, your token and the enclave's measurements"},
    {"keys", cmd_keys, "create, unlock or recover your encryption keys"},
    {"chat", cmd_chat, "an interactive conversation, sealed to the enclave"},
    {"ask", cmd_ask, "one prompt, one streamed answer (--json for scripts)"},
    {"history", cmd_history, "print a stored conversation, decrypted here"},
    {"sessions", cmd_sessions, "list your conversations"},
    {"models", cmd_models, "list the models"},
    {"org", cmd_org, "organization keys: create and distribute"},
    {"attest", cmd_attest, "verify an attestation document; the simulator's measurements"},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: veil VERB [OPTIONS]\n\n"
               "veil is the client of a confidential LLM chat service: messages are sealed\n"
               "to a key that lives only inside an AWS Nitro Enclave.\n\nVerbs:\n");
    int width = 0;
    for (size_t i = 0; i < sizeof VERBS / sizeof VERBS[0]; i++)
        if ((int)strlen(VERBS[i].name) > width)
            width = (int)strlen(VERBS[i].name);
    for (size_t i = 0; i < sizeof VERBS / sizeof VERBS[0]; i++)
        fprintf(f, "  %-*s  %s\n", width, VERBS[i].name, VERBS[i].summary);
    fprintf(f, "\nRun `veil VERB --help` for the options of a verb.\n");
}

int main(int argc, char **argv)
{
    log_init("veil");
    /* a person's terminal: the libraries' info lines (a connection pool's settings, a
     * retried connection) would land among the answers; VEIL_LOG_LEVEL still asks */
    if (!getenv("VEIL_LOG_LEVEL"))
        log_set_level(LOG_WARN);
    /* JSON here holds prompts, answers and history in clear: every block jansson
     * frees is wiped first */
    json_set_alloc_funcs(malloc, secret_free_block);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof VERBS / sizeof VERBS[0]; i++)
        if (strcmp(argv[1], VERBS[i].name) == 0)
            return VERBS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "veil: unknown verb '%s' (see veil --help)\n", argv[1]);
    return EXIT_USAGE;
}
