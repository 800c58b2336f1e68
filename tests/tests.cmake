# Unit tests mirror the sources: tests/unit/<module>/test_<file>.c tests
# src/<module>/<file>.c. Each is one cmocka program linked with all modules, run as
# the test unit/<module>/test_<file>, built as build/unit/<module>/test_<file>.
# One test is no file's: tests/unit/test_wipe.c checks a property of every module
# that holds a secret (no copy left in freed memory), across them all.
set(VEIL_FIXTURES ${CMAKE_SOURCE_DIR}/tests/fixtures)

# Link options of the few unit tests that wrap functions at link time (their
# seams), keyed by the test's path under tests/unit without .c, "/" as "_".
# test_wipe searches every block veil's code frees for a secret: free and realloc
# are wrapped at link time for that program only.
set(unit_link_options_test_wipe -Wl,--wrap=free -Wl,--wrap=realloc)
# libevent's blocks wiped before they are freed: evwipe's test sees every free
set(unit_link_options_net_test_evwipe -Wl,--wrap=free)
# the secret type's own test sees each free of the blocks it watches
set(unit_link_options_common_test_secret -Wl,--wrap=free)
# user_limits reads the monotonic clock: its test sets that clock by hand.
set(unit_link_options_server_http_test_user_limits -Wl,--wrap=clock_gettime)
# the refresher's clock, timer, IMDS and enclave client (tests/unit/server/link/test_refresher.c)
foreach(f time event_add event_del imds_fetch_credentials imds_cancel ec_set_credentials ec_op_cancel
          ec_on_restart)
  list(APPEND unit_link_options_server_link_test_refresher -Wl,--wrap=${f})
endforeach()
# the API layer's replies without a connection (tests/unit/server/http/api_capture.h)
set(api_capture -Wl,--wrap=httpd_respond -Wl,--wrap=httpd_header -Wl,--wrap=httpd_body)
set(unit_link_options_server_http_test_validate ${api_capture})
set(unit_link_options_server_http_test_routes_util ${api_capture})
foreach(f store_last_error store_membership_get store_memberships_for_user store_memberships_for_org
          store_begin store_commit store_rollback store_context_get store_context_put store_timed_out)
  list(APPEND unit_link_options_server_http_test_routes_util -Wl,--wrap=${f})
endforeach()

file(GLOB_RECURSE unit_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/unit/test_*.c)
foreach(src ${unit_tests})
  file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR}/tests/unit ${src})
  string(REGEX REPLACE "\\.c$" "" rel ${rel})           # crypto/test_ep
  get_filename_component(name ${src} NAME_WE)            # test_ep
  get_filename_component(dir ${rel} DIRECTORY)           # crypto ("" at the top)
  string(REPLACE "/" "_" target unit_${rel})             # unit_crypto_test_ep
  add_executable(${target} ${src})
  set_target_properties(${target} PROPERTIES OUTPUT_NAME ${name}
                        RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/unit/${dir})
  target_link_libraries(${target} PRIVATE ${VEIL_LIBS} PkgConfig::CMOCKA)
  target_compile_definitions(${target} PRIVATE VEIL_FIXTURES="${VEIL_FIXTURES}")
  string(REPLACE "/" "_" key ${rel})
  if(DEFINED unit_link_options_${key})
    target_link_options(${target} PRIVATE ${unit_link_options_${key}})
  endif()
  add_test(NAME unit/${rel} COMMAND ${target})
  set_tests_properties(unit/${rel} PROPERTIES LABELS unit TIMEOUT 300)
endforeach()

# attest/test_nsm checks the NSM messages against libcbor, an independent CBOR codec
# (the module itself does not link it).
pkg_check_modules(CBOR REQUIRED IMPORTED_TARGET libcbor)
target_link_libraries(unit_attest_test_nsm PRIVATE PkgConfig::CBOR)

# Integration tests: every tests/integration/test_*.sh or test_*.py starts real
# processes; every tests/integration/test_*.c is a cmocka driver that does the same.
set(VEIL_TEST_ENV "VEIL_BIN=${CMAKE_BINARY_DIR}" "VEIL_SRC=${CMAKE_SOURCE_DIR}"
                  "VEIL_FIXTURES=${VEIL_FIXTURES}")
file(GLOB integ_scripts CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/integration/test_*.sh
                                          ${CMAKE_SOURCE_DIR}/tests/integration/test_*.py)
foreach(src ${integ_scripts})
  get_filename_component(name ${src} NAME_WE)
  if(src MATCHES "\\.py$")
    add_test(NAME integration/${name} COMMAND /usr/bin/python3 ${src})
  else()
    add_test(NAME integration/${name} COMMAND /bin/bash ${src})
  endif()
  set_tests_properties(integration/${name} PROPERTIES LABELS integration TIMEOUT 600
                       ENVIRONMENT "${VEIL_TEST_ENV}")
endforeach()
# the browser test exits 77 (skipped) only when chromium or chromedriver is not installed
if(TEST integration/test_web)
  set_tests_properties(integration/test_web PROPERTIES SKIP_RETURN_CODE 77)
endif()
file(GLOB integ_c CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/integration/test_*.c)
foreach(src ${integ_c})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src} ${CMAKE_SOURCE_DIR}/tests/integration/harness.c ${CMAKE_SOURCE_DIR}/tests/integration/pg_harness.c)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/integration)
  target_link_libraries(${name} PRIVATE ${VEIL_LIBS} PkgConfig::CMOCKA)
  add_test(NAME integration/${name} COMMAND ${name})
  set_tests_properties(integration/${name} PROPERTIES LABELS integration TIMEOUT 600
                       ENVIRONMENT "${VEIL_TEST_ENV}")
endforeach()
# the enclave core's failure paths: seals fail on demand (the linker wraps them)
target_link_options(test_enclave_faults PRIVATE
                    -Wl,--wrap=ep_seal -Wl,--wrap=sv3_seal -Wl,--wrap=sv3_init_sender)

# Test-only driver for tests/integration/test_jwks.py: the JWKS cache on a real loop.
if(TARGET veil_server)
  add_executable(jwks_probe ${CMAKE_SOURCE_DIR}/tests/integration/jwks_probe.c)
  target_link_libraries(jwks_probe PRIVATE ${VEIL_LIBS} PkgConfig::EVENT)
endif()
