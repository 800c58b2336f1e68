# src/net: HTTP/1 parsers and the HTTPS-over-CONNECT client (used by aws, the proxy,
# the CLI and veild)
veil_module(veil_net src/net veil_common OpenSSL::SSL OpenSSL::Crypto PkgConfig::EVENT)
list(PREPEND VEIL_LIBS veil_net)
