#!/usr/bin/env bash
# Start the mock Cloud API in the background.
#   test/mock/start.sh DIR [extra mock args...]
# Writes DIR/mock.log, DIR/mock.pid, DIR/mock.port; prints the port.
# Waits at most 10 s for GET /_mock/health; on failure prints the log and exits 1.
set -u

if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR [extra mock args...]" >&2
    exit 2
fi
dir=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node=${NODE:-$(command -v node || echo /usr/bin/node)}

mkdir -p "$dir" || exit 1
dir=$(cd "$dir" && pwd)
log=$dir/mock.log
pidf=$dir/mock.pid
portf=$dir/mock.port

if [ -f "$pidf" ]; then
    old=$(cat "$pidf" 2>/dev/null)
    if [ -n "$old" ] && kill -0 "$old" 2>/dev/null &&
       tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q mock_cloud_api.js; then
        echo "start.sh: mock already running in $dir (pid $old); run stop.sh first" >&2
        exit 1
    fi
    rm -f "$pidf"
fi
rm -f "$portf"

"$node" "$here/mock_cloud_api.js" --port-file "$portf" "$@" </dev/null >"$log" 2>&1 &
pid=$!
echo "$pid" >"$pidf"

fail() {
    echo "start.sh: $1" >&2
    echo "---- $log ----" >&2
    cat "$log" >&2
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        sleep 0.2
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    rm -f "$pidf"
    exit 1
}

deadline=$((SECONDS + 10))
while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
        fail "mock exited during startup"
    fi
    if [ -s "$portf" ]; then
        port=$(tr -dc '0-9' <"$portf")
        if [ -n "$port" ] &&
           curl -sf --max-time 1 "http://127.0.0.1:$port/_mock/health" 2>/dev/null | grep -q '"ok":true'; then
            echo "$port"
            exit 0
        fi
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        fail "mock did not become healthy within 10 s"
    fi
    sleep 0.05
done
