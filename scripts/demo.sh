#!/usr/bin/env bash
# The embedded-default demo: the first-contact loop, end to end, on config.toml (SQLite).
#   1. alice@example.org is a subscriber with a key; bob@example.net is a stranger.
#   2. Alice's first mail to Bob is signed, not encrypted (no certificate for Bob yet).
#   3. Bob (played by the openssl command line) replies signed; the relay verifies the reply
#      and harvests his certificate.
#   4. Alice's next mail to Bob is signed and encrypted; openssl decrypts it as Bob would.
# The demo PKI is made with openssl under var/demo/pki; everything the relay keeps is in var/.
set -euo pipefail
bin=${1:-.venv/bin}
cd "$(dirname "$0")/.."
if ! command -v openssl >/dev/null; then
    # The demo plays Bob's mail client with the openssl command line.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
    else
        echo "the demo plays Bob with openssl: sudo apt-get install openssl" >&2
        exit 1
    fi
fi
sealrelay=("$bin/sealrelay" -c config.toml)
demo=var/demo
pki=$demo/pki
rm -rf "$demo/out1" "$demo/out2" "$demo/inbound.eml"
mkdir -p "$pki"

step() { printf '\n== %s\n' "$*"; }

step "initialise var/ (database, master key)"
"${sealrelay[@]}" init

if [ ! -s "$pki/alice.p12" ]; then
    step "make a demo CA and certificates for alice@example.org and bob@example.net"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/O=sealrelay demo/CN=Demo CA" \
        -keyout "$pki/ca.key" -out "$pki/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    for who in alice@example.org bob@example.net; do
        name=${who%@*}
        openssl req -newkey rsa:2048 -nodes -subj "/O=sealrelay demo/CN=$name" \
            -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
        printf 'subjectAltName=email:%s\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n' \
            "$who" > "$pki/$name.ext"
        openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
            -CAcreateserial -days 365 -extfile "$pki/$name.ext" -out "$pki/$name.pem" 2>/dev/null
    done
    printf 'demo\n' > "$pki/password"
    openssl pkcs12 -export -inkey "$pki/alice.key" -in "$pki/alice.pem" -certfile "$pki/ca.pem" \
        -passout file:"$pki/password" -out "$pki/alice.p12"
    # Alice's key lives on only inside the relay, sealed under the master key (and in the
    # password-protected .p12); Bob's stays, since openssl plays his mail client.
    rm -f "$pki/alice.key" "$pki/ca.key"
fi

if [ ! -e "$demo/.registered" ]; then
    step "register Alice with her key, trust the demo CA"
    "${sealrelay[@]}" subscriber add alice@example.org --name Alice
    "${sealrelay[@]}" identity import "$pki/alice.p12" --password-file "$pki/password"
    "${sealrelay[@]}" cert import "$pki/ca.pem" --trust-anchor
    touch "$demo/.registered"
fi

step "Alice writes to Bob for the first time: signed, not encrypted"
"${sealrelay[@]}" process outbound --from alice@example.org --to bob@example.net \
    -i examples/demo/hello.eml -o "$demo/out1"

step "Bob replies, signed with his key (openssl plays Bob's mail client)"
{
    printf 'From: Bob <bob@example.net>\r\nTo: Alice <alice@example.org>\r\nSubject: Re: Hello from sealrelay\r\n'
    openssl cms -sign -signer "$pki/bob.pem" -inkey "$pki/bob.key" -crlfeol \
        -in <(printf 'Content-Type: text/plain\r\n\r\nHi Alice, got it. Bob\r\n')
} > "$demo/reply.eml"
"${sealrelay[@]}" process inbound --to alice@example.org -i "$demo/reply.eml" -o "$demo/inbound.eml"
grep '^X-Sealrelay' "$demo/inbound.eml"

step "Alice writes again: Bob's certificate was harvested, so now signed and encrypted"
"${sealrelay[@]}" process outbound --from alice@example.org --to bob@example.net \
    -i examples/demo/hello.eml -o "$demo/out2"

step "Bob decrypts it with openssl"
openssl cms -decrypt -in "$demo"/out2/*.eml -recip "$pki/bob.pem" -inkey "$pki/bob.key" \
    | openssl cms -verify -CAfile "$pki/ca.pem" -out /dev/null
echo
echo "Done. Messages are under $demo/; every step is in var/audit.jsonl."
