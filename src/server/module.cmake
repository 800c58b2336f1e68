# src/server: veild — HTTP routing, auth (JWT/JWKS, Svix), store (SQLite | PostgreSQL), routes, SSE
find_package(SQLite3 REQUIRED)
find_package(PostgreSQL REQUIRED)
veil_module(veil_server src/server veil_enclave veil_aws veil_crypto veil_common SQLite::SQLite3
            PostgreSQL::PostgreSQL PkgConfig::EVENT PkgConfig::JANSSON)
# schema migrations: every src/server/migrations/<backend>/NNN_*.sql, embedded at build time
include(${CMAKE_SOURCE_DIR}/src/server/migrations.cmake OPTIONAL)
list(PREPEND VEIL_LIBS veil_server)
