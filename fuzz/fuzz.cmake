# libFuzzer targets (make fuzz): the whole tree is built with coverage
# instrumentation and ASan+UBSan; each fuzz/fuzz_*.c becomes one fuzzer, and
# `ninja fuzzers` builds them alone (make fuzz: not the tests and programs).
add_custom_target(fuzzers)
file(GLOB fuzz_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/fuzz/fuzz_*.c)
foreach(src ${fuzz_srcs})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE ${VEIL_LIBS})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  add_dependencies(fuzzers ${name})
endforeach()
