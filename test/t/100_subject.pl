# Access and erasure on request (issue 13, items 2 and 3):
# wa_subject_export returns everything held about one person under every
# identifier known for them (E.164 forms, Mexico's 521 wa_id, the
# business-scoped user id); wa_subject_erase removes it all, keeps the
# message skeletons (their dedupe keys still dedupe) and the opt-out under
# keyed hashes, so that the same Odoo order confirmed again sends nothing
# and a plain wa_send to the erased number is still blocked.
use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $secret = 'tap-app-secret-' . int(rand(1e9));
my $mock = WaTest::mock_start();
my $node = WaTest::node('subject', mock => $mock,
	'whatsapp.poll_interval' => '60s');

# Ana García: +52 55 1234 5678, Meta's wa_id 5215512345678 (Mexico's old
# mobile form), user id MX.1502576394655843; res_partner 10 in the fixture.
my $body = 'Su pedido Zanahoria-7781 esta listo';
my $reply = 'Gracias, recibido Zanahoria-7781';
my @needles = ('5512345678', 'MX.1502576394655843', 'Zanahoria-7781', 'Ana García');

WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('mx', '1099887766', 'EAAsubject$secret', app_secret => '$secret',
								   waba_id => '2099887766', max_mps => 1000);
	\\set ECHO none
	\\i $repo/test/odoo/odoo18.sql
	\\o /dev/null
	\\i $repo/test/odoo/data.sql
	\\o
	CREATE ROLE privacy_officer LOGIN IN ROLE whatsapp_admin;
	CREATE ROLE app LOGIN IN ROLE whatsapp_sender, whatsapp_reader;
	GRANT whatsapp_sender TO privacy_officer;
}, 'extension, account, the Odoo 18 fixture, an admin and an application role');
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');
my $as_admin = $node->connstr('postgres') . ' user=privacy_officer';
my $as_app = $node->connstr('postgres') . ' user=app';

sub payload
{
	my ($value) = @_;
	return '{"object":"whatsapp_business_account","entry":[{"id":"2099887766","changes":'
	  . '[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":'
	  . '{"display_phone_number":"15550001111","phone_number_id":"1099887766"},'
	  . $value . '}}]}]}';
}

sub text_payload
{
	my ($wamid, $text, $ts) = @_;
	return payload(qq~"contacts":[{"profile":{"name":"Ana García"},"wa_id":"5215512345678",~
		  . qq~"user_id":"MX.1502576394655843"}],~
		  . qq~"messages":[{"from":"5215512345678","id":"$wamid","timestamp":"$ts",~
		  . qq~"type":"text","text":{"body":"$text"}}]~);
}

sub sign
{
	my ($p) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', 'dgst', '-sha256', '-hmac', $secret ],
		'<', \$p, '>', \$out, '2>', \$err)
	  or BAIL_OUT("openssl dgst failed: $err");
	$out =~ /([0-9a-f]{64})\s*$/ or BAIL_OUT("no digest in: $out");
	return "sha256=$1";
}

sub receive
{
	my ($p, $name) = @_;
	WaTest::psql_ok($node, "SELECT whatsapp.wa_receive(\$p\$$p\$p\$, '" . sign($p) . "')",
		$name, connstr => $as_app);
}

# Tables of the extension, and the rows of each that hold any needle.
my $scan_sql = join("\n",
	q{SELECT string_agg(format('%s: %s', c.relname, n.hits), '; ' ORDER BY c.relname)},
	q{  FROM pg_class c,},
	q{  LATERAL (SELECT (xpath('/row/c/text()', query_to_xml(format(}
	  . q{'SELECT count(*) AS c FROM whatsapp.%I t WHERE t::text LIKE ANY (%L)', c.relname, }
	  . q{ARRAY[} . join(', ', map { "'%$_%'" } @needles) . q{]), false, true, '')))[1]::text::int AS hits) n},
	q{ WHERE c.relnamespace = 'whatsapp'::regnamespace AND c.relkind = 'r' AND n.hits > 0});

# --- 1. Ana's data under several identifiers -------------------------------
my $seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "document_name"]');
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
								   currency_id, name, state, date_order, access_token)
	VALUES (1, 1, 10, 10, 10, 3, 'S00042', 'draft', now() AT TIME ZONE 'UTC', '3f1c9a52-6a3e-4d39-9d0c-6c1d8d1f7b21');
	UPDATE public.sale_order SET state = 'sale' WHERE id = 1;
}, 'Odoo confirms S00042 for Ana (partner 10)');
my $text_id = WaTest::psql_ok($node,
	"SELECT whatsapp.wa_send('+52 1 55 1234 5678', '$body', dedupe_key => 'pedido-7781')",
	'a text to Ana, under the 521 form', connstr => $as_app);
chomp $text_id;
ok($mock->wait_requests(2, 30, since => $seq0), 'the worker sent both');
ok(WaTest::wait_until(sub {
	my (undef, $o) = WaTest::run_psql($node,
		"SELECT count(*) FROM whatsapp.message WHERE state = 'sent' AND wamid IS NOT NULL");
	$o =~ /^2$/ }, 30, 'both recorded'), 'both are recorded as sent');

receive(text_payload('wamid.HBgNNTIxNTUxMjM0NTY3OBUCABIYFjNFQjBDNzAxQUE5', $reply, '1749416383'),
	'Ana replies from wa_id 5215512345678 with her user id');
receive(text_payload('wamid.HBgNNTIxNTUxMjM0NTY3OBUCABIYFjNFQjBDNzAxQUFA', 'STOP', '1749416400'),
	'and writes STOP');
WaTest::psql_ok($node, q{SELECT whatsapp.wa_opt_out('MX.1502576394655843', 'marketing', 'called the shop')},
	'the shop records a marketing opt-out under her user id', connstr => $as_app);

# --- 2. The export ---------------------------------------------------------
my $export_proj = q{
	SELECT jsonb_build_object(
		'identifiers', e -> 'identifiers',
		'messages', (SELECT jsonb_agg(jsonb_build_array(m ->> 'recipient', m ->> 'wa_id', m ->> 'kind',
			m ->> 'dedupe_key', coalesce(m #>> '{payload,text,body}', m #>> '{payload,template,name}'),
			m ->> 'account') ORDER BY m ->> 'id') FROM jsonb_array_elements(e -> 'messages') m),
		'inbound', (SELECT jsonb_agg(jsonb_build_array(i ->> 'wa_id', i ->> 'phone', i ->> 'user_id',
			i ->> 'profile_name', i ->> 'body') ORDER BY i ->> 'sent_at') FROM jsonb_array_elements(e -> 'inbound') i),
		'opt_outs', (SELECT jsonb_agg(jsonb_build_array(o ->> 'identifier', o ->> 'scope', o ->> 'source'))
			FROM jsonb_array_elements(e -> 'opt_outs') o),
		'consents', (SELECT jsonb_agg(jsonb_build_array(c ->> 'identifier', c ->> 'action', c ->> 'scope',
			c ->> 'source', c ->> 'reason') ORDER BY c ->> 'source', c ->> 'identifier')
			FROM jsonb_array_elements(e -> 'consents') c),
		'log_messages', (SELECT jsonb_agg(DISTINCT l ->> 'message_id') FROM jsonb_array_elements(e -> 'log') l),
		'webhooks', jsonb_array_length(e -> 'webhooks'),
		'erased_records', e -> 'erased_records')
	FROM (SELECT whatsapp.wa_subject_export(%s) AS e) x};
my $odoo_id = WaTest::psql_ok($node,
	q{SELECT id FROM whatsapp.message WHERE dedupe_key = 'sale.order:1:sale_order_confirmed'}, 'the Odoo message');
chomp $odoo_id;
my ($lo, $hi) = sort { $a <=> $b } ($odoo_id, $text_id);
my $expected = JSON::PP->new->canonical->encode({
	identifiers => [ '+525512345678', 'MX.1502576394655843' ],
	messages => [
		($odoo_id < $text_id
		 ? ([ '+525512345678', '525512345678', 'template', 'sale.order:1:sale_order_confirmed', 'order_confirmed', 'mx' ],
			[ '+525512345678', '525512345678', 'text', 'pedido-7781', $body, 'mx' ])
		 : ([ '+525512345678', '525512345678', 'text', 'pedido-7781', $body, 'mx' ],
			[ '+525512345678', '525512345678', 'template', 'sale.order:1:sale_order_confirmed', 'order_confirmed', 'mx' ])) ],
	inbound => [
		[ '5215512345678', '+525512345678', 'MX.1502576394655843', 'Ana García', $reply ],
		[ '5215512345678', '+525512345678', 'MX.1502576394655843', 'Ana García', 'STOP' ] ],
	opt_outs => [
		[ '+525512345678', 'all', 'keyword' ],
		[ '+525512345678', 'marketing', 'wa_opt_out' ],
		[ 'MX.1502576394655843', 'all', 'keyword' ],
		[ 'MX.1502576394655843', 'marketing', 'wa_opt_out' ] ],
	consents => [
		[ '+525512345678', 'opt_out', 'all', 'keyword', '"stop"' ],
		[ 'MX.1502576394655843', 'opt_out', 'all', 'keyword', '"stop"' ],
		[ '+525512345678', 'opt_out', 'marketing', 'wa_opt_out', 'called the shop' ],
		[ 'MX.1502576394655843', 'opt_out', 'marketing', 'wa_opt_out', 'called the shop' ] ],
	log_messages => [ "$lo", "$hi" ],
	webhooks => 2,
	erased_records => 0 });
for my $asked ('+52 55 1234 5678', '+5215512345678', 'MX.1502576394655843')
{
	my $got = WaTest::psql_ok($node, sprintf($export_proj, "'$asked'"),
		"export asked as $asked", connstr => $as_admin);
	chomp $got;
	is(JSON::PP->new->canonical->encode(JSON::PP->new->decode($got)), $expected,
		"the export asked as $asked holds exactly Ana's messages, replies, opt-outs and consents");
}
my $other = WaTest::psql_ok($node, q{SELECT whatsapp.wa_subject_export('+57 300 123 4567') -> 'messages'},
	'export of another person', connstr => $as_admin);
chomp $other;
is($other, '[]', 'another person\'s export holds none of Ana\'s messages');

# --- 3. Who may call, and what does not parse ------------------------------
WaTest::psql_fails($node, q{SELECT whatsapp.wa_subject_export('+525512345678')}, '42501',
	'a sender cannot export', connstr => $as_app);
WaTest::psql_fails($node, q{SELECT whatsapp.wa_subject_erase('+525512345678')}, '42501',
	'a sender cannot erase', connstr => $as_app);
WaTest::psql_fails($node, q{SELECT whatsapp.wa_subject_erase('call me maybe')}, '22023',
	'a phone that does not parse: 22023', connstr => $as_admin);
WaTest::psql_fails($node, q{SELECT whatsapp.wa_subject_export(NULL)}, '22004',
	'NULL: 22004', connstr => $as_admin);

# A message in flight to the person: erase refuses, nothing changes.
WaTest::psql_ok($node, qq{UPDATE whatsapp.message SET state = 'sending' WHERE id = $text_id},
	'(pretend the text is in flight)');
WaTest::psql_fails($node, q{SELECT whatsapp.wa_subject_erase('+525512345678')}, '55006',
	'a message in flight: 55006', connstr => $as_admin);
WaTest::psql_ok($node, qq{UPDATE whatsapp.message SET state = 'sent' WHERE id = $text_id},
	'(recorded)');
like(WaTest::psql_ok($node, $scan_sql, 'scan'), qr/^consent: 4; consent_latest: 4; inbound_message: 2; message: 2; opt_out: 4; webhook: 2$/,
	'nothing was erased by the refused call');

# --- 4. Erase --------------------------------------------------------------
my $n = WaTest::psql_ok($node, q{SELECT whatsapp.wa_subject_erase('MX.1502576394655843')},
	'Ana asks for erasure, by her user id', connstr => $as_admin);
chomp $n;
cmp_ok($n, '>=', 12, "wa_subject_erase counts the rows it changed ($n)");
is(WaTest::psql_ok($node, $scan_sql, 'scan after') =~ s/\s+\z//r, '',
	'no column of any extension table holds her number in any form, her user id, her name or the body');
WaTest::psql_is($node, q{SELECT count(*), count(*) FILTER (WHERE recipient LIKE 'erased:%' AND wa_id IS NULL
													   AND payload ? 'erased' AND context IS NULL)
						   FROM whatsapp.message},
	'2|2', 'both message skeletons stay, with the recipient as a keyed hash');
WaTest::psql_is($node, q{SELECT string_agg(scope || ' ' || source, ', ' ORDER BY scope)
						   FROM whatsapp.opt_out WHERE identifier LIKE 'erased:%'},
	'all wa_subject_erase, all wa_subject_erase, marketing wa_subject_erase, marketing wa_subject_erase',
	'her opt-outs stay as hashes');
WaTest::psql_is($node, q{SELECT whatsapp.wa_subject_export('+525512345678') - 'exported_at'},
	'{"log": [], "inbound": [], "consents": [], "messages": [], "opt_outs": [], "webhooks": [], '
	. '"identifiers": ["+525512345678"], "statuses_held": [], "consent_latest": [], "erased_records": 4}',
	'an export now finds nothing but what is kept under hashes', connstr => $as_admin);

# --- 5. Still blocked, still deduplicated ----------------------------------
my $seq1 = $mock->last_seq;
WaTest::psql_ok($node, q{
	UPDATE public.sale_order SET state = 'draft' WHERE id = 1;
	UPDATE public.sale_order SET state = 'sale' WHERE id = 1;
}, 'Odoo confirms the same order S00042 again');
WaTest::psql_is($node, q{SELECT count(*) FROM whatsapp.message WHERE dedupe_key = 'sale.order:1:sale_order_confirmed'},
	'1', 'the same order records no second message (its dedupe key still dedupes)');
WaTest::psql_is($node, "SELECT whatsapp.wa_send('+52 55 1234 5678', 'hola otra vez', dedupe_key => 'pedido-7781')",
	$text_id, 'a wa_send with the erased text\'s dedupe key returns the erased message', connstr => $as_app);
my $blocked = WaTest::psql_ok($node, q{SELECT whatsapp.wa_send('+52 1 55 1234 5678', 'hola otra vez')},
	'a plain wa_send to the erased number', connstr => $as_app);
chomp $blocked;
WaTest::psql_is($node, "SELECT state, failure_type FROM whatsapp.messages WHERE id = $blocked",
	'blocked|opted_out', 'is blocked: the hashed opt-out holds');
WaTest::psql_ok($node, q{
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
								   currency_id, name, state, date_order, access_token)
	VALUES (3, 1, 10, 10, 10, 3, 'S00043', 'sale', now() AT TIME ZONE 'UTC', '0a4c9a52-6a3e-4d39-9d0c-6c1d8d1f7b22');
}, 'a new order of Ana confirmed in Odoo');
WaTest::psql_is($node, q{SELECT state, failure_type FROM whatsapp.message WHERE dedupe_key = 'sale.order:3:sale_order_confirmed'},
	'blocked|opted_out', 'is blocked on the Odoo trigger path too');
# The worker's claim: a message queued under the number (as restored from
# before the erasure) is blocked there.
WaTest::psql_ok($node, q{
	INSERT INTO whatsapp.message (account_id, recipient, kind, payload)
	SELECT id, '+525512345678', 'text', '{"type": "text", "text": {"body": "from a backup"}}'
	  FROM whatsapp.account WHERE name = 'mx';
	NOTIFY whatsapp;
}, 'a message queued to the number behind the send functions\' back');
ok(WaTest::wait_until(sub {
	my (undef, $o) = WaTest::run_psql($node,
		q{SELECT state FROM whatsapp.message WHERE payload #>> '{text,body}' = 'from a backup'});
	$o =~ /^blocked$/ }, 30, 'claim blocks it'), 'the worker\'s claim blocks it');
sleep 1;
is($mock->last_seq, $seq1, 'nothing was sent to the erased number after the erasure');

# wa_opt_in lifts the hashed opt-out.
WaTest::psql_is($node, q{SELECT whatsapp.wa_opt_in('+52 55 1234 5678')}, 't',
	'wa_opt_in of the erased number', connstr => $as_admin);
WaTest::psql_is($node, q{SELECT count(*) FROM whatsapp.opt_out WHERE identifier LIKE 'erased:%'}, '2',
	'lifts the opt-outs the number\'s hashes kept (her user id\'s stay: nothing links them any more)');
my $again = WaTest::psql_ok($node, q{SELECT whatsapp.wa_send('+52 55 1234 5678', 'Bienvenida de nuevo')},
	'a wa_send to the number after wa_opt_in', connstr => $as_app);
chomp $again;
WaTest::psql_is($node, "SELECT state <> 'blocked' FROM whatsapp.message WHERE id = $again", 't',
	'is not blocked');

# --- 6. Queued messages are cancelled --------------------------------------
WaTest::psql_ok($node, q{
	BEGIN;
	SELECT whatsapp.wa_send('+34 612 34 56 78', 'Hola Lucía, su cita es el martes');
	SELECT whatsapp.wa_subject_erase('+34612345678');
	COMMIT;
}, 'a message queued to Lucía, then her erasure in the same transaction', connstr => $as_admin);
WaTest::psql_is($node, q{SELECT m.state, (SELECT count(*) FROM whatsapp.log l WHERE l.message_id = m.id
										 AND l.event = 'cancel')
						   FROM whatsapp.message m WHERE m.recipient LIKE 'erased:%' AND m.kind = 'text'
							AND m.created_at = (SELECT max(created_at) FROM whatsapp.message)},
	'cancelled|1', 'her queued message is cancelled, and the log says so');

done_testing();
