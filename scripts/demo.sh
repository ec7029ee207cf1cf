#!/usr/bin/env bash
# The embedded-default demo: the first-contact loop, end to end, on config.toml (SQLite).
#   1. alice@example.org becomes a subscriber and gets a key and a certificate from the
#      relay's own CA at once; bob@example.net is a stranger with a certificate of his own.
#   2. Alice's first mail to Bob is signed, not encrypted (no certificate for Bob yet).
#   3. Bob (played by the openssl command line) replies signed; the relay verifies the reply
#      and harvests his certificate.
#   4. Alice's next mail to Bob is signed and encrypted; openssl decrypts it as Bob would and
#      verifies Alice's signature against the relay's CA certificate (`sealrelay ca export`).
# Bob's PKI is made with openssl under var/demo/pki; everything the relay keeps is in var/.
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

step "initialise var/ (database, master key, the relay's CA, the key pool)"
"${sealrelay[@]}" init

if [ ! -s "$pki/bob.pem" ]; then
    step "make Bob's CA and his certificate (his side, not the relay's)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/O=sealrelay demo/CN=Bob's CA" \
        -keyout "$pki/ca.key" -out "$pki/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/O=sealrelay demo/CN=bob" \
        -keyout "$pki/bob.key" -out "$pki/bob.csr" 2>/dev/null
    printf 'subjectAltName=email:bob@example.net\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n' \
        > "$pki/bob.ext"
    openssl x509 -req -in "$pki/bob.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 365 -extfile "$pki/bob.ext" -out "$pki/bob.pem" 2>/dev/null
    rm -f "$pki/ca.key"
fi

if [ ! -e "$demo/.registered" ]; then
    step "register Alice: a key pair from the pool, a certificate from the relay's CA, at once"
    "${sealrelay[@]}" subscriber add alice@example.org --name Alice --provision
    step "trust Bob's CA, as an operator does for a partner"
    "${sealrelay[@]}" cert import "$pki/ca.pem" --trust-anchor
    touch "$demo/.registered"
fi
"${sealrelay[@]}" ca export -o "$demo/relay-ca.pem"

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
    | openssl cms -verify -CAfile "$demo/relay-ca.pem" -out /dev/null
echo
echo "Done. Messages are under $demo/; every step is in var/audit.jsonl."
