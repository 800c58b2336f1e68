# bench/: programs that print figures, never pass/fail (`make bench` runs every
# build/bench_*). Each bench/bench_*.c is one program linked with the project's
# libraries; VEIL_SOURCE_DIR and VEIL_BINARY_DIR let a bench find scripts and the
# programs of this build (bench_stack runs bench/stack.sh on them).
file(GLOB _bench_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/bench/bench_*.c)
foreach(_src ${_bench_srcs})
  get_filename_component(_name ${_src} NAME_WE)
  add_executable(${_name} ${_src})
  target_link_libraries(${_name} PRIVATE ${VEIL_LIBS})
  target_compile_definitions(${_name} PRIVATE VEIL_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
                             VEIL_BINARY_DIR="${CMAKE_BINARY_DIR}")
endforeach()

# the full-stack benches drive these programs: build them first
foreach(_bench bench_stack bench_through bench_workers)
  if(TARGET ${_bench})
    foreach(_prog veil-load veil-enclave veil-proxy veil-bedrock-sim veil-imds-sim veild veil)
      if(TARGET ${_prog})
        add_dependencies(${_bench} ${_prog})
      endif()
    endforeach()
  endif()
endforeach()
