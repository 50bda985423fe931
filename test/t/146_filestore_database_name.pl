# 146_filestore_database_name.pl: the worker reads an attachment from Odoo's
# filestore (pdf_upload) at whatsapp.odoo_data_dir/filestore/<database>/
# <store_fname>.  store_fname is checked (two hex digits, "/", hex digits);
# the database name is the other part of that path, and Odoo's role, which
# may create databases (Odoo's own role has CREATEDB, to create them from
# its database manager), chooses it.  A name such as "odoo/../acme" must
# not lead the worker, which reads files as the server's system user, into
# the filestore of another database (another company's documents) or
# anywhere else, and send what it finds there to Meta.
use strict;
use warnings;

use Digest::SHA;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $mock = WaTest::mock_start();
my $node = WaTest::node('fsname', mock => $mock, database => '*',
	'whatsapp.poll_interval' => '500ms');
my $data_dir = PostgreSQL::Test::Utils::tempdir();
my $db = 'odoo/../acme';

# Odoo's data_dir: the filestore of database "odoo" (this role's), and that
# of database "acme" (another company's), with one of its invoices.
my $secret = "%PDF-1.7\n% ACME's invoice INV/2025/00042, not odoo's\n%%EOF\n";
my $sha = Digest::SHA::sha1_hex($secret);
mkdir "$data_dir/filestore";
mkdir "$data_dir/filestore/odoo";
mkdir "$data_dir/filestore/acme";
mkdir "$data_dir/filestore/acme/" . substr($sha, 0, 2);
PostgreSQL::Test::Utils::append_to_file("$data_dir/filestore/acme/" . substr($sha, 0, 2) . "/$sha",
	$secret);

WaTest::psql_ok($node, qq{
	CREATE ROLE odoo LOGIN NOSUPERUSER CREATEDB;
	CREATE ROLE wa_admin LOGIN NOSUPERUSER;
	ALTER SYSTEM SET whatsapp.odoo_data_dir = '$data_dir';
	SELECT pg_reload_conf();
}, 'a role odoo with CREATEDB (as Odoo\'s own), an admin, and Odoo\'s data_dir');
WaTest::psql_ok($node, qq{CREATE DATABASE "$db"},
	"odoo creates a database named $db", connstr => $node->connstr('postgres') . ' user=odoo');
my $connstr = $node->connstr($db);
WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	GRANT whatsapp_sender, whatsapp_reader TO odoo;
	GRANT whatsapp_admin TO wa_admin;
}, 'a superuser installs the extension there', connstr => $connstr);
WaTest::psql_ok($node, qq{
	SET client_min_messages = warning;
	\\set ECHO none
	\\o /dev/null
	\\i $repo/test/odoo/odoo18.sql
	\\i $repo/test/odoo/data.sql
	\\o
}, 'odoo creates its tables (Odoo 18)', connstr => "$connstr user=odoo");
WaTest::psql_ok($node, q{
	SET client_min_messages = error;
	SELECT whatsapp.wa_account_set('mx', '1146146146', 'EAAfsname146', max_mps => 1000);
	SELECT whatsapp.wa_odoo_enable('refund_posted', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name", "document_name"], "pdf_upload": true}');
}, 'wa_admin enables credit notes with their PDF uploaded to Meta', connstr => "$connstr user=wa_admin");
ok(WaTest::wait_until(sub { WaTest::worker_pid($node, $db) ne '' }, 60, 'the worker'),
	"a worker serves database $db");

my $offset = -s $node->logfile;
my $seq0 = $mock->last_seq;
WaTest::psql_ok($node, qq{
	BEGIN;
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, amount_total)
	VALUES (11, 1, 1, 10, 10, 3, '/', 'draft', 'out_refund', current_date, 100);
	UPDATE public.account_move SET state = 'posted', name = 'RINV/2025/00011' WHERE id = 11;
	INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
		store_fname, file_size, checksum, mimetype, public)
	VALUES (511, 'RINV_2025_00011.pdf', 'account.move', 'invoice_pdf_report_file', 11, 1, 'binary',
		'@{[substr($sha, 0, 2)]}/$sha', @{[length $secret]}, '$sha', 'application/pdf', false);
	COMMIT;
}, 'odoo posts a credit note whose attachment names the file of acme\'s invoice',
	connstr => "$connstr user=odoo");

ok(WaTest::wait_until(sub {
			slurp_file($node->logfile, $offset) =~ /could not upload the PDF of account\.move 11/
			  || grep { ($_->{path} // '') =~ m{/media$} } @{ $mock->requests($seq0) } },
		30, 'the worker\'s first look at the PDF'),
	'the worker looked for the credit note\'s PDF');
my @uploads = grep { ($_->{path} // '') =~ m{/media$} } @{ $mock->requests($seq0) };
is(scalar(grep { ($_->{media}{sha256} // '') eq Digest::SHA::sha256_hex($secret) } @uploads), 0,
	'acme\'s invoice is never uploaded to Meta');
like(slurp_file($node->logfile, $offset),
	qr/could not upload the PDF of account\.move 11 \(ir_attachment 511\): the database name "odoo\/\.\.\/acme" is not a directory name/,
	'the server log says why: the database name cannot be a directory of the filestore');

$node->stop;
$mock->stop;
done_testing();
