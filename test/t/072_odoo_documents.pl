# 072_odoo_documents.pl: the document header of an Odoo invoice is its
# official PDF, never a pro-forma and never a ZIP (issue 12, item 1).
#
# From Odoo 17 on, the portal's /my/invoices/<id>?report_type=pdf returns a
# pro-forma until the official PDF exists, and a ZIP when an EDI XML
# (UBL/CII, CFDI, ...) lies beside the PDF.  The official PDF is the
# ir_attachment of invoice_pdf_report_file, served by
# /web/content/<id>?access_token=<its access_token>.  In 16, the invoice
# report stores the official PDF as an attachment named after the invoice,
# and the portal link renders and stores it when there is none.
#
# The database belongs to a login role "odoo" that is not a superuser, as
# Odoo's own database does, so the attachment's missing access_token is
# written with odoo's rights.  The mock Cloud API records each request; the
# test checks the exact header of each: the attachment's link, or none.
#
#   17: the PDF (with a UBL XML beside it) exists at posting; it appears
#       while the message waits (rule pdf_wait); it never comes (the
#       message leaves without the header at the deadline); a rule
#       without pdf_wait sends without the header at once; an order keeps
#       the portal's report.
#       With "pdf_upload", the worker uploads the PDF (from the filestore,
#       or from the database) to the mock's media endpoint and sends the
#       media id it answers.
#   16: the stored report; none stored yet (the portal link, no wait).
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Digest::SHA;
use Time::HiRes qw(usleep time);
use WaTest;

my $repo = WaTest::repo();
my $json = JSON::PP->new;
sub body_of { return $json->decode($_[0]{body}); }
my $mock = WaTest::mock_start();
my $node = WaTest::node('docs', mock => $mock, database => 'odoo',
	'whatsapp.poll_interval' => '500ms');

my $token = 'EAAdocs' . int(rand(1e9));
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
		('order_confirmed', 'es_MX', 'UTILITY');
}, 'extension, account, templates', dbname => 'odoo');
my $as_odoo = $node->connstr('odoo') . ' user=odoo';

sub load_fixture
{
	my ($version) = @_;
	WaTest::psql_ok($node, qq{
		SET client_min_messages = warning;
		\\i $repo/test/odoo/drop.sql
		\\set ECHO none
		\\i $repo/test/odoo/odoo$version.sql
		\\o /dev/null
		\\i $repo/test/odoo/data.sql
		\\o
	}, "odoo creates the Odoo $version tables", dbname => 'odoo', connstr => $as_odoo);
}
load_fixture(17);
is($node->safe_psql('odoo', q{SELECT pg_get_userbyid(relowner) FROM pg_class
	WHERE oid = 'public.ir_attachment'::regclass}), 'odoo', 'ir_attachment belongs to odoo');

ok(WaTest::wait_until(sub { WaTest::worker_pid($node, 'odoo') ne '' }, 60, 'the worker'),
	'a worker serves the database');

sub enable_rules
{
	WaTest::psql_ok($node, q{
		SET client_min_messages = error;
		-- company 1 (Mexico) waits up to 15 s for the official PDF
		SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
			'{"header": "portal_pdf", "body": ["partner_name", "document_name"], "pdf_wait": "15 seconds"}', 1);
		-- company 2 (Spain) does not wait
		SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es', 'mx',
			'{"header": "portal_pdf", "body": ["partner_name", "document_name"]}', 2);
		SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
			'{"header": "portal_pdf", "body": ["partner_name", "document_name"]}');
	}, 'rules: invoices with the PDF header (wait 15 s, or no wait), orders', dbname => 'odoo');
}
enable_rules();

WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_enable('invoice_sent', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name"], "pdf_wait": "8 days"}')}, '22023',
	'pdf_wait longer than 7 days is refused', dbname => 'odoo');
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_enable('invoice_sent', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name"], "pdf_wait": "soon"}')}, '22023',
	'pdf_wait that is not an interval is refused', dbname => 'odoo');

# Draft invoices of Ana García (company 1) and Lucía Pérez (company 2).
sub drafts
{
	my (@rows) = @_;
	my $values = join(",\n", map {
		my ($id, $company, $partner, $currency) = @$_;
		"($id, 1, $company, $partner, $partner, $currency, '/', 'draft', 'out_invoice', current_date, current_date + 30, 1160)"
	} @rows);
	WaTest::psql_ok($node, qq{
		INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
			currency_id, name, state, move_type, date, invoice_date_due, amount_total)
		VALUES $values;
	}, 'draft invoices ' . join(', ', map { $_->[0] } @rows), dbname => 'odoo', connstr => $as_odoo);
}

# Posting, as the ORM writes it: the state, then the name.
sub post_sql
{
	my ($id, $name) = @_;
	return qq{
		UPDATE public.account_move SET state = 'posted', invoice_date = current_date WHERE id = $id;
		UPDATE public.account_move SET name = '$name' WHERE id = $id;
	};
}

# The official PDF as account_move_send's _link_invoice_documents stores
# it (17+): the binary field invoice_pdf_report_file, as an attachment.
# $where: 'db' (db_datas) or 'filestore' (store_fname, as ir.attachment
# names files: the sha1's first two hex digits, then the sha1).
sub pdf_sql
{
	my ($id, $move, $name, $where, $token) = @_;
	my $tok = defined $token ? "'$token'" : 'NULL';
	my $bytes = "convert_to('%PDF-1.7 official invoice $name', 'UTF8')";
	my ($fname, $datas) = $where eq 'db'
	  ? ('NULL', $bytes)
	  : ("substr(encode(sha256($bytes), 'hex'), 1, 2) || '/' || substr(encode(sha256($bytes), 'hex'), 1, 40)", 'NULL');
	return qq{
		INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
			access_token, store_fname, db_datas, file_size, checksum, mimetype, public, create_date, write_date)
		VALUES ($id, '$name', 'account.move', 'invoice_pdf_report_file', $move, 1, 'binary',
			$tok, $fname, $datas, length($bytes), substr(encode(sha256($bytes), 'hex'), 1, 40),
			'application/pdf', false, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');
	};
}

# The UBL/CII XML that account_edi_ubl_cii stores beside it (ubl_cii_xml_file).
sub xml_sql
{
	my ($id, $move, $name) = @_;
	return qq{
		INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
			db_datas, mimetype, public, create_date, write_date)
		VALUES ($id, '$name', 'account.move', 'ubl_cii_xml_file', $move, 1, 'binary',
			convert_to('<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"/>', 'UTF8'),
			'application/xml', false, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');
	};
}

sub message_id
{
	my ($key) = @_;
	return $node->safe_psql('odoo', "SELECT id FROM whatsapp.messages WHERE dedupe_key = '$key'");
}

sub header_of
{
	my ($body) = @_;
	my @h = grep { $_->{type} eq 'header' } @{ $body->{template}{components} // [] };
	return @h ? $h[0]{parameters}[0] : undef;
}

my $uuid4 = qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

drafts([1, 1, 10, 3], [2, 1, 10, 3], [3, 1, 10, 3], [4, 2, 14, 2]);

# --- 17.1 The PDF and a UBL XML exist when the invoice is posted ----------
# (Send & Print in the posting transaction; the attachment has no token yet.)
my $seq0 = $mock->last_seq;
WaTest::psql_ok($node, 'BEGIN;' . post_sql(1, 'INV/2025/00001')
	  . pdf_sql(501, 1, 'INV_2025_00001.pdf', 'db', undef)
	  . xml_sql(502, 1, 'INV_2025_00001_ubl_bis3.xml') . 'COMMIT;',
	'INV/2025/00001 posted with its official PDF and a UBL XML', dbname => 'odoo', connstr => $as_odoo);
my $reqs = $mock->wait_requests(1, 30, since => $seq0);
ok($reqs, 'sent at once');
my $att_token = $node->safe_psql('odoo', 'SELECT access_token FROM public.ir_attachment WHERE id = 501');
like($att_token, $uuid4, 'the attachment got an access_token, a uuid4 as Odoo makes it');
is($node->safe_psql('odoo', 'SELECT access_token IS NULL FROM public.ir_attachment WHERE id = 502'), 't',
	'the XML got none');
my $body = $reqs ? body_of($reqs->[0]) : {};
is_deeply(header_of($body), { type => 'document', document => {
		link => "https://erp.example.com/web/content/501?access_token=$att_token",
		filename => 'INV_2025_00001.pdf' } },
	'the header is the official PDF by /web/content, not the portal (a ZIP with the XML)');
is_deeply([ map { $_->{text} } @{ $body->{template}{components}[1]{parameters} // [] } ],
	[ "Ana Garc\x{ed}a", 'INV/2025/00001' ], 'then the body');

# --- 17.2 No PDF at posting; Odoo makes it while the message waits ---------
$seq0 = $mock->last_seq;
my $t0 = time();
WaTest::psql_ok($node, 'BEGIN;' . post_sql(2, 'INV/2025/00002') . 'COMMIT;',
	'INV/2025/00002 posted without a PDF', dbname => 'odoo', connstr => $as_odoo);
my $id2 = message_id('account.move:2:invoice_posted');
is($node->safe_psql('odoo', qq{SELECT m.state, w.res_id, w.until > now() + interval '5 seconds'
	FROM whatsapp.message m JOIN whatsapp.odoo_pdf_wait w ON w.message_id = m.id WHERE m.id = $id2}),
	'queued|2|t', 'queued, waiting for the PDF until its deadline');
like($node->safe_psql('odoo', q{SELECT whatsapp.wa_odoo_preview('invoice_posted', 2) ->> 'pdf_source'}),
	qr/^none yet: the message waits for the official PDF until /, 'the preview says it waits');
usleep(2_000_000);
is(scalar(@{ $mock->requests($seq0) }), 0, 'nothing sent while no PDF exists (no pro-forma)');
WaTest::psql_ok($node, pdf_sql(503, 2, 'INV_2025_00002.pdf', 'filestore', '0b7c3a52-94f1-4b0e-a8f3-5d0c6e2f9a41'),
	'Odoo stores the PDF (in the filestore, with a token already)', dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
ok($reqs, 'then the message leaves');
ok(time() - $t0 < 15, 'before the deadline');
$body = $reqs ? body_of($reqs->[0]) : {};
is_deeply(header_of($body), { type => 'document', document => {
		link => 'https://erp.example.com/web/content/503?access_token=0b7c3a52-94f1-4b0e-a8f3-5d0c6e2f9a41',
		filename => 'INV_2025_00002.pdf' } },
	'with the PDF, by its own token');
is($body->{template}{components}[1]{type}, 'body', 'the header comes before the body');
is($node->safe_psql('odoo', "SELECT count(*) FROM whatsapp.odoo_pdf_wait WHERE message_id = $id2"), '0',
	'the wait is over');

# --- 17.3 No PDF ever: at the deadline, without the header -----------------
$seq0 = $mock->last_seq;
$t0 = time();
WaTest::psql_ok($node, 'BEGIN;' . post_sql(3, 'INV/2025/00003') . 'COMMIT;',
	'INV/2025/00003 posted, and no PDF is ever made', dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
ok($reqs, 'sent in the end');
my $waited = time() - $t0;
ok($waited >= 14.5, "not before the deadline (after ${waited}s)");
$body = $reqs ? body_of($reqs->[0]) : {};
is_deeply([ map { $_->{type} } @{ $body->{template}{components} // [] } ], ['body'],
	'without a header: no pro-forma, no ZIP');
is($node->safe_psql('odoo', q{SELECT count(*) FROM whatsapp.odoo_pdf_wait}), '0', 'no wait left');
is($node->safe_psql('odoo', q{SELECT count(*) FROM whatsapp.message
	WHERE dedupe_key = 'account.move:3:invoice_posted'}), '1', 'one message');

# --- 17.4 A rule without pdf_wait: without the header, at once ------------
$seq0 = $mock->last_seq;
$t0 = time();
WaTest::psql_ok($node, 'BEGIN;' . post_sql(4, 'FAC/2025/00004') . 'COMMIT;',
	'FAC/2025/00004 (company 2) posted without a PDF', dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
ok($reqs && time() - $t0 < 10, 'sent at once');
$body = $reqs ? body_of($reqs->[0]) : {};
is_deeply($body->{template}{components}, [ { type => 'body', parameters => [
			{ type => 'text', text => "Luc\x{ed}a P\x{e9}rez" }, { type => 'text', text => 'FAC/2025/00004' } ] } ],
	'without a header');
# The PDF made later changes nothing: the message is gone.
WaTest::psql_ok($node, pdf_sql(504, 4, 'FAC_2025_00004.pdf', 'db', undef),
	'its PDF is made afterwards', dbname => 'odoo', connstr => $as_odoo);
usleep(1_500_000);
is(scalar(@{ $mock->requests($seq0) }), 1, 'and nothing more is sent');

# --- 17.5 Orders: the portal's report of the order itself ------------------
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, q{
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
								   currency_id, name, state, date_order, amount_total, access_token)
	VALUES (7, 1, 10, 10, 10, 3, 'S00007', 'sale', now() AT TIME ZONE 'UTC', 1160,
			'5e2d8c1a-7b3f-4a90-9c61-0f4e2b7d3a18');
}, 'an order confirmed', dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
$body = $reqs ? body_of($reqs->[0]) : {};
is_deeply(header_of($body), { type => 'document', document => {
		link => 'https://erp.example.com/my/orders/7?access_token=5e2d8c1a-7b3f-4a90-9c61-0f4e2b7d3a18&report_type=pdf&download=true',
		filename => 'S00007.pdf' } },
	'the order\'s header is its report by the portal');

# --- 17.6 Uploaded to Meta, sent by media id ("pdf_upload") ---------------
# Odoo's data_dir, as the worker may read it (a superuser-only setting).
my $data_dir = PostgreSQL::Test::Utils::tempdir();
WaTest::psql_ok($node, qq{
	ALTER SYSTEM SET whatsapp.odoo_data_dir = '$data_dir';
	SELECT pg_reload_conf();
	SET client_min_messages = error;
	SELECT whatsapp.wa_odoo_enable('refund_posted', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name", "document_name"], "pdf_upload": true}');
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, amount_total)
	VALUES (11, 1, 1, 10, 10, 3, '/', 'draft', 'out_refund', current_date, 100),
		   (12, 1, 1, 13, 13, 4, '/', 'draft', 'out_refund', current_date, 100);
}, 'odoo_data_dir set; credit notes uploaded to Meta', dbname => 'odoo');
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_enable('invoice_sent', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name"], "pdf_upload": "yes"}')}, '22023',
	'pdf_upload must be a boolean', dbname => 'odoo');
# The file of credit note 11 in the filestore, as Odoo names it.
my $pdf11 = "%PDF-1.7\n% official credit note RINV/2025/00011\n" . ('x' x 5000) . "\n%%EOF\n";
my $sha11 = Digest::SHA::sha1_hex($pdf11);
mkdir "$data_dir/filestore";
mkdir "$data_dir/filestore/odoo";
mkdir "$data_dir/filestore/odoo/" . substr($sha11, 0, 2);
PostgreSQL::Test::Utils::append_to_file("$data_dir/filestore/odoo/" . substr($sha11, 0, 2) . "/$sha11", $pdf11);
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, 'BEGIN;' . post_sql(11, 'RINV/2025/00011') . qq{
	INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
		store_fname, file_size, checksum, mimetype, public)
	VALUES (511, 'RINV_2025_00011.pdf', 'account.move', 'invoice_pdf_report_file', 11, 1, 'binary',
		'@{[substr($sha11, 0, 2)]}/$sha11', @{[length $pdf11]}, '$sha11', 'application/pdf', false);
	COMMIT;}, 'RINV/2025/00011 posted with its PDF in the filestore', dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(2, 30, since => $seq0);
ok($reqs, 'two requests: the upload, then the message');
my ($up, $msg) = @{ $reqs // [ {}, {} ] };
is($up->{path}, '/v24.0/1099887766/media', 'first the upload, to the account\'s media endpoint');
is($up->{headers}{authorization}, "Bearer $token", 'with its token');
is_deeply({ map { $_ => $up->{media}{$_} } qw(filename mime type messaging_product size sha256) },
	{ filename => 'RINV_2025_00011.pdf', mime => 'application/pdf', type => 'application/pdf',
	  messaging_product => 'whatsapp', size => length($pdf11),
	  sha256 => Digest::SHA::sha256_hex($pdf11) },
	'the file from the filestore, byte for byte');
$body = $msg->{body} ? body_of($msg) : {};
is_deeply(header_of($body), { type => 'document', document => {
		id => $up->{media}{id}, filename => 'RINV_2025_00011.pdf' } },
	'then the message, with the media id Meta answered');
is($node->safe_psql('odoo', 'SELECT access_token IS NULL FROM public.ir_attachment WHERE id = 511'), 't',
	'no access_token needed');

# In the database (db_datas).
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, 'BEGIN;' . post_sql(12, 'RINV/2025/00012')
	  . pdf_sql(512, 12, 'RINV_2025_00012.pdf', 'db', undef) . 'COMMIT;',
	'RINV/2025/00012 posted with its PDF in the database', dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(2, 30, since => $seq0);
($up, $msg) = @{ $reqs // [ {}, {} ] };
is_deeply([ $up->{media}{size}, $up->{media}{sha256} ],
	[ length('%PDF-1.7 official invoice RINV_2025_00012.pdf'),
	  Digest::SHA::sha256_hex('%PDF-1.7 official invoice RINV_2025_00012.pdf') ],
	'the bytes of db_datas uploaded');
$body = $msg->{body} ? body_of($msg) : {};
is((header_of($body) // {})->{document}{id}, $up->{media}{id}, 'sent by that media id');
is($body->{to}, '+5511912345678', 'to João');

# A file of the filestore that is a symbolic link is not read: Odoo's system
# user must not make the server upload a file of its own.
PostgreSQL::Test::Utils::append_to_file("$data_dir/not-odoo", "a file of the database server\n");
my $fake = 'cd' . ('0' x 38);
mkdir "$data_dir/filestore/odoo/cd";
symlink("$data_dir/not-odoo", "$data_dir/filestore/odoo/cd/$fake") or die "symlink: $!";
WaTest::psql_ok($node, q{
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, amount_total)
	VALUES (13, 1, 1, 14, 14, 2, '/', 'draft', 'out_refund', current_date, 100);
}, 'a third credit note', dbname => 'odoo', connstr => $as_odoo);
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, 'BEGIN;' . post_sql(13, 'RINV/2025/00013') . qq{
	INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
		store_fname, mimetype, public)
	VALUES (513, 'RINV_2025_00013.pdf', 'account.move', 'invoice_pdf_report_file', 13, 1, 'binary',
		'cd/$fake', 'application/pdf', false);
	COMMIT;}, 'RINV/2025/00013 posted, its store_fname a symbolic link', dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
is_deeply([ map { $_->{path} } @{ $reqs // [] } ], [ '/v24.0/1099887766/messages' ], 'no upload');
$body = $reqs ? body_of($reqs->[0]) : {};
is_deeply([ map { $_->{type} } @{ $body->{template}{components} // [] } ], ['body'],
	'the message went without the header');

# --- 16 -----------------------------------------------------------------------
load_fixture(16);
enable_rules();
drafts([101, 1, 10, 3], [102, 1, 10, 3]);

# The stored report (attachment_use): res_field NULL, named after the invoice.
$seq0 = $mock->last_seq;
WaTest::psql_ok($node, 'BEGIN;' . post_sql(101, 'INV/2025/00101') . q{
	INSERT INTO public.ir_attachment (id, name, res_model, res_id, company_id, type, db_datas,
		mimetype, public, create_date, write_date)
	VALUES (601, 'INV_2025_00101.pdf', 'account.move', 101, 1, 'binary',
		convert_to('%PDF-1.7 official invoice INV/2025/00101', 'UTF8'), 'application/pdf', false,
		now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');
	COMMIT;}, '16: INV/2025/00101 posted and printed (the report stored)',
	dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
$att_token = $node->safe_psql('odoo', 'SELECT access_token FROM public.ir_attachment WHERE id = 601');
like($att_token, $uuid4, '16: the stored report got an access_token');
$body = $reqs ? body_of($reqs->[0]) : {};
is_deeply(header_of($body), { type => 'document', document => {
		link => "https://erp.example.com/web/content/601?access_token=$att_token",
		filename => 'INV_2025_00101.pdf' } },
	'16: the header is the stored report');

# None stored yet: 16's portal renders the official invoice (and stores
# it); no pro-forma, no ZIP, so no wait.
$seq0 = $mock->last_seq;
$t0 = time();
WaTest::psql_ok($node, 'BEGIN;' . post_sql(102, 'INV/2025/00102') . 'COMMIT;',
	'16: INV/2025/00102 posted, never printed', dbname => 'odoo', connstr => $as_odoo);
$reqs = $mock->wait_requests(1, 30, since => $seq0);
ok($reqs && time() - $t0 < 10, '16: sent at once');
my $move_token = $node->safe_psql('odoo', 'SELECT access_token FROM public.account_move WHERE id = 102');
$body = $reqs ? body_of($reqs->[0]) : {};
is_deeply(header_of($body), { type => 'document', document => {
		link => "https://erp.example.com/my/invoices/102?access_token=$move_token&report_type=pdf&download=true",
		filename => 'INV_2025_00102.pdf' } },
	'16: the portal\'s invoice report');

# Every request of this test: no portal link of a 17 invoice.
my @links = map { my $h = header_of(body_of($_)); $h && $h->{document}{link} ? $h->{document}{link} : () }
	grep { $_->{path} =~ m{/messages$} } @{ $mock->requests(0) };
is(scalar(grep { m{/my/invoices/[1-4]\?} } @links), 0, 'no 17 invoice was ever sent by its portal link');

done_testing();
