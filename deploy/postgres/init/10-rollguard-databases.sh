#!/usr/bin/env bash
# Creates the stack's databases and roles on the first start of the PostgreSQL container (the
# official image runs /docker-entrypoint-initdb.d/* once, on an empty data directory).
#
#   database   owner      used by
#   mlflow     mlflow     the MLflow tracking server (runs and model registry)
#   airflow    airflow    Airflow's metadata database
#   rollguard  rollguard  the monitoring store (alembic migrations: `rollguard db upgrade`)
#   optuna     rollguard  Optuna studies of the training step
#   grafana    read-only  role that may only SELECT from the monitoring store (Grafana datasource)
#
# Passwords come from the environment (docker-compose passes them from .env); none has a default.
# They are handed to psql as variables (:'name' quotes them as SQL literals), never spliced into SQL.
set -euo pipefail

for var in MLFLOW_DB_PASSWORD AIRFLOW_DB_PASSWORD ROLLGUARD_DB_PASSWORD GRAFANA_DB_PASSWORD; do
  if [ -z "${!var:-}" ]; then
    echo "rollguard init: $var is not set" >&2
    exit 1
  fi
done

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v mlflow_pw="$MLFLOW_DB_PASSWORD" \
  -v airflow_pw="$AIRFLOW_DB_PASSWORD" \
  -v rollguard_pw="$ROLLGUARD_DB_PASSWORD" \
  -v grafana_pw="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE ROLE rollguard LOGIN PASSWORD :'rollguard_pw';
CREATE ROLE grafana LOGIN PASSWORD :'grafana_pw';

CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE rollguard OWNER rollguard;
CREATE DATABASE optuna OWNER rollguard;

-- Nobody but the owners (and the read-only role on the store) may connect.
REVOKE ALL ON DATABASE mlflow, airflow, rollguard, optuna FROM PUBLIC;
GRANT CONNECT ON DATABASE rollguard TO grafana;

\connect rollguard
-- PostgreSQL 15+ no longer lets every role create in schema public; the owner gets it explicitly.
ALTER SCHEMA public OWNER TO rollguard;
GRANT USAGE ON SCHEMA public TO grafana;
-- Tables that the migrations (run as rollguard) create later are readable by grafana, nothing more.
ALTER DEFAULT PRIVILEGES FOR ROLE rollguard IN SCHEMA public GRANT SELECT ON TABLES TO grafana;

\connect mlflow
ALTER SCHEMA public OWNER TO mlflow;
\connect airflow
ALTER SCHEMA public OWNER TO airflow;
\connect optuna
ALTER SCHEMA public OWNER TO rollguard;
SQL

echo "rollguard init: databases mlflow, airflow, rollguard, optuna and their roles are ready"
