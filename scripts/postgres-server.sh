#!/usr/bin/env bash
# Runs a throwaway PostgreSQL server for the tests in a directory of its own, reachable on a Unix
# socket (and on the TCP addresses named in FASTENERS_PG_LISTEN, if any), with a trusted superuser
# role and database both named fasteners.
# Usage: postgres-server.sh start|stop|restart|status DIR
#   start    makes the cluster in DIR (an empty directory the caller made, e.g. with mktemp -d;
#            short enough for a socket path) on first use, starts the server, waits until it
#            accepts connections, writes the conninfo to DIR/conninfo and prints it
#   stop     stops the server at once (immediate shutdown) and removes what start put in DIR
#   restart  fast shutdown and start again, waiting until it accepts connections
#   status   prints the conninfo and exits 0 if the server runs; exits 3 otherwise
# As root, the server programs run as the system user postgres (initdb refuses root) and the
# socket is open to every user. Environment: FASTENERS_PG_BINDIR (the server's programs; default:
# `pg_config --bindir`, else /usr/lib/postgresql/15/bin), FASTENERS_PG_PORT (names the socket file,
# and the TCP port; default 54329), FASTENERS_PG_USER (the system user that runs the server as root;
# default postgres), FASTENERS_PG_LISTEN (at start on first use: comma-separated IP addresses to
# listen on besides the socket, never a wildcard; default none) and FASTENERS_PG_TRUST (with it: the
# comma-separated networks, as address/bits, whose TCP clients are trusted; default none).
set -euo pipefail

me="postgres-server.sh"
role=fasteners
database=fasteners
# A non-superuser role, for tests that must not run as the superuser.
plain_role=fasteners_unprivileged

die() {
  echo "$me: $*" >&2
  exit 1
}

usage() {
  echo "usage: $me start|stop|restart|status DIR" >&2
  exit 2
}

# The server's programs: an installation with pg_ctl, initdb and postgres.
find_bindir() {
  local candidates=()
  if [[ -n "${FASTENERS_PG_BINDIR:-}" ]]; then
    candidates=("$FASTENERS_PG_BINDIR")
  else
    if command -v pg_config >/dev/null 2>&1; then
      candidates+=("$(pg_config --bindir)")
    fi
    candidates+=(/usr/lib/postgresql/15/bin)
  fi
  local bin
  for bin in "${candidates[@]}"; do
    if [[ -x "$bin/pg_ctl" && -x "$bin/initdb" && -x "$bin/postgres" ]]; then
      echo "$bin"
      return 0
    fi
  done
  die "no PostgreSQL server programs (pg_ctl, initdb, postgres) in: ${candidates[*]};" \
    "install postgresql-15 (scripts/setup.sh) or set FASTENERS_PG_BINDIR"
}

# Runs a server program: as the server's system user when root, else directly.
as_server_user() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u "$server_user" -- "$@"
  else
    "$@"
  fi
}

print_log_tail() {
  local file
  for file in "$@"; do
    if [[ -s $file ]]; then
      echo "--- the last lines of $file:" >&2
      tail -n 30 "$file" >&2
    fi
  done
}

running() {
  [[ -f $data/PG_VERSION ]] && as_server_user "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1
}

# Checks FASTENERS_PG_LISTEN and FASTENERS_PG_TRUST: specific addresses and networks only.
check_tcp_settings() {
  local item
  for item in ${listen//,/ }; do
    [[ $item =~ ^[0-9a-fA-F.:]+$ && $item != 0.0.0.0 && $item != :: ]] ||
      die "FASTENERS_PG_LISTEN: '$item' is not one specific IP address (no wildcards)"
  done
  for item in ${trust//,/ }; do
    [[ $item =~ ^[0-9a-fA-F.:]+/[0-9]+$ && ${item#*/} -gt 0 ]] ||
      die "FASTENERS_PG_TRUST: '$item' is not a network as address/bits (not all addresses)"
  done
}

# The TCP clients that FASTENERS_PG_TRUST names log in without a password.
trust_networks() {
  local network
  for network in ${trust//,/ }; do
    echo "host all all $network trust"
  done | as_server_user tee -a "$data/pg_hba.conf" >/dev/null
}

# Makes the cluster: initdb, the settings, the database and the unprivileged role.
create_cluster() {
  local leftover
  leftover=$(find "$dir" -mindepth 1 -maxdepth 1 ! -name socket ! -name server.log \
    ! -name initdb.log ! -name bindir ! -name conninfo -print -quit)
  [[ -z $leftover ]] || die "$dir holds other files ($leftover); give start an empty directory"
  # Every user may reach the socket: the tests also drop to an unprivileged user.
  if [[ -O $dir || $(id -u) -eq 0 ]]; then
    chmod 0755 "$dir"
  fi
  if [[ $(id -u) -eq 0 ]]; then
    id -u "$server_user" >/dev/null 2>&1 ||
      die "running as root, the server needs the system user $server_user (made by the" \
        "postgresql-15 package; or set FASTENERS_PG_USER), or run this as a normal user"
    chown "$server_user:" "$dir"
    as_server_user test -w "$dir" ||
      die "the user $server_user cannot write $dir: every directory above it must be searchable" \
        "by every user (make DIR under /tmp)"
  fi
  as_server_user mkdir -p -m 0755 "$socket_dir"
  echo "$bindir" >"$dir/bindir"
  echo "$me: initdb in $data" >&2
  if ! as_server_user "$bindir/initdb" -D "$data" -U "$role" --auth=trust --encoding=UTF8 \
    --no-locale --no-sync >"$dir/initdb.log" 2>&1; then
    print_log_tail "$dir/initdb.log"
    die "initdb failed in $data"
  fi
  as_server_user tee -a "$data/postgresql.conf" >/dev/null <<EOF

# postgres-server.sh: a throwaway server for tests.
listen_addresses = '$listen'
port = $port
unix_socket_directories = '$socket_dir'
unix_socket_permissions = 0777
max_connections = 300
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
autovacuum = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  trust_networks
}

start_server() {
  if ! as_server_user "$bindir/pg_ctl" start -D "$data" -l "$log" -w -t 60 >/dev/null; then
    print_log_tail "$log"
    die "the server in $data did not start"
  fi
}

create_database() {
  if ! as_server_user "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$socket_dir" -p "$port" \
    -U "$role" -d postgres -c "CREATE DATABASE $database" \
    -c "CREATE ROLE $plain_role LOGIN" >/dev/null; then
    print_log_tail "$log"
    die "could not create the database $database in $data"
  fi
}

write_conninfo() {
  echo "host=$socket_dir port=$port user=$role dbname=$database" >"$dir/conninfo"
  chmod 0644 "$dir/conninfo"
  cat "$dir/conninfo"
}

start() {
  if [[ -f $data/PG_VERSION ]]; then
    if running; then
      echo "$me: the server in $data already runs" >&2
      cat "$dir/conninfo"
      return 0
    fi
    start_server
  else
    create_cluster
    start_server
    create_database
  fi
  write_conninfo
}

stop() {
  if [[ -n $bindir && -f $data/postmaster.pid ]] && running; then
    if ! as_server_user "$bindir/pg_ctl" stop -D "$data" -m immediate -w -t 60 >/dev/null; then
      print_log_tail "$log"
      die "could not stop the server in $data"
    fi
  fi
  rm -rf "$data" "$socket_dir" "$log" "$dir/initdb.log" "$dir/bindir" "$dir/conninfo"
}

restart() {
  [[ -n $bindir && -f $data/PG_VERSION ]] || die "no server in $dir (start it first)"
  if ! as_server_user "$bindir/pg_ctl" restart -D "$data" -l "$log" -m fast -w -t 60 >/dev/null
  then
    print_log_tail "$log"
    die "the server in $data did not restart"
  fi
  cat "$dir/conninfo"
}

status() {
  if [[ -n $bindir ]] && running; then
    cat "$dir/conninfo"
    return 0
  fi
  echo "$me: no server runs in $dir" >&2
  return 3
}

[[ $# -eq 2 ]] || usage
command=$1
[[ -d $2 ]] || die "$2 is not a directory (the caller makes it, e.g. with mktemp -d)"
# Absolute: the socket directory goes into the conninfo. pwd -P, as the server resolves it.
dir=$(cd -- "$2" && pwd -P)
data="$dir/data"
socket_dir="$dir/socket"
log="$dir/server.log"
port=${FASTENERS_PG_PORT:-54329}
server_user=${FASTENERS_PG_USER:-postgres}
listen=${FASTENERS_PG_LISTEN:-}
trust=${FASTENERS_PG_TRUST:-}
check_tcp_settings

# sockaddr_un holds 108 bytes with the terminating NUL.
socket_path="$socket_dir/.s.PGSQL.$port"
if ((${#socket_path} > 107)); then
  die "the socket path $socket_path is ${#socket_path} bytes, more than the 107 a Unix socket" \
    "allows; use a shorter DIR (e.g. mktemp -d /tmp/pg.XXXXXX)"
fi

# The conninfo and the server's configuration take the path as it is.
if [[ $dir =~ [[:space:]\',\\] ]]; then
  die "$dir holds a space, quote, comma or backslash; use a plainer DIR (e.g. mktemp -d)"
fi

# The programs that made the cluster; found afresh when start makes one.
bindir=""
if [[ -f $dir/bindir ]]; then
  bindir=$(<"$dir/bindir")
elif [[ $command == start ]]; then
  bindir=$(find_bindir)
fi
# Server programs that run as another user need a working directory they may enter.
cd "$dir"

case $command in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  status) status ;;
  *) usage ;;
esac
