/* web_assets — the web chat page's files, read once when veild starts, and the
 * page's configuration (what the page verifies the enclave against).
 *
 * The files are the operator's: VEIL_WEB_DIR (default: the repository's web/
 * directory found next to the binary) and its vendor/ folder, flat names only
 * (letters, digits, '.', '_', '-'; no dot first), known extensions only, each at
 * most WEB_MAX_FILE bytes. A request can name only a file found at start, never a
 * path. Each file carries a strong ETag (the first 128 bits of its SHA-256).
 * config.json is generated from VEIL_WEB_MEASUREMENTS (nitro-cli's JSON) and
 * VEIL_WEB_ATTESTATION_ROOT (a PEM; default: the AWS Nitro root G1 the page
 * embeds), both checked at start. The set owns every byte; nothing is logged.
 */
#ifndef VEIL_SERVER_WEB_ASSETS_H
#define VEIL_SERVER_WEB_ASSETS_H

#include <stddef.h>
#include <stdint.h>

#include "server/settings.h"

#define WEB_MAX_FILE (4u << 20)   /* bytes of one file */
#define WEB_MAX_FILES 256         /* files in web/ and web/vendor/ together */
#define WEB_CONFIG_NAME "config.json"

typedef struct web_file {
    char name[128];   /* "index.html", "vendor/argon2.umd.min.js" */
    const char *type; /* its Content-Type */
    uint8_t *data;
    size_t len;
    char etag[36];    /* "\"<32 hex>\"" */
} web_file;

typedef struct web_assets web_assets;

/* The page's files and config.json. NULL with err when a configured directory,
 * measurements file or root is unusable (veild then refuses to start); a set with
 * no files when the page is off (VEIL_WEB_DIR=none) or no web/ was found next to
 * the binary (web_assets_dir says which). */
web_assets *web_assets_load(const server_config *cfg, char *err, size_t errlen);
void web_assets_free(web_assets *w);

/* The file of that name ("vendor/x.js" for the vendor folder), or NULL. */
const web_file *web_assets_find(const web_assets *w, const char *name);
/* The directory served, or "" when none. */
const char *web_assets_dir(const web_assets *w);
size_t web_assets_count(const web_assets *w);

#endif
