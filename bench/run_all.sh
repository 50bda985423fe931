#!/usr/bin/env bash
# bench/run_all.sh: run every benchmark, then print a Markdown table of the
# results for the README's performance table.
#
#   bash bench/run_all.sh            # all six, about 20 minutes on a quiet machine
#   bash bench/run_all.sh latency    # only some: throughput enqueue latency memory webhook odoo
#
# Each benchmark prints its own details as it goes (also kept in
# bench-<name>.log in a temporary directory, printed at the end), then
# SUMMARY lines that this script collects.  A benchmark that fails is listed
# as failed; the others still run.  The exit status is non-zero when any
# failed.  The environment is passed through (PG_BIN, RUNS, ...).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
benches=("$@")
[ "${#benches[@]}" -gt 0 ] || benches=(throughput enqueue latency memory webhook odoo)

logs=$(mktemp -d /tmp/whatsapp-bench-logs.XXXXXX)
rows=()
failed=0
started=$(date -u '+%Y-%m-%d %H:%M UTC')
for b in "${benches[@]}"; do
	[ -f "$here/$b.sh" ] || { echo "no benchmark $b" >&2; exit 2; }
	printf '\n######## %s\n' "$b"
	bash "$here/$b.sh" 2>&1 | tee "$logs/bench-$b.log"
	rc=${PIPESTATUS[0]}
	got=$(grep '^SUMMARY' "$logs/bench-$b.log" | cut -f2-)
	if [ "$rc" -ne 0 ]; then
		failed=1
		rows+=("$b"$'\t'"-"$'\t'"failed (exit $rc)"$'\t'"bash bench/$b.sh")
	fi
	[ -z "$got" ] || while IFS= read -r line; do rows+=("$line"); done <<<"$got"
done

printf '\n######## summary (%s; %s cores, load average %s)\n\n' "$started" "$(nproc)" \
	"$(cut -d' ' -f1-3 /proc/loadavg)"
echo '| Metric | Target | Measured | Command |'
echo '|---|---|---|---|'
for r in "${rows[@]}"; do
	IFS=$'\t' read -r metric target measured command <<<"$r"
	printf '| %s | %s | %s | `%s` |\n' "$metric" "$target" "$measured" "$command"
done
echo
echo "logs: $logs"
exit "$failed"
