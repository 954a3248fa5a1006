# Start and stop a server in its own process group, tracked by a PID file (sourced by infra/*.sh).
#
# A server forks workers (uvicorn, gunicorn); signalling the whole group on stop is what
# leaves no process behind.

: "${EMOFLOW_START_TIMEOUT:=90}"   # seconds to wait for a server to answer its health URL
: "${EMOFLOW_STOP_TIMEOUT:=20}"    # seconds between SIGTERM and SIGKILL

_pid_file() { echo "$EMOFLOW_SERVERS/$1.pid"; }
_log_file() { echo "$EMOFLOW_SERVERS/$1.log"; }

# The PID (and process group) of a running server, or nothing.
daemon_pid() {
    local pid
    pid=$(cat "$(_pid_file "$1")" 2>/dev/null) || return 1
    kill -0 -- "-$pid" 2>/dev/null && echo "$pid"
}

_healthy() {
    python - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

_port_busy() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# daemon_start NAME HOST PORT HEALTH_URL COMMAND...
daemon_start() {
    local name=$1 host=$2 port=$3 health=$4 pid
    shift 4
    mkdir -p "$EMOFLOW_SERVERS"
    if pid=$(daemon_pid "$name"); then
        echo "$name is already running (pid $pid) at http://$host:$port"
        return 0
    fi
    rm -f "$(_pid_file "$name")"
    if _port_busy "$host" "$port"; then
        echo "$name: port $port on $host is taken by another program; choose another one" \
            "(MLFLOW_PORT or PREFECT_SERVER_API_PORT, see infra/local.env)" >&2
        return 1
    fi
    # setsid: the server leads a new session and process group, so stop reaches its children.
    setsid "$@" >"$(_log_file "$name")" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$(_pid_file "$name")"
    local deadline=$((SECONDS + EMOFLOW_START_TIMEOUT))
    until _healthy "$health"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during start; last lines of $(_log_file "$name"):" >&2
            tail -n 20 "$(_log_file "$name")" >&2
            rm -f "$(_pid_file "$name")"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$name did not answer $health within ${EMOFLOW_START_TIMEOUT}s; stopping it (log: $(_log_file "$name"))" >&2
            daemon_stop "$name" >/dev/null
            return 1
        fi
        sleep 0.5
    done
    echo "$name is up (pid $pid) at http://$host:$port  (log: $(_log_file "$name"))"
}

daemon_stop() {
    local name=$1 pid
    if ! pid=$(daemon_pid "$name"); then
        rm -f "$(_pid_file "$name")"
        echo "$name is not running"
        return 0
    fi
    kill -TERM -- "-$pid" 2>/dev/null
    local deadline=$((SECONDS + EMOFLOW_STOP_TIMEOUT))
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
        echo "$name did not stop on SIGTERM within ${EMOFLOW_STOP_TIMEOUT}s; killing it" >&2
        kill -KILL -- "-$pid" 2>/dev/null
    fi
    rm -f "$(_pid_file "$name")"
    echo "$name stopped"
}

daemon_status() {
    local name=$1 pid
    if pid=$(daemon_pid "$name"); then
        echo "$name is running (pid $pid)"
    else
        echo "$name is not running"
        return 1
    fi
}

# daemon_main NAME COMMAND: dispatch start|stop|status to the calling script's functions.
daemon_main() {
    local name=$1 command=${2:-}
    case "$command" in
        start) start ;;
        stop) daemon_stop "$name" ;;
        status) daemon_status "$name" ;;
        restart) daemon_stop "$name" && start ;;
        *) echo "usage: $0 start|stop|status|restart" >&2; return 2 ;;
    esac
}
