#!/usr/bin/env bash
# pgctl.sh - a private PostgreSQL cluster in a directory, for development and tests.
#
#   pgctl.sh start DIR [PORT] [--fsync-off]   initdb on first use, start (idempotent), write DIR/conninfo
#   pgctl.sh stop DIR                          fast shutdown (idempotent; nothing to do if not running)
#   pgctl.sh createdb DIR NAME                 create database NAME if missing; print its conninfo
#   pgctl.sh status DIR                        "running" (exit 0) or "stopped" (exit 3)
#
# Layout: DIR/data (the cluster), DIR/log, DIR/port, DIR/conninfo, DIR/password, and
# the unix socket DIR/.s.PGSQL.<port>. The server listens on that socket (trust
# authentication, protected by DIR being private) and on 127.0.0.1:PORT (password
# in DIR/password, scram-sha-256). DIR/conninfo holds
#   host=DIR port=PORT user=postgres dbname=postgres
# PORT defaults to the one used before, else a free port. --fsync-off (or
# PGCTL_FSYNC_OFF=1) trades durability for speed: tests only.
# As root, the cluster runs as the postgres user (initdb refuses root) and DIR
# is chowned to it. initdb / pg_ctl come from PATH or /usr/lib/postgresql/*/bin.
set -euo pipefail

die() { echo "pgctl: $*" >&2; exit 1; }

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

find_bin() {
  local name=$1 d
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/$name" ] && { echo "$d/$name"; return 0; }
  done
  die "$name not found (install postgresql, or put its bin directory on PATH)"
}

# Runs a command as the cluster owner (postgres when we are root).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    local cmd="" a
    for a in "$@"; do cmd+=" $(printf '%q' "$a")"; done
    su postgres -s /bin/sh -c "$cmd"
  else
    "$@"
  fi
}

# The absolute path of DIR (created for start only).
abs_dir() {
  if [ "$CMD" = start ]; then mkdir -p "$1"; fi
  if [ -d "$1" ]; then (cd "$1" && pwd -P); else echo "$(cd "$(dirname "$1")" 2>/dev/null && pwd -P)/$(basename "$1")"; fi
}

is_running() { as_owner "$PG_CTL" -D "$DIR/data" status >/dev/null 2>&1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    port_free "$p" && { echo "$p"; return 0; }
  done
  die "no free port found"
}

write_conninfo() {
  local port=$1
  printf 'host=%s port=%s user=postgres dbname=postgres\n' "$DIR" "$port" >"$DIR/conninfo.tmp"
  mv "$DIR/conninfo.tmp" "$DIR/conninfo"
  chmod 0644 "$DIR/conninfo"
}

cmd_start() {
  local port="" fsync_off="${PGCTL_FSYNC_OFF:-0}" a
  for a in "$@"; do
    case "$a" in
      --fsync-off) fsync_off=1 ;;
      ''|*[!0-9]*) die "bad argument '$a' (expected a port number or --fsync-off)" ;;
      *) port=$a ;;
    esac
  done
  mkdir -p "$DIR"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the postgres user (install postgresql)"
    chown postgres: "$DIR"
    su postgres -s /bin/sh -c "test -w $(printf '%q' "$DIR")" ||
      die "the postgres user cannot reach $DIR (a parent directory is not searchable)"
  fi
  chmod 0700 "$DIR"

  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    local pw="$DIR/password"
    (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pw")
    [ "$(id -u)" -eq 0 ] && chown postgres: "$pw"
    rm -rf "$DIR/data"
    as_owner "$INITDB" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$pw" -E UTF8 --locale=C --no-sync >"$DIR/initdb.log" 2>&1 ||
      { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
  fi

  if is_running; then
    port=$(cat "$DIR/port" 2>/dev/null) || die "a server runs in $DIR/data but $DIR/port is missing"
    write_conninfo "$port"
    echo "pgctl: already running in $DIR (port $port)"
    return 0
  fi
  if [ -z "$port" ] && [ -f "$DIR/port" ] && port_free "$(cat "$DIR/port")"; then port=$(cat "$DIR/port"); fi
  [ -n "$port" ] || port=$(pick_port)
  port_free "$port" || die "port $port is in use"

  local opts="-p $port -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200"
  [ "$fsync_off" = 1 ] && opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  # profiling only, e.g. "-c shared_preload_libraries=pg_stat_statements -c track_functions=all"
  [ -n "${PGCTL_EXTRA_OPTS:-}" ] && opts+=" $PGCTL_EXTRA_OPTS"
  rm -f "$DIR/data/postmaster.pid.stale"
  as_owner "$PG_CTL" -D "$DIR/data" -l "$DIR/log" -w -t 60 -o "$opts" start >/dev/null ||
    { tail -n 20 "$DIR/log" >&2 2>/dev/null || true; die "the server did not start"; }
  echo "$port" >"$DIR/port"
  write_conninfo "$port"
  echo "pgctl: started in $DIR (port $port)"
}

cmd_stop() {
  [ -f "$DIR/data/PG_VERSION" ] || { echo "pgctl: nothing in $DIR"; return 0; }
  if is_running; then
    as_owner "$PG_CTL" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null || die "stop failed"
    echo "pgctl: stopped $DIR"
  else
    echo "pgctl: not running in $DIR"
  fi
}

cmd_createdb() {
  local name=${1:-}
  [ -d "$DIR/data" ] || die "no cluster in $DIR (pgctl.sh start first)"
  [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] || die "bad database name '$name'"
  is_running || die "no server running in $DIR (pgctl.sh start first)"
  local port; port=$(cat "$DIR/port")
  local exists
  exists=$("$PSQL" -h "$DIR" -p "$port" -U postgres -d postgres -tAX -v ON_ERROR_STOP=1 \
           -c "SELECT 1 FROM pg_database WHERE datname = '$name'") || die "cannot query the server"
  if [ "$exists" != 1 ]; then
    "$PSQL" -h "$DIR" -p "$port" -U postgres -d postgres -qX -v ON_ERROR_STOP=1 \
      -c "CREATE DATABASE \"$name\"" >/dev/null || die "CREATE DATABASE $name failed"
  fi
  printf 'host=%s port=%s user=postgres dbname=%s\n' "$DIR" "$port" "$name"
}

[ $# -ge 2 ] || usage
CMD=$1
DIR=$(abs_dir "$2")
shift 2
INITDB=$(find_bin initdb)
PG_CTL=$(find_bin pg_ctl)
PSQL=$(dirname "$PG_CTL")/psql
[ -x "$PSQL" ] || PSQL=$(find_bin psql)

case "$CMD" in
  start) cmd_start "$@" ;;
  stop) cmd_stop ;;
  createdb) cmd_createdb "$@" ;;
  status) if [ -d "$DIR/data" ] && is_running; then echo running; else echo stopped; exit 3; fi ;;
  *) usage ;;
esac
