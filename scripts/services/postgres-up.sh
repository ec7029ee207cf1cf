#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for sealrelay's tests: 127.0.0.1:$PGPORT, trust auth.
# usage: scripts/services/postgres-up.sh [DIR]     (DIR default /tmp/sealrelay-services/postgres)
# Prints the database URL on stdout (everything else goes to stderr), so CI can do
#   export SEALRELAY_TEST_POSTGRES_URL=$(scripts/services/postgres-up.sh)
# Idempotent: a running cluster is reused. Stop it with postgres-down.sh [DIR].
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
DIR=${1:-/tmp/sealrelay-services/postgres}
PGPORT=${PGPORT:-15432}

SCRIPT=postgres-up
# shellcheck source=scripts/services/_lib.sh
. "$(dirname "$0")/_lib.sh"

if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'ok installed'; then
  log "apt-get install postgresql"
  APT=(apt-get -q -y -o DPkg::Lock::Timeout=600)
  ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || "${APT[@]}" update >&2
  "${APT[@]}" install --no-install-recommends postgresql >&2 \
    || { "${APT[@]}" update >&2 && "${APT[@]}" install --no-install-recommends postgresql >&2; }
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)

# initdb and postgres refuse to run as root: run them as the 'postgres' user the package
# created. DIR and its parents must be traversable by that user (so not under /root).
AS_PG=()
[ "$(id -u)" -eq 0 ] && AS_PG=(runuser -u postgres --)
mkdir -p "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
if [ ! -s "$DIR/data/PG_VERSION" ]; then
  "${AS_PG[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust \
    -E UTF8 --locale=C.UTF-8 --no-sync >"$DIR/initdb.log" 2>&1 || die "initdb failed: see $DIR/initdb.log"
fi
if ! pid_alive "$DIR/data/postmaster.pid"; then
  rm -f "$DIR/data/postmaster.pid" "$DIR/.s.PGSQL.$PGPORT.lock"
  # The socket goes to DIR (/var/run/postgresql exists only with the init script); fsync
  # off because the data is throwaway and it makes the tests much faster.
  "${AS_PG[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 30 start \
    -o "-p $PGPORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    </dev/null >/dev/null || die "postgres did not start: see $DIR/postgres.log"
fi
for _ in $(seq 300); do
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -U postgres && break
  sleep 0.1
done
# Health check: a real query over TCP, as the tests connect.
"$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -Atqc 'select 1' 2>/dev/null | grep -qx 1 \
  || die "postgres on 127.0.0.1:$PGPORT does not answer: see $DIR/postgres.log"
log "running, pid $(head -n1 "$DIR/data/postmaster.pid"), log $DIR/postgres.log"
echo "postgresql://postgres@127.0.0.1:$PGPORT/postgres"
