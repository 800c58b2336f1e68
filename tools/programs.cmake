# tools/: local stand-ins for AWS, used by tests, benchmarks and the local stack.
# sim_http (connection layer) and sim_creds (seeded credentials) are shared by both.
add_library(veil_sim STATIC ${CMAKE_SOURCE_DIR}/tools/sim_http.c
                            ${CMAKE_SOURCE_DIR}/tools/sim_creds.c)
target_include_directories(veil_sim PUBLIC ${CMAKE_SOURCE_DIR}/tools ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(veil_sim PUBLIC ${VEIL_LIBS} PkgConfig::EVENT OpenSSL::SSL OpenSSL::Crypto)

add_executable(veil-bedrock-sim ${CMAKE_SOURCE_DIR}/tools/bedrock_sim_main.c
                                ${CMAKE_SOURCE_DIR}/tools/bedrock_sim.c)
target_link_libraries(veil-bedrock-sim PRIVATE veil_sim ${VEIL_LIBS} PkgConfig::EVENT
                      PkgConfig::JANSSON)

add_executable(veil-imds-sim ${CMAKE_SOURCE_DIR}/tools/imds_sim_main.c)
target_link_libraries(veil-imds-sim PRIVATE veil_sim ${VEIL_LIBS} PkgConfig::EVENT)

add_executable(veil-load ${CMAKE_SOURCE_DIR}/tools/veil_load.c ${CMAKE_SOURCE_DIR}/tools/load_enclave.c
                         ${CMAKE_SOURCE_DIR}/tools/load_through.c ${CMAKE_SOURCE_DIR}/tools/load_users.c
                         ${CMAKE_SOURCE_DIR}/tools/load_http.c
                         ${CMAKE_SOURCE_DIR}/tools/load_report.c ${CMAKE_SOURCE_DIR}/tools/bedrock_sim.c)
target_link_libraries(veil-load PRIVATE veil_protocol veil_aws veil_auth veil_net veil_crypto veil_common
                      PkgConfig::EVENT PkgConfig::JANSSON OpenSSL::Crypto m)
