#!/usr/bin/env bash
# One database per service: every name in POSTGRES_DATABASES (comma-separated, set on the
# postgres service of docker-compose.yml), owned by POSTGRES_USER. The postgres image runs it
# from /docker-entrypoint-initdb.d when its data volume is empty. It is idempotent, so after
# adding a service to POSTGRES_DATABASES an existing volume catches up with:
#   docker compose exec postgres /docker-entrypoint-initdb.d/10-databases.sh
set -euo pipefail

: "${POSTGRES_USER:?POSTGRES_USER is not set}"
: "${POSTGRES_DATABASES:?POSTGRES_DATABASES is not set (comma-separated database names)}"

IFS=',' read -r -a names <<< "$POSTGRES_DATABASES"
for raw in "${names[@]}"; do
  name="${raw//[[:space:]]/}"
  [ -n "$name" ] || continue
  # A service name as the generator allows it; anything else is a typo, refused loudly.
  if [[ ! "$name" =~ ^[a-z][a-z0-9_]{0,62}$ ]]; then
    echo "postgres-init: '$name' is not a database name (lower-case letters, digits, _)" >&2
    exit 1
  fi
  # Quoted by format(%I): "user" is a reserved word. \gexec runs the CREATE only when missing.
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
       -v db="$name" -v owner="$POSTGRES_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
  echo "postgres-init: database $name ready"
done
