/* log — one line per event on stderr: `ts=… level=… prog=… rid=… <fields>`.
 *
 * Callers pass key=value fields through a printf format, and log_emit formats it
 * itself: every %s (and %.*s) is a VALUE and is escaped, so no value can end the line
 * or forge a field (`type=x\nevent=admin_login` stays one quoted value). A value with
 * a space, '=', '"', '\' or a byte outside printable ASCII is written in double
 * quotes with `\"`, `\\`, `\n`, `\r`, `\t` and `\xNN` escapes; where the format
 * already quotes it (`detail=\"%s\"`) only the escapes are added. Never pass
 * plaintext, keys or tokens: no level and no flag makes that safe. The request id
 * ties the lines of one request together.
 */
#ifndef VEIL_LOG_H
#define VEIL_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF } log_level;

#define LOG_RID_LEN 16      /* hex chars in a request id */
#define LOG_LINE_MAX 2048   /* bytes of one line, newline included; the rest is cut */
#define LOG_VALUE_MAX 1024  /* bytes one value may take as written (quotes and escapes
                             * included); a longer one ends in `...` */

/* prog names the program in every line; the level comes from VEIL_LOG_LEVEL
 * (debug|info|warn|error|off), default info. */
void log_init(const char *prog);
void log_set_level(log_level lvl);
int log_level_parse(const char *s, log_level *out);
bool log_enabled(log_level lvl);
void log_set_fd(int fd);
/* The calling thread's worker index, written as `worker=N` after prog in each of
 * its lines (a program with one event loop per thread); -1 (the default): none. */
void log_set_worker(int index);

/* Writes a fresh random request id (LOG_RID_LEN hex chars + NUL) into out. */
void log_new_rid(char out[LOG_RID_LEN + 1]);

/* fmt is a printf format (checked by -Wformat). Conversions other than %s are
 * formatted as printf formats them; %s values are escaped as described above. The
 * written line holds only printable ASCII and its final newline. */
void log_emit(log_level lvl, const char *rid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(rid, ...) do { if (log_enabled(LOG_DEBUG)) log_emit(LOG_DEBUG, rid, __VA_ARGS__); } while (0)
#define log_info(rid, ...)  do { if (log_enabled(LOG_INFO))  log_emit(LOG_INFO, rid, __VA_ARGS__); } while (0)
#define log_warn(rid, ...)  do { if (log_enabled(LOG_WARN))  log_emit(LOG_WARN, rid, __VA_ARGS__); } while (0)
#define log_error(rid, ...) do { if (log_enabled(LOG_ERROR)) log_emit(LOG_ERROR, rid, __VA_ARGS__); } while (0)

#endif
