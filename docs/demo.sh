#!/usr/bin/env bash
# docs/demo.sh: the whatsapp extension end to end, on a throwaway cluster.
#
#   bash docs/demo.sh
#
# Installs what is missing (as root), builds and installs the extension,
# starts a temporary PostgreSQL cluster with the library preloaded and the
# project's mock Cloud API on 127.0.0.1, sends a few messages and shows
# them going through their states.  Everything is removed at the end.
#
# To try the extension as installed from its Debian package instead:
#
#   WA_DEMO_INSTALLED=1 bash docs/demo.sh
#
# installs no packages and builds nothing; it needs only docs/ and test/mock/
# of this tree, and curl, node and openssl.
#
# With a real token it talks to Meta instead of the mock:
#
#   WA_TOKEN=EAAG... WA_PHONE_NUMBER_ID=1234567890 WA_TO=+5215512345678 \
#       bash docs/demo.sh
#
# The token is passed to psql through a variable on standard input, never
# on a command line.  PG_BIN picks another installation of PostgreSQL
# (default: 15's, Debian 12's).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PG_BIN/pg_config
RUN_USER=wa_test

real=false
if [ -n "${WA_TOKEN:-}" ]; then
	: "${WA_PHONE_NUMBER_ID:?set WA_PHONE_NUMBER_ID with WA_TOKEN}"
	: "${WA_TO:?set WA_TO (the recipient, E.164) with WA_TOKEN}"
	real=true
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cd "$repo"
if [ "${WA_DEMO_INSTALLED:-0}" = 1 ]; then
	say "the installed extension"
	for f in "$("$PG_CONFIG" --sharedir)/extension/whatsapp.control" \
		"$("$PG_CONFIG" --pkglibdir)/whatsapp.so"; do
		if [ ! -f "$f" ]; then
			echo "WA_DEMO_INSTALLED=1, but $f is missing: install the package" \
				"postgresql-$("$PG_CONFIG" --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')-whatsapp," \
				"or run without WA_DEMO_INSTALLED to build from this tree" >&2
			exit 1
		fi
		echo "$f"
	done
else
	say "packages"
	bash test/install_deps.sh

	say "build and install"
	make -s PG_CONFIG="$PG_CONFIG" >/dev/null
	if [ "$(id -u)" -eq 0 ]; then
		make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
	else
		sudo make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
	fi
fi

dir=$(mktemp -d /tmp/whatsapp-demo.XXXXXX)
chmod 755 "$dir"
as_user=()
if [ "$(id -u)" -eq 0 ]; then
	# PostgreSQL does not run as root.
	id -u "$RUN_USER" >/dev/null 2>&1 ||
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$RUN_USER"
	chown "$RUN_USER:" "$dir"
	as_user=(runuser -u "$RUN_USER" --)
fi

cleanup() {
	"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
	bash "$repo/test/mock/stop.sh" "$dir/mock" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 30000))
if $real; then
	api_url=https://graph.facebook.com
else
	say "mock Cloud API"
	mkdir -p "$dir/mock"
	mock_port=$(bash test/mock/start.sh "$dir/mock")
	api_url=http://127.0.0.1:$mock_port
	echo "listening on $api_url"
fi

say "throwaway cluster (port $port, socket in $dir)"
"${as_user[@]}" "$PG_BIN/initdb" -D "$dir/data" -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = ''
port = $port
unix_socket_directories = '$dir'
shared_preload_libraries = 'whatsapp'
whatsapp.database = 'demo'
whatsapp.api_url = '$api_url'
EOF
"${as_user[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
"${as_user[@]}" "$PG_BIN/createdb" -h "$dir" -p "$port" demo

psql() { "${as_user[@]}" "$PG_BIN/psql" -X -q -h "$dir" -p "$port" -d demo -v ON_ERROR_STOP=1 "$@"; }

say "install the extension and store an account (the token is sealed)"
token=${WA_TOKEN:-EAAdemo-not-a-real-token}
app_secret=${WA_APP_SECRET:-demo-app-secret}
phone_id=${WA_PHONE_NUMBER_ID:-1099887766}
# The token travels on standard input as a psql variable, not in argv.
printf '%s\n' "\\set token '$token'" \
	"CREATE EXTENSION whatsapp CASCADE;" \
	"\\set secret '$app_secret'" \
	"SELECT whatsapp.wa_account_set('demo', '$phone_id', :'token', app_secret => :'secret');" | psql
psql -c "SELECT name, phone_number_id, is_default, has_access_token, key_id FROM whatsapp.accounts"

if ! $real; then
	# Make the mock answer like Meta would in a few interesting cases.
	curl -s -o /dev/null -X POST "$api_url/_mock/rules" -H 'Content-Type: application/json' -d '[
	  {"match": {"to": "+4915123456789"}, "action": {"meta_error": 131026}},
	  {"match": {"to": "+5511912345678"}, "action": {"latency_ms": 1500}},
	  {"match": {"to": "+573001234567"}, "times": 1, "action": {"status": 503}}
	]'
fi

# The launcher starts the database's worker a moment after the extension
# appears: wait for it, so that the first send finds it serving.
for _ in $(seq 1 100); do
	[ "$(psql -Atc "SELECT worker_running FROM whatsapp.status" 2>/dev/null)" = t ] && break
	sleep 0.2
done

say "send, inside one transaction"
if $real; then
	psql <<EOF
BEGIN;
SELECT whatsapp.wa_send('$WA_TO', 'Hello from PostgreSQL: the whatsapp extension demo') AS id;
SELECT whatsapp.wa_send_template('$WA_TO', 'hello_world', 'en_US') AS id;
COMMIT;
EOF
else
	psql <<'EOF'
BEGIN;
SELECT whatsapp.wa_send('+52 55 1234 5678', 'Hola Ana, tu pedido S00042 está confirmado.',
                        context => '{"model": "sale.order", "res_id": 42}') AS text_message;
SELECT whatsapp.wa_send_template('+55 11 91234-5678', 'order_confirmation', 'pt-BR',
                                 '["Ana", "S00043"]') AS template_slow_answer;
SELECT whatsapp.wa_send('+57 300 123 4567', 'Retried after one 503') AS retried;
SELECT whatsapp.wa_send('+49 151 23456789', 'Meta says 131026') AS undeliverable;
SELECT whatsapp.wa_send('555-1234', 'No country code, no default') AS phone_invalid;
COMMIT;
EOF
fi

say "states, as the worker delivers"
for i in $(seq 1 20); do
	# Counted before the table is shown, so that the last table shows
	# every message in its final state.
	left=$(psql -At -c "SELECT count(*) FROM whatsapp.messages WHERE state IN ('queued', 'sending')")
	psql -c "SELECT id, recipient, kind, state, attempts, failure_type, error_code, wamid
	           FROM whatsapp.messages ORDER BY id"
	[ "$left" = 0 ] && break
	sleep 1
done

if ! $real; then
	say "the webhook round trip: Meta reports delivered and read, the customer answers BAJA"
	# What Meta would POST to the application's endpoint, signed with the
	# app secret; the application passes body and header to wa_receive.
	first=$(psql -At -c "SELECT id || ' ' || wamid FROM whatsapp.messages WHERE wamid IS NOT NULL ORDER BY id LIMIT 1")
	id=${first%% *}
	wamid=${first#* }
	now=$(date +%s)
	receive() {
		local body=$1 sig
		sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$app_secret" | awk '{print $NF}')
		printf '%s\n' "\\set body '$body'" "\\set sig 'sha256=$sig'" \
			"SELECT whatsapp.wa_receive(:'body', :'sig') AS events_applied;" | psql
	}
	for status in delivered read; do
		receive '{"object":"whatsapp_business_account","entry":[{"id":"2233445566","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550000000","phone_number_id":"'"$phone_id"'"},"statuses":[{"id":"'"$wamid"'","status":"'"$status"'","timestamp":"'"$now"'","recipient_id":"525512345678","biz_opaque_callback_data":"'"$id"'"}]}}]}]}'
	done
	receive '{"object":"whatsapp_business_account","entry":[{"id":"2233445566","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550000000","phone_number_id":"'"$phone_id"'"},"contacts":[{"profile":{"name":"Ana"},"wa_id":"5215512345678"}],"messages":[{"from":"5215512345678","id":"wamid.demo-inbound-1","timestamp":"'"$now"'","type":"text","text":{"body":"¡Baja!"}}]}}]}]}'
	psql -c "SELECT id, state, sent_at IS NOT NULL AS sent, delivered_at, read_at FROM whatsapp.messages WHERE id = $id"
	psql -c "SELECT * FROM whatsapp.consents"
	psql -c "SELECT whatsapp.wa_send('+52 55 1234 5678', 'After the BAJA') AS id"
	psql -c "SELECT id, recipient, state, failure_type FROM whatsapp.messages ORDER BY id DESC LIMIT 1"
fi

say "the log of every attempt (whatsapp.wa_log)"
psql -c "SELECT message_id, attempt, event, http_status, code, message, round(latency_ms::numeric, 1) AS ms
           FROM whatsapp.wa_log() ORDER BY at"

say "health (whatsapp.status)"
psql -x -c "SELECT * FROM whatsapp.status"

if ! $real; then
	say "what the mock received for the first message"
	curl -s "$api_url/_mock/requests?limit=1" |
		node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s)[0];
		  console.log(r.method, r.path); console.log("Authorization:", r.headers.authorization.replace(/ .*/, " <token>"));
		  console.log(r.body);})'
fi

say "done: the cluster and the mock are removed"
