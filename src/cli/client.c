#include "cli/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attest/measurements.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/hex.h"
#include "net/https_pool.h"

#define MAX_BODY (64u << 20)

bool vclient_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

int vclient_init(vclient *c, const char *url, const char *token, const char *ca_file, char *err,
                 size_t errlen)
{
    memset(c, 0, sizeof *c);
    const char *p;
    if (strlen(url) >= sizeof c->url) {
        snprintf(err, errlen, "server URL too long");
        return -1;
    }
    snprintf(c->url, sizeof c->url, "%s", url);
    if (strncasecmp(url, "https://", 8) == 0) {
        c->tls = true;
        p = url + 8;
        c->port = 443;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        c->port = 80;
    } else {
        snprintf(err, errlen, "server URL must start with http:// or https://");
        return -1;
    }
    bool bracket = *p == '['; /* an IPv6 literal: [::1]:8000 */
    size_t hl = bracket ? strcspn(p + 1, "]/") : strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof c->host || (bracket && p[1 + hl] != ']')) {
        snprintf(err, errlen, "server URL has no host");
        return -1;
    }
    memcpy(c->host, p + bracket, hl);
    p += hl + 2 * bracket;
    if (strchr(c->host, '@')) {
        snprintf(err, errlen, "server URL must not contain a user name");
        return -1;
    }
    /* plain http carries the bearer token and the wrapped keys in clear: only to this machine */
    if (!c->tls && !vclient_host_is_loopback(c->host)) {
        snprintf(err, errlen,
                 "refusing %s: plain http:// is allowed only to this machine (localhost, 127.0.0.0/8, ::1); "
                 "use https://",
                 url);
        return -1;
    }
    if (*p == ':') {
        long port;
        char num[8];
        size_t nl = strcspn(p + 1, "/");
        if (nl == 0 || nl >= sizeof num) {
            snprintf(err, errlen, "server URL has a bad port");
            return -1;
        }
        memcpy(num, p + 1, nl);
        num[nl] = '\0';
        if (parse_long(num, 1, 65535, &port) < 0) {
            snprintf(err, errlen, "server URL has a bad port");
            return -1;
        }
        c->port = (uint16_t)port;
        p += 1 + nl;
    }
    snprintf(c->prefix, sizeof c->prefix, "%s", p);
    size_t pl = strlen(c->prefix);
    while (pl && c->prefix[pl - 1] == '/')
        c->prefix[--pl] = '\0';
    if (token && strlen(token) >= sizeof c->token) {
        snprintf(err, errlen, "token too long");
        return -1;
    }
    snprintf(c->token, sizeof c->token, "%s", token ? token : "");
    c->timeout_ms = 120000;
    c->base = event_base_new();
    if (!c->base || !(c->https = https_ctx_new(c->base, ca_file, err, errlen))) {
        vclient_free(c);
        return -1;
    }
    return 0;
}

void vclient_free(vclient *c)
{
    vclient_unpin(c);
    cookie_jar_clear(&c->cookies);
    https_ctx_free(c->https);
    if (c->base)
        event_base_free(c->base);
    OPENSSL_cleanse(c->token, sizeof c->token);
    c->https = NULL;
    c->base = NULL;
}

int vclient_pin(vclient *c, char *err, size_t errlen)
{
    if (c->pin)
        return 0;
    https_pool_config pc = https_pool_config_default();
    pc.max_idle = 1; /* one server, one call at a time */
    c->pin = https_pool_new(c->https, &pc, err, errlen);
    return c->pin ? 0 : -1;
}

void vclient_unpin(vclient *c)
{
    https_pool_free(c->pin); /* closes the kept connection */
    c->pin = NULL;
}

/* ---- one request on the private loop ---- */

typedef struct call {
    cookie_jar *cookies; /* the client's: what Set-Cookie says is kept for the next call */
    vbuf body;
    int status;
    bool done;
    https_err herr;
    char detail[200];
    bool sse;
    vclient_sse_cb cb;
    void *ud;
    size_t scanned;
    bool stopped;
} call;

static int on_head(void *ud, const http1_response *resp)
{
    call *k = ud;
    k->status = resp->status;
    for (size_t i = 0; i < resp->headers.n; i++) {
        const http1_header *h = &resp->headers.h[i];
        if (h->name_len == 10 && strncasecmp(h->name, "Set-Cookie", 10) == 0)
            cookie_jar_set(k->cookies, h->value, h->value_len); /* malformed ones are ignored */
    }
    return 0;
}

/* Delivers every complete `data:` event in the buffer. */
static int sse_pump(call *k)
{
    for (;;) {
        uint8_t *d = k->body.data;
        size_t n = k->body.len;
        const uint8_t *end = NULL;
        size_t sep = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (d[i] == '\n' && d[i + 1] == '\n') {
                end = d + i;
                sep = 2;
                break;
            }
        }
        if (!end)
            return 0;
        size_t evlen = (size_t)(end - d);
        /* one event: lines; we use only data: lines (comments are keep-alives) */
        vbuf data = VBUF_INIT;
        for (size_t i = 0; i < evlen;) {
            size_t j = i;
            while (j < evlen && d[j] != '\n')
                j++;
            if (j - i >= 5 && memcmp(d + i, "data:", 5) == 0) {
                size_t s = i + 5;
                if (s < j && d[s] == ' ')
                    s++;
                if (data.len)
                    vbuf_append(&data, "\n", 1);
                vbuf_append(&data, d + s, j - s);
            }
            i = j + 1;
        }
        int stop = 0;
        if (data.len) {
            json_t *ev = json_loadb((const char *)data.data, data.len, 0, NULL);
            if (ev) {
                stop = k->cb(k->ud, ev);
                json_decref(ev);
            }
        }
        vbuf_free(&data);
        vbuf_consume(&k->body, evlen + sep);
        if (stop) {
            k->stopped = true;
            return 1;
        }
    }
}

static int on_body(void *ud, const uint8_t *data, size_t len)
{
    call *k = ud;
    if (k->body.len + len > MAX_BODY || vbuf_append(&k->body, data, len) < 0)
        return 1;
    if (k->sse && k->status == 200)
        return sse_pump(k);
    return 0;
}

static void on_done(void *ud, https_err e, const char *detail)
{
    call *k = ud;
    k->done = true;
    k->herr = e;
    snprintf(k->detail, sizeof k->detail, "%s", detail ? detail : "");
}

/* "cannot reach the veil server at URL: connection refused", and for a server on
 * this machine, how to start one. The reason is the last part of the transport's
 * detail ("connect to HOST: Connection refused"): the OS's own words. */
static void unreachable(const vclient *c, const call *k, char *err, size_t errlen)
{
    char why[200];
    const char *colon = strrchr(k->detail, ':');
    if (k->herr == HTTPS_ERR_TIMEOUT_CONNECT)
        snprintf(why, sizeof why, "connection timed out");
    else
        snprintf(why, sizeof why, "%s", colon && colon[1] == ' ' ? colon + 2 : k->detail);
    if (why[0] >= 'A' && why[0] <= 'Z' && why[1] >= 'a' && why[1] <= 'z')
        why[0] = (char)(why[0] - 'A' + 'a');
    snprintf(err, errlen, "cannot reach the veil server at %s: %s%s", c->url, why,
             vclient_host_is_loopback(c->host) ? " (is veild running? `make run` starts the local stack)" : "");
}

static int run(vclient *c, const char *method, const char *path, const json_t *body, call *k,
               char *err, size_t errlen)
{
    char target[1024], auth[16400], cookie[COOKIE_HEADER_MAX];
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    snprintf(target, sizeof target, "%s%s", c->prefix, path);
    k->cookies = &c->cookies;
    https_header hh[4];
    size_t nh = 0;
    if (c->token[0]) {
        snprintf(auth, sizeof auth, "Bearer %s", c->token);
        hh[nh++] = (https_header){"Authorization", auth};
    }
    hh[nh++] = (https_header){"Accept", k->sse ? "text/event-stream" : "application/json"};
    if (payload)
        hh[nh++] = (https_header){"Content-Type", "application/json"};
    if (cookie_jar_header(&c->cookies, cookie, sizeof cookie))
        hh[nh++] = (https_header){"Cookie", cookie};
    https_request req = {
        .tls = c->tls, .host = c->host, .port = c->port, .method = method, .target = target,
        .headers = hh, .n_headers = nh, .body = (const uint8_t *)payload,
        .body_len = payload ? strlen(payload) : 0, .connect_timeout_ms = 10000,
        .idle_timeout_ms = c->timeout_ms, .pool = c->pin,
    };
    static const https_callbacks cb = {on_head, on_body, on_done};
    https_conn *conn = https_start(c->https, &req, &cb, k, err, errlen);
    OPENSSL_cleanse(auth, sizeof auth);
    if (payload) {
        OPENSSL_cleanse(payload, strlen(payload));
        free(payload);
    }
    if (!conn)
        return -1;
    while (!k->done)
        event_base_loop(c->base, EVLOOP_ONCE);
    if (k->herr == HTTPS_ERR_CONNECT || k->herr == HTTPS_ERR_TIMEOUT_CONNECT) {
        unreachable(c, k, err, errlen);
        return -1;
    }
    if (k->herr != HTTPS_OK && !(k->stopped && k->herr == HTTPS_ERR_ABORTED)) {
        snprintf(err, errlen, "%s: %s", https_strerror(k->herr), k->detail);
        return -1;
    }
    return 0;
}

int vclient_call(vclient *c, const char *method, const char *path, const json_t *body, int *status,
                 json_t **resp, char *err, size_t errlen)
{
    call k;
    memset(&k, 0, sizeof k);
    *resp = NULL;
    int rc = run(c, method, path, body, &k, err, errlen);
    if (rc == 0) {
        *status = k.status;
        if (k.body.len)
            *resp = json_loadb((const char *)k.body.data, k.body.len, 0, NULL);
    }
    vbuf_free_secure(&k.body);
    return rc;
}

int vclient_stream(vclient *c, const char *path, const json_t *body, vclient_sse_cb cb, void *ud,
                   int *status, json_t **resp, char *err, size_t errlen)
{
    call k;
    memset(&k, 0, sizeof k);
    k.sse = true;
    k.cb = cb;
    k.ud = ud;
    *resp = NULL;
    int rc = run(c, "POST", path, body, &k, err, errlen);
    if (rc == 0) {
        *status = k.status;
        if (k.status != 200 && k.body.len)
            *resp = json_loadb((const char *)k.body.data, k.body.len, 0, NULL);
    }
    vbuf_free_secure(&k.body);
    return rc;
}

/* ---- config file ---- */

const char *cli_config_path(char *out, size_t n)
{
    const char *explicit = getenv("VEIL_CONFIG");
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    if (explicit && *explicit)
        snprintf(out, n, "%s", explicit);
    else if (xdg && *xdg)
        snprintf(out, n, "%s/veil/config.json", xdg);
    else
        snprintf(out, n, "%s/.config/veil/config.json", home ? home : ".");
    return out;
}

const char *cli_config_sibling(const char *name, char *out, size_t n)
{
    char cfg[600];
    cli_config_path(cfg, sizeof cfg);
    char *slash = strrchr(cfg, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, n, "%s/%s", slash ? cfg : ".", name);
    return out;
}

static void copy_field(const json_t *j, const char *k, char *out, size_t n)
{
    const char *v = json_string_value(json_object_get(j, k));
    if (v && strlen(v) < n)
        snprintf(out, n, "%s", v);
}

/* ---- the attestation policy in the config: nitro-cli's Measurements object, a PEM root ---- */

#define CFG_MEASUREMENTS "measurements"
#define CFG_ROOT "attestation_root"
#define HASH_ALGORITHM "Sha384 { ... }" /* as nitro-cli prints it */

static json_t *measurements_json(const cli_config *cfg)
{
    json_t *m = json_pack("{s:s}", "HashAlgorithm", HASH_ALGORITHM);
    for (size_t i = 0; m && i < cfg->n_pcrs; i++) {
        char k[8], h[2 * ATTEST_MAX_PCR_LEN + 1];
        snprintf(k, sizeof k, "PCR%u", cfg->pcrs[i].index);
        hex_encode(cfg->pcrs[i].value, cfg->pcrs[i].len, h);
        json_object_set_new(m, k, json_string(h));
    }
    return m;
}

/* The stored object goes through the same strict parser as a nitro-cli file. */
static int measurements_from_json(json_t *m, cli_config *cfg, char *err, size_t errlen)
{
    char why[256];
    json_t *doc = json_pack("{s:O}", "Measurements", m);
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    int rc = s ? attest_measurements_parse(s, strlen(s), cfg->pcrs, &cfg->n_pcrs, why, sizeof why) : -1;
    if (rc < 0) {
        cfg->n_pcrs = 0;
        snprintf(err, errlen, "the measurements stored in the config are malformed (%s): run `veil login "
                              "--measurements FILE` again", s ? why : "out of memory");
    }
    free(s);
    return rc;
}

static char *root_pem(const uint8_t *der, size_t len)
{
    const uint8_t *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL, *data;
    if (x && bio && PEM_write_bio_X509(bio, x) == 1) {
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0 && (out = malloc((size_t)n + 1))) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(bio);
    X509_free(x);
    return out;
}

static int root_from_pem(const char *pem, cli_config *cfg, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    uint8_t *der = NULL;
    int len = x ? i2d_X509(x, &der) : -1;
    int rc = -1;
    if (len > 0 && (size_t)len <= sizeof cfg->root_der) {
        memcpy(cfg->root_der, der, (size_t)len);
        cfg->root_der_len = (size_t)len;
        rc = 0;
    } else {
        snprintf(err, errlen, "the attestation root stored in the config is not one PEM certificate: run "
                              "`veil login --attestation-root PEM` again");
    }
    OPENSSL_free(der);
    X509_free(x);
    BIO_free(bio);
    return rc;
}

int cli_config_load_file(cli_config *cfg, char *err, size_t errlen)
{
    char path[600];
    memset(cfg, 0, sizeof *cfg);
    json_t *j = json_load_file(cli_config_path(path, sizeof path), 0, NULL);
    if (!j)
        return 0;
    copy_field(j, "server", cfg->server, sizeof cfg->server);
    copy_field(j, "token", cfg->token, sizeof cfg->token);
    copy_field(j, "ca_file", cfg->ca_file, sizeof cfg->ca_file);
    json_t *m = json_object_get(j, CFG_MEASUREMENTS);
    const char *root = json_string_value(json_object_get(j, CFG_ROOT));
    int rc = 0;
    if (m && !json_is_null(m))
        rc = measurements_from_json(m, cfg, err, errlen);
    if (rc == 0 && json_object_get(j, CFG_ROOT) && !json_is_null(json_object_get(j, CFG_ROOT)))
        rc = root ? root_from_pem(root, cfg, err, errlen) : (snprintf(err, errlen, "the attestation root "
                                                                      "stored in the config is not a string"), -1);
    json_decref(j);
    return rc;
}

int cli_config_load(cli_config *cfg, char *err, size_t errlen)
{
    if (cli_config_load_file(cfg, err, errlen) < 0)
        return -1;
    const char *v;
    if ((v = getenv("VEIL_SERVER")) && *v)
        snprintf(cfg->server, sizeof cfg->server, "%s", v);
    if ((v = getenv("VEIL_TOKEN")) && *v && strlen(v) < sizeof cfg->token)
        snprintf(cfg->token, sizeof cfg->token, "%s", v);
    if ((v = getenv("VEIL_CA_FILE")) && *v)
        snprintf(cfg->ca_file, sizeof cfg->ca_file, "%s", v);
    if (!cfg->server[0]) {
        snprintf(err, errlen, "no server configured: run `veil login --server URL --token TOKEN` first");
        return -1;
    }
    return 0;
}

static int mkdirs_for(const char *file)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(dir, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/* The temp file, created 0600 from the start (the token is a credential), as a
 * new file and never through a symbolic link: a link planted there would send
 * the token wherever it points. A stale temp file of ours (a crash) is replaced. */
static int open_new(const char *tmp, char *err, size_t errlen)
{
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(tmp, flags, 0600);
    if (fd < 0 && errno == EEXIST) {
        struct stat st;
        if (lstat(tmp, &st) == 0 && (S_ISLNK(st.st_mode) || !S_ISREG(st.st_mode) || st.st_uid != geteuid())) {
            snprintf(err, errlen, "refusing to write %s: it is %s; remove it", tmp,
                     S_ISLNK(st.st_mode) ? "a symbolic link" : !S_ISREG(st.st_mode) ? "not a regular file"
                                                                                    : "not yours");
            return -1;
        }
        unlink(tmp); /* ours, left by a crash */
        fd = open(tmp, flags, 0600);
    }
    if (fd < 0)
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    return fd;
}

int cli_config_save(const cli_config *cfg, char *err, size_t errlen)
{
    char path[600], tmp[620];
    cli_config_path(path, sizeof path);
    if (mkdirs_for(path) < 0) {
        snprintf(err, errlen, "cannot create the directory of %s: %s", path, strerror(errno));
        return -1;
    }
    json_t *j = json_pack("{s:s, s:s}", "server", cfg->server, "token", cfg->token);
    if (cfg->ca_file[0])
        json_object_set_new(j, "ca_file", json_string(cfg->ca_file));
    if (cfg->n_pcrs)
        json_object_set_new(j, CFG_MEASUREMENTS, measurements_json(cfg));
    if (cfg->root_der_len) {
        char *pem = root_pem(cfg->root_der, cfg->root_der_len);
        if (!pem) {
            json_decref(j);
            snprintf(err, errlen, "the attestation root is not a certificate");
            return -1;
        }
        json_object_set_new(j, CFG_ROOT, json_string(pem));
        free(pem);
    }
    char *s = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open_new(tmp, err, errlen);
    int rc = -1;
    if (fd >= 0) {
        size_t n = strlen(s);
        rc = write(fd, s, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fchmod(fd, 0600) == 0 ? 0 : -1;
        rc |= close(fd);
        if (rc == 0 && rename(tmp, path) < 0)
            rc = -1;
    }
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
    if (rc < 0 && fd >= 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    return rc;
}

int vclient_from_config(vclient *c, char *err, size_t errlen)
{
    cli_config cfg;
    if (cli_config_load(&cfg, err, errlen) < 0)
        return -1;
    int rc = vclient_init(c, cfg.server, cfg.token, cfg.ca_file[0] ? cfg.ca_file : NULL, err, errlen);
    OPENSSL_cleanse(&cfg, sizeof cfg);
    return rc;
}
