# src/server: veild. store/ is the database (SQLite | PostgreSQL behind one function
# table, embedded migrations); http/ is the HTTP engine, the API layer and the routes;
# link/ is the enclave link (the enclave client, the credential refresher); the folder
# itself holds veild's assembly: settings, the JWKS cache, the caller identity and
# server_new/server_free.
find_package(SQLite3 REQUIRED)
find_package(PostgreSQL REQUIRED)
veil_module(veil_store src/server/store veil_common SQLite::SQLite3 PostgreSQL::PostgreSQL PkgConfig::JANSSON)
include(${CMAKE_SOURCE_DIR}/src/server/store/migrations.cmake)

file(GLOB _server_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/server/*.c ${CMAKE_SOURCE_DIR}/src/server/http/*.c
                  ${CMAKE_SOURCE_DIR}/src/server/link/*.c)
list(FILTER _server_srcs EXCLUDE REGEX "_main\\.c$")
add_library(veil_server STATIC ${_server_srcs})
target_include_directories(veil_server PUBLIC ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(veil_server PUBLIC veil_store veil_enclave veil_auth veil_aws veil_net veil_crypto
                      veil_common PkgConfig::EVENT PkgConfig::JANSSON)
list(PREPEND VEIL_LIBS veil_server veil_store)
