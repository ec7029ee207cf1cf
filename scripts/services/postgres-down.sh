#!/usr/bin/env bash
# Stop the cluster postgres-up.sh started, by its pid file. usage: postgres-down.sh [DIR] [--purge]
set -euo pipefail
DIR=${1:-/tmp/sealrelay-services/postgres}
SCRIPT=postgres-down
# shellcheck source=scripts/services/_lib.sh
. "$(dirname "$0")/_lib.sh"
PIDFILE=$DIR/data/postmaster.pid
if [ -s "$PIDFILE" ]; then
  pid=$(head -n1 "$PIDFILE" | tr -d ' ')
  if running "$pid"; then
    # SIGINT is a "fast" shutdown (pg_ctl stop -m fast); TERM would wait for every client.
    kill -INT "$pid"
    for _ in $(seq 300); do running "$pid" || break; sleep 0.1; done
    running "$pid" && { log "pid $pid ignored INT, sending KILL"; kill -KILL "$pid"; }
  fi
  rm -f "$PIDFILE"
  log "stopped pid $pid"
else
  log "no pid file $PIDFILE (not running?)"
fi
if [ "${2:-}" = "--purge" ]; then rm -rf "$DIR"; log "removed $DIR"; fi
