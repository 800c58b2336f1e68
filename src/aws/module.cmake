# src/aws: SigV4, the event-stream codec, Bedrock, IMDSv2
veil_module(veil_aws src/aws veil_net veil_crypto veil_common ZLIB::ZLIB OpenSSL::Crypto
            PkgConfig::EVENT PkgConfig::JANSSON)
list(PREPEND VEIL_LIBS veil_aws)
