#!/usr/bin/env bash
# bench/odoo.sh: what the Odoo triggers cost the transactions that confirm
# orders and post invoices.
#
#   bash bench/odoo.sh
#
# A throwaway cluster (durable commits: fsync and synchronous_commit on, as
# Odoo runs) with the Odoo 17 fixture of test/odoo, 500 customers and
# draft orders and invoices.
#
# What is measured is what the triggers cost the transactions of Odoo, so
# by default no worker serves the database during the run (the messages
# stay queued; the worker's own cost is bench/throughput.sh's subject).
# DELIVER=1 lets the worker deliver to the mock (instant answers) as in
# production; then after each block with the event the script waits until
# everything is delivered, so that no delivery spills into a block without
# it.  On a machine with few cores the worker and the mock then compete
# with the confirming session for the CPU.
#
# Besides the wall time, each block reports the CPU time of the backend
# that ran it (/proc/PID/stat), which the load of a shared machine
# disturbs much less.
#
# 1. Confirming sale orders, one transaction each, as Odoo's ORM writes
#    them: BEGIN ISOLATION LEVEL REPEATABLE READ; UPDATE the state and
#    date_order; UPDATE the name and the amounts; COMMIT, sent by psql
#    over the Unix socket.  ORDERS orders without the event and ORDERS
#    with sale_order_confirmed enabled (default params: the partner's name,
#    the order's name and the total), in ROUNDS alternating blocks (ABBA)
#    so that drift on a shared machine falls on both sides.
#    Ratio = time with / time without; the target is at most 1.15.
#    Run twice (PHASES, default "fresh steady"): on the fresh outbox, then
#    after HISTORY (1,000,000) delivered messages were added to it and
#    analyzed (bench/lib.sh load_history); the two ratios are printed side
#    by side.
# 2. Posting INVOICES customer invoices in one transaction (UPDATE the
#    state, then the name and the amounts), with and without
#    invoice_posted, REPEAT times each, alternating; medians are reported.
#
# Environment: ORDERS (10000), ROUNDS (10), INVOICES (5000), REPEAT (3),
# DELIVER (0), PHASES ("fresh steady"), HISTORY (1000000), BENCH_EXTRA_CONF.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ORDERS=${ORDERS:-10000}
DELIVER=${DELIVER:-0}
ROUNDS=${ROUNDS:-10}
INVOICES=${INVOICES:-5000}
REPEAT=${REPEAT:-3}
PHASES=${PHASES:-fresh steady}
TARGET=1.15

[ $((ORDERS % ROUNDS)) -eq 0 ] || die "ORDERS must be a multiple of ROUNDS"
CHUNK=$((ORDERS / ROUNDS))

bench_init odoo
machine_note
if [ "$DELIVER" = 1 ]; then
	step "mock (--no-record, instant) and cluster; the worker delivers"
	start_mock --no-record
	start_cluster "$MOCK_URL"
	say "mock $MOCK_URL, cluster in $BENCH_DIR, worker pid $(worker_pid)"
else
	step "cluster; no worker serves the database (DELIVER=1 to deliver)"
	BENCH_NO_WORKER=1 BENCH_EXTRA_CONF="whatsapp.database = 'postgres'
${BENCH_EXTRA_CONF:-}" start_cluster "http://127.0.0.1:1"
	say "cluster in $BENCH_DIR"
fi

step "Odoo 17 fixture, 500 customers, $((4 * ORDERS)) draft orders, $((2 * INVOICES * REPEAT)) draft invoices"
cp "$REPO"/test/odoo/*.sql "$BENCH_DIR/"
chmod 644 "$BENCH_DIR"/*.sql
bpsql -q -o /dev/null -f "$BENCH_DIR/odoo17.sql" -f "$BENCH_DIR/data.sql"
bpsql -q -o /dev/null <<EOF
-- customers in Mexico, with national numbers, as typed
INSERT INTO public.res_partner (id, name, type, is_company, commercial_partner_id, country_id,
								lang, phone, phone_sanitized, active)
SELECT 2000 + g, 'Cliente ' || g, 'contact', false, 2000 + g, 3, 'es_MX',
	   '55 ' || lpad((10000000 + g)::text, 8, '0'), '+5255' || lpad((10000000 + g)::text, 8, '0'), true
  FROM generate_series(1, 500) g;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, access_token,
							   create_date, write_date)
SELECT g, 1, 2001 + g % 500, 2001 + g % 500, 2001 + g % 500, 3, 'New', 'draft',
	   now() AT TIME ZONE 'UTC', md5('so' || g), now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
  FROM generate_series(1, 4 * $ORDERS) g;
INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
								 currency_id, name, state, move_type, date, invoice_date,
								 invoice_date_due, access_token, create_date, write_date)
SELECT g, 1, 1, 2001 + g % 500, 2001 + g % 500, 3, '/', 'draft', 'out_invoice',
	   current_date, current_date, current_date + 30, md5('inv' || g),
	   now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
  FROM generate_series(1, 2 * $INVOICES * $REPEAT) g;
-- the CPU time of the calling backend so far, in ms
CREATE FUNCTION public.bench_cpu_ms() RETURNS bigint LANGUAGE sql AS \$\$
	SELECT (split_part(s, ' ', 14)::bigint + split_part(s, ' ', 15)::bigint) * 1000
		   / $CLK_TCK
	  FROM pg_read_file('/proc/' || pg_backend_pid() || '/stat') s
\$\$;
VACUUM ANALYZE;
EOF

# One file of CHUNK confirmations per block, orders FIRST..FIRST+CHUNK-1.
confirm_file() {
	local file=$1 first=$2
	awk -v first="$first" -v n="$CHUNK" 'BEGIN {
		print "SELECT public.bench_cpu_ms();"
		for (i = first; i < first + n; i++) {
			print "BEGIN ISOLATION LEVEL REPEATABLE READ;"
			printf "UPDATE public.sale_order SET state = '\''sale'\'', date_order = now() AT TIME ZONE '\''UTC'\'', write_date = now() AT TIME ZONE '\''UTC'\'' WHERE id = %d;\n", i
			printf "UPDATE public.sale_order SET name = '\''S%05d'\'', amount_untaxed = %d.00, amount_tax = %d.16, amount_total = %d.16, write_date = now() AT TIME ZONE '\''UTC'\'' WHERE id = %d;\n", i, 1000 + i % 997, 160 + i % 13, 1160 + i % 997 + i % 13, i
			print "COMMIT;"
		}
		print "SELECT public.bench_cpu_ms();"
	}' >"$file"
	chmod 644 "$file"
}

now_ns() { date +%s%N; }

set_event() { # set_event on|off EVENT
	if [ "$1" = on ]; then
		bq "SELECT whatsapp.wa_odoo_enable('$2', 'order_confirmed', 'es_MX')" >/dev/null
	else
		bq "SELECT whatsapp.wa_odoo_disable('$2')" >/dev/null
	fi
}

wait_drained() {
	local i
	[ "$DELIVER" = 1 ] || return 0
	for i in $(seq 1 600); do
		[ "$(pending_count)" = 0 ] &&
			return 0
		sleep 0.1
	done
	die "the worker did not deliver the queued messages within 60 s"
}

# run_block on|off FIRST: prints the seconds the block took and the CPU
# seconds of its backend
run_block() {
	local mode=$1 first=$2 t0 t1 f=$BENCH_DIR/block.sql cpu
	confirm_file "$f" "$first"
	set_event "$mode" sale_order_confirmed
	bpsql -q -c "CHECKPOINT"
	t0=$(now_ns)
	cpu=$(bpsql -qAt -f "$f" | awk 'NR == 1 { a = $1 } { b = $1 } END { print (b - a) / 1000 }')
	t1=$(now_ns)
	[ "$mode" = off ] || wait_drained
	awk -v a="$t0" -v b="$t1" -v c="$cpu" 'BEGIN { printf "%.3f %.3f\n", (b - a) / 1e9, c }'
}

# confirm_phase LABEL FIRST: step 1 on orders FIRST .. FIRST + 2 * ORDERS - 1;
# sets PHASE_RATIO, PHASE_CRATIO, PHASE_T_ON, PHASE_T_OFF
confirm_phase() {
	local label=$1 next_off=$2 next_on=$(($2 + ORDERS)) t_off=0 t_on=0 c_off=0 c_on=0
	local r order line mode s c sent0 sent wrong ratio cratio
	step "1. $label: confirming $ORDERS orders without the event and $ORDERS with it, one transaction each ($ROUNDS blocks of $CHUNK; load average $(cut -d' ' -f1-3 /proc/loadavg))"
	sent0=$(bq "SELECT count(*) FROM whatsapp.message WHERE state = '$expect_state'
			AND payload #>> '{template,components,0,parameters,1,text}' ~ '^S[0-9]{5}$'")
	for r in $(seq 1 "$ROUNDS"); do
		if [ $((r % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
		line="block $r:"
		for mode in $order; do
			if [ "$mode" = off ]; then
				read -r s c < <(run_block off "$next_off")
				next_off=$((next_off + CHUNK))
				t_off=$(awk -v a="$t_off" -v b="$s" 'BEGIN { print a + b }')
				c_off=$(awk -v a="$c_off" -v b="$c" 'BEGIN { print a + b }')
			else
				read -r s c < <(run_block on "$next_on")
				next_on=$((next_on + CHUNK))
				t_on=$(awk -v a="$t_on" -v b="$s" 'BEGIN { print a + b }')
				c_on=$(awk -v a="$c_on" -v b="$c" 'BEGIN { print a + b }')
			fi
			line="$line $mode ${s}s (backend CPU ${c}s)"
		done
		say "$line"
	done
	sent=$(($(bq "SELECT count(*) FROM whatsapp.message WHERE state = '$expect_state'
			AND payload #>> '{template,components,0,parameters,1,text}' ~ '^S[0-9]{5}$'") - sent0))
	wrong=$(bq "SELECT count(*) FROM whatsapp.message m
			 JOIN public.sale_order o ON o.id = (m.context ->> 'res_id')::int
			WHERE m.payload #>> '{template,components,0,parameters,1,text}' IS DISTINCT FROM o.name")
	ratio=$(awk -v a="$t_on" -v b="$t_off" 'BEGIN { printf "%.3f", a / b }')
	cratio=$(awk -v a="$c_on" -v b="$c_off" 'BEGIN { printf "%.3f", a / b }')
	say ""
	say "without the event: ${t_off} s for $ORDERS orders ($(awk -v t="$t_off" -v n="$ORDERS" 'BEGIN { printf "%.3f", t * 1000 / n }') ms each), backend CPU ${c_off} s"
	say "with the event:    ${t_on} s for $ORDERS orders ($(awk -v t="$t_on" -v n="$ORDERS" 'BEGIN { printf "%.3f", t * 1000 / n }') ms each), backend CPU ${c_on} s"
	say "the trigger's CPU per confirmation: $(awk -v a="$c_on" -v b="$c_off" -v n="$ORDERS" 'BEGIN { printf "%.0f", (a - b) * 1e6 / n }') us"
	say "messages $expect_state: $sent, with a name other than the committed one: $wrong"
	say "ratio with/without: $ratio wall time (target at most $TARGET), $cratio backend CPU"
	[ "$sent" = "$ORDERS" ] || die "expected $ORDERS messages $expect_state, got $sent"
	[ "$wrong" = 0 ] || die "$wrong messages carry a name other than the committed one"
	PHASE_RATIO=$ratio
	PHASE_CRATIO=$cratio
	PHASE_T_ON=$t_on
	PHASE_T_OFF=$t_off
}

if [ "$DELIVER" = 1 ]; then expect_state=sent; else expect_state=queued; fi
first_order=1
fresh_ratio=
ratio=
for phase in $PHASES; do
	case "$phase" in
	fresh)
		confirm_phase "fresh outbox (never analyzed)" "$first_order"
		fresh_ratio=$PHASE_RATIO
		fresh_summary="$PHASE_RATIO (${PHASE_T_ON} s / ${PHASE_T_OFF} s; backend CPU $PHASE_CRATIO)"
		;;
	steady)
		step "steady state: history of ${HISTORY:-1000000} delivered messages"
		load_history
		confirm_phase "steady state (${HISTORY:-1000000} delivered, analyzed)" "$first_order"
		ratio=$PHASE_RATIO
		cratio=$PHASE_CRATIO
		t_on=$PHASE_T_ON
		t_off=$PHASE_T_OFF
		;;
	*) die "unknown phase $phase (fresh, steady)" ;;
	esac
	first_order=$((first_order + 2 * ORDERS))
done
say ""
say "ratio with/without, fresh ${fresh_ratio:--}, steady ${ratio:--}"

step "2. posting $INVOICES invoices in one transaction, with and without invoice_posted ($REPEAT times each)"
post_invoices() { # post_invoices on|off FIRST: prints seconds
	local mode=$1 first=$2 last=$(($2 + INVOICES - 1)) t0 t1
	set_event "$mode" invoice_posted
	bpsql -q -c "CHECKPOINT"
	t0=$(now_ns)
	bpsql -q -o /dev/null <<EOF
BEGIN ISOLATION LEVEL REPEATABLE READ;
UPDATE public.account_move SET state = 'posted', write_date = now() AT TIME ZONE 'UTC'
 WHERE id BETWEEN $first AND $last;
UPDATE public.account_move SET name = 'INV/2025/' || lpad(id::text, 5, '0'),
	   amount_untaxed = 1000 + id % 997, amount_tax = 160, amount_total = 1160 + id % 997,
	   amount_residual = 1160 + id % 997
 WHERE id BETWEEN $first AND $last;
COMMIT;
EOF
	t1=$(now_ns)
	[ "$mode" = off ] || wait_drained
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}
first=1
posts_off=()
posts_on=()
for r in $(seq 1 "$REPEAT"); do
	s_off=$(post_invoices off "$first")
	first=$((first + INVOICES))
	s_on=$(post_invoices on "$first")
	first=$((first + INVOICES))
	posts_off+=("$s_off")
	posts_on+=("$s_on")
	say "run $r: without ${s_off}s, with ${s_on}s"
done
inv_msgs=$(bq "SELECT count(*) FROM whatsapp.message WHERE dedupe_key LIKE 'account.move:%:invoice_posted'
				AND payload #>> '{template,components,0,parameters,1,text}' LIKE 'INV/2025/%'")
m_off=$(median "${posts_off[@]}")
m_on=$(median "${posts_on[@]}")
say ""
say "posting $INVOICES invoices in one transaction: ${m_off} s without the event, ${m_on} s with it (medians)"
say "invoice messages with the committed name: $inv_msgs (expected $((INVOICES * REPEAT)))"

[ -z "$ratio" ] || summary "Odoo: confirm $ORDERS orders (one tx each), with / without sale_order_confirmed, steady state (${HISTORY:-1000000} delivered, analyzed)" "<= $TARGET" \
	"$ratio (${t_on} s / ${t_off} s; backend CPU $cratio)" "bash bench/odoo.sh"
[ -z "$fresh_ratio" ] || summary "Odoo: the same on a fresh outbox" "(beside steady)" "$fresh_summary" "bash bench/odoo.sh"
summary "Odoo: post $INVOICES invoices in one tx" "reported" \
	"${m_on} s with invoice_posted, ${m_off} s without" "bash bench/odoo.sh"
[ -z "$ratio" ] || awk -v r="$ratio" -v t="$TARGET" 'BEGIN { exit !(r <= t) }' ||
	say "ratio $ratio is above the target $TARGET"
