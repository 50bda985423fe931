#!/usr/bin/env bash
# Stop a mock started by start.sh:  test/mock/stop.sh DIR
# Sends TERM, then KILL after 3 s; removes DIR/mock.pid and DIR/mock.port.
# Harmless when nothing runs.
set -u

if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
pidf=$dir/mock.pid
portf=$dir/mock.port

[ -f "$pidf" ] || { rm -f "$portf"; exit 0; }
pid=$(tr -dc '0-9' <"$pidf")

ours() {
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: only touch our own mock process.
    [ -r "/proc/$pid/cmdline" ] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q mock_cloud_api.js
}

if [ -n "$pid" ] && ours; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 30); do
        ours || break
        sleep 0.1
    done
    if ours; then
        kill -KILL "$pid" 2>/dev/null
    fi
fi
rm -f "$pidf" "$portf"
exit 0
