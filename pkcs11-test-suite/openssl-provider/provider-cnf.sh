# provider_cnf cache module pin-file: an openssl.cnf that loads pkcs11-provider (from build.sh's
# cache) over `module`, logging in with the PIN in `pin-file`; on stdout. Sourced by run.sh and
# bench.sh. No pkcs11-module-quirks: the module needs none (docs/consumers/openssl-provider.md).
# shellcheck shell=bash
provider_cnf() {
    cat <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect
[default_sect]
activate = 1
[pkcs11_sect]
module = $1/pkcs11.so
pkcs11-module-path = $2
pkcs11-module-token-pin = file:$3
activate = 1
CNF
}
