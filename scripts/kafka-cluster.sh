#!/usr/bin/env bash
# A three-node Apache Kafka cluster (KRaft; each node broker and controller) on loopback,
# from the same jars as scripts/kafka-broker.sh: replication 3, min.insync.replicas 2,
# unclean leader election off. Node N (1..3) serves on BASE_PORT+N-1, its controller on
# BASE_PORT+10+N-1, its data in DIR/nN. Used by the fault-injection suite (npm run chaos).
# Clients have listeners of their own, on BASE_PORT+20+N-1: node PROXIED's is advertised at
# BASE_PORT+30 instead, where the caller runs a proxy to it (replication never goes through
# it), so that a fault of that proxy reaches the clients only.
#
#   kafka-cluster.sh start DIR BASE_PORT [PROXIED]  format if new, start the nodes not running, wait
#   kafka-cluster.sh brokers DIR                    the clients' bootstrap list (host:port,...)
#   kafka-cluster.sh kill DIR N                     SIGKILL node N
#   kafka-cluster.sh restart DIR N                  start node N again (after kill) and wait
#   kafka-cluster.sh wait DIR N                     wait (again) until node N serves
#   kafka-cluster.sh move-leaders DIR TOPIC         every partition's leader to another in-sync replica
#   kafka-cluster.sh stop DIR                       stop every node
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

# client_port BASE N / advertised_port BASE N PROXIED: node N's client listener and the
# address clients are given for it.
client_port() { echo $(($1 + 20 + $2 - 1)); }
advertised_port() { if [[ "$2" == "$3" ]]; then echo $(($1 + 30)); else client_port "$1" "$2"; fi; }

start_node() {
  local dir=$1 n=$2 base proxied
  base=$(cat "$dir/base-port")
  proxied=$(cat "$dir/proxied-node" 2>/dev/null || echo 0)
  bash "$broker" start "$(node_dir "$dir" "$n")" "$((base + n - 1))" "$((base + 10 + n - 1))" "$n" "$(voters "$base")" "$NODES" "$(cat "$dir/cluster-id")" \
    "$(client_port "$base" "$n")" "$(advertised_port "$base" "$n" "$proxied")"
}

start() {
  local dir=$1 base=$2 proxied=${3:-0} n
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  echo "$base" > "$dir/base-port"
  echo "$proxied" > "$dir/proxied-node"
  local id
  if [[ -f "$dir/cluster-id" ]]; then id=$(cat "$dir/cluster-id"); else id=$(bash "$broker" random-id); echo "$id" > "$dir/cluster-id"; fi
  for n in $(seq 1 $NODES); do start_node "$dir" "$n"; done
  for n in $(seq 1 $NODES); do bash "$broker" wait "$(node_dir "$dir" "$n")"; done
}

restart() {
  start_node "$1" "$2"
  bash "$broker" wait "$(node_dir "$1" "$2")"
}

brokers() {
  local base proxied n list=""
  base=$(cat "$1/base-port")
  proxied=$(cat "$1/proxied-node" 2>/dev/null || echo 0)
  for n in $(seq 1 $NODES); do list+="${list:+,}127.0.0.1:$(advertised_port "$base" "$n" "$proxied")"; done
  echo "$list"
}

# The leaders move through the admin API (scripts/kafka/MoveLeaders.java, compiled once into
# the cluster's directory).
move_leaders() {
  local dir=$1 topic=$2 base
  base=$(cat "$dir/base-port")
  if [[ ! -f "$dir/classes/MoveLeaders.class" ]]; then
    mkdir -p "$dir/classes"
    bash "$broker" javac -d "$dir/classes" "$root/scripts/kafka/MoveLeaders.java"
  fi
  # Over the brokers' own listeners: the clients' proxy may be the fault of the moment.
  bash "$broker" run-class "$dir/classes" MoveLeaders "127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))" "$topic"
}

stop() {
  local n
  for n in $(seq 1 $NODES); do bash "$broker" stop "$(node_dir "$1" "$n")" & done
  wait
}

case "${1:-}" in
  start) start "$2" "$3" "${4:-0}" ;;
  brokers) brokers "$2" ;;
  kill) bash "$broker" kill "$(node_dir "$2" "$3")" ;;
  restart) restart "$(cd "$2" && pwd)" "$3" ;;
  wait) bash "$broker" wait "$(node_dir "$(cd "$2" && pwd)" "$3")" ;;
  move-leaders) move_leaders "$(cd "$2" && pwd)" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 start DIR BASE_PORT [PROXIED] | brokers DIR | kill DIR N | restart DIR N | wait DIR N | move-leaders DIR TOPIC | stop DIR" >&2; exit 2 ;;
esac
