/* refresher — keeps the enclave supplied with AWS credentials: from the standard
 * AWS environment variables when set, else from EC2 IMDSv2. Pushes at start,
 * every ENCLAVE_CREDENTIAL_REFRESH_SECONDS, whenever they expire within five
 * minutes, and at once after an enclave restart; failures retry with backoff on
 * the event loop. Never logs credential values.
 */
#ifndef VEIL_SERVER_REFRESHER_H
#define VEIL_SERVER_REFRESHER_H

#include <stdbool.h>
#include <time.h>

#include "server/link/enclave_client.h"
#include "server/settings.h"

typedef struct refresher refresher;

refresher *refresher_new(struct event_base *base, const server_config *cfg, enclave_client *ec,
                         char *err, size_t errlen);
void refresher_start(refresher *rf);
void refresher_kick(refresher *rf); /* push now */
void refresher_free(refresher *rf);

bool refresher_pushed(const refresher *rf);     /* the last push succeeded */
time_t refresher_expiration(const refresher *rf); /* 0 when unknown */
const char *refresher_source(const refresher *rf); /* "env" | "imds" */
unsigned long refresher_push_count(const refresher *rf);

#endif
