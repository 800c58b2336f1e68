typedef int veil_crypto_placeholder;
