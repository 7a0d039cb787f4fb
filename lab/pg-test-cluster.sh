#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster on 127.0.0.1 for the test suite and
# prints the DSN of an empty database. Debian's postgresql package; runs the
# server as the postgres user (it refuses root).
#
#   dsn=$(bash lab/pg-test-cluster.sh start /tmp/convoice-pg 55432)
#   bash lab/pg-test-cluster.sh restart /tmp/convoice-pg   # fast shutdown, same settings
#   bash lab/pg-test-cluster.sh down /tmp/convoice-pg      # stopped, data kept …
#   bash lab/pg-test-cluster.sh up /tmp/convoice-pg        # … and started again
#   bash lab/pg-test-cluster.sh stop /tmp/convoice-pg
set -euo pipefail
cmd=${1:?start|restart|down|up|stop}
dir=${2:?data directory}
port=${3:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
	rm -rf "$dir"
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres: "$dir"
	as_pg "$bin/initdb" -D "$dir/data" -U convoice --auth=trust -E UTF8 >/dev/null
	echo "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=200" >"$dir/opts"
	as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "$(cat "$dir/opts")" start >/dev/null
	as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U convoice convoice_test
	echo "postgres://convoice@127.0.0.1:$port/convoice_test?sslmode=disable"
	;;
restart)
	# pg_ctl restart starts the server with the options it last ran with
	# (postmaster.opts); -m fast ends every session at once.
	as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -m fast -w restart >/dev/null
	;;
down)
	# Stopped (fast: every session ended), data kept, until "up".
	as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
	;;
up)
	as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "$(cat "$dir/opts")" start >/dev/null
	;;
stop)
	as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$dir"
	;;
*) echo "usage: $0 start|restart|down|up|stop DIR [PORT]" >&2; exit 2 ;;
esac
