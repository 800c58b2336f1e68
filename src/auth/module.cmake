# src/auth: JWT (RS256), JWKS parsing and export, Svix webhook signatures (pure; the
# JWKS cache that fetches is veild's)
veil_module(veil_auth src/auth veil_common OpenSSL::Crypto PkgConfig::JANSSON)
list(PREPEND VEIL_LIBS veil_auth)
