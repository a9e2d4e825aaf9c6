#!/bin/sh
# Throwaway PKI for the TLS tests: gen_certs.sh DIR
#   ca.pem/ca.key            test CA (RSA)
#   server.pem/server.key    RSA leaf, SAN DNS:server.test, IP:127.0.0.1, IP:::1 (signed by ca)
#   server-ec.pem/.key       ECDSA P-256 leaf, same SANs (signed by ca)
#   client.pem/client.key   client leaf, SAN DNS:client.test (signed by ca)
#   other-ca.pem, other.pem/other.key   an unrelated CA and a server.test leaf it signed
set -eu
d=$1
mkdir -p "$d"
cd "$d"
q() { "$@" >/dev/null 2>&1; }
ca() { # name subject
    q openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.pem" -days 2 \
        -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign
}
leaf() { # name ca keyalg san
    if [ "$3" = ec ]; then
        q openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
            -out "$1.csr" -subj "/CN=$1"
    else
        q openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
    fi
    printf 'subjectAltName=%s\n' "$4" >"$1.ext"
    q openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
        -out "$1.pem" -days 2 -extfile "$1.ext"
    rm -f "$1.csr" "$1.ext"
}
ca ca "socktap test CA"
ca other-ca "unrelated CA"
leaf server ca rsa "DNS:server.test,IP:127.0.0.1,IP:::1"
leaf server-ec ca ec "DNS:server.test,IP:127.0.0.1,IP:::1"
leaf client ca rsa "DNS:client.test"
leaf other other-ca rsa "DNS:server.test,IP:127.0.0.1"
chmod 600 ./*.key
