#!/usr/bin/env bash
# A PostgreSQL cluster of its own (its own data directory and port, on 127.0.0.1), for tests
# that restart or break PostgreSQL without touching the shared one. Run as root (the server
# runs as the `postgres` user) or as the user who owns DIR.
#
#   pg-cluster.sh start DIR PORT     initdb DIR if new, start, wait; prints the database URL
#   pg-cluster.sh restart DIR        immediate stop (as a crash: no checkpoint) and start
#   pg-cluster.sh stop DIR           fast stop
#   pg-cluster.sh url DIR            the database URL
#
# With OUTBOX_PG_PASSWORD set when DIR is created, connections need that password (scram);
# the URL printed carries it.
set -euo pipefail

bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[[ -x "$bindir/pg_ctl" ]] || { echo "[pg] no PostgreSQL server binaries (set PG_BINDIR)" >&2; exit 1; }

log() { echo "[pg] $*" >&2; }

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

url() {
  local dir=$1 port auth=""
  port=$(cat "$dir/port")
  [[ -f "$dir/password" ]] && auth=":$(cat "$dir/password")"
  echo "postgres://postgres${auth}@127.0.0.1:$port/postgres"
}

start() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
  echo "$port" > "$dir/port"
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    local auth=(--auth=trust)
    if [[ -n "${OUTBOX_PG_PASSWORD:-}" ]]; then
      printf '%s' "$OUTBOX_PG_PASSWORD" > "$dir/password"
      chmod 600 "$dir/password"
      [[ $(id -u) -eq 0 ]] && chown postgres: "$dir/password"
      auth=(--auth=scram-sha-256 --pwfile="$dir/password")
    fi
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres "${auth[@]}" --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 128MB
fsync = on
log_min_messages = warning
CONF
  fi
  if as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then return 0; fi
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { log "PostgreSQL did not start:"; tail -n 20 "$dir/server.log" >&2; exit 1; }
  log "PostgreSQL ready on 127.0.0.1:$port (data in $dir/data)"
  url "$dir"
}

restart() {
  local dir=$1
  as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

stop() {
  as_owner "$bindir/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) start "$2" "$3" ;;
  restart) restart "$2" ;;
  stop) stop "$2" ;;
  url) url "$2" ;;
  *) echo "usage: $0 start DIR PORT | restart DIR | stop DIR | url DIR" >&2; exit 2 ;;
esac
