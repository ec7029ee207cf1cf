#!/usr/bin/env bash
# Stop the Postfix started by postfix-up.sh, by its pid file. usage: postfix-down.sh [DIR]
set -euo pipefail
DIR=${1:-/tmp/sealrelay-services/postfix}
SCRIPT=postfix-down
# shellcheck source=scripts/services/_lib.sh
. "$(dirname "$0")/_lib.sh"
PIDF=$DIR/spool/pid/master.pid
[ -s "$PIDF" ] || { echo "postfix-down: not running (no $PIDF)" >&2; exit 0; }
pid=$(head -n1 "$PIDF" | tr -d ' ')
if running "$pid"; then
  kill -TERM "$pid"   # = "postfix stop": the master stops smtpd, qmgr ... and exits
  for _ in $(seq 150); do running "$pid" || break; sleep 0.1; done
  running "$pid" && { echo "postfix-down: pid $pid ignored TERM, killing it" >&2; kill -KILL "$pid"; }
fi
rm -f "$PIDF"
echo "postfix-down: stopped pid $pid" >&2
