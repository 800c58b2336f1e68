/* proxy allowlist: --allow specs, the vsock-proxy YAML loader, host:port matching,
 * --resolve pins and the special-address classification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/allowlist.h"

static int load(proxy_allowlist *al, const char *text, char *err, size_t errlen)
{
    return proxy_allowlist_load_yaml(al, "list.yaml", text, strlen(text), err, errlen);
}

static struct sockaddr_storage ip(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(443);
    } else {
        assert_int_equal(inet_pton(AF_INET6, s, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(443);
    }
    return ss;
}

static const char *special(const char *s)
{
    struct sockaddr_storage ss = ip(s);
    return proxy_allowlist_special((struct sockaddr *)&ss);
}

static void test_yaml_flow(void **state)
{
    (void)state;
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256] = "";
    const char *text = "# the AWS vsock-proxy format\n"
                       "allowlist:\n"
                       "- {address: bedrock-runtime.us-east-1.amazonaws.com, port: 443}\n"
                       "\n"
                       "  # indented comment\n"
                       "- {port: 8443, address: KMS.us-east-1.amazonaws.com.}   # trailing\n"
                       "-   { address: \"sts.amazonaws.com\" , port: 443 , }\r\n"
                       "- {address: 10.0.0.5, port: 9000}\n"
                       "- {address: '::1', port: 7000}\n";
    assert_int_equal(load(&al, text, err, sizeof err), 0);
    assert_int_equal(al.n_entries, 5);
    assert_true(proxy_allowlist_match(&al, "bedrock-runtime.us-east-1.amazonaws.com", 443));
    assert_true(proxy_allowlist_match(&al, "kms.us-east-1.amazonaws.com", 8443));
    assert_string_equal(al.entries[1].host, "kms.us-east-1.amazonaws.com");
    assert_true(proxy_allowlist_match(&al, "sts.amazonaws.com", 443));
    assert_true(proxy_allowlist_match(&al, "10.0.0.5", 9000));
    assert_true(proxy_allowlist_match(&al, "::1", 7000));
    assert_false(proxy_allowlist_match(&al, "kms.us-east-1.amazonaws.com", 443));
    proxy_allowlist_free(&al);
}

static void test_yaml_block(void **state)
{
    (void)state;
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256] = "";
    const char *text = "allowlist:\n"
                       "  - address: bedrock-runtime.us-west-2.amazonaws.com\n"
                       "    port: 443\n"
                       "  # a comment between entries\n"
                       "  - port: 8443\n"
                       "\n"
                       "    address: 'Example.COM'\n"
                       "  - {address: flow.example, port: 1}\n"
                       "  - address: last.example # no newline at the end\n"
                       "    port: 65535";
    assert_int_equal(load(&al, text, err, sizeof err), 0);
    assert_int_equal(al.n_entries, 4);
    assert_true(proxy_allowlist_match(&al, "bedrock-runtime.us-west-2.amazonaws.com", 443));
    assert_true(proxy_allowlist_match(&al, "example.com", 8443));
    assert_true(proxy_allowlist_match(&al, "flow.example", 1));
    assert_true(proxy_allowlist_match(&al, "last.example", 65535));
    proxy_allowlist_free(&al);
}

typedef struct yaml_bad {
    const char *text;
    const char *want; /* a substring of the error, naming the line */
} yaml_bad;

static void test_yaml_errors(void **state)
{
    (void)state;
    static const yaml_bad CASES[] = {
        {"", "no 'allowlist:'"},
        {"# only a comment\n", "no 'allowlist:'"},
        {"allowlist:\n", "no entries"},
        {"allowlist: []\n", "list.yaml:1:"},
        {"  allowlist:\n- {address: a.example, port: 1}\n", "list.yaml:1:"},
        {"allowlists:\n", "list.yaml:1:"},
        {"allowlist:\nfoo: bar\n", "list.yaml:2:"},
        {"allowlist:\n- {address: a.example, port: 1}\nother: 1\n", "list.yaml:3:"},
        {"allowlist:\n- {address: a.example}\n", "list.yaml:2: entry needs both"},
        {"allowlist:\n- {port: 443}\n", "list.yaml:2:"},
        {"allowlist:\n- {address: a.example, port: 0}\n", "list.yaml:2: port"},
        {"allowlist:\n- {address: a.example, port: 65536}\n", "list.yaml:2: port"},
        {"allowlist:\n- {address: a.example, port: 44x}\n", "list.yaml:2: port"},
        {"allowlist:\n- {address: a.example, port: \"443\"}\n", "list.yaml:2:"},
        {"allowlist:\n- {address: a.example, port: 443, proto: tcp}\n", "list.yaml:2: unknown key"},
        {"allowlist:\n- {address: a.example, address: b.example, port: 1}\n",
         "list.yaml:2: duplicate"},
        {"allowlist:\n- {address: a.example, port: 1\n", "list.yaml:2:"},
        {"allowlist:\n- {address:a.example, port: 1}\n", "list.yaml:2:"},
        {"allowlist:\n- {address: a.example,, port: 1}\n", "list.yaml:2:"},
        {"allowlist:\n- {address: bad_host.example, port: 1}\n", "list.yaml:2: bad host"},
        {"allowlist:\n- {address: 1.2.3, port: 1}\n", "list.yaml:2: bad host"},
        {"allowlist:\n- {address: \"a.example, port: 1}\n", "list.yaml:2: unterminated"},
        {"allowlist:\n-\n", "list.yaml:2:"},
        {"allowlist:\n- address: a.example\n", "list.yaml:2: entry needs both"},
        {"allowlist:\n- address: a.example\n   port: 1\n", "list.yaml:3:"},    /* wrong indent */
        {"allowlist:\n- address: a.example\n      port: 1\n", "list.yaml:3:"}, /* wrong indent */
        {"allowlist:\n- address: a.example\nport: 1\n", "list.yaml:3:"},
        {"allowlist:\n- address: a.example\n\tport: 1\n", "list.yaml:3: tab"},
        {"allowlist:\n- address: a.example\n  - port: 1\n", "list.yaml:2:"},
        {"allowlist:\n- address: a.example\n  port: 1\n  port: 2\n", "list.yaml:4: duplicate"},
        {"allowlist:\n- address: a.example\n  port 1\n", "list.yaml:3:"},
        {"allowlist:\n- address: a.example\n  port: 1\n  bogus: 1\n", "list.yaml:4: unknown key"},
        {"allowlist:\n- address: a.example\n  bogus: 1\n", "list.yaml:3:"},
        {"allowlist:\n- address:\n  port: 1\n", "list.yaml:2: missing value"},
        {"allowlist:\n- \"address\": a.example\n", "list.yaml:2:"},
        {"allowlist:\n- {address: a.example, port: 1}\n- a.example:1\n", "list.yaml:3:"},
        {"allowlist:\n- {address: a.exa\x01mple, port: 1}\n", "list.yaml:2:"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        proxy_allowlist al;
        proxy_allowlist_init(&al);
        char err[256] = "";
        int rc = load(&al, CASES[i].text, err, sizeof err);
        if (rc != -1 || !strstr(err, CASES[i].want))
            fail_msg("case %zu: rc=%d err='%s', want '%s'", i, rc, err, CASES[i].want);
        proxy_allowlist_free(&al);
    }
    /* block keys line up under the first key, wherever that is */
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256] = "";
    assert_int_equal(load(&al, "allowlist:\n- address: a.example\n  port: 1\n", err, sizeof err),
                     0);
    assert_int_equal(
        load(&al, "allowlist:\n-   address: a.example\n    port: 1\n", err, sizeof err), 0);
    proxy_allowlist_free(&al);
}

/* Every truncation of a valid file either loads or fails cleanly (ASan watches). */
static void test_yaml_every_prefix(void **state)
{
    (void)state;
    const char *text = "allowlist:\n"
                       "- {address: a.example, port: 443}   # c\n"
                       "- address: \"b.example\"\n"
                       "  port: 8443\n";
    size_t n = strlen(text);
    for (size_t i = 0; i <= n; i++) {
        proxy_allowlist al;
        proxy_allowlist_init(&al);
        char err[256];
        char *copy = malloc(i ? i : 1);
        assert_non_null(copy);
        memcpy(copy, text, i);
        int rc = proxy_allowlist_load_yaml(&al, "p", copy, i, err, sizeof err);
        assert_true(rc == 0 || rc == -1);
        if (rc == 0)
            assert_true(al.n_entries >= 1);
        free(copy);
        proxy_allowlist_free(&al);
    }
}

static void test_yaml_file(void **state)
{
    (void)state;
    char path[] = "/tmp/veil-allowlist-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "allowlist:\n- {address: file.example, port: 443}\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256] = "";
    assert_int_equal(proxy_allowlist_load_file(&al, path, err, sizeof err), 0);
    assert_true(proxy_allowlist_match(&al, "file.example", 443));
    unlink(path);
    assert_int_equal(proxy_allowlist_load_file(&al, path, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    proxy_allowlist_free(&al);
}

static void test_match(void **state)
{
    (void)state;
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256] = "";
    assert_int_equal(proxy_allowlist_add_spec(&al, "Bedrock-Runtime.US-EAST-1.amazonaws.com.:443",
                                              err, sizeof err), 0);
    assert_int_equal(proxy_allowlist_add_spec(&al, "[::FFFF:10.1.2.3]:8443", err, sizeof err), 0);
    assert_int_equal(proxy_allowlist_add_spec(&al, "192.0.2.7:80", err, sizeof err), 0);
    assert_int_equal(proxy_allowlist_add(&al, "2001:db8::1", 443, err, sizeof err), 0);
    assert_int_equal(proxy_allowlist_add(&al, "bedrock-runtime.us-east-1.amazonaws.com", 443,
                                         err, sizeof err), 0); /* duplicate: ignored */
    assert_int_equal(al.n_entries, 4);

    const char *h = "bedrock-runtime.us-east-1.amazonaws.com";
    assert_true(proxy_allowlist_match(&al, h, 443));
    assert_true(proxy_allowlist_match(&al, "BEDROCK-runtime.us-east-1.AMAZONAWS.com", 443));
    assert_true(proxy_allowlist_match(&al, "bedrock-runtime.us-east-1.amazonaws.com.", 443));
    assert_false(proxy_allowlist_match(&al, "bedrock-runtime.us-east-1.amazonaws.com..", 443));
    assert_false(proxy_allowlist_match(&al, h, 80)); /* the original allowed any port */
    assert_false(proxy_allowlist_match(&al, h, 8443));
    assert_false(proxy_allowlist_match(&al, "x.bedrock-runtime.us-east-1.amazonaws.com", 443));
    assert_false(proxy_allowlist_match(&al, "bedrock-runtime.us-east-1.amazonaws.co", 443));
    assert_false(proxy_allowlist_match(&al, "bedrock-runtime.us-east-1.amazonaws.com.evil", 443));
    assert_false(proxy_allowlist_match(&al, "", 443));
    assert_false(proxy_allowlist_match(&al, ".", 443));
    assert_false(proxy_allowlist_match(&al, NULL, 443));
    /* literals are stored in the parser's canonical spelling */
    assert_true(proxy_allowlist_match(&al, "::ffff:10.1.2.3", 8443));
    assert_true(proxy_allowlist_match(&al, "192.0.2.7", 80));
    assert_false(proxy_allowlist_match(&al, "192.0.2.8", 80));
    assert_true(proxy_allowlist_match(&al, "2001:db8::1", 443));

    static const char *const BAD[] = {
        "host", "host:", "host:0", "host:65536", ":443", "[::1]443", "[::1", "a b:1",
        "host:443x", "host:-1", "a_b.example:1", "1.2.3:1", "0x7f000001:1", "[zz]:1",
        "user@host:1", "host/x:1", "::1:443", "",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        err[0] = '\0';
        if (proxy_allowlist_add_spec(&al, BAD[i], err, sizeof err) != -1 || !err[0])
            fail_msg("'%s' was accepted", BAD[i]);
    }
    assert_int_equal(al.n_entries, 4);
    assert_int_equal(proxy_allowlist_add(&al, "ok.example", 0, err, sizeof err), -1);
    assert_int_equal(proxy_allowlist_add(&al, "ok.example", 65536, err, sizeof err), -1);
    proxy_allowlist_free(&al);
}

static void test_default_region(void **state)
{
    (void)state;
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256] = "";
    assert_int_equal(proxy_allowlist_add_default(&al, "eu-west-1", err, sizeof err), 0);
    assert_true(proxy_allowlist_match(&al, "bedrock-runtime.eu-west-1.amazonaws.com", 443));
    assert_false(proxy_allowlist_match(&al, "bedrock-runtime.us-east-1.amazonaws.com", 443));
    assert_int_equal(proxy_allowlist_add_default(&al, "bad region", err, sizeof err), -1);
    assert_int_equal(proxy_allowlist_add_default(&al, "", err, sizeof err), -1);
    proxy_allowlist_free(&al);
}

typedef struct special_case {
    const char *ip;
    const char *want; /* NULL: ordinary */
} special_case;

static void test_special_v4(void **state)
{
    (void)state;
    static const special_case CASES[] = {
        {"8.8.8.8", NULL},
        {"52.94.133.131", NULL},
        {"1.1.1.1", NULL},
        {"0.0.0.0", "unspecified"},
        {"0.1.2.3", "this-network"},
        {"127.0.0.1", "loopback"},
        {"127.255.255.254", "loopback"},
        {"169.254.169.254", "link-local"}, /* EC2 IMDS */
        {"169.254.0.1", "link-local"},
        {"169.253.255.255", NULL},
        {"169.255.0.0", NULL},
        {"10.0.0.1", "private"},
        {"10.255.255.255", "private"},
        {"11.0.0.0", NULL},
        {"172.15.255.255", NULL},
        {"172.16.0.0", "private"},
        {"172.31.255.255", "private"},
        {"172.32.0.0", NULL},
        {"192.168.1.1", "private"},
        {"192.169.0.0", NULL},
        {"100.63.255.255", NULL},
        {"100.64.0.0", "shared"},
        {"100.127.255.255", "shared"},
        {"100.128.0.0", NULL},
        {"224.0.0.1", "multicast"},
        {"239.255.255.255", "multicast"},
        {"240.0.0.1", "reserved"},
        {"255.255.255.255", "broadcast"},
        {"223.255.255.255", NULL},
        /* the rest of the IANA special-purpose registry (not globally reachable) */
        {"198.17.255.255", NULL},
        {"198.18.0.0", "benchmarking"},
        {"198.19.255.255", "benchmarking"},
        {"198.20.0.0", NULL},
        {"191.255.255.255", NULL},
        {"192.0.0.0", "ietf-protocol"},
        {"192.0.0.170", "ietf-protocol"}, /* NAT64 prefix discovery */
        {"192.0.0.255", "ietf-protocol"},
        {"192.0.1.0", NULL},
        {"192.0.2.1", "documentation"},
        {"198.51.100.7", "documentation"},
        {"203.0.113.255", "documentation"},
        {"203.0.114.0", NULL},
        {"192.88.99.1", "6to4-relay"},
        {"192.31.196.1", NULL}, /* AS112: a globally reachable anycast service */
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const char *got = special(CASES[i].ip);
        if ((got == NULL) != (CASES[i].want == NULL) ||
            (got && strcmp(got, CASES[i].want) != 0))
            fail_msg("%s: got %s, want %s", CASES[i].ip, got ? got : "ordinary",
                     CASES[i].want ? CASES[i].want : "ordinary");
    }
}

static void test_special_v6(void **state)
{
    (void)state;
    static const special_case CASES[] = {
        {"2001:4860:4860::8888", NULL},
        {"2600:1f18::1", NULL},
        {"::", "unspecified"},
        {"::1", "loopback"},
        {"fe80::1", "link-local"},
        {"febf::1", "link-local"},
        {"fec0::1", "site-local"},
        {"fc00::1", "unique-local"},
        {"fd00:ec2::254", "unique-local"}, /* IMDS over IPv6 */
        {"ff02::1", "multicast"},
        /* IPv4-mapped: judged by the IPv4 address */
        {"::ffff:127.0.0.1", "loopback"},
        {"::ffff:169.254.169.254", "link-local"},
        {"::ffff:10.1.2.3", "private"},
        {"::ffff:100.64.1.1", "shared"},
        {"::ffff:0.0.0.0", "unspecified"},
        {"::ffff:255.255.255.255", "broadcast"},
        {"::ffff:224.0.0.1", "multicast"},
        {"::ffff:8.8.8.8", NULL},
        /* IPv4-compatible (deprecated): never ordinary */
        {"::127.0.0.1", "loopback"},
        {"::8.8.8.8", "reserved"},
        /* NAT64 and 6to4 carry an IPv4 address too */
        {"64:ff9b::a9fe:a9fe", "link-local"},
        {"64:ff9b::7f00:1", "loopback"},
        {"64:ff9b::808:808", NULL},
        {"2002:a00:1::1", "private"},
        {"2002:7f00:1::", "loopback"},
        {"2002:808:808::1", NULL},
        {"64:ff9b::c612:1", "benchmarking"},
        {"::ffff:192.0.0.170", "ietf-protocol"},
        {"2002:c000:201::", "documentation"},
        /* local-use NAT64, discard, Teredo and the rest of 2001::/23 */
        {"64:ff9b:1::a00:1", "local-nat64"},
        {"64:ff9b:1:ffff::808:808", "local-nat64"},
        {"64:ff9b:2::1", "reserved"},
        {"100::1", "discard"},
        {"100::ffff:ffff:ffff:ffff", "discard"},
        {"100:0:0:1::1", "reserved"},
        {"2001::1", "teredo"},
        {"2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"},
        {"2001:1::1", "ietf-protocol"},
        {"2001:2::1", "benchmarking"},
        {"2001:2:0:ffff::1", "benchmarking"},
        {"2001:2:1::1", "ietf-protocol"},
        {"2001:10::1", "ietf-protocol"},
        {"2001:1ff:ffff::1", "ietf-protocol"},
        {"2001:200::1", NULL},
        {"2001:db8::1", "documentation"},
        {"2001:db9::1", NULL},
        {"3fff::1", "documentation"},
        {"3fff:fff:ffff::1", "documentation"},
        {"3fff:1000::1", NULL},
        /* outside 2000::/3: nothing there is global unicast */
        {"5f00::1", "reserved"},
        {"4000::1", "reserved"},
        {"1fff:ffff::1", "reserved"},
        {"e000::1", "reserved"},
        {"::ffff:0:a00:1", "reserved"}, /* IPv4-translated (SIIT) */
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const char *got = special(CASES[i].ip);
        if ((got == NULL) != (CASES[i].want == NULL) ||
            (got && strcmp(got, CASES[i].want) != 0))
            fail_msg("%s: got %s, want %s", CASES[i].ip, got ? got : "ordinary",
                     CASES[i].want ? CASES[i].want : "ordinary");
    }
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNIX;
    assert_string_equal(proxy_allowlist_special(&sa), "unsupported-family");
    assert_string_equal(proxy_allowlist_special(NULL), "unsupported-family");
}

static void test_pins(void **state)
{
    (void)state;
    proxy_allowlist al;
    proxy_allowlist_init(&al);
    char err[256] = "";
    assert_int_equal(proxy_allowlist_add_pin(&al, "LocalHost.:8443:127.0.0.1", err, sizeof err), 0);
    assert_int_equal(
        proxy_allowlist_add_pin(&al, "api.example:443:[::1],10.0.0.7", err, sizeof err), 0);
    assert_int_equal(proxy_allowlist_add_pin(&al, "api.example:443:192.0.2.1", err, sizeof err), 0);
    assert_int_equal(al.n_pins, 4);

    proxy_pin out[8];
    assert_int_equal(proxy_allowlist_pinned(&al, "localhost", 8443, out, 8), 1);
    assert_int_equal(out[0].addr.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&out[0].addr)->sin_port), 8443);
    assert_int_equal(proxy_allowlist_pinned(&al, "LOCALHOST.", 8443, NULL, 0), 1);
    assert_int_equal(proxy_allowlist_pinned(&al, "localhost", 443, out, 8), 0);
    assert_int_equal(proxy_allowlist_pinned(&al, "other", 8443, out, 8), 0);
    assert_int_equal(proxy_allowlist_pinned(&al, "api.example", 443, out, 8), 3);
    assert_int_equal(out[0].addr.ss_family, AF_INET6); /* --resolve order */
    assert_int_equal(out[1].addr.ss_family, AF_INET);
    assert_int_equal(proxy_allowlist_pinned(&al, "api.example", 443, out, 1), 3);

    /* a pinned special address is allowed for its HOST:PORT only */
    struct sockaddr_storage lo = ip("127.0.0.1"), v6lo = ip("::1"), pub = ip("8.8.8.8");
    struct sockaddr_storage imds = ip("169.254.169.254"), priv = ip("10.0.0.7");
    assert_null(proxy_allowlist_check_addr(&al, "localhost", 8443, (struct sockaddr *)&lo));
    assert_null(proxy_allowlist_check_addr(&al, "LOCALHOST", 8443, (struct sockaddr *)&lo));
    assert_string_equal(proxy_allowlist_check_addr(&al, "localhost", 443, (struct sockaddr *)&lo),
                        "loopback");
    assert_string_equal(proxy_allowlist_check_addr(&al, "other", 8443, (struct sockaddr *)&lo),
                        "loopback");
    assert_string_equal(
        proxy_allowlist_check_addr(&al, "localhost", 8443, (struct sockaddr *)&v6lo), "loopback");
    assert_null(proxy_allowlist_check_addr(&al, "api.example", 443, (struct sockaddr *)&v6lo));
    assert_null(proxy_allowlist_check_addr(&al, "api.example", 443, (struct sockaddr *)&priv));
    assert_string_equal(proxy_allowlist_check_addr(&al, "api.example", 443,
                                                   (struct sockaddr *)&imds),
                        "link-local");
    assert_null(proxy_allowlist_check_addr(&al, "anything", 1, (struct sockaddr *)&pub));
    assert_string_equal(proxy_allowlist_check_addr(NULL, "x", 1, (struct sockaddr *)&imds),
                        "link-local");

    static const char *const BAD[] = {
        "localhost:8443",           "localhost:8443:",       "localhost::127.0.0.1",
        "localhost:0:127.0.0.1",    "localhost:x:127.0.0.1", ":8443:127.0.0.1",
        "localhost:8443:1.2.3",     "localhost:8443:[zz]",   "localhost:8443:127.0.0.1,",
        "127.0.0.1:80:127.0.0.1",   "[::1]:80:127.0.0.1",    "*:80:127.0.0.1",
        "+localhost:80:127.0.0.1",  "a_b:80:127.0.0.1",      "localhost:8443:host.example",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        err[0] = '\0';
        if (proxy_allowlist_add_pin(&al, BAD[i], err, sizeof err) != -1 || !err[0])
            fail_msg("'%s' was accepted", BAD[i]);
    }
    assert_int_equal(proxy_allowlist_add_pin(&al, NULL, err, sizeof err), -1);
    assert_int_equal(al.n_pins, 4);
    proxy_allowlist_free(&al);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_flow),
        cmocka_unit_test(test_yaml_block),
        cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_yaml_every_prefix),
        cmocka_unit_test(test_yaml_file),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_default_region),
        cmocka_unit_test(test_special_v4),
        cmocka_unit_test(test_special_v6),
        cmocka_unit_test(test_pins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
