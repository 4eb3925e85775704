#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker+controller in one JVM) run from Maven
# Central jars with the machine's Java 17. Used by scripts/services.sh and by tests that
# need a broker of their own to kill and restart.
#
#   kafka-broker.sh fetch                      resolve the jars into .cache/kafka (once)
#   kafka-broker.sh start DIR PORT CTRL_PORT   format DIR if new, start, wait until it serves
#   kafka-broker.sh start DIR PORT CTRL_PORT NODE_ID VOTERS REPLICAS CLUSTER_ID [CLIENT_PORT ADVERTISED]
#                                              one node of a cluster, started without waiting;
#                                              with CLIENT_PORT, clients get a listener of their
#                                              own there, advertised as ADVERTISED (a proxy's
#                                              port, say), while replication keeps PORT
#   kafka-broker.sh wait DIR                   wait until the node in DIR serves
#   kafka-broker.sh random-id                  a fresh cluster id
#   kafka-broker.sh stop DIR                   stop the broker whose pid file is in DIR
#   kafka-broker.sh kill DIR                   SIGKILL it (no controlled shutdown)
#   kafka-broker.sh status DIR                 exit 0 when that broker process is alive
#   kafka-broker.sh javac ARGS...              compile against the jars
#   kafka-broker.sh run-class DIR CLASS ARGS... run a compiled class with the jars
#
# Every broker listens on 127.0.0.1 only.
#
# SASL, for a single node: with KAFKA_SASL_USERS="name:password,..." in the environment of
# `start`, PORT is a SASL_PLAINTEXT listener where clients log in as one of those users by
# PLAIN or SCRAM-SHA-256 (PLAIN users are read at every start, SCRAM ones stored when DIR is
# formatted); the broker reaches itself there as a user of its own with a fresh password, and
# the controller listener stays PLAINTEXT. Names are [A-Za-z0-9._-]; passwords are one or
# more of [A-Za-z0-9._~!@#%^&*+/?:-] (they go into JAAS and SCRAM syntax as they are).
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

# write_config DIR PORT CTRL_PORT NODE_ID VOTERS REPLICAS [CLIENT_PORT ADVERTISED]: the
# node's server.properties. REPLICAS is the replication of internal topics and the default
# of new ones: 1 for a single node; a cluster also refuses acks from fewer than two
# replicas and never elects an out-of-sync leader. With CLIENT_PORT, a CLIENT listener for
# producers and consumers, advertised at ADVERTISED; brokers replicate over PLAINTEXT.
write_config() {
  local dir=$1 port=$2 ctrl=$3 node=$4 voters=$5 replicas=$6 client=${7:-} advertised=${8:-}
  local min_isr=1
  (( replicas > 1 )) && min_isr=2
  # With KAFKA_SASL_USERS, PORT asks clients, and the broker itself, to log in.
  local listener=PLAINTEXT
  [[ -n "${KAFKA_SASL_USERS:-}" ]] && listener=SASL_PLAINTEXT
  local listeners="$listener://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl"
  local advertised_listeners="$listener://127.0.0.1:$port"
  local protocols="$listener:$listener,CONTROLLER:PLAINTEXT"
  if [[ -n "$client" ]]; then
    listeners+=",CLIENT://127.0.0.1:$client"
    advertised_listeners+=",CLIENT://127.0.0.1:${advertised:-$client}"
    protocols+=",CLIENT:PLAINTEXT"
  fi
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised_listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=$listener
listener.security.protocol.map=$protocols
log.dirs=$dir/data
num.partitions=3
default.replication.factor=$replicas
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
# Few partitions of the internal topics keep start-up fast.
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
# Tests want rebalances at once and unknown topics surfaced as errors, as in production.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  if (( replicas > 1 )); then
    # A node killed and started again is fenced and let back in within seconds.
    cat >> "$dir/server.properties" <<PROPS
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=500
PROPS
  fi
  if [[ -n "${KAFKA_SASL_USERS:-}" ]]; then
    sasl_properties >> "$dir/server.properties"
    chmod 600 "$dir/server.properties"
  fi
}

# sasl_users: KAFKA_SASL_USERS as "name password" lines; exits when an entry is malformed
# (naming its position, never its password).
sasl_users() {
  local entry name password i=0
  local -a entries
  IFS=, read -r -a entries <<< "$KAFKA_SASL_USERS"
  (( ${#entries[@]} > 0 )) || { log "KAFKA_SASL_USERS: give name:password,..."; exit 1; }
  for entry in "${entries[@]}"; do
    i=$((i + 1))
    name=${entry%%:*} password=${entry#*:}
    if [[ "$entry" != *:* || ! "$name" =~ ^[A-Za-z0-9._-]+$ || ! "$password" =~ ^[A-Za-z0-9._~!@#%^\&*+/?:-]+$ ]]; then
      log "KAFKA_SASL_USERS: entry $i is not name:password (names [A-Za-z0-9._-], passwords [A-Za-z0-9._~!@#%^&*+/?:-])"
      exit 1
    fi
    echo "$name $password"
  done
}

# sasl_properties: the SASL part of server.properties. PLAIN logins are checked against the
# users of the JAAS line (the broker's own first, with a password made at every start),
# SCRAM ones against the credentials stored at format time.
sasl_properties() {
  local broker_user=kafka-broker broker_password name password
  broker_password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  local jaas="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$broker_user\" password=\"$broker_password\" user_$broker_user=\"$broker_password\""
  while read -r name password; do jaas+=" user_$name=\"$password\""; done < <(sasl_users)
  cat <<PROPS
# SASL (KAFKA_SASL_USERS)
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=$jaas;
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
PROPS
}

# launch DIR [CLUSTER_ID]: formats DIR's data if new (with CLUSTER_ID, or a fresh one) and
# starts the node in the background; wait_ready waits until it serves.
launch() {
  local dir=$1 cluster_id=${2:-}
  local cp="$libs/*"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local scram=() name password
    if [[ -n "${KAFKA_SASL_USERS:-}" ]]; then
      while read -r name password; do scram+=(--add-scram "SCRAM-SHA-256=[name=$name,password=$password]"); done < <(sasl_users)
    fi
    if [[ -z "$cluster_id" ]]; then
      cluster_id=$(java -cp "$cp" -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
        kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    fi
    java -cp "$cp" -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" "${scram[@]}" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; exit 1; }
  fi
  log "starting node on 127.0.0.1:$(port_of "$dir") (data in $dir)"
  : > "$dir/broker.log"
  # setsid: the broker outlives the shell that started it and is not hit by its signals.
  setsid nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >>"$dir/broker.log" 2>&1 < /dev/null &
  echo $! > "$dir/broker.pid"
}

port_of() { sed -n 's/^listeners=[A-Z_]*:\/\/127.0.0.1:\([0-9]*\),.*$/\1/p' "$1/server.properties"; }

wait_ready() {
  local dir=$1 port
  port=$(port_of "$dir")
  local deadline=$((SECONDS + 90))
  until grep -q "Kafka Server started" "$dir/broker.log" && port_open "$port"; do
    if ! pid_alive "$dir"; then log "broker exited during start-up:"; tail -n 40 "$dir/broker.log" >&2; exit 1; fi
    if (( SECONDS > deadline )); then log "broker did not start within 90 s:"; tail -n 40 "$dir/broker.log" >&2; exit 1; fi
    sleep 0.3
  done
  log "broker ready on 127.0.0.1:$port"
}

# start DIR PORT CTRL_PORT [NODE_ID VOTERS REPLICAS CLUSTER_ID]: a single node by default;
# with the rest, one node of a cluster (see kafka-cluster.sh), started without waiting.
start() {
  local dir=$1 port=$2 ctrl=$3 node=${4:-1} voters=${5:-} replicas=${6:-1} cluster_id=${7:-} client=${8:-} advertised=${9:-}
  fetch
  if [[ -n "${KAFKA_SASL_USERS:-}" ]]; then
    [[ -z "$voters" ]] || { log "KAFKA_SASL_USERS is for a single node"; exit 1; }
    sasl_users >/dev/null
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if pid_alive "$dir"; then log "broker already running (pid $(cat "$dir/broker.pid"))"; return 0; fi
  if port_open "$port"; then log "port $port is taken by another process"; exit 1; fi
  write_config "$dir" "$port" "$ctrl" "$node" "${voters:-1@127.0.0.1:$ctrl}" "$replicas" "$client" "$advertised"
  launch "$dir" "$cluster_id"
  if [[ -z "$voters" ]]; then wait_ready "$dir"; fi
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
  start) shift; start "$@" ;;
  wait) wait_ready "$(cd "$2" && pwd)" ;;
  random-id) fetch; java -cp "$libs/*" -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 ;;
  stop) stop "$2" ;;
  kill) if pid_alive "$2"; then kill -KILL "$(cat "$2/broker.pid")"; fi ;;
  status) pid_alive "$2" ;;
  javac) shift; fetch; exec javac -nowarn -cp "$libs/*" "$@" ;;
  run-class) fetch; exec java -cp "$2:$libs/*" -Dlog4j2.configurationFile="$root/scripts/kafka/log4j2.properties" "${@:3}" ;;
  *) echo "usage: $0 fetch | start DIR PORT CTRL_PORT [NODE_ID VOTERS REPLICAS CLUSTER_ID [CLIENT_PORT ADVERTISED]] | wait DIR | random-id | stop DIR | kill DIR | status DIR | javac ARGS... | run-class DIR CLASS ARGS..." >&2; exit 2 ;;
esac
