#!/usr/bin/env bash
# Brings up what outbox-relay needs: a PostgreSQL and an Apache Kafka broker.
#
#   services.sh up     idempotent; prints DATABASE_URL=... and KAFKA_BROKERS=... on stdout
#   services.sh down   stops only what `up` started
#
# DATABASE_URL / KAFKA_BROKERS, when set, name services to use as they are (they are only
# checked). Otherwise the local PostgreSQL on 127.0.0.1:5432 is used (started if it is
# installed but down) and a Kafka broker is run from Maven Central jars on 127.0.0.1:19092.
# Everything but the two final lines goes to stderr, so `eval "$(... up)"` is safe.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state="$root/.services"
kafka_dir="$state/kafka"
kafka_port=${OUTBOX_KAFKA_PORT:-19092}
kafka_ctrl_port=${OUTBOX_KAFKA_CONTROLLER_PORT:-19093}
local_db=${OUTBOX_LOCAL_DATABASE:-outbox_relay}

log() { echo "[services] $*" >&2; }

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Checks every host:port of a comma-separated broker list; IPv6 literals in [brackets].
brokers_reachable() {
  local entry host port
  IFS=',' read -ra entries <<< "$1"
  for entry in "${entries[@]}"; do
    host=${entry%:*}; port=${entry##*:}; host=${host#[}; host=${host%]}
    tcp_open "$host" "$port" || return 1
  done
}

pg_up() {
  if [[ -n "${DATABASE_URL:-}" ]]; then
    psql "$DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1 \
      || { log "DATABASE_URL is set but PostgreSQL does not answer there"; exit 1; }
    echo "$DATABASE_URL"
    return
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
      local version
      version=$(ls /etc/postgresql | sort -V | tail -n 1)
      log "starting local PostgreSQL $version"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2
      mkdir -p "$state" && echo "$version" > "$state/postgres.started"
      local deadline=$((SECONDS + 30))
      until pg_isready -q -h 127.0.0.1 -p 5432; do
        (( SECONDS > deadline )) && { log "PostgreSQL did not come up"; exit 1; }
        sleep 0.2
      done
    else
      log "no PostgreSQL on 127.0.0.1:5432: set DATABASE_URL, or use docker compose (see README)"
      exit 1
    fi
  fi
  local admin="postgres://postgres@127.0.0.1:5432/postgres"
  if [[ -z $(psql "$admin" -Atqc "select 1 from pg_database where datname = '$local_db'") ]]; then
    log "creating database $local_db"
    psql "$admin" -qc "create database \"$local_db\"" >&2
  fi
  echo "postgres://postgres@127.0.0.1:5432/$local_db"
}

kafka_up() {
  if [[ -n "${KAFKA_BROKERS:-}" ]]; then
    brokers_reachable "$KAFKA_BROKERS" \
      || { log "KAFKA_BROKERS is set but $KAFKA_BROKERS does not answer"; exit 1; }
    echo "$KAFKA_BROKERS"
    return
  fi
  local port=$kafka_port ctrl=$kafka_ctrl_port
  if bash "$root/scripts/kafka-broker.sh" status "$kafka_dir"; then
    # Ours, already running: its port is in its own configuration.
    port=$(sed -n 's/^advertised.listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$kafka_dir/server.properties")
    echo "127.0.0.1:$port"
    return
  elif [[ -z "${OUTBOX_KAFKA_PORT:-}" ]]; then
    # Another process (another checkout's broker, say) may hold the default ports: take
    # the next free pair rather than fail.
    while tcp_open 127.0.0.1 "$port" || tcp_open 127.0.0.1 "$ctrl"; do
      port=$((port + 2)); ctrl=$((ctrl + 2))
      (( port > kafka_port + 40 )) && { log "no free port pair for Kafka near $kafka_port"; exit 1; }
    done
  fi
  bash "$root/scripts/kafka-broker.sh" start "$kafka_dir" "$port" "$ctrl"
  echo "127.0.0.1:$port"
}

up() {
  mkdir -p "$state"
  local db brokers
  db=$(pg_up)
  brokers=$(kafka_up)
  echo "DATABASE_URL=$db"
  echo "KAFKA_BROKERS=$brokers"
}

down() {
  bash "$root/scripts/kafka-broker.sh" stop "$kafka_dir"
  if [[ -f "$state/postgres.started" ]]; then
    local version
    version=$(cat "$state/postgres.started")
    log "stopping the PostgreSQL $version that services:up started"
    pg_ctlcluster --skip-systemctl-redirect "$version" main stop >&2 || true
    rm -f "$state/postgres.started"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
