# src/proxy: veil-proxy, the parent-side CONNECT proxy (allowlist + server + thin main)
add_library(veil_proxy_core STATIC src/proxy/allowlist.c src/proxy/allowlist_yaml.c src/proxy/proxy.c
            src/proxy/proxy_conn.c src/proxy/proxy_upstream.c)
target_include_directories(veil_proxy_core PUBLIC ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(veil_proxy_core PUBLIC veil_net veil_common PkgConfig::EVENT)
add_executable(veil-proxy src/proxy/veil_proxy_main.c)
target_link_libraries(veil-proxy PRIVATE veil_proxy_core)
list(PREPEND VEIL_LIBS veil_proxy_core)
