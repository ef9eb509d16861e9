#!/bin/bash
# The archive database beside Airflow's (run once by the postgres image on an empty volume).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$COSMODM_DB_PASSWORD" <<'SQL'
CREATE USER cosmodm WITH PASSWORD :'pw';
CREATE DATABASE cosmodm OWNER cosmodm;
SQL
