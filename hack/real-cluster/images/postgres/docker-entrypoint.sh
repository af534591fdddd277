#!/usr/bin/env bash
# Entrypoint of the PostgreSQL test image: the environment contract of the
# official `postgres` image on Debian's postgresql-15, so that the StatefulSet
# the operator writes for the official image runs unchanged.
#
#   POSTGRES_PASSWORD[_FILE]   superuser password (required unless
#                              POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER[_FILE]       superuser name, default postgres
#   POSTGRES_DB[_FILE]         database created on first start, default $POSTGRES_USER
#   POSTGRES_INITDB_ARGS       extra initdb arguments
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP clients, default scram-sha-256
#   PGDATA                     data directory, default /var/lib/postgresql/data
#   /docker-entrypoint-initdb.d/*.sh|*.sql  run once, after the database exists
#
# Started as root it fixes the ownership of PGDATA and re-executes itself as
# postgres (uid/gid 999); started as 999 (a restricted securityContext) it
# goes straight on.
set -Eeo pipefail

fail() { echo "docker-entrypoint.sh: $*" >&2; exit 1; }

# from_env_or_file NAME [DEFAULT]: NAME, else the contents of NAME_FILE.
from_env_or_file() {
	local name=$1 file_name=${1}_FILE value=${2:-}
	[ -n "${!name:-}" ] && [ -n "${!file_name:-}" ] && fail "set $name or $file_name, not both"
	if [ -n "${!name:-}" ]; then
		value=${!name}
	elif [ -n "${!file_name:-}" ]; then
		value=$(<"${!file_name}")
	fi
	export "$name=$value"
	unset "$file_name"
}

# "IMAGE -c x=y" means "postgres -c x=y"; any other command runs as given.
[ "${1:0:1}" = - ] && set -- postgres "$@"
[ "${1:-}" = postgres ] || exec "$@"

export PGDATA=${PGDATA:-/var/lib/postgresql/data}

if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
	chmod 700 "$PGDATA"
	chmod 3775 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

# On a mounted volume owned by someone else these may fail; initdb then says why.
mkdir -p "$PGDATA" && chmod 700 "$PGDATA" || true
mkdir -p /var/run/postgresql && chmod 3775 /var/run/postgresql || true

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	from_env_or_file POSTGRES_PASSWORD
	from_env_or_file POSTGRES_USER postgres
	from_env_or_file POSTGRES_DB "$POSTGRES_USER"
	from_env_or_file POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		fail "the database is not initialised and no superuser password is set: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)"
	fi
	# The password reaches initdb through a file descriptor, never argv.
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words
	if [ -n "$POSTGRES_PASSWORD" ]; then
		initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
	else
		initdb --username="$POSTGRES_USER" $POSTGRES_INITDB_ARGS
	fi
	# Local socket connections stay on trust (initdb's default); every TCP
	# client must authenticate.
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
	echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

	# A server on the socket only, to create the database and run init scripts.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
	psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ "$POSTGRES_DB" != postgres ]; then
		found=$(echo "SELECT 1 FROM pg_database WHERE datname = :'db';" |
			"${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" --tuples-only --no-align)
		[ -n "$found" ] || echo 'CREATE DATABASE :"db";' | "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB"
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh) echo "running $f"; if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
		*.sql) echo "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
		*) [ -e "$f" ] && echo "ignoring $f" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop
	unset POSTGRES_PASSWORD
	echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
