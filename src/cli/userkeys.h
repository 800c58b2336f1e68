/* userkeys — the CLI's handling of the user's and the org's private keys.
 *
 * The user's X25519 private key lives on the server only wrapped (Argon2id +
 * AES-GCM, the browser client's exact format). It is unwrapped here with the
 * passcode: from $VEIL_PASSCODE, a --passcode-file, or a prompt on the terminal.
 * `veil keys unlock` may cache the unwrapped key in the config directory (0600);
 * `veil keys lock` removes it. Keys are wiped after use.
 */
#ifndef VEIL_CLI_USERKEYS_H
#define VEIL_CLI_USERKEYS_H

#include <stddef.h>
#include <stdint.h>

#include "cli/client.h"
#include "crypto/keywrap.h"

/* Reads a secret: $env if set, else the first line of file if given, else a
 * prompt on /dev/tty without echo. -1 with err when none is available. */
int cli_read_secret(const char *prompt, const char *env, const char *file, char *out, size_t n,
                    char *err, size_t errlen);

/* A wrapped key from the server (GET /users/me/keys or /recovery), refused unless
 * its Argon2 parameters are on the client's short allowlist: argon2id v19,
 * t=4, m=131072 KiB, p=2 (what veil writes and the original's defaults). A
 * hostile server could otherwise make each unlock allocate gigabytes. */
int userkeys_blob_from_json(const json_t *keys, kw_blob *out, char *err, size_t errlen);

/* The path of the cached unlocked key (next to the config file). */
const char *userkeys_cache_path(char *out, size_t n);

/* The cached key: 0 with priv; 1 when there is none; -1 with err when what is
 * there is unsafe (a symbolic link, not a regular file, not the user's, any
 * group or other mode bit) or malformed. Opened without following links. */
int userkeys_cache_read(uint8_t priv[32], char *err, size_t errlen);
/* Writes the cache as a new file, mode 0600, created exclusively and never
 * through a symbolic link (one planted there is refused). */
int userkeys_cache_write(const uint8_t priv[32], char *err, size_t errlen);

/* The user's private key: the cache, else userkeys_unwrap. */
int userkeys_private(vclient *c, const char *passcode_file, uint8_t priv[32], char *err, size_t errlen);
/* GET /users/me/keys + unwrap with the passcode; the public key derived from it
 * must match the server's. */
int userkeys_unwrap(vclient *c, const char *passcode_file, uint8_t priv[32], char *err, size_t errlen);
/* The private key from a keys response's primary fields (keys: the GET reply of
 * /users/me/keys, or of .../recovery, which returns the recovery copy there)
 * unwrapped with passphrase (a passcode, or a recovery code's digits), and checked
 * against the response's public key. 0, or -1 with err (priv wiped). */
int userkeys_unwrap_blob(const json_t *keys, const char *passphrase, uint8_t priv[32], char *err, size_t errlen);

/* The key stored messages are sealed to: the user's own in personal context, or
 * the org's private key (opened from the caller's membership) in org context.
 * org_id may be NULL (personal). */
int userkeys_storage(vclient *c, const char *org_id, const uint8_t user_priv[32], uint8_t out[32],
                     char *err, size_t errlen);

/* The caller's current org id from GET /organizations/current ("" in personal context). */
int userkeys_current_org(vclient *c, char *org, size_t n, char *err, size_t errlen);

/* "detail" of an error response, or a generic text; a detail longer than n is cut
 * with a visible " [...]". */
const char *api_detail(const json_t *resp, int status, char *buf, size_t n);

#endif
