#!/usr/bin/env bash
# A process worker for the `nightly` deployment: it polls the Prefect server and runs each
# flow run in a subprocess, in the deployment's folder. Runs in the foreground; Ctrl-C stops it.
#
#   infra/prefect-worker.sh [extra `prefect worker start` options, e.g. --run-once]
#
# Flow runs inherit this environment: MLFLOW_TRACKING_URI (the local MLflow server unless
# set) decides where runs, metrics and models are logged.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d "$HERE/../.venv/bin" ]] && PATH="$HERE/../.venv/bin:$PATH"
source "$HERE/local.env"

exec prefect worker start --pool "$EMOFLOW_WORK_POOL" --type process "$@"
