#!/usr/bin/env bash
# A small certificate authority for a fleet's MQTT broker, with OpenSSL:
#   make-certs.sh OUT_DIR BROKER_NAME [CLIENT_NAME...]
# OUT_DIR/ca.crt and ca.key (keep ca.key offline), broker.crt and broker.key for the broker
# at BROKER_NAME (a host name or an IP address: clients check that the certificate names it),
# and NAME.crt / NAME.key for each client (a device id, or "operator"), for brokers that ask
# for client certificates. An existing CA in OUT_DIR is reused, so clients can be added later.
# Certificates are valid for DAYS days (default 825). For a large fleet, use your own PKI.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 OUT_DIR BROKER_NAME [CLIENT_NAME...]" >&2
    exit 2
fi
out="$1" broker="$2"
shift 2
days="${DAYS:-825}"
mkdir -p "$out"
cd "$out"
umask 077  # private keys readable by their owner only

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME USAGE SAN: NAME.crt for NAME.key, signed by the CA
sign() {
    local ext
    ext="$(mktemp)"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=$2" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" \
        ${3:+"subjectAltName=$3"} > "$ext"
    openssl req -new -key "$1.key" -subj "/CN=$1" 2>/dev/null |
        openssl x509 -req -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -extfile "$ext" \
            -out "$1.crt" 2>/dev/null
    rm -f "$ext"
    chmod 644 "$1.crt"
}

if [ ! -f ca.key ]; then
    key ca.key
    openssl req -x509 -new -key ca.key -subj "/CN=edgefleet MQTT CA" -days "$days" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out ca.crt 2>/dev/null
    chmod 644 ca.crt
fi
if [[ "$broker" =~ ^[0-9.]+$ || "$broker" == *:* ]]; then san="IP:$broker"; else san="DNS:$broker"; fi
key broker.key
sign broker serverAuth "$san"
for name in "$@"; do
    key "$name.key"
    sign "$name" clientAuth ""
done
echo "made in $out: ca.crt, broker.crt/.key for $broker${*:+, and a certificate for each of: $*}"
