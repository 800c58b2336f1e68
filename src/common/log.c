#include "common/log.h"

#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/hex.h"

/* process-wide logging config: set once at start, read everywhere */
static log_level g_level = LOG_INFO;
static char g_prog[32] = "veil";
static int g_fd = STDERR_FILENO;

static const char *const LEVEL_NAMES[] = {"debug", "info", "warn", "error", "off"};

int log_level_parse(const char *s, log_level *out)
{
    for (int i = 0; i <= LOG_OFF; i++) {
        if (strcasecmp(s, LEVEL_NAMES[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_init(const char *prog)
{
    snprintf(g_prog, sizeof g_prog, "%s", prog);
    const char *lv = getenv("VEIL_LOG_LEVEL");
    log_level parsed;
    if (lv && *lv && log_level_parse(lv, &parsed) == 0)
        g_level = parsed;
}

void log_set_level(log_level lvl) { g_level = lvl; }
void log_set_fd(int fd) { g_fd = fd; }
bool log_enabled(log_level lvl) { return lvl >= g_level && lvl < LOG_OFF; }

void log_new_rid(char out[LOG_RID_LEN + 1])
{
    unsigned char r[LOG_RID_LEN / 2];
    if (RAND_bytes(r, sizeof r) != 1)
        memset(r, 0, sizeof r);
    hex_encode(r, sizeof r, out);
}

void log_emit(log_level lvl, const char *rid, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s prog=%s rid=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), LEVEL_NAMES[lvl], g_prog,
                     rid && *rid ? rid : "-");
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + ((size_t)m < sizeof line - (size_t)n - 1 ? (size_t)m : sizeof line - (size_t)n - 2);
    /* one event, one line: no embedded control characters survive */
    for (size_t i = (size_t)n; i < len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(g_fd, line, len);
    (void)w;
}
