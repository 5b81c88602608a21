#!/usr/bin/env bash
# A Schema Registry (Apicurio Registry, in memory, Confluent-compatible API under
# /apis/ccompat/v7) on loopback, for development and tests on machines without Docker.
#
#   deploy/registry/registry.sh fetch    # download the server archive with Maven (once)
#   deploy/registry/registry.sh start    # fetch if needed, start, wait until it answers
#   deploy/registry/registry.sh stop     # stop the registry this script started
#   deploy/registry/registry.sh status   # exit 0 when it answers, 1 otherwise
#
# Every command is idempotent. It keeps its schemas in memory (a restart forgets them)
# unless REGISTRY_DATA_DIR is set: then in an H2 database file there, across restarts.
# Settings (environment):
#   REGISTRY_HOME_DIR       state: server, logs, pid    (default: deploy/registry/.cache)
#   REGISTRY_PORT           HTTP port on 127.0.0.1       (default: 8081)
#   REGISTRY_MANAGEMENT_PORT  health/metrics port on 127.0.0.1 (default: REGISTRY_PORT + 1)
#   REGISTRY_HEAP           JVM heap                     (default: 512m)
#   REGISTRY_START_TIMEOUT  seconds to wait for it to answer (default: 120)
#   REGISTRY_RUN_DIR        this registry's logs and pid (default: $REGISTRY_HOME_DIR/run-$REGISTRY_PORT)
#   REGISTRY_DATA_DIR       keep schemas in a database file here (default: none, in memory)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=3.0.9
home=${REGISTRY_HOME_DIR:-$here/.cache}
port=${REGISTRY_PORT:-8081}
mport=${REGISTRY_MANAGEMENT_PORT:-$((port + 1))}
heap=${REGISTRY_HEAP:-512m}
timeout=${REGISTRY_START_TIMEOUT:-120}
server=$home/apicurio-registry-$version
run=${REGISTRY_RUN_DIR:-$home/run-$port}
pidfile=$run/registry.pid
data=${REGISTRY_DATA_DIR:-}
api=http://127.0.0.1:$port/apis/ccompat/v7

log() { printf 'registry: %s\n' "$*" >&2; }

# Maven writes colour codes even in batch mode and off a terminal (Debian's 3.8 starts
# lines with ESC[0m): strip terminal escape codes from what reaches the user.
plain() { sed -e $'s/\x1b\\[[0-9;?]*[A-Za-z]//g'; }

fetch() {
  if [ -f "$server/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch the registry"; exit 1; }
  command -v java >/dev/null || { log "Java 17+ is needed to run the registry"; exit 1; }
  log "fetching Apicurio Registry $version with Maven into $server"
  rm -rf "$server"
  mkdir -p "$server"
  mvn -q -B -Dstyle.color=never dependency:copy \
    -Dartifact="io.apicurio:apicurio-registry-app:$version:tar.gz:all" \
    -DoutputDirectory="$server" 2>&1 | plain >&2
  tar -xzf "$server/apicurio-registry-app-$version-all.tar.gz" -C "$server"
  rm -f "$server/apicurio-registry-app-$version-all.tar.gz"
  touch "$server/.complete"
}

answers() {
  python3 - "$api/subjects" <<'EOF2'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF2
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
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
  mkdir -p "$run"
  if ! running_pid >/dev/null; then
    local storage=()
    if [ -n "$data" ]; then
      mkdir -p "$data"
      storage=(-Dapicurio.datasource.url="jdbc:h2:file:$(cd "$data" && pwd)/registry")
    fi
    log "starting Apicurio Registry $version on 127.0.0.1:$port${data:+ (schemas kept in $data)}"
    # setsid: the registry outlives this script and is not hit by the caller's Ctrl-C.
    setsid java -Xms128m -Xmx"$heap" -Djava.awt.headless=true \
      -Dquarkus.console.color=false \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
      -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$mport" \
      ${storage[@]+"${storage[@]}"} \
      -jar "$server/apicurio-registry-app-$version-runner.jar" \
      >"$run/registry.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  local deadline=$((SECONDS + timeout))
  until answers; do
    if ! running_pid >/dev/null; then
      log "the registry exited; last lines of its log:"
      tail -n 30 "$run/registry.log" | plain >&2 || true
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "no answer on 127.0.0.1:$port after ${timeout}s; see $run/registry.log"
      exit 1
    fi
    sleep 0.5
  done
  log "ready on http://127.0.0.1:$port/apis/ccompat/v7 (pid $(running_pid))"
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
  status)
    if answers; then
      log "answers on $api"
    else
      log "no registry on 127.0.0.1:$port"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 fetch|start|stop|status" >&2
    exit 2
    ;;
esac
