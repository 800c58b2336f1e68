/* imds — EC2 Instance Metadata Service v2 client: session token (PUT with a TTL
 * header), IAM role name, role credentials and region, on the event loop.
 *
 * Every step checks the HTTP status (the original did not, defect §10.22) and has
 * short deadlines. Results are delivered once through the callback; secrets in
 * the result are wiped by imds_credentials_clear. Never logs credential values.
 */
#ifndef VEIL_AWS_IMDS_H
#define VEIL_AWS_IMDS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "net/https.h"

#define IMDS_DEFAULT_HOST "169.254.169.254"
#define IMDS_DEFAULT_PORT 80
#define IMDS_TOKEN_TTL_SECONDS 21600

typedef struct imds_credentials {
    char access_key_id[128];
    char secret_access_key[128];
    char session_token[4096];
    char expiration[40]; /* as sent, e.g. 2026-02-01T08:00:00Z */
    time_t expires_at;   /* parsed; 0 when unknown */
    char role[128];
} imds_credentials;

void imds_credentials_clear(imds_credentials *c);

typedef struct imds_config {
    const char *host; /* NULL: 169.254.169.254 */
    uint16_t port;    /* 0: 80 */
    unsigned timeout_ms; /* per step; 0: 2000 */
} imds_config;

/* err is NULL on success; then creds holds the result (the callee wipes it after
 * the callback returns: copy what you need). */
typedef void (*imds_creds_cb)(void *ud, const imds_credentials *creds, const char *err);
typedef void (*imds_region_cb)(void *ud, const char *region, const char *err);

typedef struct imds_op imds_op;

imds_op *imds_fetch_credentials(https_ctx *https, const imds_config *cfg, imds_creds_cb cb, void *ud);
imds_op *imds_fetch_region(https_ctx *https, const imds_config *cfg, imds_region_cb cb, void *ud);
void imds_cancel(imds_op *op); /* no callback follows */

#endif
