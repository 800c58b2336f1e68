/* libFuzzer target for veil-proxy's allowlist (src/proxy/allowlist.c).
 *
 * First input byte picks the mode:
 *   even: the rest is YAML text, loaded as is; also tried as an --allow spec and a
 *         --resolve spec, and its first 16 bytes classified as IPv4 and IPv6 addresses.
 *   odd:  a valid allowlist is built from the input (hosts mapped onto [a-z0-9.-],
 *         ports from two bytes, flow or block form, comments), then one byte is mutated.
 * Always: a loaded list round-trips (written back as flow YAML, it loads to the same
 * entries), every entry matches itself, and no entry matches on a different port.
 *
 * Build: clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *          fuzz/fuzz_proxy_allowlist.c src/proxy/allowlist.c src/aws/http1.c \
 *          src/common/buf.c src/common/config.c src/common/hex.c -lcrypto \
 *          -o fuzz_proxy_allowlist
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "proxy/allowlist.h"

#define CHECK(c)                                                                           \
    do {                                                                                   \
        if (!(c))                                                                          \
            abort();                                                                       \
    } while (0)

#define MAX_TEXT 4096

static void check_list(const proxy_allowlist *al)
{
    vbuf y = VBUF_INIT;
    CHECK(vbuf_append_str(&y, "allowlist:\n") == 0);
    for (size_t i = 0; i < al->n_entries; i++) {
        const proxy_allow_entry *e = &al->entries[i];
        CHECK(proxy_allowlist_match(al, e->host, e->port));
        /* the port is exact: another port matches only if it is listed too */
        uint16_t other = e->port == 1 ? 2 : (uint16_t)(e->port - 1);
        bool listed = false;
        for (size_t j = 0; j < al->n_entries; j++)
            listed |= al->entries[j].port == other && strcmp(al->entries[j].host, e->host) == 0;
        CHECK(proxy_allowlist_match(al, e->host, other) == listed);
        CHECK(vbuf_printf(&y, "- {address: '%s', port: %u}\n", e->host, e->port) == 0);
    }
    if (al->n_entries) {
        proxy_allowlist again;
        proxy_allowlist_init(&again);
        char err[256];
        CHECK(proxy_allowlist_load_yaml(&again, "rt", (const char *)y.data, y.len, err,
                                        sizeof err) == 0);
        CHECK(again.n_entries == al->n_entries);
        for (size_t i = 0; i < al->n_entries; i++) {
            CHECK(strcmp(again.entries[i].host, al->entries[i].host) == 0);
            CHECK(again.entries[i].port == al->entries[i].port);
        }
        proxy_allowlist_free(&again);
    }
    vbuf_free(&y);
}

static void load_and_check(const char *text, size_t len)
{
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256];
    int rc = proxy_allowlist_load_yaml(&al, "fuzz", text, len, err, sizeof err);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        CHECK(al.n_entries > 0);
        check_list(&al);
    } else {
        CHECK(memchr(err, '\0', sizeof err) != NULL);
    }
    proxy_allowlist_free(&al);
}

static void raw_mode(const uint8_t *data, size_t size)
{
    load_and_check((const char *)data, size);

    char s[600];
    size_t n = size < sizeof s - 1 ? size : sizeof s - 1;
    memcpy(s, data, n);
    s[n] = '\0';
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256];
    if (proxy_allowlist_add_spec(&al, s, err, sizeof err) == 0)
        check_list(&al);
    if (proxy_allowlist_add_pin(&al, s, err, sizeof err) == 0)
        CHECK(al.n_pins > 0);
    proxy_allowlist_free(&al);

    if (size >= 16) {
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;
        memset(&sin, 0, sizeof sin);
        memset(&sin6, 0, sizeof sin6);
        sin.sin_family = AF_INET;
        memcpy(&sin.sin_addr, data, 4);
        sin6.sin6_family = AF_INET6;
        memcpy(&sin6.sin6_addr, data, 16);
        (void)proxy_allowlist_special((struct sockaddr *)&sin6);
        /* an IPv4-mapped address is judged exactly like the address it carries */
        const char *v4 = proxy_allowlist_special((struct sockaddr *)&sin);
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(&sin6.sin6_addr, mapped, 12);
        memcpy((uint8_t *)&sin6.sin6_addr + 12, data, 4);
        const char *v6 = proxy_allowlist_special((struct sockaddr *)&sin6);
        CHECK((v4 == NULL) == (v6 == NULL));
        CHECK(!v4 || strcmp(v4, v6) == 0);
    }
}

static const char HOST_CHARS[] = "abcdefghijklmnopqrstuvwxyz0123456789.-";

static void structured_mode(const uint8_t *data, size_t size)
{
    char text[MAX_TEXT];
    size_t o = 0, i = 0;
    o += (size_t)snprintf(text, sizeof text, "# fuzz\nallowlist:\n");
    while (i + 4 <= size && o + 400 < sizeof text) {
        uint8_t form = data[i++];
        unsigned port = (unsigned)(data[i] << 8 | data[i + 1]);
        i += 2;
        size_t hlen = 1 + data[i++] % 40;
        char host[64];
        size_t h = 0;
        for (; h < hlen && i < size; h++)
            host[h] = HOST_CHARS[data[i++] % (sizeof HOST_CHARS - 1)];
        host[h] = '\0';
        if (form & 1)
            o += (size_t)snprintf(text + o, sizeof text - o, "- {address: %s, port: %u}%s\n",
                                  host, port, form & 2 ? " # c" : "");
        else
            o += (size_t)snprintf(text + o, sizeof text - o, "%s- address: %s\n%s  port: %u\n",
                                  form & 4 ? "  " : "", host, form & 4 ? "  " : "", port);
    }
    load_and_check(text, o);
    if (size && o) {
        text[data[0] % o] ^= (char)(data[size - 1] | 1); /* one mutated byte */
        load_and_check(text, o);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > MAX_TEXT)
        return 0;
    if (data[0] & 1)
        structured_mode(data + 1, size - 1);
    else
        raw_mode(data + 1, size - 1);
    return 0;
}
