#include "common/secret.h"

#include <malloc.h>
#include <openssl/crypto.h>
#include <stdlib.h>

int secret_alloc(secret *s, size_t len)
{
    s->data = malloc(len ? len : 1);
    s->len = s->data ? len : 0;
    return s->data ? 0 : -1;
}

void secret_free(secret *s)
{
    if (s->data) {
        OPENSSL_cleanse(s->data, s->len ? s->len : 1);
        free(s->data);
    }
    s->data = NULL;
    s->len = 0;
}

void secure_wipe(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

void secret_free_block(void *p)
{
    if (p) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}
