#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker+controller in one JVM) run from Maven
# Central jars with the machine's Java 17. Used by scripts/services.sh and by tests that
# need a broker of their own to kill and restart.
#
#   kafka-broker.sh fetch                      resolve the jars into .cache/kafka (once)
#   kafka-broker.sh start DIR PORT CTRL_PORT   format DIR if new, start, wait until it serves
#   kafka-broker.sh stop DIR                   stop the broker whose pid file is in DIR
#   kafka-broker.sh status DIR                 exit 0 when that broker process is alive
#
# Every broker listens on 127.0.0.1 only.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/scripts/kafka/pom.xml")
libs="$root/.cache/kafka/libs-$kafka_version"

log() { echo "[kafka] $*" >&2; }

fetch() {
  if [[ -f "$libs/.complete" ]]; then return 0; fi
  command -v java >/dev/null || { log "java (17+) is required to run the local broker"; exit 1; }
  command -v mvn >/dev/null || { log "maven is required to fetch the broker jars"; exit 1; }
  log "fetching Apache Kafka $kafka_version jars into ${libs#"$root"/}"
  rm -rf "$libs"
  mvn -q -B -f "$root/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >&2
  touch "$libs/.complete"
}

# Alive = the process exists and is not a zombie (a killed broker is not running even
# while its parent has not reaped it yet).
pid_alive() {
  [[ -f "$1/broker.pid" ]] || return 1
  local pid state
  pid=$(cat "$1/broker.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X)
  [[ "$state" != Z && "$state" != X ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local dir=$1 port=$2 ctrl=$3
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if pid_alive "$dir"; then log "broker already running (pid $(cat "$dir/broker.pid"))"; return 0; fi
  if port_open "$port"; then log "port $port is taken by another process"; exit 1; fi
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
# Single node: internal topics cannot be replicated. Few partitions keep start-up fast.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests want rebalances at once and unknown topics surfaced as errors, as in production.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  local cp="$libs/*"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cluster_id
    cluster_id=$(java -cp "$cp" -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
      kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    java -cp "$cp" -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; exit 1; }
  fi
  log "starting broker on 127.0.0.1:$port (data in $dir)"
  : > "$dir/broker.log"
  # setsid: the broker outlives the shell that started it and is not hit by its signals.
  setsid nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >>"$dir/broker.log" 2>&1 < /dev/null &
  echo $! > "$dir/broker.pid"
  local deadline=$((SECONDS + 90))
  until grep -q "Kafka Server started" "$dir/broker.log" && port_open "$port"; do
    if ! pid_alive "$dir"; then log "broker exited during start-up:"; tail -n 40 "$dir/broker.log" >&2; exit 1; fi
    if (( SECONDS > deadline )); then log "broker did not start within 90 s:"; tail -n 40 "$dir/broker.log" >&2; exit 1; fi
    sleep 0.3
  done
  log "broker ready on 127.0.0.1:$port"
}

stop() {
  local dir=$1
  if ! pid_alive "$dir"; then rm -f "$dir/broker.pid"; return 0; fi
  local pid
  pid=$(cat "$dir/broker.pid")
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while pid_alive "$dir"; do
    if (( SECONDS > deadline )); then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
  rm -f "$dir/broker.pid"
  log "broker stopped (pid $pid)"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "$2" "$3" "$4" ;;
  stop) stop "$2" ;;
  status) pid_alive "$2" ;;
  *) echo "usage: $0 fetch | start DIR PORT CTRL_PORT | stop DIR | status DIR" >&2; exit 2 ;;
esac
