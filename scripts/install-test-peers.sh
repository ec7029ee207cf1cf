#!/usr/bin/env bash
# The programs the tests run as peers: OpenSSL and GnuPG's gpgsm (S/MIME interop), Postfix and
# Dovecot (the mail system sealrelay sits in), make. Installs only what is missing, as root.
set -euo pipefail
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v gpgsm >/dev/null || missing+=(gpgsm)
command -v make >/dev/null || missing+=(make)
[ -x /usr/sbin/postfix ] || missing+=(postfix)
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
[ -e /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: missing ${missing[*]}; install them (sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    # Postfix asks how to configure itself on install; the tests write their own config.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi
