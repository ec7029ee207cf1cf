#!/usr/bin/env bash
# A private Postfix in front of sealrelay, for end-to-end tests, all on loopback: the classic
# after-queue content filter.
#   client -> 127.0.0.1:$SMTP_PORT (smtpd, content_filter = scan:[127.0.0.1]:$FILTER_PORT)
#          -> queue -> sealrelay on 127.0.0.1:$FILTER_PORT ([smtp] listen)
#          -> 127.0.0.1:$REINJECT_PORT (smtpd, no filter; sealrelay's [smtp] next_hop)
#          -> Dovecot LMTP on 127.0.0.1:$LMTP_PORT for example.org and example.net
# Other domains are refused, or relayed to RELAYHOST='[127.0.0.1]:PORT' when set.
# No DNS anywhere: inet_protocols=ipv4, smtp_dns_support_level=disabled, IP-literal next hops.
# usage: scripts/services/postfix-up.sh [DIR]   (DIR default /tmp/sealrelay-services/postfix;
#        SMTP_PORT=10525 FILTER_PORT=10025 REINJECT_PORT=10026 LMTP_PORT=10024)
# Installs postfix when missing. Idempotent: a running instance is reloaded.
# Prints one line of KEY=VALUE on stdout; everything else goes to stderr. Stop: postfix-down.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
DIR=${1:-/tmp/sealrelay-services/postfix}
SMTP_PORT=${SMTP_PORT:-10525}; FILTER_PORT=${FILTER_PORT:-10025}
REINJECT_PORT=${REINJECT_PORT:-10026}; LMTP_PORT=${LMTP_PORT:-10024}

SCRIPT=postfix-up SERVICE_LOG="$DIR/postfix.log"
# shellcheck source=scripts/services/_lib.sh
. "$(dirname "$0")/_lib.sh"

# "No configuration": the package writes no /etc/postfix/main.cf of its own.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt_need postfix
# Postfix is strict about ownership: config and queue root-owned, data postfix-owned.
mkdir -p "$DIR/etc" "$DIR/spool" "$DIR/data"
chown root:root "$DIR/etc" "$DIR/spool"; chown postfix: "$DIR/data"
printf '%s\n' 'alice@example.org OK' 'bob@example.org OK' 'carol@example.net OK' >"$DIR/etc/vmailbox"
if [ -n "${RELAYHOST:-}" ]; then OUTBOUND="relayhost = $RELAYHOST"
else OUTBOUND="default_transport = error:5.7.1 no external delivery from the test relay"; fi
cat >"$DIR/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $DIR/spool
data_directory = $DIR/data
maillog_file_prefixes = $DIR
maillog_file = $DIR/postfix.log
myhostname = mx.sealrelay.test
mydomain = sealrelay.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
smtputf8_enable = yes
virtual_mailbox_domains = example.org, example.net
virtual_mailbox_maps = texthash:$DIR/etc/vmailbox
virtual_transport = lmtp:inet:[127.0.0.1]:$LMTP_PORT
$OUTBOUND
# fast retries for tests (a filter that is down is tried again soon)
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
content_filter = scan:[127.0.0.1]:$FILTER_PORT
# never re-encode 8bit bodies on output: that would break S/MIME signatures
disable_mime_output_conversion = yes
EOF
# Our own master.cf without chroot (Debian's chroots smtpd, which needs /etc files copied).
cat >"$DIR/etc/master.cf" <<EOF
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
scan      unix  -  -  n  -  4  smtp
  -o disable_mime_output_conversion=yes
127.0.0.1:$REINJECT_PORT inet n - n - - smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions= -o smtpd_client_restrictions= -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
pickup    unix  n  -  n  60   1  pickup
cleanup   unix  n  -  n  -    0  cleanup
qmgr      unix  n  -  n  300  1  qmgr
rewrite   unix  -  -  n  -    -  trivial-rewrite
bounce    unix  -  -  n  -    0  bounce
defer     unix  -  -  n  -    0  bounce
trace     unix  -  -  n  -    0  bounce
verify    unix  -  -  n  -    1  verify
flush     unix  n  -  n  1000? 0 flush
proxymap  unix  -  -  n  -    -  proxymap
smtp      unix  -  -  n  -    -  smtp
relay     unix  -  -  n  -    -  smtp
showq     unix  n  -  n  -    -  showq
error     unix  -  -  n  -    -  error
retry     unix  -  -  n  -    -  error
discard   unix  -  -  n  -    -  discard
lmtp      unix  -  -  n  -    -  lmtp
anvil     unix  -  -  n  -    1  anvil
scache    unix  -  -  n  -    1  scache
postlog   unix-dgram n - n -  1  postlogd
EOF
# Postfix waits ~2 s for a main.cf changed within the last second to "settle": backdate it.
touch -d '1 minute ago' "$DIR/etc/main.cf" "$DIR/etc/master.cf" "$DIR/etc/vmailbox"
PIDF=$DIR/spool/pid/master.pid
if pid_alive "$PIDF"; then
  postfix -c "$DIR/etc" reload >&2
else
  port_open "$SMTP_PORT" && die "port $SMTP_PORT already in use"
  # Errors go to $DIR/postfix.log (or to a tty only: `script -qc "postfix -c DIR/etc check"`).
  postfix -c "$DIR/etc" start >&2 || die "postfix start failed"
fi
wait_port "$SMTP_PORT" || die "smtpd not listening on $SMTP_PORT"
wait_port "$REINJECT_PORT" || die "smtpd not listening on $REINJECT_PORT"
python3 - "$SMTP_PORT" "$REINJECT_PORT" <<'EOF' >&2 || die "smtpd not answering"
import smtplib, sys
for port in sys.argv[1:]:
    with smtplib.SMTP("127.0.0.1", int(port), local_hostname="localhost", timeout=10) as s:
        assert s.ehlo()[0] == 250
EOF
log "pid $(tr -d ' ' <"$PIDF"), log $DIR/postfix.log, queue: postqueue -c $DIR/etc -p"
echo "SMTP=127.0.0.1:$SMTP_PORT FILTER=127.0.0.1:$FILTER_PORT REINJECT=127.0.0.1:$REINJECT_PORT"
