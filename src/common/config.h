/* config — process configuration from the environment and an optional `.env`.
 *
 * The environment wins over `.env`: config_load_dotenv() only sets variables
 * that are not already set. Getters parse strictly and report bad values;
 * nothing here logs values (some are secrets).
 */
#ifndef VEIL_CONFIG_H
#define VEIL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* Loads KEY=VALUE lines (`export ` prefix, # comments, blank lines, single or
 * double quotes allowed). A missing file is not an error (returns 0).
 * Returns -1 and fills err on a malformed line. */
int config_load_dotenv(const char *path, char *err, size_t errlen);

/* The value of name, or def when unset or empty. */
const char *config_str(const char *name, const char *def);

/* Integer in [min, max]; def when unset. Returns -1 and fills err on a bad value. */
int config_long(const char *name, long def, long min, long max, long *out, char *err, size_t errlen);

/* true/false/1/0/yes/no/on/off (case-insensitive); def when unset. */
int config_bool(const char *name, bool def, bool *out, char *err, size_t errlen);

/* Strict decimal parse of a whole string into [min, max]. */
int parse_long(const char *s, long min, long max, long *out);

#endif
