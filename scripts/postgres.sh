#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on 127.0.0.1 only.
#
# Source it and call pg_test_start: it initdb's a cluster in a fresh temp
# dir, starts it on a free port with trust auth for loopback, and exports
# SMD_TEST_POSTGRES_DSN. pg_test_stop stops it and removes the dir (call
# it from an EXIT trap). If SMD_TEST_POSTGRES_DSN is already set,
# pg_test_start uses that server and starts nothing.
#
# PostgreSQL refuses to run as root: as root the cluster belongs to the
# "postgres" system user that Debian's package creates (or to "nobody"),
# and the server runs as that user.
#
# The server trades crash safety for speed (fsync off): it lives for one
# test run. The store under test commits as it would anywhere else.
#
# Standalone: scripts/postgres.sh -- CMD ARGS... runs CMD with a server.

pg_test_dir=""
pg_test_user=""

# pg_test_bin prints the directory holding initdb and pg_ctl.
pg_test_bin() {
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] || [ ! -x "$d/pg_ctl" ]; then
    echo "postgres: initdb/pg_ctl not found (scripts/tools.sh installs Debian's postgresql)" >&2
    return 1
  fi
  echo "$d"
}

# pg_test_run runs a command as the cluster's owner.
pg_test_run() {
  # From the cluster's dir: the owner may not be allowed into ours.
  if [ -n "$pg_test_user" ]; then
    (cd "$pg_test_dir" && runuser -u "$pg_test_user" -- "$@")
  else
    (cd "$pg_test_dir" && "$@")
  fi
}

pg_test_start() {
  if [ -n "${SMD_TEST_POSTGRES_DSN:-}" ]; then
    echo "postgres: using the server in SMD_TEST_POSTGRES_DSN" >&2
    return 0
  fi
  local bin
  bin=$(pg_test_bin) || return 1
  pg_test_user=""
  if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then
      pg_test_user=postgres
    else
      pg_test_user=nobody
    fi
  fi
  pg_test_dir=$(mktemp -d "${TMPDIR:-/tmp}/smd-pg.XXXXXX")
  if [ -n "$pg_test_user" ]; then
    chown "$pg_test_user" "$pg_test_dir"
  fi
  pg_test_run "$bin/initdb" -D "$pg_test_dir/data" -U smdtest --auth=trust \
    --encoding=UTF8 --no-locale >"$pg_test_dir/initdb.log" 2>&1 || {
    echo "postgres: initdb failed:" >&2
    cat "$pg_test_dir/initdb.log" >&2
    return 1
  }
  # Loopback only, from the cluster's own pg_hba.conf too.
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$pg_test_dir/hba"
  chmod 644 "$pg_test_dir/hba"
  local port try
  for try in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    # Something already answers there: pick another.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      continue
    fi
    if pg_test_run "$bin/pg_ctl" -D "$pg_test_dir/data" -l "$pg_test_dir/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_test_dir -c hba_file=$pg_test_dir/hba \
          -c max_connections=300 -c fsync=off -c full_page_writes=off" \
      start >/dev/null; then
      export SMD_TEST_POSTGRES_DSN="postgres://smdtest@127.0.0.1:$port/postgres?sslmode=disable"
      echo "postgres: throwaway server on 127.0.0.1:$port ($pg_test_dir)" >&2
      return 0
    fi
  done
  echo "postgres: the server did not start:" >&2
  tail -n 20 "$pg_test_dir/server.log" >&2 || true
  return 1
}

pg_test_stop() {
  [ -n "$pg_test_dir" ] || return 0
  local bin
  if bin=$(pg_test_bin 2>/dev/null) && [ -f "$pg_test_dir/data/postmaster.pid" ]; then
    pg_test_run "$bin/pg_ctl" -D "$pg_test_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$pg_test_dir"
  pg_test_dir=""
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  if [ "${1:-}" != "--" ] || [ $# -lt 2 ]; then
    echo "usage: scripts/postgres.sh -- CMD ARGS..." >&2
    exit 2
  fi
  shift
  trap pg_test_stop EXIT
  pg_test_start
  "$@"
fi
