# src/attest: the NSM client (device, simulator, none) and the attestation document
# verifier (COSE_Sign1 ES384, the X.509 chain to the pinned AWS Nitro root, the policy)
veil_module(veil_attest src/attest veil_crypto veil_common OpenSSL::Crypto PkgConfig::JANSSON
            Threads::Threads)
list(PREPEND VEIL_LIBS veil_attest)
