#!/usr/bin/env bash
# Self-test of the mock Cloud API: test/mock/selftest.sh
# Starts the mock via start.sh in a temporary directory, checks it with curl,
# prints "N passed, M failed" as the last line and exits non-zero on failure.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node=${NODE:-$(command -v node || echo /usr/bin/node)}
tmp=$(mktemp -d)
d1=$tmp/rec
d2=$tmp/norec
passed=0
failed=0

cleanup() {
    "$here/stop.sh" "$d1" >/dev/null 2>&1
    "$here/stop.sh" "$d2" >/dev/null 2>&1
    "$here/stop.sh" "$tmp/ka" >/dev/null 2>&1
    "$here/stop.sh" "$tmp/tls" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok()   { passed=$((passed + 1)); echo "ok   - $1"; }
nok()  { failed=$((failed + 1)); echo "FAIL - $1${2:+: $2}"; }
check() { # check NAME ACTUAL EXPECTED
    if [ "$2" = "$3" ]; then ok "$1"; else nok "$1" "got [$2], want [$3]"; fi
}

# jsq FILE EXPR: evaluate a JS expression with the parsed file as `j`, print the result.
jsq() {
    "$node" -e '
        const fs = require("fs");
        let j;
        try { j = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch (e) { console.log("<not json>"); process.exit(0); }
        const v = (0, eval)("(j) => (" + process.argv[2] + ")")(j);
        console.log(typeof v === "string" ? v : JSON.stringify(v));
    ' "$1" "$2"
}

port=$("$here/start.sh" "$d1") || { echo "start.sh failed"; echo "0 passed, 1 failed"; exit 1; }
base=http://127.0.0.1:$port
echo "mock on port $port"

B=$tmp/body H=$tmp/headers
# post URLPATH BODY [curl args...] -> prints HTTP status; body in $B, headers in $H; curl rc in $rc
post() {
    local p=$1 data=$2
    shift 2
    code=$(curl -s -o "$B" -D "$H" -w '%{http_code}' -X POST \
        -H 'Authorization: Bearer TESTTOKEN' -H 'Content-Type: application/json' \
        --data-binary "$data" "$@" "$base$p")
    rc=$?
    echo "$code"
}
ctl() { # ctl METHOD PATH [BODY] -> body in $B
    if [ $# -ge 3 ]; then
        curl -s -o "$B" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' --data-binary "$3" "$base$2"
    else
        curl -s -o "$B" -w '%{http_code}' -X "$1" "$base$2"
    fi
}
hdr() { grep -i "^$1:" "$H" | head -1 | cut -d: -f2- | tr -d ' \r'; }

# ---- health
check "health status" "$(ctl GET /_mock/health)" 200
check "health body" "$(cat "$B")" '{"ok":true}'

# ---- default success
msg='{"messaging_product":"whatsapp","recipient_type":"individual","to":"+5215512345678","type":"text","text":{"body":"hola \u00e9 ñ"},"biz_opaque_callback_data":"1001"}'
check "default status" "$(post /v24.0/1234567890/messages "$msg")" 200
check "default content-type" "$(hdr content-type)" "application/json"
check "default messaging_product" "$(jsq "$B" 'j.messaging_product')" whatsapp
check "default contacts" "$(jsq "$B" 'j.contacts')" '[{"input":"+5215512345678","wa_id":"5215512345678"}]'
check "default message id" "$(jsq "$B" '/^wamid\.MOCK\d+$/.test(j.messages[0].id) && j.messages.length === 1')" true
check "default keys" "$(jsq "$B" 'Object.keys(j).join(",")')" "messaging_product,contacts,messages"
first_id=$(jsq "$B" 'j.messages[0].id')
post /v24.0/1234567890/messages "$msg" >/dev/null
check "ids are unique" "$(jsq "$B" "j.messages[0].id !== '$first_id'")" true

# ---- recorded request
check "requests status" "$(ctl GET /_mock/requests)" 200
cp "$B" "$tmp/reqs"
check "recorded count" "$(jsq "$tmp/reqs" 'j.length')" 2
printf '%s' "$msg" >"$tmp/msg"
check "recorded exact body" "$(jsq "$tmp/reqs" "j[0].body === require('fs').readFileSync('$tmp/msg','utf8')")" true
check "recorded authorization" "$(jsq "$tmp/reqs" 'j[0].headers.authorization')" "Bearer TESTTOKEN"
check "recorded content-type" "$(jsq "$tmp/reqs" 'j[0].headers["content-type"]')" "application/json"
check "recorded method/path" "$(jsq "$tmp/reqs" 'j[0].method + " " + j[0].path')" "POST /v24.0/1234567890/messages"
check "recorded version" "$(jsq "$tmp/reqs" 'j[0].version')" v24.0
check "recorded phone_number_id" "$(jsq "$tmp/reqs" 'j[0].phone_number_id')" 1234567890
check "recorded json/callback/to" "$(jsq "$tmp/reqs" '[j[0].json.text.body, j[0].callback, j[0].to].join("|")')" "hola é ñ|1001|+5215512345678"
check "recorded response_status" "$(jsq "$tmp/reqs" 'j[0].response_status')" 200
check "recorded message_id" "$(jsq "$tmp/reqs" 'j[0].message_id')" "$first_id"
check "recorded t is ms epoch" "$(jsq "$tmp/reqs" 'Math.abs(j[0].t - Date.now()) < 60000 && j[0].seq < j[1].seq')" true
s1=$(jsq "$tmp/reqs" 'j[0].seq')
ctl GET "/_mock/requests?since=$s1" >/dev/null
check "requests?since" "$(jsq "$B" 'j.length + ":" + (j[0].seq > '"$s1"')')" "1:true"

# ---- wrong paths / methods
check "GET messages -> 405" "$(curl -s -o "$B" -w '%{http_code}' "$base/v24.0/123/messages")" 405
check "405 is Meta-shaped" "$(jsq "$B" 'j.error.type + " " + j.error.code + " " + (j.error.fbtrace_id.length >= 20)')" "OAuthException 100 true"
check "other path -> 400" "$(post /v24.0/123/media '{}')" 400
check "other path code 100" "$(jsq "$B" 'j.error.code + " " + j.error.error_data.messaging_product')" "100 whatsapp"

check "GET other path -> 405" "$(curl -s -o "$B" -w '%{http_code}' "$base/v24.0/123")" 405

# ---- meta_error 190
check "add rule 190" "$(ctl POST /_mock/rules '{"match":{"to":"+10000000190"},"action":{"meta_error":190}}')" 200
check "190 -> 401" "$(post /v24.0/123/messages '{"messaging_product":"whatsapp","to":"+10000000190","type":"text","text":{"body":"x"}}')" 401
check "190 body" "$(jsq "$B" '[j.error.message, j.error.type, j.error.code, j.error.error_data.messaging_product, typeof j.error.error_data.details].join("|")')" \
    "(#190) Invalid OAuth access token|OAuthException|190|whatsapp|string"
check "190 fbtrace_id" "$(jsq "$B" 'typeof j.error.fbtrace_id === "string" && j.error.fbtrace_id.length >= 20')" true

# ---- meta_error 130429 + retry_after, once
check "add rule 130429" "$(ctl POST /_mock/rules '{"match":{"callback":"429"},"times":1,"action":{"meta_error":130429,"retry_after":30}}')" 200
check "130429 -> 429" "$(post /v24.0/123/messages '{"messaging_product":"whatsapp","to":"+1555","biz_opaque_callback_data":"429"}')" 429
check "130429 Retry-After" "$(hdr retry-after)" 30
check "130429 body" "$(jsq "$B" '[j.error.message, j.error.code, j.error.error_subcode, j.error.error_data.details].join("|")')" \
    "(#130429) Rate limit hit|130429|2494055|Cloud API message throughput has been reached."
check "times:1 used up -> 200" "$(post /v24.0/123/messages '{"messaging_product":"whatsapp","to":"+1555","biz_opaque_callback_data":"429"}')" 200
ctl GET /_mock/rules >/dev/null
check "rules list remaining" "$(jsq "$B" 'j.map(r => r.remaining + "/" + r.hits).join(",")')" "null/1,0/1"
check "DELETE rules" "$(ctl DELETE /_mock/rules)" 200
ctl GET /_mock/rules >/dev/null
check "rules empty" "$(cat "$B")" "[]"
check "bad rule rejected" "$(ctl POST /_mock/rules '{"match":{"too":"+1"}}')" 400

# ---- status 503
ctl POST /_mock/rules '{"match":{"any":true},"times":1,"action":{"status":503}}' >/dev/null
check "status 503" "$(post /v24.0/123/messages '{"to":"+1"}')" 503
check "status 503 body is JSON" "$(jsq "$B" 'typeof j.error.code')" number

# ---- status + body object
ctl POST /_mock/rules '{"times":1,"action":{"status":400,"body":{"error":{"code":131009}}}}' >/dev/null
check "status+body object" "$(post /v24.0/123/messages '{"to":"+1"}')" 400
check "body object verbatim" "$(cat "$B")" '{"error":{"code":131009}}'

# ---- reset (connection reset)
ctl POST /_mock/rules '{"times":1,"action":{"reset":true}}' >/dev/null
post /v24.0/123/messages '{"to":"+1"}' --max-time 5 >/dev/null
if [ "$rc" = 52 ] || [ "$rc" = 56 ]; then ok "reset -> curl exit $rc"; else nok "reset -> curl exit 52/56" "got $rc"; fi

# ---- hang
ctl POST /_mock/rules '{"times":1,"action":{"hang":true}}' >/dev/null
post /v24.0/123/messages '{"to":"+1"}' --max-time 1 >/dev/null
check "hang -> curl exit 28" "$rc" 28

# ---- malformed
ctl POST /_mock/rules '{"times":1,"action":{"malformed":true}}' >/dev/null
check "malformed status" "$(post /v24.0/123/messages '{"to":"+1"}')" 200
check "malformed content-type" "$(hdr content-type)" "application/json"
check "malformed body not JSON" "$(jsq "$B" 'j')" "<not json>"

# ---- body_bytes: padded to an exact size, still JSON
ctl POST /_mock/rules '{"times":1,"action":{"body_bytes":5000}}' >/dev/null
check "body_bytes status" "$(post /v24.0/123/messages '{"to":"+15550001111","biz_opaque_callback_data":"pad1"}')" 200
check "body_bytes size" "$(wc -c <"$B" | tr -d ' ')" 5000
check "body_bytes Content-Length" "$(hdr content-length)" 5000
check "body_bytes is the success answer, padded" "$(jsq "$B" '/^wamid\.MOCK\d+$/.test(j.messages[0].id) && /^x+$/.test(j.padding)')" true
ctl GET "/_mock/requests?callback=pad1" >/dev/null
check "body_bytes recorded as read" "$(jsq "$B" 'j[0].response_bytes + " " + j[0].response_complete')" "5000 true"

# ---- body_bytes + chunked, with a Meta error
ctl POST /_mock/rules '{"times":1,"action":{"meta_error":131000,"body_bytes":5000,"chunked":true}}' >/dev/null
check "chunked status" "$(post /v24.0/123/messages '{"to":"+15550001112"}')" 500
check "chunked has no Content-Length" "$(hdr content-length)" ""
check "chunked transfer-encoding" "$(hdr transfer-encoding)" chunked
check "chunked body: the error, padded to 5000 bytes" "$(wc -c <"$B" | tr -d ' ') $(jsq "$B" 'j.error.code')" "5000 131000"

# ---- 64 MB that the client stops reading after 64 kB (head closes the pipe)
ctl POST /_mock/rules '{"times":1,"action":{"body_bytes":67108864,"chunked":true}}' >/dev/null
curl -s -N -X POST --data-binary '{"to":"+15550001114","biz_opaque_callback_data":"pad4"}' \
    "$base/v24.0/123/messages" 2>/dev/null | head -c 65536 >/dev/null
for _ in $(seq 1 50); do
    ctl GET "/_mock/requests?callback=pad4" >/dev/null
    [ "$(jsq "$B" 'j[0].response_complete')" != null ] && break
    sleep 0.1
done
check "an unread body is recorded as not complete" "$(jsq "$B" 'j[0].response_bytes + " " + j[0].response_complete')" "67108864 false"

# ---- connections: counted, and closed on demand
exec 7<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /_mock/health HTTP/1.1\r\nHost: x\r\n\r\n' >&7
sleep 0.2
check "connections counts an idle keep-alive one" "$(ctl GET /_mock/connections >/dev/null; jsq "$B" 'j.open')" 1
ctl POST /_mock/close_connections >/dev/null
check "close_connections closed it" "$(jsq "$B" 'j.closed')" 1
cat <&7 >/dev/null
check "the client sees EOF" "$?" 0
exec 7<&-
check "no connection left" "$(ctl GET /_mock/connections >/dev/null; jsq "$B" 'j.open')" 0

# ---- latency_ms
ctl POST /_mock/rules '{"times":1,"action":{"latency_ms":400}}' >/dev/null
t=$(curl -s -o /dev/null -w '%{time_total}' -X POST --data-binary '{"to":"+1"}' "$base/v24.0/123/messages")
check "rule latency_ms >= 400" "$(awk -v t="$t" 'BEGIN{print (t >= 0.4) ? "yes" : "no(" t ")"}')" yes
check "set default latency" "$(ctl POST /_mock/latency '{"ms":250}')" 200
t=$(curl -s -o /dev/null -w '%{time_total}' -X POST --data-binary '{"to":"+1"}' "$base/v24.0/123/messages")
check "default latency >= 250" "$(awk -v t="$t" 'BEGIN{print (t >= 0.25) ? "yes" : "no(" t ")"}')" yes

# ---- counts
check "reset" "$(ctl POST /_mock/reset)" 200
ctl GET /_mock/latency >/dev/null
check "reset restores latency" "$(jsq "$B" 'j.ms')" 0
for cb in a b a a; do
    post /v24.0/123/messages "{\"to\":\"+1\",\"biz_opaque_callback_data\":\"$cb\"}" >/dev/null
done
post /v24.0/123/messages '{"to":"+1"}' >/dev/null
ctl GET /_mock/counts >/dev/null
check "counts total" "$(jsq "$B" 'j.total')" 5
check "counts by_callback" "$(jsq "$B" 'j.by_callback')" '{"a":3,"b":1}'
ctl GET "/_mock/counts?callback=a" >/dev/null
check "counts?callback=a" "$(jsq "$B" 'j.count')" 3
ctl GET /_mock/cpu >/dev/null
check "cpu" "$(jsq "$B" '["user_us","system_us","rss"].every(k => typeof j[k] === "number")')" true

# ---- reset clears everything
ctl POST /_mock/rules '{"action":{"status":500}}' >/dev/null
ctl POST /_mock/reset >/dev/null
ctl GET /_mock/counts >/dev/null
check "after reset counts" "$(jsq "$B" 'j.total + " " + JSON.stringify(j.by_callback)')" "0 {}"
ctl GET /_mock/requests >/dev/null
check "after reset requests" "$(cat "$B")" "[]"
ctl GET /_mock/rules >/dev/null
check "after reset rules" "$(cat "$B")" "[]"
check "after reset default answer" "$(post /v24.0/123/messages '{"to":"+1"}')" 200

# ---- --no-record keeps counters
port2=$("$here/start.sh" "$d2" --no-record) || nok "start --no-record"
if [ -n "${port2:-}" ]; then
    b2=http://127.0.0.1:$port2
    for cb in x y x; do
        curl -s -o /dev/null -X POST --data-binary "{\"to\":\"+1\",\"biz_opaque_callback_data\":\"$cb\"}" "$b2/v23.0/9/messages"
    done
    check "no-record: requests empty" "$(curl -s "$b2/_mock/requests")" "[]"
    curl -s -o "$B" "$b2/_mock/counts"
    check "no-record: counts" "$(jsq "$B" 'j.total + " " + JSON.stringify(j.by_callback)')" '3 {"x":2,"y":1}'
    "$here/stop.sh" "$d2"
    check "stop.sh removes pid file" "$([ -e "$d2/mock.pid" ] && echo present || echo gone)" gone
fi

# ---- --keep-alive-timeout closes idle connections
port3=$("$here/start.sh" "$tmp/ka" --keep-alive-timeout 300) || nok "start --keep-alive-timeout"
if [ -n "${port3:-}" ]; then
    exec 8<>"/dev/tcp/127.0.0.1/$port3"
    printf 'GET /_mock/health HTTP/1.1\r\nHost: x\r\n\r\n' >&8
    start_ns=$(date +%s%N)
    timeout 5 cat <&8 >/dev/null
    ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
    exec 8<&-
    check "keep-alive-timeout 300 ms closes the idle connection" "$([ "$ms" -ge 250 ] && [ "$ms" -lt 3000 ] && echo yes || echo "no (${ms} ms)")" yes
    "$here/stop.sh" "$tmp/ka"
fi

# ---- --tls-cert/--tls-key: the API over https on a second port
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1; then
    port4=$("$here/start.sh" "$tmp/tls" --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem") || nok "start --tls-cert"
    if [ -n "${port4:-}" ]; then
        curl -s -o "$B" "http://127.0.0.1:$port4/_mock/config"
        tport=$(jsq "$B" 'j.tls_port')
        check "tls: config shows the TLS port" "$([ -n "$tport" ] && [ "$tport" != null ] && [ "$tport" != "$port4" ] && echo yes)" yes
        code=$(curl -s -o "$B" -w '%{http_code} %{http_version}' --cacert "$tmp/cert.pem" -X POST \
            --data-binary '{"to":"+15550002222","biz_opaque_callback_data":"tls1"}' "https://127.0.0.1:$tport/v24.0/9/messages")
        check "tls: POST over https, certificate verified, HTTP/1.1" "$code" "200 1.1"
        curl -s -o "$B" "http://127.0.0.1:$port4/_mock/requests?callback=tls1"
        check "tls: recorded like any other" "$(jsq "$B" 'j.length + " " + j[0].to')" "1 +15550002222"
        check "tls: stdout names both ports" "$(sed -n 2p "$tmp/tls/mock.log")" "listening-tls $tport"
        "$here/stop.sh" "$tmp/tls"
    fi
else
    nok "openssl could not make a test certificate"
fi

# ---- non-loopback host refused
"$node" "$here/mock_cloud_api.js" --host 0.0.0.0 --port 0 >/dev/null 2>&1
check "non-loopback --host refused" "$?" 2

# ---- SIGTERM exits 0 promptly
"$node" "$here/mock_cloud_api.js" --port 0 --port-file "$tmp/sig.port" >"$tmp/sig.log" 2>&1 &
sigpid=$!
for _ in $(seq 1 100); do [ -s "$tmp/sig.port" ] && break; sleep 0.05; done
sleep 0.1
kill -TERM "$sigpid"
start_ns=$(date +%s%N)
wait "$sigpid"
sigrc=$?
ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
check "SIGTERM exit code" "$sigrc" 0
check "SIGTERM exits within 1 s" "$([ "$ms" -lt 1000 ] && echo yes || echo "no (${ms} ms)")" yes
check "stdout says listening <port>" "$(head -1 "$tmp/sig.log")" "listening $(cat "$tmp/sig.port")"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
