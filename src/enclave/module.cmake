# src/enclave: protocol.c is the enclave protocol as one typed contract (its own small
# library: veild, the CLI and veil-load speak it without the enclave core); the rest
# is the enclave core (commands, chat pipeline) and the veil-enclave server.
add_library(veil_protocol STATIC ${CMAKE_SOURCE_DIR}/src/enclave/protocol.c)
target_include_directories(veil_protocol PUBLIC ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(veil_protocol PUBLIC veil_crypto veil_common PkgConfig::JANSSON)

file(GLOB _enclave_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/enclave/*.c)
list(FILTER _enclave_srcs EXCLUDE REGEX "(_main|/protocol)\\.c$")
add_library(veil_enclave STATIC ${_enclave_srcs})
target_include_directories(veil_enclave PUBLIC ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(veil_enclave PUBLIC veil_protocol veil_attest veil_aws veil_crypto veil_common PkgConfig::EVENT
                      PkgConfig::JANSSON)
list(PREPEND VEIL_LIBS veil_enclave veil_protocol)
