# Unit tests: every tests/unit/test_*.c is one cmocka program linked with all modules.
set(VEIL_FIXTURES ${CMAKE_SOURCE_DIR}/tests/fixtures)
file(GLOB unit_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/unit/test_*.c)
foreach(src ${unit_tests})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE ${VEIL_LIBS} PkgConfig::CMOCKA)
  target_compile_definitions(${name} PRIVATE VEIL_FIXTURES="${VEIL_FIXTURES}")
  add_test(NAME unit/${name} COMMAND ${name})
  set_tests_properties(unit/${name} PROPERTIES LABELS unit TIMEOUT 300)
endforeach()

# test_wipe searches every block veil's code frees for a secret: free and realloc
# are wrapped at link time for that program only.
target_link_options(test_wipe PRIVATE -Wl,--wrap=free -Wl,--wrap=realloc)

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
                    -Wl,--wrap=ep_seal -Wl,--wrap=sv2_seal -Wl,--wrap=sv2_init_sender)

# Test-only driver for tests/integration/test_jwks.py: the JWKS cache on a real loop.
if(TARGET veil_server)
  add_executable(jwks_probe ${CMAKE_SOURCE_DIR}/tests/integration/jwks_probe.c)
  target_link_libraries(jwks_probe PRIVATE ${VEIL_LIBS} PkgConfig::EVENT)
endif()

# tests/unit/server/store/test_db.c, until the unit loop above descends into module folders;
# it includes db_cases.h from its own folder (tests/integration/test_store.c does too).
if(NOT TARGET test_db)
  add_executable(test_db ${CMAKE_SOURCE_DIR}/tests/unit/server/store/test_db.c)
  target_link_libraries(test_db PRIVATE ${VEIL_LIBS} PkgConfig::CMOCKA)
  add_test(NAME unit/test_db COMMAND test_db)
  set_tests_properties(unit/test_db PROPERTIES LABELS unit TIMEOUT 300)
endif()
