#!/usr/bin/env bash
# Dovecot for sealrelay's end-to-end tests: IMAP on 127.0.0.1:$IMAP_PORT and LMTP on
# 127.0.0.1:$LMTP_PORT, Maildir under DIR; users alice@example.org, bob@example.org and
# carol@example.net (passwords alicepw, bobpw, carolpw), plaintext auth, no TLS.
# usage: scripts/services/dovecot-up.sh [DIR]
#        (DIR default /tmp/sealrelay-services/dovecot; IMAP_PORT=10143 LMTP_PORT=10024)
# Installs dovecot-imapd/-lmtpd when missing. Idempotent: a running instance is reloaded.
# Prints one line of KEY=VALUE on stdout; everything else goes to stderr. Stop: dovecot-down.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
DIR=${1:-/tmp/sealrelay-services/dovecot}; IMAP_PORT=${IMAP_PORT:-10143}; LMTP_PORT=${LMTP_PORT:-10024}

SCRIPT=dovecot-up SERVICE_LOG="$DIR/dovecot.log"
# shellcheck source=scripts/services/_lib.sh
. "$(dirname "$0")/_lib.sh"

apt_need dovecot-imapd dovecot-lmtpd
# Mail processes may not run as root (nor below first_valid_uid): a 'vmail' system user.
id vmail >/dev/null 2>&1 || useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin vmail
mkdir -p "$DIR/run" "$DIR/state" "$DIR/mail"; chown vmail:vmail "$DIR/mail"
# A fixed user list (a passwd-file passdb); LMTP refuses unknown users at RCPT.
cat >"$DIR/users" <<'EOF'
alice@example.org:{PLAIN}alicepw
bob@example.org:{PLAIN}bobpw
carol@example.net:{PLAIN}carolpw
EOF
chmod 644 "$DIR/users"
# Standalone config: nothing from /etc/dovecot is read.
cat >"$DIR/dovecot.conf" <<EOF
base_dir = $DIR/run
state_dir = $DIR/state
log_path = $DIR/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 100
passdb {
  driver = passwd-file
  args = scheme=PLAIN $DIR/users
}
userdb {
  driver = static
  args = uid=vmail gid=vmail home=$DIR/mail/%d/%n
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
protocol lmtp {
  auth_username_format = %Lu
}
EOF
if pid_alive "$DIR/run/master.pid"; then
  dovecot -c "$DIR/dovecot.conf" reload
else
  rm -f "$DIR/run/master.pid"
  port_open "$IMAP_PORT" && die "port $IMAP_PORT already in use"
  # Dovecot keeps the stderr it was started with: redirect it, or a caller reading our
  # output through a pipe would wait for Dovecot to exit.
  dovecot -c "$DIR/dovecot.conf" </dev/null >>"$DIR/dovecot.log" 2>&1 || die "dovecot did not start"
fi
wait_port "$IMAP_PORT" || die "IMAP not listening on $IMAP_PORT"
wait_port "$LMTP_PORT" || die "LMTP not listening on $LMTP_PORT"
python3 - "$IMAP_PORT" <<'EOF' >&2 || die "IMAP login failed"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]), timeout=10)
m.login("alice@example.org", "alicepw"); assert m.select("INBOX")[0] == "OK"; m.logout()
EOF
log "pid $(cat "$DIR/run/master.pid"), log $DIR/dovecot.log"
echo "IMAP=127.0.0.1:$IMAP_PORT LMTP=127.0.0.1:$LMTP_PORT"
