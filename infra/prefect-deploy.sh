#!/usr/bin/env bash
# Register a deployment of prefect.yaml with the Prefect server, creating its work pool.
#
#   cd <project folder> && infra/prefect-deploy.sh [nightly|nightly-k8s]
#
# Run it from the project folder (the one holding prefect.yaml and params.yaml): the
# `nightly` deployment's flow runs work in the folder it was registered from.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d "$HERE/../.venv/bin" ]] && PATH="$HERE/../.venv/bin:$PATH"
source "$HERE/local.env"

deployment=${1:-nightly}
if [[ ! -f prefect.yaml ]]; then
    echo "prefect-deploy: no prefect.yaml in $PWD; run it from the project folder" >&2
    exit 1
fi
case "$deployment" in
    nightly)
        prefect work-pool create "$EMOFLOW_WORK_POOL" --type process --overwrite ;;
    nightly-k8s)
        prefect work-pool create emoflow-k8s --type kubernetes \
            --base-job-template "$HERE/k8s-work-pool.json" --overwrite ;;
    *)
        echo "usage: $0 [nightly|nightly-k8s]" >&2
        exit 2 ;;
esac
prefect --no-prompt deploy --name "$deployment"
