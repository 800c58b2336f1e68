#include "server/http/models.h"

#include <string.h>

const model_info MODELS[] = {
    {"us.anthropic.claude-3-5-sonnet-20241022-v2:0", "Claude 3.5 Sonnet"},
    {"us.anthropic.claude-3-5-haiku-20241022-v1:0", "Claude 3.5 Haiku"},
    {"us.anthropic.claude-3-opus-20240229-v1:0", "Claude 3 Opus"},
    {"us.meta.llama3-3-70b-instruct-v1:0", "Llama 3.3 70B"},
    {"us.meta.llama3-2-90b-instruct-v1:0", "Llama 3.2 90B"},
    {"us.meta.llama3-2-11b-instruct-v1:0", "Llama 3.2 11B"},
    {"us.meta.llama3-1-70b-instruct-v1:0", "Llama 3.1 70B"},
    {"us.meta.llama3-1-8b-instruct-v1:0", "Llama 3.1 8B"},
    {"us.amazon.nova-pro-v1:0", "Amazon Nova Pro"},
    {"us.amazon.nova-lite-v1:0", "Amazon Nova Lite"},
    {"us.amazon.nova-micro-v1:0", "Amazon Nova Micro"},
};
const size_t N_MODELS = sizeof MODELS / sizeof MODELS[0];

bool model_known(const char *id)
{
    for (size_t i = 0; i < N_MODELS; i++)
        if (strcmp(MODELS[i].id, id) == 0)
            return true;
    return false;
}
