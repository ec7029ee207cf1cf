#!/usr/bin/env bash
# `make run`, second half: start the relay on the embedded default config (config.toml) in the
# foreground and say how to send it mail. scripts/demo.sh ran first: it initialised var/ and
# gave the demo sender alice@example.org her key, which the default policy (sign = "clear")
# needs. Ctrl-C (or SIGTERM) stops it cleanly. usage: scripts/serve-demo.sh [VENV_BIN]
set -euo pipefail
bin=${1:-.venv/bin}
cd "$(dirname "$0")/.."
sealrelay=("$bin/sealrelay" -c config.toml)

listen=$("$bin/python" -c 'import tomllib; print(tomllib.load(open("config.toml", "rb"))["smtp"]["listen"])')
host=${listen%:*}; port=${listen##*:}
cat <<EOF

== sealrelay is starting on $listen (SMTP). In another terminal, send it a message:

   $bin/python -c 'import smtplib; smtplib.SMTP("$host", $port, local_hostname="localhost").sendmail("alice@example.org", ["bob@example.net"], open("examples/demo/hello.eml", "rb").read())'

   or: swaks -s $host -p $port --helo localhost -f alice@example.org -t bob@example.net

The result lands in var/outbox/new/ (the embedded next hop, a Maildir): signed, and
encrypted, since the demo harvested Bob's certificate.
The spool: $bin/sealrelay queue list        Stop: Ctrl-C (finishes what is in flight).

EOF
exec "${sealrelay[@]}" serve
