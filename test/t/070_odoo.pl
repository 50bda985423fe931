# Odoo events end to end: Odoo's database user confirms orders and posts
# invoices (the fixture of test/odoo, Odoo 18), the triggers record the
# messages at commit, and the worker sends exactly the template requests
# the rules describe to the mock Cloud API.  Also: a neutralized copy sends
# nothing, and a pg_dump of the Odoo database restores with its triggers
# and rules.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(usleep);
use WaTest;

my $repo = WaTest::repo();
# The mock's records are decoded already: their bodies are character strings.
my $json = JSON::PP->new;
sub body_of { return $json->decode($_[0]{body}); }
my $mock = WaTest::mock_start();
my $node = WaTest::node('odoo', mock => $mock,
	'whatsapp.poll_interval' => '60s');

my $token = 'EAAodoo' . int(rand(1e9));
WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('mx', '1099887766', '$token', max_mps => 1000);
	\\set ECHO none
	\\i $repo/test/odoo/odoo18.sql
	\\o /dev/null
	\\i $repo/test/odoo/data.sql
	\\o
}, 'extension, account and the Odoo 18 fixture');

ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database');

# Odoo's database user: sender and reader, nothing else of the extension.
WaTest::psql_ok($node, q{
	CREATE ROLE odoo LOGIN;
	GRANT USAGE ON SCHEMA public TO odoo;
	GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO odoo;
	GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO odoo;
	GRANT whatsapp_sender, whatsapp_reader TO odoo;
}, "Odoo's role");
my $as_odoo = $node->connstr('postgres') . ' user=odoo';

WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', NULL, 'mx',
		'{"header": "portal_pdf", "customer_name": "partner_name", "order": "document_name",
		  "total": "amount_total"}');
	SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
		'["partner_name", "document_name", "amount_residual", "invoice_date_due"]');
	INSERT INTO whatsapp.templates (name, language, category) VALUES
		('order_confirmed', 'es', 'UTILITY'), ('order_confirmed', 'es_MX', 'UTILITY');
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
								   currency_id, name, state, date_order, access_token)
	VALUES (1, 1, 10, 10, 10, 3, 'New', 'draft', now() AT TIME ZONE 'UTC', '3f1c9a52-6a3e-4d39-9d0c-6c1d8d1f7b21'),
		   (2, 1, 11, 11, 11, 5, 'New', 'draft', now() AT TIME ZONE 'UTC', 'b6a0f7e2-0d41-4c55-8f0e-2f4b1c9e8a10');
}, 'rules enabled by an admin; two quotations');

WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_enable('invoice_sent', 'x')}, '42501',
	'Odoo\'s role cannot enable events', connstr => $as_odoo);

# --- 1. An order confirmed by Odoo's role, as the ORM writes it -----------
my $seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	BEGIN ISOLATION LEVEL REPEATABLE READ;
	UPDATE public.sale_order SET state = 'sale', date_order = now() AT TIME ZONE 'UTC' WHERE id = 1;
	UPDATE public.sale_order SET name = 'S00042', amount_untaxed = 1064.22, amount_tax = 170.28,
		   amount_total = 1234.5 WHERE id = 1;
	COMMIT;
}, 'Odoo confirms S00042', connstr => $as_odoo);
my $reqs = $mock->wait_requests(1, 30, since => $seq0);
ok($reqs, 'the worker sent it');
my $id = WaTest::psql_ok($node,
	q{SELECT id FROM whatsapp.messages WHERE dedupe_key = 'sale.order:1:sale_order_confirmed'},
	'its message', connstr => $as_odoo);
chomp $id;
my $r = $reqs->[0];
is($r->{path}, '/v24.0/1099887766/messages', 'to the account\'s phone number id');
is($r->{headers}{authorization}, "Bearer $token", 'with its token');
is_deeply(body_of($r), {
	messaging_product => 'whatsapp',
	recipient_type => 'individual',
	to => '+525512345678',
	biz_opaque_callback_data => "$id",
	type => 'template',
	template => {
		name => 'order_confirmed',
		language => { code => 'es_MX' },
		components => [
			{ type => 'header', parameters => [ { type => 'document', document => {
				link => 'https://erp.example.com/my/orders/1?access_token=3f1c9a52-6a3e-4d39-9d0c-6c1d8d1f7b21&report_type=pdf&download=true',
				filename => 'S00042.pdf' } } ] },
			{ type => 'body', parameters => [
				{ type => 'text', parameter_name => 'order', text => 'S00042' },
				{ type => 'text', parameter_name => 'total', text => "\$\x{a0}1,234.50" },
				{ type => 'text', parameter_name => 'customer_name', text => "Ana Garc\x{ed}a" } ] } ] },
}, 'the exact template request: recipient, language, PDF header, named parameters as committed');
ok(WaTest::wait_for($node, "SELECT state FROM whatsapp.messages WHERE id = $id", 'sent', 30,
		connstr => $as_odoo), 'Odoo\'s role sees it sent');

# The Colombian distributor: base language es, its own currency and separators.
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	UPDATE public.sale_order SET state = 'sale', name = 'S00043', amount_total = 2500000 WHERE id = 2;
}, 'Odoo confirms S00043', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
my $body = $reqs ? body_of($reqs->[0]) : {};
is($body->{to}, '+573001234567', 'to the distributor');
is($body->{template}{language}{code}, 'es', 'es_CO falls back to es');
is($body->{template}{components}[1]{parameters}[1]{text}, "\$\x{a0}2.500.000,00",
	'amount with es_CO separators');

# --- 2. Confirming again sends nothing more ------------------------------
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	UPDATE public.sale_order SET state = 'cancel' WHERE id = 1;
	UPDATE public.sale_order SET state = 'draft' WHERE id = 1;
	UPDATE public.sale_order SET state = 'sale' WHERE id = 1;
}, 'cancel and confirm again', connstr => $as_odoo);
usleep(500_000);
is(scalar(@{ $mock->requests($seq0) }), 0, 'no second request');

# --- 3. 300 invoices posted in one transaction ----------------------------
WaTest::psql_ok($node, q{
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
									 currency_id, name, state, move_type, date, invoice_date_due)
	SELECT g, 1, 1, 10, 10, 3, '/', 'draft', 'out_invoice', current_date, '2031-01-31'
	  FROM generate_series(1, 300) g;
}, '300 draft invoices');
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	BEGIN ISOLATION LEVEL REPEATABLE READ;
	UPDATE public.account_move SET state = 'posted', invoice_date = current_date;
	UPDATE public.account_move SET name = 'INV/2025/' || lpad(id::text, 5, '0'),
		   amount_total = 1000 + id, amount_residual = 1000 + id;
	COMMIT;
}, 'Odoo posts them in one transaction', connstr => $as_odoo);
$reqs = $mock->wait_requests(300, 60, since => $seq0);
ok($reqs, 'the worker sent 300 requests');
my %got;
for my $q (@{ $reqs // [] })
{
	my $b = body_of($q);
	my @p = map { $_->{text} } @{ $b->{template}{components}[0]{parameters} };
	$got{ $p[1] } = join('|', $b->{template}{name}, @p);
}
is(scalar(keys %got), 300, '300 different invoices');
is($got{'INV/2025/00007'}, "invoice_posted|Ana Garc\x{ed}a|INV/2025/00007|\$\x{a0}1,007.00|31/01/2031",
	'each with its committed name, residual amount and due date');

# --- 4. A neutralized copy sends nothing -----------------------------------
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	INSERT INTO public.ir_config_parameter (key, value) VALUES ('database.is_neutralized', 'true');
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
								   currency_id, name, state, date_order, amount_total)
	VALUES (3, 1, 10, 10, 10, 3, 'S00044', 'sale', now() AT TIME ZONE 'UTC', 1);
}, 'an order in a neutralized database', connstr => $as_odoo);
usleep(1_000_000);
is(scalar(@{ $mock->requests($seq0) }), 0, 'no request');
WaTest::psql_like($node,
	q{SELECT state, failure_type, error_title FROM whatsapp.messages WHERE dedupe_key = 'sale.order:3:sale_order_confirmed'},
	qr/^failed\|account\|not sent: Odoo marked this database neutralized/, 'recorded as failed, with the reason');
WaTest::psql_ok($node, q{DELETE FROM public.ir_config_parameter WHERE key = 'database.is_neutralized'},
	'not neutralized any more');

# --- 5. pg_dump and restore carry the triggers and the rules ----------------
my $dump = "$PostgreSQL::Test::Utils::tmp_check/odoo.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump');
WaTest::psql_ok($node, 'CREATE DATABASE odoo_copy', 'a database for the copy');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('odoo_copy'), $dump ],
	'pg_restore');
WaTest::psql_is($node, q{
	SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgname LIKE 'whatsapp_%';
	SELECT string_agg(event || ':' || triggers_installed, ',' ORDER BY event) FROM whatsapp.odoo_rules;
}, "whatsapp_invoice_posted_insert,whatsapp_invoice_posted_update,whatsapp_sale_order_confirmed_insert,whatsapp_sale_order_confirmed_update\ninvoice_posted:true,sale_order_confirmed:true",
	'the copy has the triggers and the rules', dbname => 'odoo_copy');
WaTest::psql_is($node, q{
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
								   currency_id, name, state, date_order, amount_total, access_token)
	VALUES (4, 1, 10, 10, 10, 3, 'S00045', 'sale', now() AT TIME ZONE 'UTC', 1, 'tok-4');
	SELECT state, recipient, error_title FROM whatsapp.messages WHERE dedupe_key = 'sale.order:4:sale_order_confirmed';
}, 'queued|+525512345678|', 'an order confirmed in the copy is queued there (no worker serves the copy)',
	dbname => 'odoo_copy');
# DROP EXTENSION ... CASCADE in the copy: the triggers go, Odoo keeps working.
WaTest::psql_fails($node, 'DROP EXTENSION whatsapp', '2BP01',
	'a plain DROP EXTENSION refuses while triggers use it', dbname => 'odoo_copy');
WaTest::psql_is($node, q{
	SET client_min_messages = warning;
	DROP EXTENSION whatsapp CASCADE;
	UPDATE public.sale_order SET state = 'cancel' WHERE id = 4;
	UPDATE public.sale_order SET state = 'sale' WHERE id = 4;
	UPDATE public.account_move SET state = 'draft' WHERE id = 1;
	UPDATE public.account_move SET state = 'posted' WHERE id = 1;
	SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'whatsapp_%';
}, '0', 'after DROP EXTENSION CASCADE Odoo\'s writes work and no trigger is left',
	dbname => 'odoo_copy', connstr => undef);

# The original still sends.
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
								   currency_id, name, state, date_order, amount_total, access_token)
	VALUES (5, 1, 13, 13, 13, 4, 'S00046', 'sale', now() AT TIME ZONE 'UTC', 1234.5, 'tok-5');
}, 'an order inserted already confirmed', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
$body = $reqs ? body_of($reqs->[0]) : {};
is($body->{to}, '+5511912345678', 'sent to the Brazilian customer');
is($body->{template}{components}[1]{parameters}[1]{text}, "R\$\x{a0}1.234,50", 'in reais, pt_BR style');

done_testing();
