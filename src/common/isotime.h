/* isotime — the one time format on veil's wires: RFC 3339 / ISO 8601 in UTC, as AWS
 * writes credential expirations (IMDS, SET_CREDENTIALS). Pure; no allocation.
 */
#ifndef VEIL_COMMON_ISOTIME_H
#define VEIL_COMMON_ISOTIME_H

#include <time.h>

/* Parses YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00); -1 on error. */
time_t time_parse_iso8601(const char *s);

#endif
