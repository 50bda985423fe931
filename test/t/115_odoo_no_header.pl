# 115_odoo_no_header.pl: an invoice message that goes without its PDF
# header uses the rule's header-less template (issue 12 leftovers).
#
# Meta refuses a message whose template declares a DOCUMENT header when the
# header component is missing (a 132000-series error).  A rule with
# "header": "portal_pdf" sends without the header when the invoice has no
# official PDF (Odoo 17+): at once without "pdf_wait", or at the end of the
# wait.  whatsapp.wa_odoo_no_header_template() names a second template (the
# same text, no header) for those messages.  The mock Cloud API records the
# exact requests:
#
#   1. no pdf_wait, no PDF: at once, the header-less template, body only;
#   2. pdf_wait, the PDF never comes: at the deadline, the same;
#   3. pdf_wait, the PDF comes: the template with its header, unchanged;
#   4. without the option: the rule's template without the header, as before.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(usleep time);
use WaTest;

my $repo = WaTest::repo();
my $json = JSON::PP->new;
sub body_of { return $json->decode($_[0]{body}); }
my $mock = WaTest::mock_start();
my $node = WaTest::node('nohdr', mock => $mock, database => 'odoo',
	'whatsapp.poll_interval' => '500ms');

my $token = 'EAAnohdr' . int(rand(1e9));
WaTest::psql_ok($node, q{
	CREATE ROLE odoo LOGIN NOSUPERUSER;
	CREATE DATABASE odoo OWNER odoo;
}, 'a database owned by odoo, not a superuser');
WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	GRANT whatsapp_sender, whatsapp_reader TO odoo;
	SELECT whatsapp.wa_account_set('mx', '1099887766', '$token', max_mps => 1000);
	INSERT INTO whatsapp.templates (name, language, category) VALUES
		('invoice_posted', 'es_MX', 'UTILITY'), ('invoice_posted', 'es', 'UTILITY'),
		('invoice_posted_text', 'es_MX', 'UTILITY'), ('invoice_posted_text', 'es', 'UTILITY');
}, 'extension, account, templates with and without the document header', dbname => 'odoo');
my $as_odoo = $node->connstr('odoo') . ' user=odoo';

WaTest::psql_ok($node, qq{
	SET client_min_messages = warning;
	\\i $repo/test/odoo/drop.sql
	\\set ECHO none
	\\i $repo/test/odoo/odoo17.sql
	\\o /dev/null
	\\i $repo/test/odoo/data.sql
	\\o
}, 'odoo creates the Odoo 17 tables', dbname => 'odoo', connstr => $as_odoo);
ok(WaTest::wait_until(sub { WaTest::worker_pid($node, 'odoo') ne '' }, 60, 'the worker'),
	'a worker serves the database');

WaTest::psql_ok($node, q{
	SET client_min_messages = error;
	-- company 1 (Mexico) waits up to 6 s for the official PDF
	SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name", "document_name"], "pdf_wait": "6 seconds"}', 1);
	SELECT whatsapp.wa_odoo_no_header_template('invoice_posted', 'invoice_posted_text', 1);
	-- company 2 (Spain) does not wait
	SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name", "document_name"]}', 2);
	SELECT whatsapp.wa_odoo_no_header_template('invoice_posted', 'invoice_posted_text', 2);
}, 'rules with a header-less template: wait 6 s (company 1), no wait (company 2)', dbname => 'odoo');
is($node->safe_psql('odoo', q{SELECT string_agg(company_id || ' ' || (params ->> 'template_no_header'), ', '
	ORDER BY company_id) FROM whatsapp.odoo_rules WHERE event = 'invoice_posted'}),
	'1 invoice_posted_text, 2 invoice_posted_text', 'the option is in the rules\' params');
is($node->safe_psql('odoo', q{SELECT string_agg(target, ', ' ORDER BY id) FROM whatsapp.audit
	WHERE function = 'wa_odoo_no_header_template'}),
	'event invoice_posted, company 1, rule 1, template invoice_posted, event invoice_posted, company 2, rule 2, template invoice_posted',
	'each change is audited');

WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name"], "template_no_header": "invoice_posted_text"}', 1)},
	'22023', 'wa_odoo_enable does not take it in params', dbname => 'odoo');
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_no_header_template('invoice_posted', 'Invoice Text', 1)},
	'22023', 'a name that is not a template name is refused', dbname => 'odoo');
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_no_header_template('invoice_sent', 'invoice_posted_text')},
	'42704', 'a rule that does not exist is refused', dbname => 'odoo');
WaTest::psql_ok($node, q{
	SET client_min_messages = error;
	SELECT whatsapp.wa_odoo_enable('refund_posted', 'invoice_posted', 'es_MX', 'mx',
		'["partner_name", "document_name"]');
}, 'a rule without the PDF header', dbname => 'odoo');
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_no_header_template('refund_posted', 'invoice_posted_text')},
	'55000', 'a rule without "header": "portal_pdf" is refused', dbname => 'odoo');

# Draft invoices of Ana García (company 1) and Lucía Pérez (company 2).
WaTest::psql_ok($node, q{
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, invoice_date_due, amount_total)
	VALUES (1, 1, 2, 14, 14, 2, '/', 'draft', 'out_invoice', current_date, current_date + 30, 1160),
		   (2, 1, 1, 10, 10, 3, '/', 'draft', 'out_invoice', current_date, current_date + 30, 1160),
		   (3, 1, 1, 10, 10, 3, '/', 'draft', 'out_invoice', current_date, current_date + 30, 1160),
		   (4, 1, 2, 14, 14, 2, '/', 'draft', 'out_invoice', current_date, current_date + 30, 1160);
}, 'draft invoices', dbname => 'odoo', connstr => $as_odoo);

sub post_sql
{
	my ($id, $name) = @_;
	return qq{
		UPDATE public.account_move SET state = 'posted', invoice_date = current_date WHERE id = $id;
		UPDATE public.account_move SET name = '$name' WHERE id = $id;
	};
}

sub only_message
{
	my ($seq0, $what) = @_;
	my $reqs = $mock->wait_requests(1, 30, since => $seq0);
	ok($reqs, "$what: sent");
	my @m = grep { $_->{path} =~ m{/messages$} } @{ $reqs // [] };
	is(scalar(@m), 1, "$what: one request to /messages");
	return @m ? body_of($m[0]) : {};
}

# --- 1. No pdf_wait, no PDF: the header-less template at once --------------
my $seq0 = $mock->last_seq;
my $t0 = time();
WaTest::psql_ok($node, 'BEGIN;' . post_sql(1, 'FAC/2025/00001') . 'COMMIT;',
	'FAC/2025/00001 (company 2) posted without a PDF', dbname => 'odoo', connstr => $as_odoo);
like($node->safe_psql('odoo', q{SELECT whatsapp.wa_odoo_preview('invoice_posted', 1) ->> 'pdf_source'}),
	qr/without the header at once .* as template invoice_posted_text/, 'the preview names the header-less template');
my $body = only_message($seq0, '1');
ok(time() - $t0 < 10, '1: at once');
is_deeply($body->{template}, {
		name => 'invoice_posted_text', language => { code => 'es' },
		components => [ { type => 'body', parameters => [
			{ type => 'text', text => "Luc\x{ed}a P\x{e9}rez" }, { type => 'text', text => 'FAC/2025/00001' } ] } ] },
	'1: the exact template: the header-less one, the body only');

# --- 2. pdf_wait, the PDF never comes: the header-less template at the deadline
$seq0 = $mock->last_seq;
$t0 = time();
WaTest::psql_ok($node, 'BEGIN;' . post_sql(2, 'INV/2025/00002') . 'COMMIT;',
	'INV/2025/00002 (company 1) posted, and no PDF is ever made', dbname => 'odoo', connstr => $as_odoo);
is($node->safe_psql('odoo', q{SELECT w.template_no_header, m.payload #>> '{template,name}'
	FROM whatsapp.odoo_pdf_wait w JOIN whatsapp.message m ON m.id = w.message_id}),
	'invoice_posted_text|invoice_posted', 'it waits, with the template of the header, the other one kept aside');
$body = only_message($seq0, '2');
my $waited = time() - $t0;
ok($waited >= 5.5, "2: not before the deadline (after ${waited}s)");
is_deeply($body->{template}, {
		name => 'invoice_posted_text', language => { code => 'es_MX' },
		components => [ { type => 'body', parameters => [
			{ type => 'text', text => "Ana Garc\x{ed}a" }, { type => 'text', text => 'INV/2025/00002' } ] } ] },
	'2: the exact template: the header-less one, the body only');
is($node->safe_psql('odoo', q{SELECT count(*) FROM whatsapp.odoo_pdf_wait}), '0', '2: no wait left');

# --- 3. pdf_wait, the PDF comes: the rule's template, with the header -------
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, 'BEGIN;' . post_sql(3, 'INV/2025/00003') . 'COMMIT;',
	'INV/2025/00003 (company 1) posted without a PDF', dbname => 'odoo', connstr => $as_odoo);
usleep(1_000_000);
WaTest::psql_ok($node, q{
	INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
		access_token, db_datas, file_size, checksum, mimetype, public, create_date, write_date)
	VALUES (503, 'INV_2025_00003.pdf', 'account.move', 'invoice_pdf_report_file', 3, 1, 'binary',
		'0b7c3a52-94f1-4b0e-a8f3-5d0c6e2f9a43', convert_to('%PDF-1.7 INV_2025_00003', 'UTF8'), 23,
		'9f1c0d6b2a7e4f3c8b5a6d7e8f9a0b1c2d3e4f50', 'application/pdf', false,
		now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');
}, 'Odoo stores the official PDF while the message waits', dbname => 'odoo', connstr => $as_odoo);
$body = only_message($seq0, '3');
is_deeply($body->{template}, {
		name => 'invoice_posted', language => { code => 'es_MX' },
		components => [
			{ type => 'header', parameters => [ { type => 'document', document => {
				link => 'https://erp.example.com/web/content/503?access_token=0b7c3a52-94f1-4b0e-a8f3-5d0c6e2f9a43',
				filename => 'INV_2025_00003.pdf' } } ] },
			{ type => 'body', parameters => [
				{ type => 'text', text => "Ana Garc\x{ed}a" }, { type => 'text', text => 'INV/2025/00003' } ] } ] },
	'3: the exact template: the rule\'s own, with the PDF header');

# --- 4. Without the option: as before, the rule's template without header ---
WaTest::psql_ok($node, q{SELECT whatsapp.wa_odoo_no_header_template('invoice_posted', NULL, 2)},
	'the option removed (NULL)', dbname => 'odoo');
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, 'BEGIN;' . post_sql(4, 'FAC/2025/00004') . 'COMMIT;',
	'FAC/2025/00004 (company 2) posted without a PDF', dbname => 'odoo', connstr => $as_odoo);
$body = only_message($seq0, '4');
is($body->{template}{name}, 'invoice_posted', '4: the rule\'s template');
is_deeply([ map { $_->{type} } @{ $body->{template}{components} } ], ['body'], '4: without the header');

# --- 5. A rule on account_move (wa_odoo_rule) takes the same option -------
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_rule('inv_text', 'account_move', 'invoice_posted',
		state_value => 'posted', params => '{"body": "name", "template_no_header": "invoice_posted_text"}')},
	'22023', 'a rule: the option needs the header', dbname => 'odoo');
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_rule('inv_text', 'account_move', 'invoice_posted',
		state_value => 'posted', params => '{"header": "portal_pdf", "body": "name", "template_no_header": "Invoice Text"}')},
	'22023', 'a rule: a name that is not a template name is refused', dbname => 'odoo');
WaTest::psql_ok($node, q{
	SET client_min_messages = error;
	SELECT whatsapp.wa_odoo_disable('invoice_posted', 1), whatsapp.wa_odoo_disable('invoice_posted', 2);
	SELECT whatsapp.wa_odoo_rule('inv_text', 'account_move', 'invoice_posted',
		state_value => 'posted', language => 'es',
		params => '{"header": "portal_pdf", "body": "name", "template_no_header": "invoice_posted_text"}');
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, invoice_date_due, amount_total)
	VALUES (5, 1, 2, 14, 14, 2, 'FAC/2025/00005', 'draft', 'out_invoice', current_date, current_date + 30, 1160);
}, 'the event off; a rule on account_move with a header-less template', dbname => 'odoo');
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{UPDATE public.account_move SET state = 'posted', invoice_date = current_date WHERE id = 5},
	'FAC/2025/00005 posted without a PDF', dbname => 'odoo', connstr => $as_odoo);
$body = only_message($seq0, '5');
is_deeply($body->{template}, {
		name => 'invoice_posted_text', language => { code => 'es' },
		components => [ { type => 'body', parameters => [
			{ type => 'text', text => 'FAC/2025/00005', parameter_name => 'body' } ] } ] },
	'5: the rule\'s message: the header-less template, the body only');

done_testing();
