# syntax=docker/dockerfile:1.7
# Rollguard service images: one target per service, each installing only that service's uv
# dependency group from the committed uv.lock (`uv sync --locked`), so an image holds exactly the
# versions the test suite ran with. The Airflow image is Dockerfile.airflow.
#
#   docker build --target api      -t rollguard-api .      # rollguard serve api (port 8000); also `db upgrade`
#   docker build --target ui       -t rollguard-ui .       # rollguard-ui = rollguard serve ui (port 7860)
#   docker build --target guard    -t rollguard-guard .    # rollguard serve guard (port 8100)
#   docker build --target mlflow   -t rollguard-mlflow .   # mlflow server (port 5000)
#
# Installed sizes of each target's dependency group: docs/deploy.md (benchmarks/bench_image_sizes.py
# reads the `uv sync` lines of the build-* stages below, so keep one such line per stage, and runs
# deploy/prune-site-packages.sh after it where the stage does).
#
# Every container runs as uid 50000, gid 0 — the same ids as the official Airflow image — so the
# shared ROLLGUARD_HOME volume (landing, warehouse, reports) is writable by Airflow's tasks, the API
# and the guard alike.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# --- build stages: a virtual environment in /opt/venv per service --------------------------------
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first (a layer cached until the lock changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
COPY rollguard/ rollguard/
COPY usecases/ usecases/
COPY domain/ domain/
COPY pipeline/ pipeline/
COPY registry_guard/ registry_guard/
COPY api/ api/
COPY ui/ ui/
COPY monitoring/ monitoring/
COPY deploy/prune-site-packages.sh deploy/

FROM builder AS build-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-default-groups --group api --no-editable \
    && sh deploy/prune-site-packages.sh /opt/venv

# The UI calls the API over HTTP only: its group holds Gradio and the core (settings, use cases),
# no model library, no monitoring store, no Parquet (docs/deploy.md, "Installed size of each
# image's dependency group").
FROM builder AS build-ui
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-default-groups --group ui --no-editable \
    && sh deploy/prune-site-packages.sh /opt/venv

# The guard's rollback goes through registry_guard (the gate's scikit-learn metrics, MLflow, the
# warehouse for re-scoring), so it takes the pipeline group beside the api group's web stack.
FROM builder AS build-guard
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-default-groups --group api --group pipeline --no-editable \
    && sh deploy/prune-site-packages.sh /opt/venv

FROM builder AS build-mlflow
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-default-groups --group tracking --no-editable \
    && sh deploy/prune-site-packages.sh /opt/venv

# --- runtime: the slim Python image, the venv, a non-root user -----------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 50000 --gid 0 --no-create-home --home-dir /var/lib/rollguard \
        --shell /usr/sbin/nologin rollguard \
    && mkdir -p /var/lib/rollguard \
    && chown 50000:0 /var/lib/rollguard \
    && chmod 2775 /var/lib/rollguard
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROLLGUARD_HOME=/var/lib/rollguard
WORKDIR /var/lib/rollguard
USER 50000:0

FROM runtime AS api
COPY --from=build-api /opt/venv /opt/venv
ENV ROLLGUARD_API_HOST=0.0.0.0 ROLLGUARD_API_PORT=8000
EXPOSE 8000
ENTRYPOINT ["rollguard"]
CMD ["serve", "api"]

FROM runtime AS ui
COPY --from=build-ui /opt/venv /opt/venv
ENV ROLLGUARD_UI_HOST=0.0.0.0 ROLLGUARD_UI_PORT=7860
EXPOSE 7860
# `rollguard-ui` is `rollguard serve ui` without the rest of the CLI, whose other commands need the
# monitoring store and the pipeline that this image does not hold.
ENTRYPOINT ["rollguard-ui"]

FROM runtime AS guard
COPY --from=build-guard /opt/venv /opt/venv
ENV ROLLGUARD_GUARD_HOST=0.0.0.0 ROLLGUARD_GUARD_PORT=8100
EXPOSE 8100
ENTRYPOINT ["rollguard"]
CMD ["serve", "guard"]

FROM runtime AS mlflow
COPY --from=build-mlflow /opt/venv /opt/venv
# The artifact volume is mounted here; a fresh named volume takes this folder's owner.
USER root
RUN mkdir -p /var/lib/mlflow/artifacts && chown -R 50000:0 /var/lib/mlflow
USER 50000:0
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
