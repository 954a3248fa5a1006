#!/usr/bin/env bash
# The Prefect server on loopback: API, UI, and the scheduler that creates deployments' cron runs.
#
#   infra/prefect-server.sh start|stop|status|restart
#
# Its database is the one of the Prefect profile (PREFECT_HOME, ~/.prefect by default).
# Clients reach it with PREFECT_API_URL=http://$PREFECT_SERVER_API_HOST:$PREFECT_SERVER_API_PORT/api.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d "$HERE/../.venv/bin" ]] && PATH="$HERE/../.venv/bin:$PATH"
source "$HERE/local.env"
source "$HERE/daemon.sh"

start() {
    daemon_start prefect "$PREFECT_SERVER_API_HOST" "$PREFECT_SERVER_API_PORT" "$EMOFLOW_PREFECT_API/health" \
        env PREFECT_API_URL="$EMOFLOW_PREFECT_API" prefect server start \
        --host "$PREFECT_SERVER_API_HOST" --port "$PREFECT_SERVER_API_PORT" --analytics-off
}

daemon_main prefect "${1:-}"
