#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker+controller in one JVM) on loopback,
# for development and tests on machines without Docker.
#
#   deploy/kafka/broker.sh fetch    # download the broker's jars with Maven (once)
#   deploy/kafka/broker.sh start    # fetch if needed, format storage once, start, wait until it answers
#   deploy/kafka/broker.sh stop     # stop the broker this script started
#   deploy/kafka/broker.sh status   # exit 0 when it answers, 1 otherwise
#   deploy/kafka/broker.sh kill     # SIGKILL it (chaos tests)
#
# Every command is idempotent. Settings (environment):
#   KAFKA_HOME_DIR   state: jars, data, logs, pid     (default: deploy/kafka/.cache)
#   KAFKA_PORT       client listener on 127.0.0.1      (default: 9092)
#   KAFKA_CONTROLLER_PORT                              (default: KAFKA_PORT + 1)
#   KAFKA_HEAP       JVM heap                          (default: 1G)
#   KAFKA_START_TIMEOUT seconds to wait for it to answer (default: 90)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
home=${KAFKA_HOME_DIR:-$here/.cache}
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
heap=${KAFKA_HEAP:-1G}
timeout=${KAFKA_START_TIMEOUT:-90}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
jars=$home/jars/$version
run=$home/run-$port
pidfile=$run/broker.pid

log() { printf 'broker: %s\n' "$*" >&2; }

fetch() {
  if [ -f "$jars/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch Kafka's jars"; exit 1; }
  command -v java >/dev/null || { log "Java 17+ is needed to run Kafka"; exit 1; }
  log "fetching Apache Kafka $version jars with Maven into $jars"
  rm -rf "$jars"
  mkdir -p "$jars"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$jars" >&2
  touch "$jars/.complete"
}

answers() {
  # A TCP connect is not enough (the port opens before the broker serves); ask for
  # the API versions the way any client's first request does.
  python3 - "$port" <<'EOF'
import socket, struct, sys
port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.settimeout(2)
    client = b"probe"
    # ApiVersions v0: api_key=18, api_version=0, correlation_id=1, client_id
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    s.sendall(struct.pack(">i", len(body)) + body)
    head = s.recv(4)
    size = struct.unpack(">i", head)[0]
    data = b""
    while len(data) < size:
        chunk = s.recv(size - len(data))
        if not chunk:
            sys.exit(1)
        data += chunk
    corr, err = struct.unpack(">ih", data[:6])
    sys.exit(0 if corr == 1 and err in (0, 35) else 1)
except OSError:
    sys.exit(1)
EOF
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

write_config() {
  mkdir -p "$run/data" "$run/logs"
  cat >"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$run/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
message.max.bytes=4194304
log.retention.hours=24
log.segment.bytes=268435456
EOF
  cat >"$run/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $run/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
EOF
}

start() {
  if running_pid >/dev/null && answers; then
    log "already running on 127.0.0.1:$port (pid $(running_pid))"
    return 0
  fi
  if ! running_pid >/dev/null && answers; then
    log "something else already answers on 127.0.0.1:$port; using it"
    return 0
  fi
  fetch
  if ! running_pid >/dev/null; then
    write_config
    if [ ! -f "$run/data/meta.properties" ]; then
      local cluster
      cluster=$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid)
      java -cp "$jars/*" -Dlog4j2.configurationFile="$run/log4j2.properties" \
        kafka.tools.StorageTool format -t "$cluster" -c "$run/server.properties" >"$run/logs/format.log" 2>&1 \
        || { cat "$run/logs/format.log" >&2; exit 1; }
    fi
    log "starting Apache Kafka $version on 127.0.0.1:$port"
    # setsid: the broker outlives this script and is not hit by the caller's Ctrl-C.
    setsid java -Xms256m -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$run/log4j2.properties" \
      -cp "$jars/*" kafka.Kafka "$run/server.properties" \
      >"$run/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  local deadline=$((SECONDS + timeout))
  until answers; do
    if ! running_pid >/dev/null; then
      log "the broker exited; last lines of its log:"
      tail -n 30 "$run/logs/stdout.log" "$run/logs/server.log" >&2 2>/dev/null || true
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "no answer on 127.0.0.1:$port after ${timeout}s; see $run/logs"
      exit 1
    fi
    sleep 0.5
  done
  log "ready on 127.0.0.1:$port (pid $(running_pid))"
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    log "not running"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "did not stop in 30s; killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  kill)
    if pid=$(running_pid); then kill -KILL "$pid"; fi
    ;;
  status)
    if answers; then
      log "answers on 127.0.0.1:$port"
    else
      log "no broker on 127.0.0.1:$port"
      exit 1
    fi
    ;;
  clean)
    stop
    rm -rf "$run"
    ;;
  *)
    echo "usage: $0 fetch|start|stop|status|kill|clean" >&2
    exit 2
    ;;
esac
