/* tagrec — the last history tag per session, on this machine (see tagrec.h). */
#include "cli/tagrec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "common/hex.h"

#define LINE_MAX_LEN (CLI_ID_MAX + 2 * HISTORY_TAG_LEN + 2)
#define FILE_MAX ((size_t)TAGREC_MAX_SESSIONS * LINE_MAX_LEN)
#define REMEDY "move it away to start a new record"

typedef struct rec {
    char id[CLI_ID_MAX];
    uint8_t tag[HISTORY_TAG_LEN];
} rec;

const char *tagrec_path(char *out, size_t n)
{
    char cfg[600];
    cli_config_path(cfg, sizeof cfg);
    char *slash = strrchr(cfg, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, n, "%s/history_tags", slash ? cfg : ".");
    return out;
}

/* Parses the file's lines into recs (room for TAGREC_MAX_SESSIONS). */
static int parse(const char *path, char *text, size_t len, rec *recs, size_t *n, char *err, size_t errlen)
{
    *n = 0;
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        if (!nl)
            break; /* a cut last line (a full disk): the rest stands */
        *nl = '\0';
        char *sp = strchr(line, ' ');
        if (!sp || *n == TAGREC_MAX_SESSIONS)
            goto bad;
        *sp = '\0';
        if (!cli_id_ok(line) || hex_decode_exact(sp + 1, strlen(sp + 1), recs[*n].tag, HISTORY_TAG_LEN) < 0)
            goto bad;
        snprintf(recs[(*n)++].id, CLI_ID_MAX, "%s", line);
        line = nl + 1;
    }
    return 0;
bad:
    snprintf(err, errlen, "the history record %s is malformed (" REMEDY ")", path);
    return -1;
}

/* The whole record: 0 (a missing file is an empty record) or -1 with err. */
static int load(rec *recs, size_t *n, char *err, size_t errlen)
{
    char path[640];
    struct stat st;
    tagrec_path(path, sizeof path);
    *n = 0;
    /* O_NONBLOCK: a FIFO planted here must not hang the client */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd < 0) {
        snprintf(err, errlen, errno == ELOOP ? "refusing the history record %s: it is a symbolic link (" REMEDY ")"
                                             : "cannot read the history record %s: %s",
                 path, strerror(errno));
        return -1;
    }
    int rc = -1;
    char *text = NULL;
    if (fstat(fd, &st) < 0)
        snprintf(err, errlen, "cannot read the history record %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        snprintf(err, errlen, "refusing the history record %s: not a regular file (" REMEDY ")", path);
    else if (st.st_uid != geteuid())
        snprintf(err, errlen, "refusing the history record %s: owned by uid %u, not by you (" REMEDY ")", path,
                 (unsigned)st.st_uid);
    else if (st.st_mode & 077) /* whoever else may change it could hide a removed exchange */
        snprintf(err, errlen, "refusing the history record %s: mode %04o; it must be 0600 (" REMEDY ")", path,
                 (unsigned)(st.st_mode & 07777));
    else if ((size_t)st.st_size > FILE_MAX)
        snprintf(err, errlen, "the history record %s is larger than %zu bytes (" REMEDY ")", path, FILE_MAX);
    else if (!(text = malloc((size_t)st.st_size + 1)))
        snprintf(err, errlen, "out of memory");
    else if (read(fd, text, (size_t)st.st_size) != (ssize_t)st.st_size)
        snprintf(err, errlen, "cannot read the history record %s", path);
    else
        rc = parse(path, text, (size_t)st.st_size, recs, n, err, errlen);
    free(text);
    close(fd);
    return rc;
}

int tagrec_get(const char *session_id, uint8_t tag[HISTORY_TAG_LEN], char *err, size_t errlen)
{
    rec *recs = malloc(TAGREC_MAX_SESSIONS * sizeof *recs);
    size_t n;
    if (!recs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = load(recs, &n, err, errlen) < 0 ? -1 : 1;
    for (size_t i = 0; rc == 1 && i < n; i++)
        if (strcmp(recs[i].id, session_id) == 0) {
            memcpy(tag, recs[i].tag, HISTORY_TAG_LEN);
            rc = 0;
        }
    free(recs);
    return rc;
}

/* A new file for the record, never through a link; a stale one of ours is replaced. */
static int open_new(const char *tmp, char *err, size_t errlen)
{
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(tmp, flags, 0600);
    struct stat st;
    if (fd < 0 && errno == EEXIST && lstat(tmp, &st) == 0) {
        if (S_ISLNK(st.st_mode) || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
            snprintf(err, errlen, "refusing to write %s: it is %s; remove it", tmp,
                     S_ISLNK(st.st_mode) ? "a symbolic link" : !S_ISREG(st.st_mode) ? "not a regular file"
                                                                                    : "not yours");
            return -1;
        }
        unlink(tmp);
        fd = open(tmp, flags, 0600);
    }
    if (fd < 0)
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    return fd;
}

static int save(const rec *recs, size_t n, char *err, size_t errlen)
{
    char path[640], tmp[660], line[LINE_MAX_LEN + 1];
    tagrec_path(path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open_new(tmp, err, errlen);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    bool ok = f != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        size_t l = strlen(recs[i].id);
        memcpy(line, recs[i].id, l);
        line[l] = ' ';
        hex_encode(recs[i].tag, HISTORY_TAG_LEN, line + l + 1);
        ok = fprintf(f, "%s\n", line) > 0;
    }
    ok = f && fflush(f) == 0 && fsync(fd) == 0 && ok;
    ok = (f ? fclose(f) : close(fd)) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return 0;
    snprintf(err, errlen, "cannot write the history record %s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
}

/* The lock serialises writers; readers see either the old or the new file. */
static int lock(char *err, size_t errlen)
{
    char path[660];
    tagrec_path(path, sizeof path);
    strncat(path, ".lock", sizeof path - strlen(path) - 1);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0 && flock(fd, LOCK_EX) == 0)
        return fd;
    snprintf(err, errlen, "cannot lock the history record %s: %s%s", path, strerror(errno),
             errno == ELOOP ? " (a symbolic link: remove it)" : errno == ENOENT ? " (run veil login first)" : "");
    if (fd >= 0)
        close(fd);
    return -1;
}

int tagrec_put(const char *session_id, const uint8_t tag[HISTORY_TAG_LEN], char *err, size_t errlen)
{
    if (!cli_id_ok(session_id)) {
        snprintf(err, errlen, "not a session id");
        return -1;
    }
    rec *recs = malloc((TAGREC_MAX_SESSIONS + 1) * sizeof *recs);
    size_t n = 0, kept = 0;
    int lk = recs ? lock(err, errlen) : -1, rc = -1;
    if (!recs)
        snprintf(err, errlen, "out of memory");
    if (lk < 0 || load(recs, &n, err, errlen) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) /* drop the session's old line: its new one goes last */
        if (strcmp(recs[i].id, session_id) != 0)
            recs[kept++] = recs[i];
    snprintf(recs[kept].id, CLI_ID_MAX, "%s", session_id);
    memcpy(recs[kept].tag, tag, HISTORY_TAG_LEN);
    kept++;
    size_t drop = kept > TAGREC_MAX_SESSIONS ? kept - TAGREC_MAX_SESSIONS : 0;
    rc = save(recs + drop, kept - drop, err, errlen);
out:
    if (lk >= 0)
        close(lk); /* releases the lock */
    free(recs);
    return rc;
}
