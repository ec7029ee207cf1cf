#!/usr/bin/env bash
# The programs the tests run as peers: OpenSSL and GnuPG's gpgsm (S/MIME interop), make.
# Installs only what is missing, as root with apt-get.
set -euo pipefail
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v gpgsm >/dev/null || missing+=(gpgsm)
command -v make >/dev/null || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: missing ${missing[*]}; install them (sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
