#!/usr/bin/env bash
# A local PostgreSQL server on loopback from the machine's own server binaries, for
# development and tests on machines without Docker.
#
#   deploy/postgres/db.sh start    # initdb once, start, wait until it answers
#   deploy/postgres/db.sh stop     # stop the server this script started
#   deploy/postgres/db.sh status   # exit 0 when it answers, 1 otherwise
#   deploy/postgres/db.sh clean    # stop and delete its data
#
# Every command is idempotent. Settings (environment):
#   PGPORT            port on 127.0.0.1                      (default: 5432)
#   PG_DATA_ROOT      state: one folder per port              (default: deploy/postgres/.data,
#                     or, as root in a checkout the postgres user cannot enter, a folder
#                     per checkout under that user's home: ~postgres/stream-db/<key>)
#   PG_STREAM_USER    the database and user for stream        (default: stream)
#   PG_STREAM_PASSWORD its password                          (default: stream)
#   PG_START_TIMEOUT  seconds to wait for it to answer        (default: 60)
#
# Authentication: every connection over TCP needs a password (scram-sha-256), so a
# wrong password is refused as on a real server; the server's superuser (the OS user
# that runs it) may connect over the Unix socket in the data folder without one.
# The DSN to use is printed on start:
#   postgresql://stream:stream@127.0.0.1:$PGPORT/stream
#
# As root, the server runs as the postgres system user, which must be able to enter every
# folder above its data. A checkout in a folder only root may enter (a `mktemp -d` folder,
# anything under /root) keeps its data under ~postgres/stream-db/<key> instead, <key> a
# hash of the checkout's path (two checkouts never share a server's data); `clean`
# removes it there too.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=${PGPORT:-5432}
user=${PG_STREAM_USER:-stream}
password=${PG_STREAM_PASSWORD:-stream}
timeout=${PG_START_TIMEOUT:-60}

log() { printf 'db: %s\n' "$*" >&2; }

# The directory of initdb/pg_ctl/postgres: PATH first, then Debian's versioned folders
# (newest version first).
bindir() {
  local found
  if found=$(command -v pg_ctl 2>/dev/null) && [ -x "$(dirname "$(readlink -f "$found")")/initdb" ]; then
    dirname "$(readlink -f "$found")"
    return 0
  fi
  for found in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
    if [ -x "$found/pg_ctl" ] && [ -x "$found/initdb" ] && [ -x "$found/postgres" ]; then
      echo "$found"
      return 0
    fi
  done
  log "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in /usr/lib/postgresql/*/bin"
  log "install them: apt-get install postgresql   (Debian/Ubuntu)"
  return 1
}

# Run a command as the unprivileged user that owns the data (the postgres system user
# when this script runs as root; PostgreSQL refuses to run as root). It runs from /, as
# the caller's folder may be one that user cannot enter.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { log "running as root needs a 'postgres' system user"; exit 1; }
    if command -v runuser >/dev/null; then
      (cd / && runuser -u postgres -- "$@")
    else
      (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
    fi
  else
    "$@"
  fi
}

# Whether the data's owner can enter a folder (and so every folder above it).
owner_enters() { as_owner test -x "$1" 2>/dev/null; }

# Where the data lives (sets root, and keyed when it is a per-checkout folder).
keyed=""
data_root() {
  root=${PG_DATA_ROOT:-$here/.data}
  if [ -n "${PG_DATA_ROOT:-}" ] || [ "$(id -u)" -ne 0 ] || owner_enters "$here"; then
    return 0
  fi
  local home
  home=$(getent passwd postgres | cut -d: -f6)
  if [ -z "$home" ] || [ ! -d "$home" ] || ! owner_enters "$home"; then
    log "the postgres user cannot enter $here (a folder only root may enter) and has no home folder to hold the data instead: set PG_DATA_ROOT to a folder it can enter"
    exit 1
  fi
  keyed=$home/stream-db/$(printf '%s' "$here" | sha256sum | cut -c1-16)
  root=$keyed
}
data_root
run=$root/run-$port
data=$run/data

answers() {
  python3 - "$port" <<'EOF'
import socket, struct, sys
# A startup packet without a user gets an ErrorResponse ('E') or an auth request ('R')
# from a serving PostgreSQL; anything else (or nothing) means no server here.
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.settimeout(2)
    body = struct.pack(">i", 196608) + b"user\0probe\0database\0probe\0\0"
    s.sendall(struct.pack(">i", len(body) + 4) + body)
    sys.exit(0 if s.recv(1) in (b"E", b"R") else 1)
except OSError:
    sys.exit(1)
EOF
}

init() {
  local bin=$1
  [ -f "$data/PG_VERSION" ] && return 0
  (umask 022 && mkdir -p "$run")  # folders above the data: enterable by its owner
  if [ -n "$keyed" ]; then printf '%s\n' "$here" >"$keyed/checkout"; fi
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$run"; fi
  if ! as_owner test -x "$run" -a -w "$run" 2>/dev/null; then
    log "the server's user ($(as_owner id -un)) cannot enter $run: set PG_DATA_ROOT to a folder it can enter"
    exit 1
  fi
  log "initdb in $data"
  as_owner "$bin/initdb" -D "$data" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$run/initdb.log" 2>&1 || {
    log "initdb failed; last lines of $run/initdb.log:"
    tail -n 5 "$run/initdb.log" >&2 || true
    exit 1
  }
  cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$run'
password_encryption = 'scram-sha-256'
max_connections = 100
fsync = on
EOF
  # Only the loopback address over TCP, always with a password.
  cat >"$data/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 scram-sha-256
EOF
}

running() { [ -f "$data/postmaster.pid" ] && as_owner "$(bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
  if answers; then
    log "a server already answers on 127.0.0.1:$port"
    return 0
  fi
  local bin
  bin=$(bindir)
  init "$bin"
  if ! running; then
    log "starting PostgreSQL ($bin) on 127.0.0.1:$port"
    # setsid: the server outlives this script and is not hit by the caller's Ctrl-C.
    as_owner setsid "$bin/pg_ctl" -D "$data" -l "$run/server.log" -w -t "$timeout" \
      -o "-p $port -k $run" start >/dev/null || {
      log "the server did not start; last lines of its log:"
      tail -n 20 "$run/server.log" >&2 || true
      exit 1
    }
  fi
  local deadline=$((SECONDS + timeout))
  until answers; do
    if [ $SECONDS -ge $deadline ]; then log "no answer on 127.0.0.1:$port after ${timeout}s"; exit 1; fi
    sleep 0.2
  done
  # The stream user and database (idempotent), with a password over TCP.
  local psql=("$bin/psql" -h "$run" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
  if [ "$(id -u)" -ne 0 ]; then psql=("$bin/psql" -h "$run" -p "$port" -U "$(id -un)" -d postgres -v ON_ERROR_STOP=1 -qAt); fi
  as_owner "${psql[@]}" -v user="$user" -v pw="$password" >/dev/null <<'EOF'
SELECT format('CREATE ROLE %I LOGIN', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'user', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'user') \gexec
EOF
  log "ready on 127.0.0.1:$port: postgresql://$user:***@127.0.0.1:$port/$user"
}

stop() {
  if [ ! -f "$data/postmaster.pid" ]; then
    log "not running"
    return 0
  fi
  as_owner "$(bindir)/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if answers; then
      log "answers on 127.0.0.1:$port"
    else
      log "no server on 127.0.0.1:$port"
      exit 1
    fi
    ;;
  clean)
    stop
    rm -rf "$run"
    if [ -n "$keyed" ] && ! compgen -G "$keyed/run-*" >/dev/null; then
      rm -rf "$keyed"
      rmdir "$(dirname "$keyed")" 2>/dev/null || true  # stream-db, once no checkout uses it
    fi
    ;;
  *)
    echo "usage: $0 start|stop|status|clean" >&2
    exit 2
    ;;
esac
