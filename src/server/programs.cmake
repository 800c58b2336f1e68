add_executable(veild src/server/veild_main.c)
target_link_libraries(veild PRIVATE veil_server veil_enclave veil_aws veil_crypto veil_common)
