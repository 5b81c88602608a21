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
#   KAFKA_RUN_DIR    this broker's data, logs, config and pid (default: $KAFKA_HOME_DIR/run-$KAFKA_PORT)
#
# An optional SASL_SSL listener (off unless KAFKA_SASL_SSL_PORT is set; the PLAINTEXT
# listener above stays, and the controller and inter-broker traffic stay PLAINTEXT):
#   KAFKA_SASL_SSL_PORT  SASL_SSL listener on 127.0.0.1; mechanisms SCRAM-SHA-256,
#                        SCRAM-SHA-512 and PLAIN
#   KAFKA_SASL_SSL_HOST  host name it advertises; the server certificate must be valid
#                        for it (default: localhost)
#   KAFKA_SSL_KEYSTORE   the server's key and certificate chain (required with the port)
#   KAFKA_SSL_KEYSTORE_PASSWORD                        (required with the port)
#   KAFKA_SSL_KEYSTORE_TYPE                            (default: PKCS12)
#   KAFKA_SSL_CLIENT_AUTH  none | requested | required: TLS client certificates
#                        (default: none)
#   KAFKA_SSL_TRUSTSTORE   CAs that client certificates must chain to (with client auth)
#   KAFKA_SSL_TRUSTSTORE_TYPE                          (default: PKCS12; or PEM)
#   KAFKA_SSL_TRUSTSTORE_PASSWORD                      (not for PEM)
#   KAFKA_SCRAM_USERS    name:password[,name:password...]: SCRAM-SHA-256 and -512 users.
#                        They are written when the storage is formatted, i.e. the first
#                        start for a run dir: give a secure broker its own port or
#                        KAFKA_RUN_DIR (`clean` to re-format).
#   KAFKA_PLAIN_USERS    name:password[,name:password...]: PLAIN users (read at every start)
# Names and passwords may not contain , " \ or line breaks. The secrets end up in the
# run dir's server.properties (mode 600) and, while formatting, on StorageTool's
# command line: this is a development and test broker.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
home=${KAFKA_HOME_DIR:-$here/.cache}
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
heap=${KAFKA_HEAP:-1G}
timeout=${KAFKA_START_TIMEOUT:-90}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
jars=$home/jars/$version
run=${KAFKA_RUN_DIR:-$home/run-$port}
sasl_port=${KAFKA_SASL_SSL_PORT:-}
sasl_host=${KAFKA_SASL_SSL_HOST:-localhost}
pidfile=$run/broker.pid

log() { printf 'broker: %s\n' "$*" >&2; }

# Maven writes colour codes even in batch mode and off a terminal (Debian's 3.8 starts
# lines with ESC[0m): strip terminal escape codes from what reaches the user.
plain() { sed -e $'s/\x1b\\[[0-9;?]*[A-Za-z]//g'; }

fetch() {
  if [ -f "$jars/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch Kafka's jars"; exit 1; }
  command -v java >/dev/null || { log "Java 17+ is needed to run Kafka"; exit 1; }
  log "fetching Apache Kafka $version jars with Maven into $jars"
  rm -rf "$jars"
  mkdir -p "$jars"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$jars" 2>&1 | plain >&2
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

# TCP connect to the SASL_SSL port (exit 0 when something listens).
listening() {
  python3 - "$1" <<'EOF'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
except OSError:
    sys.exit(1)
EOF
}

# name:password[,name:password...] -> one "name<TAB>password" line each; refuses what
# the JAAS and StorageTool syntaxes cannot carry.
users() {
  local var=$1 list=${!1:-} entry
  [ -n "$list" ] || return 0
  local IFS=,
  for entry in $list; do
    if [[ $entry != *:* || -z ${entry%%:*} || -z ${entry#*:} ]]; then
      log "$var: expected name:password[,name:password...]"
      exit 2
    fi
    if [[ $entry == *'"'* || $entry == *'\'* || $entry == *$'\n'* ]]; then
      log "$var: names and passwords may not contain \" or \\ (nor , which separates them)"
      exit 2
    fi
    printf '%s\t%s\n' "${entry%%:*}" "${entry#*:}"
  done
}

check_sasl_ssl() {
  [ -n "$sasl_port" ] || return 0
  if [ "$sasl_port" = "$port" ] || [ "$sasl_port" = "$cport" ]; then
    log "KAFKA_SASL_SSL_PORT ($sasl_port) must differ from KAFKA_PORT ($port) and the controller port ($cport)"
    exit 2
  fi
  if [ -z "${KAFKA_SSL_KEYSTORE:-}" ] || [ -z "${KAFKA_SSL_KEYSTORE_PASSWORD:-}" ]; then
    log "KAFKA_SASL_SSL_PORT needs KAFKA_SSL_KEYSTORE and KAFKA_SSL_KEYSTORE_PASSWORD"
    exit 2
  fi
  if [ ! -f "$KAFKA_SSL_KEYSTORE" ]; then
    log "KAFKA_SSL_KEYSTORE: no such file: $KAFKA_SSL_KEYSTORE"
    exit 2
  fi
  if [ -n "${KAFKA_SSL_TRUSTSTORE:-}" ] && [ ! -f "$KAFKA_SSL_TRUSTSTORE" ]; then
    log "KAFKA_SSL_TRUSTSTORE: no such file: $KAFKA_SSL_TRUSTSTORE"
    exit 2
  fi
  case "${KAFKA_SSL_CLIENT_AUTH:-none}" in
    none | requested | required) ;;
    *) log "KAFKA_SSL_CLIENT_AUTH: expected none, requested or required"; exit 2 ;;
  esac
  users KAFKA_SCRAM_USERS >/dev/null
  users KAFKA_PLAIN_USERS >/dev/null
}

# The SASL_SSL listener's lines of server.properties.
sasl_ssl_config() {
  local l=listener.name.sasl_ssl name password plain=""
  while IFS=$'\t' read -r name password; do
    plain+=" user_$name=\"$password\""
  done < <(users KAFKA_PLAIN_USERS)
  cat <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
$l.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
$l.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
$l.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain;
$l.ssl.keystore.location=$KAFKA_SSL_KEYSTORE
$l.ssl.keystore.password=$KAFKA_SSL_KEYSTORE_PASSWORD
$l.ssl.keystore.type=${KAFKA_SSL_KEYSTORE_TYPE:-PKCS12}
$l.ssl.client.auth=${KAFKA_SSL_CLIENT_AUTH:-none}
EOF
  if [ -n "${KAFKA_SSL_TRUSTSTORE:-}" ]; then
    echo "$l.ssl.truststore.location=$KAFKA_SSL_TRUSTSTORE"
    echo "$l.ssl.truststore.type=${KAFKA_SSL_TRUSTSTORE_TYPE:-PKCS12}"
    if [ -n "${KAFKA_SSL_TRUSTSTORE_PASSWORD:-}" ]; then
      echo "$l.ssl.truststore.password=$KAFKA_SSL_TRUSTSTORE_PASSWORD"
    fi
  fi
}

# StorageTool arguments that add the SCRAM users (both mechanisms).
scram_args() {
  local name password
  while IFS=$'\t' read -r name password; do
    printf '%s\0' --add-scram "SCRAM-SHA-256=[name=$name,password=\"$password\"]"
    printf '%s\0' --add-scram "SCRAM-SHA-512=[name=$name,password=\"$password\"]"
  done < <(users KAFKA_SCRAM_USERS)
}

scram_digest() {
  printf '%s' "${KAFKA_SCRAM_USERS:-}" | sha256sum | cut -d' ' -f1
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
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$port"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [ -n "$sasl_port" ]; then
    listeners+=",SASL_SSL://127.0.0.1:$sasl_port"
    advertised+=",SASL_SSL://$sasl_host:$sasl_port"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  : >"$run/server.properties"
  if [ -n "$sasl_port" ]; then chmod 600 "$run/server.properties"; fi  # it will hold secrets
  cat >>"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
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
log.retention.hours=24
log.segment.bytes=268435456
EOF
  if [ -n "$sasl_port" ]; then
    sasl_ssl_config >>"$run/server.properties"
  fi
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
  check_sasl_ssl
  if running_pid >/dev/null && answers; then
    log "already running on 127.0.0.1:$port (pid $(running_pid))"
    if [ -n "$sasl_port" ] && ! listening "$sasl_port"; then
      log "warning: nothing listens on SASL_SSL port $sasl_port; stop and start it again"
    fi
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
      local cluster scram=()
      cluster=$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid)
      if [ -n "${KAFKA_SCRAM_USERS:-}" ]; then
        mapfile -d '' -t scram < <(scram_args)
      fi
      java -cp "$jars/*" -Dlog4j2.configurationFile="$run/log4j2.properties" \
        kafka.tools.StorageTool format -t "$cluster" -c "$run/server.properties" ${scram[@]+"${scram[@]}"} \
        >"$run/logs/format.log" 2>&1 \
        || { cat "$run/logs/format.log" >&2; exit 1; }
      scram_digest >"$run/scram-users.sha256"
    elif [ -n "${KAFKA_SCRAM_USERS:-}" ] \
      && [ "$(cat "$run/scram-users.sha256" 2>/dev/null)" != "$(scram_digest)" ]; then
      log "warning: KAFKA_SCRAM_USERS differs from the users $run was formatted with;"
      log "  SCRAM users are only added when the storage is formatted ('clean' to re-format)"
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
  until answers && { [ -z "$sasl_port" ] || listening "$sasl_port"; }; do
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
  if [ -n "$sasl_port" ]; then
    log "ready on 127.0.0.1:$port and SASL_SSL $sasl_host:$sasl_port (pid $(running_pid))"
  else
    log "ready on 127.0.0.1:$port (pid $(running_pid))"
  fi
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
