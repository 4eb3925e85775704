#!/usr/bin/env bash
# A three-node Apache Kafka cluster (KRaft; each node broker and controller) on loopback,
# from the same jars as scripts/kafka-broker.sh: replication 3, min.insync.replicas 2,
# unclean leader election off. Node N (1..3) serves on BASE_PORT+N-1, its controller on
# BASE_PORT+10+N-1, its data in DIR/nN. Used by the fault-injection suite (npm run chaos).
#
#   kafka-cluster.sh start DIR BASE_PORT   format if new, start the nodes not running, wait
#   kafka-cluster.sh brokers DIR           the bootstrap list (host:port,...)
#   kafka-cluster.sh kill DIR N            SIGKILL node N
#   kafka-cluster.sh restart DIR N         start node N again (after kill) and wait
#   kafka-cluster.sh stop DIR              stop every node
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
broker="$root/scripts/kafka-broker.sh"
NODES=3

node_dir() { echo "$1/n$2"; }

voters() {
  local base=$1 list="" n
  for n in $(seq 1 $NODES); do list+="${list:+,}$n@127.0.0.1:$((base + 10 + n - 1))"; done
  echo "$list"
}

start() {
  local dir=$1 base=$2 n
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  echo "$base" > "$dir/base-port"
  local id
  if [[ -f "$dir/cluster-id" ]]; then id=$(cat "$dir/cluster-id"); else id=$(bash "$broker" random-id); echo "$id" > "$dir/cluster-id"; fi
  for n in $(seq 1 $NODES); do
    bash "$broker" start "$(node_dir "$dir" "$n")" "$((base + n - 1))" "$((base + 10 + n - 1))" "$n" "$(voters "$base")" "$NODES" "$id"
  done
  for n in $(seq 1 $NODES); do bash "$broker" wait "$(node_dir "$dir" "$n")"; done
}

restart() {
  local dir=$1 n=$2 base
  base=$(cat "$dir/base-port")
  bash "$broker" start "$(node_dir "$dir" "$n")" "$((base + n - 1))" "$((base + 10 + n - 1))" "$n" "$(voters "$base")" "$NODES" "$(cat "$dir/cluster-id")"
  bash "$broker" wait "$(node_dir "$dir" "$n")"
}

brokers() {
  local base n list=""
  base=$(cat "$1/base-port")
  for n in $(seq 1 $NODES); do list+="${list:+,}127.0.0.1:$((base + n - 1))"; done
  echo "$list"
}

stop() {
  local n
  for n in $(seq 1 $NODES); do bash "$broker" stop "$(node_dir "$1" "$n")" & done
  wait
}

case "${1:-}" in
  start) start "$2" "$3" ;;
  brokers) brokers "$2" ;;
  kill) bash "$broker" kill "$(node_dir "$2" "$3")" ;;
  restart) restart "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 start DIR BASE_PORT | brokers DIR | kill DIR N | restart DIR N | stop DIR" >&2; exit 2 ;;
esac
