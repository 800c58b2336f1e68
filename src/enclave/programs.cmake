add_executable(veil-enclave src/enclave/veil_enclave_main.c)
target_link_libraries(veil-enclave PRIVATE veil_enclave veil_aws veil_crypto veil_common)
