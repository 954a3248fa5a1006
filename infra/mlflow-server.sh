#!/usr/bin/env bash
# The MLflow tracking server on loopback: runs, metrics, the model registry and artifacts over HTTP.
#
#   infra/mlflow-server.sh start|stop|status|restart
#
# Backend store: MLFLOW_BACKEND_STORE_URI (a database; the project's mlflow.db by default).
# Artifacts: where the project's runs keep them (mlruns/), or, with MLFLOW_ARTIFACTS_DESTINATION
# set (a folder, s3://...), uploaded to and served by the server itself (--serve-artifacts).
# Point the pipeline at it with MLFLOW_TRACKING_URI=http://$MLFLOW_HOST:$MLFLOW_PORT (`. infra/local.env`).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d "$HERE/../.venv/bin" ]] && PATH="$HERE/../.venv/bin:$PATH"
source "$HERE/local.env"
source "$HERE/daemon.sh"
: "${MLFLOW_WORKERS:=1}"   # one machine, one user: more workers only cost memory
# MLflow's job runner (GenAI scorers, trace rollups) forks eight consumers this pipeline never uses.
: "${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:=false}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION

start() {
    local artifacts=(--no-serve-artifacts --default-artifact-root "$EMOFLOW_PROJECT/mlruns")
    if [[ -n "$MLFLOW_ARTIFACTS_DESTINATION" ]]; then
        artifacts=(--serve-artifacts --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION")
        [[ "$MLFLOW_ARTIFACTS_DESTINATION" == *://* ]] || mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION"
    fi
    case "$MLFLOW_BACKEND_STORE_URI" in
        sqlite:///*) mkdir -p "$(dirname "${MLFLOW_BACKEND_STORE_URI#sqlite:///}")" ;;
    esac
    daemon_start mlflow "$MLFLOW_HOST" "$MLFLOW_PORT" "$EMOFLOW_MLFLOW_URL/health" \
        mlflow server \
        --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
        --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" "${artifacts[@]}"
}

daemon_main mlflow "${1:-}"
