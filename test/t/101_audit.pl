# whatsapp.audit (issue 13, item 4): one row per admin action, with the
# session's role, the function and its target, never a secret or a full
# number; readable by whatsapp_admin only, written only by the extension.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $node = WaTest::node('audit', 'whatsapp.poll_interval' => '60s');

my $token = 'EAAaudit' . int(rand(1e12));
my $token2 = 'EAAcopy' . int(rand(1e12));
my $app_secret = 'auditappsecret' . int(rand(1e12));
my @secrets = ($token, $token2, $app_secret);

WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	\\set ECHO none
	\\i $repo/test/odoo/odoo18.sql
	\\o /dev/null
	\\i $repo/test/odoo/data.sql
	\\o
	CREATE ROLE ops LOGIN IN ROLE whatsapp_admin, whatsapp_sender;
	CREATE ROLE viewer LOGIN IN ROLE whatsapp_reader, whatsapp_sender;
}, 'extension, the Odoo 18 fixture, an admin (ops) and a reader');
my $as_ops = $node->connstr('postgres') . ' user=ops';
my $as_viewer = $node->connstr('postgres') . ' user=viewer';

# Every admin action, as ops.
WaTest::psql_ok($node, qq{
	SELECT whatsapp.wa_account_set('main', '1099887766', '$token', app_secret => '$app_secret',
								   waba_id => '2099887766');
	COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN;
second\t1099887767\t$token2
\\.
	SELECT whatsapp.wa_rotate_key();
	SELECT whatsapp.wa_rebind();
	SELECT whatsapp.wa_opt_out('+52 55 1234 5678', 'marketing', 'asked at the counter');
	SELECT whatsapp.wa_opt_in('+52 55 1234 5678', 'marketing');
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'main');
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es', 'main');
	SELECT whatsapp.wa_odoo_pause('odoo -u sale');
	SELECT whatsapp.wa_odoo_resume();
	SELECT whatsapp.wa_odoo_disable('sale_order_confirmed');
	SELECT whatsapp.wa_subject_export('+52 55 1234 5678') IS NOT NULL;
	SELECT whatsapp.wa_subject_erase('+52 55 1234 5678');
	SELECT whatsapp.wa_account_drop('second');
}, 'ops sets accounts, rotates, rebinds, opts out and in, runs Odoo events, exports, erases, drops',
	connstr => $as_ops);

my $rows = WaTest::psql_ok($node,
	q{SELECT string_agg(session_role || ' ' || function || ': ' || coalesce(target, ''), E'\n' ORDER BY id)
		FROM whatsapp.audit},
	'the audit, as ops', connstr => $as_ops);
like($rows, qr/\A
ops\ wa_account_set:\ main\n
ops\ account_input:\ second\n
ops\ wa_rotate_key:\ key\ id\ [0-9a-f]{16},\ 3\ secrets\ sealed\ again\n
ops\ wa_rebind:\ 3\ secrets\ sealed\ again\n
ops\ wa_opt_out:\ number\ ending\ 5678,\ scope\ marketing\n
ops\ wa_opt_in:\ number\ ending\ 5678,\ scope\ marketing\n
ops\ wa_odoo_enable:\ event\ sale_order_confirmed,\ every\ company,\ rule\ 1,\ template\ order_confirmed\n
ops\ wa_odoo_enable:\ event\ sale_order_confirmed,\ every\ company,\ rule\ 1,\ template\ order_confirmed\n
ops\ wa_odoo_pause:\ every\ Odoo\ event\ of\ database\ postgres\n
ops\ wa_odoo_resume:\ every\ Odoo\ event\ of\ database\ postgres\n
ops\ wa_odoo_disable:\ event\ sale_order_confirmed,\ every\ company,\ rule\ 1,\ template\ order_confirmed\n
ops\ wa_subject_export:\ number\ ending\ 5678\n
ops\ wa_subject_erase:\ number\ ending\ 5678,\ \d+\ rows\n
ops\ wa_account_drop:\ second\s*\z/x, 'one row per admin action, in order, with role, function and target');

my $all = WaTest::psql_ok($node, q{SELECT string_agg(a::text, E'\n') FROM whatsapp.audit a},
	'every audit row as text');
for my $s (@secrets)
{
	unlike($all, qr/\Q$s\E/, 'no audit row holds a secret (' . substr($s, 0, 8) . '...)');
}
unlike($all, qr/5512345678|asked at the counter/, 'nor a full number, nor a reason given');

# Only the extension writes it; only admins read it.
WaTest::psql_fails($node, q{INSERT INTO whatsapp.audit (function, target) VALUES ('wa_account_set', 'forged')},
	'42501', 'an admin cannot add a row', connstr => $as_ops);
WaTest::psql_fails($node, q{UPDATE whatsapp.audit SET target = 'x'}, '42501',
	'nor change one', connstr => $as_ops);
WaTest::psql_fails($node, q{DELETE FROM whatsapp.audit}, '42501',
	'nor delete one', connstr => $as_ops);
WaTest::psql_fails($node, q{SELECT * FROM whatsapp.audit}, '42501',
	'a reader cannot read it', connstr => $as_viewer);
WaTest::psql_fails($node, q{SELECT whatsapp._audit('wa_account_set', 'forged')}, '42501',
	'nor call the function that writes it', connstr => $as_ops);
WaTest::psql_fails($node, q{DELETE FROM whatsapp.audit}, '42501',
	'the owner cannot delete rows either (append-only trigger)');
WaTest::psql_fails($node, q{TRUNCATE whatsapp.audit}, '42501',
	'nor truncate it');
WaTest::psql_fails($node, q{SELECT whatsapp.wa_subject_export('+52 55 1234 5678')}, '42501',
	'a non-admin gets 42501 from wa_subject_export', connstr => $as_viewer);

# A rule written without wa_odoo_enable (as a restore of the table does)
# is not an admin action of anyone: no row.
WaTest::psql_is($node, q{
	INSERT INTO whatsapp.odoo_rule (event, template, account) VALUES ('invoice_posted', 'invoice_posted', 'main');
	DELETE FROM whatsapp.odoo_rule WHERE event = 'invoice_posted';
	SELECT count(*) FROM whatsapp.audit WHERE function LIKE 'wa_odoo_%'},
	'5', 'rows of odoo_rule written as a restore writes them add no audit row');
WaTest::psql_is($node, q{SELECT count(*) FROM whatsapp.audit WHERE session_role = 'ops'}, '14',
	'every row names the session\'s role');

done_testing();
