#!/usr/bin/env bash
# One-shot Airflow initialisation (the `airflow-init` service of docker-compose.yml):
#   1. migrate Airflow's metadata database (idempotent: a no-op when it is current);
#   2. create the admin user. Airflow 3's default simple auth manager reads its users from
#      AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS ("admin:admin") and their passwords from the JSON
#      file AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE; this writes that file from
#      AIRFLOW_ADMIN_PASSWORD (.env), so no password is generated or printed in a log.
# docker-compose.yml runs it with /bin/bash as the entrypoint (the image's own entrypoint is skipped;
# the job waits for PostgreSQL through depends_on instead).
set -euo pipefail

: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is not set}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE is not set}"
admin_user="${AIRFLOW_ADMIN_USER:-admin}"

airflow db migrate

umask 077
python - "$admin_user" "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" <<'PY'
import json, os, sys
user, path = sys.argv[1], sys.argv[2]
tmp = f"{path}.tmp"
with open(tmp, "w") as fh:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
os.replace(tmp, path)
print(f"airflow init: admin user {user!r} written to {path}")
PY
