#!/usr/bin/env bash
# Starts a throwaway PostgreSQL in a temp dir on a loopback port and prints
# `export TECHBOSS_TEST_POSTGRES_URL=...` and `export TECHBOSS_PG_DIR=...`.
#   eval "$(scripts/pg.sh start)"   ...   scripts/pg.sh stop "$TECHBOSS_PG_DIR"
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$bin" ] || { echo "pg.sh: PostgreSQL server binaries not found (install the postgresql package)" >&2; exit 1; }
case "${1:-}" in
start)
  dir=$(mktemp -d /tmp/techboss-pg.XXXXXX)
  chown postgres: "$dir"
  runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  for try in 1 2 3 4 5; do
    port=$(( 20000 + (RANDOM % 20000) ))
    if runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300 -c synchronous_commit=off -c full_page_writes=off" start >/dev/null 2>&1; then
      echo "export TECHBOSS_PG_DIR=$dir"
      echo "export TECHBOSS_TEST_POSTGRES_URL='postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable'"
      exit 0
    fi
  done
  cat "$dir/server.log" >&2
  exit 1
  ;;
stop)
  dir=${2:?usage: pg.sh stop DIR}
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*) echo "usage: pg.sh start | stop DIR" >&2; exit 2 ;;
esac
