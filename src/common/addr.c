#include "common/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/config.h"

#define SET_ERR(...) snprintf(err, errlen, __VA_ARGS__)

int fd_set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return fcntl(fd, F_SETFL, fl);
}

static int parse_tcp(const char *s, veil_addr *a, char *err, size_t errlen)
{
    const char *colon;
    const char *host = s;
    size_t hlen;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') {
            SET_ERR("tcp address: expected [IPV6]:PORT");
            return -1;
        }
        host = s + 1;
        hlen = (size_t)(rb - host);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            SET_ERR("tcp address: expected HOST:PORT");
            return -1;
        }
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen)) {
            SET_ERR("tcp address: put an IPv6 host in brackets");
            return -1;
        }
    }
    if (hlen == 0 || hlen >= sizeof a->host) {
        SET_ERR("tcp address: bad host length");
        return -1;
    }
    long port;
    if (parse_long(colon + 1, 0, 65535, &port) < 0) {
        SET_ERR("tcp address: port must be 0..65535");
        return -1;
    }
    memcpy(a->host, host, hlen);
    a->host[hlen] = '\0';
    a->port = (uint16_t)port;
    a->kind = ADDR_TCP;
    return 0;
}

static int parse_vsock(const char *s, veil_addr *a, char *err, size_t errlen)
{
    const char *colon = strchr(s, ':');
    if (!colon || strchr(colon + 1, ':')) {
        SET_ERR("vsock address: expected CID:PORT");
        return -1;
    }
    char cid[16];
    size_t clen = (size_t)(colon - s);
    if (clen == 0 || clen >= sizeof cid) {
        SET_ERR("vsock address: bad CID");
        return -1;
    }
    memcpy(cid, s, clen);
    cid[clen] = '\0';
    long v;
    if (strcasecmp(cid, "ANY") == 0)
        a->cid = VSOCK_CID_ANY;
    else if (parse_long(cid, 0, 0xFFFFFFFFL, &v) == 0)
        a->cid = (uint32_t)v;
    else {
        SET_ERR("vsock address: CID must be a number or ANY");
        return -1;
    }
    if (parse_long(colon + 1, 0, 0xFFFFFFFFL, &v) < 0) {
        SET_ERR("vsock address: port must be a number");
        return -1;
    }
    a->vport = (uint32_t)v;
    a->kind = ADDR_VSOCK;
    return 0;
}

int addr_parse(const char *s, veil_addr *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    if (!s) {
        SET_ERR("address missing");
        return -1;
    }
    if (strncmp(s, "tcp:", 4) == 0)
        return parse_tcp(s + 4, a, err, errlen);
    if (strncmp(s, "vsock:", 6) == 0)
        return parse_vsock(s + 6, a, err, errlen);
    if (strncmp(s, "unix:", 5) == 0) {
        size_t n = strlen(s + 5);
        if (n == 0 || n >= sizeof a->path || (s[5] == '@' && n < 2)) {
            SET_ERR("unix address: path must be 1..%zu bytes", sizeof a->path - 1);
            return -1;
        }
        memcpy(a->path, s + 5, n + 1);
        a->kind = ADDR_UNIX;
        return 0;
    }
    SET_ERR("address must start with tcp:, unix: or vsock:");
    return -1;
}

const char *addr_format(const veil_addr *a, char *out, size_t n)
{
    switch (a->kind) {
    case ADDR_TCP:
        snprintf(out, n, strchr(a->host, ':') ? "tcp:[%s]:%u" : "tcp:%s:%u", a->host, a->port);
        break;
    case ADDR_UNIX:
        snprintf(out, n, "unix:%s", a->path);
        break;
    case ADDR_VSOCK:
        if (a->cid == VSOCK_CID_ANY)
            snprintf(out, n, "vsock:ANY:%u", a->vport);
        else
            snprintf(out, n, "vsock:%u:%u", a->cid, a->vport);
        break;
    default:
        snprintf(out, n, "?");
    }
    return out;
}

static socklen_t unix_sockaddr(const veil_addr *a, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    size_t n = strlen(a->path);
    memcpy(sun->sun_path, a->path, n);
    if (a->path[0] == '@')
        sun->sun_path[0] = '\0'; /* abstract: the name is not NUL-terminated */
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (a->path[0] == '@' ? 0 : 1));
}

static void vsock_sockaddr(const veil_addr *a, struct sockaddr_vm *svm)
{
    memset(svm, 0, sizeof *svm);
    svm->svm_family = AF_VSOCK;
    svm->svm_cid = a->cid;
    svm->svm_port = a->vport;
}

/* A unix socket file left by a dead process: remove it, but never a live one. */
static void unlink_stale_unix(const veil_addr *a)
{
    struct stat st;
    if (a->path[0] == '@' || stat(a->path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct sockaddr_un sun;
    socklen_t len = unix_sockaddr(a, &sun);
    if (connect(fd, (struct sockaddr *)&sun, len) < 0 && errno == ECONNREFUSED)
        unlink(a->path);
    close(fd);
}

/* getaddrinfo for a tcp address; NULL with err filled on failure. */
static struct addrinfo *resolve(const veil_addr *a, int flags, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = flags}, *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", a->port);
    int gai = getaddrinfo(a->host, port, &hints, &res);
    if (gai != 0) {
        SET_ERR("resolve %s: %s", a->host, gai_strerror(gai));
        return NULL;
    }
    return res;
}

static int listen_on(int fd, const struct sockaddr *sa, socklen_t len, int backlog, char *err,
                     size_t errlen)
{
    if (bind(fd, sa, len) < 0) {
        SET_ERR("bind: %s", strerror(errno));
        return -1;
    }
    if (listen(fd, backlog) < 0) {
        SET_ERR("listen: %s", strerror(errno));
        return -1;
    }
    if (fd_set_nonblock(fd, true) < 0) {
        SET_ERR("fcntl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int addr_listen(const veil_addr *a, int backlog, char *err, size_t errlen)
{
    int fd = -1;
    if (a->kind == ADDR_UNIX) {
        unlink_stale_unix(a);
        struct sockaddr_un sun;
        socklen_t len = unix_sockaddr(a, &sun);
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
            goto sock_fail;
        if (listen_on(fd, (struct sockaddr *)&sun, len, backlog, err, errlen) < 0)
            goto fail;
        return fd;
    }
    if (a->kind == ADDR_VSOCK) {
        struct sockaddr_vm svm;
        vsock_sockaddr(a, &svm);
        if ((fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
            goto sock_fail;
        if (listen_on(fd, (struct sockaddr *)&svm, sizeof svm, backlog, err, errlen) < 0)
            goto fail;
        return fd;
    }
    if (a->kind != ADDR_TCP) {
        SET_ERR("bad address kind");
        return -1;
    }
    struct addrinfo *res = resolve(a, AI_PASSIVE, err, errlen);
    if (!res)
        return -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (listen_on(fd, ai->ai_addr, ai->ai_addrlen, backlog, err, errlen) == 0) {
            freeaddrinfo(res);
            return fd;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (!*err)
        SET_ERR("no usable address for %s", a->host);
    return -1;
sock_fail:
    SET_ERR("socket: %s", strerror(errno));
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

static int connect_one(int fd, const struct sockaddr *sa, socklen_t len, bool nonblock)
{
    if (nonblock && fd_set_nonblock(fd, true) < 0)
        return -1;
    int rc;
    do {
        rc = connect(fd, sa, len);
    } while (rc < 0 && errno == EINTR && !nonblock);
    if (rc < 0 && !(nonblock && errno == EINPROGRESS))
        return -1;
    return 0;
}

int addr_connect(const veil_addr *a, bool nonblock, char *err, size_t errlen)
{
    int fd = -1;
    if (a->kind == ADDR_UNIX || a->kind == ADDR_VSOCK) {
        struct sockaddr_un sun;
        struct sockaddr_vm svm;
        const struct sockaddr *sa;
        socklen_t len;
        if (a->kind == ADDR_UNIX) {
            len = unix_sockaddr(a, &sun);
            sa = (struct sockaddr *)&sun;
        } else {
            vsock_sockaddr(a, &svm);
            sa = (struct sockaddr *)&svm;
            len = sizeof svm;
        }
        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect_one(fd, sa, len, nonblock) < 0) {
            int e = errno; /* the caller tells a busy peer (EAGAIN) from an absent one */
            char tmp[160];
            SET_ERR("connect %s: %s", addr_format(a, tmp, sizeof tmp), strerror(e));
            if (fd >= 0)
                close(fd);
            errno = e;
            return -1;
        }
        return fd;
    }
    struct addrinfo *res = resolve(a, 0, err, errlen);
    if (!res)
        return -1;
    int last = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect_one(fd, ai->ai_addr, ai->ai_addrlen, nonblock) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            freeaddrinfo(res);
            return fd;
        }
        last = errno;
        close(fd);
    }
    freeaddrinfo(res);
    SET_ERR("connect %s:%u: %s", a->host, a->port, strerror(last));
    return -1;
}

int addr_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}
