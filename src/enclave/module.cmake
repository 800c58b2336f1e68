# src/enclave: the enclave core (commands, chat pipeline) and the veil-enclave server
veil_module(veil_enclave src/enclave veil_aws veil_crypto veil_common PkgConfig::EVENT PkgConfig::JANSSON)
list(PREPEND VEIL_LIBS veil_enclave)
