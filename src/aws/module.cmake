# src/aws: SigV4, event-stream codec, HTTP/1 + CONNECT parsing, HTTPS client, Bedrock, IMDSv2
veil_module(veil_aws src/aws veil_crypto veil_common ZLIB::ZLIB OpenSSL::SSL OpenSSL::Crypto
            PkgConfig::EVENT PkgConfig::JANSSON)
list(PREPEND VEIL_LIBS veil_aws)
