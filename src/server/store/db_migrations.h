/* db_migrations — the schema migrations embedded in the binary at build time.
 * src/server/store/migrations.cmake generates the table from every
 * src/server/store/migrations/<backend>/NNN_name.sql (backend "sqlite" | "postgresql"),
 * in file-name order. Each entry's sql is one list of statements. Read-only.
 */
#ifndef VEIL_SERVER_DB_MIGRATIONS_H
#define VEIL_SERVER_DB_MIGRATIONS_H

#include <stddef.h>

typedef struct db_migration {
    const char *backend; /* "sqlite" | "postgresql" */
    int version;         /* NNN */
    const char *name;    /* the file name */
    const char *sql;
} db_migration;

extern const db_migration db_migrations[];
extern const size_t db_migrations_count;

#endif
