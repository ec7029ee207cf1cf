#!/usr/bin/env bash
# Stop the Dovecot started by dovecot-up.sh, by its pid file. usage: dovecot-down.sh [DIR]
set -euo pipefail
DIR=${1:-/tmp/sealrelay-services/dovecot}
SCRIPT=dovecot-down
# shellcheck source=scripts/services/_lib.sh
. "$(dirname "$0")/_lib.sh"
PIDF=$DIR/run/master.pid
[ -s "$PIDF" ] || { echo "dovecot-down: not running (no $PIDF)" >&2; exit 0; }
pid=$(head -n1 "$PIDF" | tr -d ' ')
if running "$pid"; then
  kill -TERM "$pid"   # the master stops its children (imap, lmtp, auth ...) itself
  for _ in $(seq 150); do running "$pid" || break; sleep 0.1; done
  running "$pid" && { echo "dovecot-down: pid $pid ignored TERM, killing it" >&2; kill -KILL "$pid"; }
fi
rm -f "$PIDF"
echo "dovecot-down: stopped pid $pid" >&2
