/* models — the Bedrock models a client may choose (spec §3.5), in the original's
 * order. */
#ifndef VEIL_SERVER_MODELS_H
#define VEIL_SERVER_MODELS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct model_info {
    const char *id;
    const char *name;
} model_info;

extern const model_info MODELS[];
extern const size_t N_MODELS;

bool model_known(const char *id);

#endif
