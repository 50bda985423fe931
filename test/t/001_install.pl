# 001_install.pl: installing, removing, upgrading, loading, dumping.
#
#   - CREATE EXTENSION whatsapp CASCADE on a fresh database, under a
#     search_path that names nothing, and with pgcrypto in another schema;
#   - a pre-existing role of one of the extension's names is adopted only
#     when it is NOLOGIN and not a superuser (else 42710);
#   - DROP EXTENSION leaves nothing but the roles;
#   - the upgrade path from 0.1 to the control file's default_version,
#     with the new library serving the old objects until the update;
#   - without shared_preload_libraries the library loads and works;
#   - with it, the whatsapp.* prefix is reserved;
#   - pg_dump / pg_restore keeps accounts, messages and counters, and the
#     dump holds no secret in clear.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $token = 'EAA-dump-test-token';
my $version = WaTest::default_version();

# Preloaded, serving database postgres; no mock, so nothing can be sent.
my $node = WaTest::node('main');

sub createdb
{
	my ($db) = @_;
	$node->safe_psql('postgres', qq{CREATE DATABASE "$db"});
	return;
}

# ---------------------------------------------------------------------
# Roles, first: the cluster has none of the extension's roles yet.
# ---------------------------------------------------------------------
createdb('roles');

$node->safe_psql('postgres', 'CREATE ROLE whatsapp_reader SUPERUSER NOLOGIN');
my $err = WaTest::psql_fails($node, 'CREATE EXTENSION whatsapp CASCADE',
	'42710', 'a pre-existing SUPERUSER role whatsapp_reader is refused',
	dbname => 'roles');
like($err, qr/whatsapp_reader/, 'the error names the role');
$node->safe_psql('postgres', 'DROP ROLE whatsapp_reader');

$node->safe_psql('postgres', 'CREATE ROLE whatsapp_sender LOGIN');
$err = WaTest::psql_fails($node, 'CREATE EXTENSION whatsapp CASCADE',
	'42710', 'a pre-existing LOGIN role whatsapp_sender is refused',
	dbname => 'roles');
like($err, qr/whatsapp_sender/, 'the error names the role');
like($err, qr/log in|login/i, 'the error says why');
like($err, qr/HINT:/, 'the error has a hint');
WaTest::psql_is($node,
	q{SELECT count(*) FROM pg_namespace WHERE nspname = 'whatsapp'},
	'0', 'the refused CREATE EXTENSION left no schema', dbname => 'roles');
WaTest::psql_is($node,
	q{SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles
	   WHERE rolname LIKE 'whatsapp\_%'},
	'whatsapp_sender', 'the refused CREATE EXTENSION created no role');

my $sender_oid = $node->safe_psql('postgres',
	q{ALTER ROLE whatsapp_sender NOLOGIN;
	  SELECT oid FROM pg_roles WHERE rolname = 'whatsapp_sender'});
WaTest::psql_ok($node, 'CREATE EXTENSION whatsapp CASCADE',
	'a pre-existing NOLOGIN role is adopted', dbname => 'roles');
WaTest::psql_is($node,
	q{SELECT oid FROM pg_roles WHERE rolname = 'whatsapp_sender'},
	$sender_oid, 'the adopted role is the same role');
WaTest::psql_is($node,
	q{SELECT string_agg(rolname || ':' || rolcanlogin || ':' || rolsuper, ','
					 ORDER BY rolname)
	    FROM pg_roles WHERE rolname LIKE 'whatsapp\_%'},
	'whatsapp_admin:false:false,whatsapp_reader:false:false,whatsapp_sender:false:false',
	'the three roles exist, NOLOGIN and not superusers');

# ---------------------------------------------------------------------
# A fresh database; a search_path that names nothing; pgcrypto elsewhere
# ---------------------------------------------------------------------
createdb('fresh');
WaTest::psql_ok($node, 'CREATE EXTENSION whatsapp CASCADE',
	'CREATE EXTENSION whatsapp CASCADE on a fresh database', dbname => 'fresh');
WaTest::psql_is($node,
	q{SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension
	   WHERE extname IN ('pgcrypto', 'whatsapp')},
	'pgcrypto,whatsapp', 'CASCADE installed pgcrypto', dbname => 'fresh');
WaTest::psql_is($node,
	q{SELECT extversion FROM pg_extension WHERE extname = 'whatsapp'},
	$version, "the default version ($version) is installed", dbname => 'fresh');

# PostgreSQL installs a CASCADEd extension into the first schema of the
# search_path, so an empty search_path needs pgcrypto installed first.
createdb('nopath');
$node->safe_psql('nopath', 'CREATE EXTENSION pgcrypto');
WaTest::psql_ok($node,
	"SET search_path = nonexistent;\nCREATE EXTENSION whatsapp CASCADE;",
	'CREATE EXTENSION under search_path = nonexistent', dbname => 'nopath');
WaTest::psql_is($node,
	"SET search_path = nonexistent;\n"
	  . "SELECT whatsapp.normalize_phone('+52 55 1234 5678');",
	'+525512345678', 'and its functions work under that search_path',
	dbname => 'nopath');

createdb('oddpath');
WaTest::psql_ok($node,
	"CREATE SCHEMA odd;\n"
	  . "SET search_path = odd, nonexistent;\n"
	  . "CREATE EXTENSION whatsapp CASCADE;",
	'CREATE EXTENSION CASCADE under search_path = odd, nonexistent',
	dbname => 'oddpath');
WaTest::psql_is($node,
	q{SELECT extnamespace::regnamespace FROM pg_extension
	   WHERE extname = 'pgcrypto'},
	'odd', 'CASCADE put pgcrypto in schema odd', dbname => 'oddpath');
WaTest::psql_ok($node,
	q{SELECT whatsapp.wa_account_set('main', '1234567890', 'EAA-odd-schema-token')},
	'sealing works with pgcrypto in a schema off the search_path',
	dbname => 'oddpath');

createdb('crypto');
WaTest::psql_ok($node,
	"CREATE SCHEMA crypto;\n"
	  . "CREATE EXTENSION pgcrypto SCHEMA crypto;\n"
	  . "SET search_path = nonexistent;\n"
	  . "CREATE EXTENSION whatsapp CASCADE;",
	'CREATE EXTENSION with pgcrypto already in schema crypto',
	dbname => 'crypto');
WaTest::psql_ok($node,
	"SET search_path = nonexistent;\n"
	  . "SELECT whatsapp.wa_account_set('main', '1234567890', 'EAA-crypto-schema-token');",
	'sealing a secret works with pgcrypto in schema crypto',
	dbname => 'crypto');
WaTest::psql_is($node,
	q{SELECT name || ':' || has_access_token FROM whatsapp.accounts},
	'main:true', 'the account shows its token as set', dbname => 'crypto');

# ---------------------------------------------------------------------
# DROP EXTENSION leaves only the roles
# ---------------------------------------------------------------------
createdb('dropme');
my $snapshot_sql = q{
	SELECT (SELECT count(*) FROM pg_class) || '/' ||
	       (SELECT count(*) FROM pg_proc) || '/' ||
	       (SELECT count(*) FROM pg_type) || '/' ||
	       (SELECT count(*) FROM pg_namespace) || '/' ||
	       (SELECT count(*) FROM pg_depend) || '/' ||
	       (SELECT count(*) FROM pg_init_privs) || '/' ||
	       (SELECT count(*) FROM pg_default_acl) || '/' ||
	       (SELECT count(*) FROM pg_event_trigger) || '/' ||
	       (SELECT count(*) FROM pg_trigger) || '/' ||
	       (SELECT count(*) FROM pg_policy) || '/' ||
	       (SELECT count(*) FROM pg_extension)};
# pgcrypto stays after DROP EXTENSION whatsapp, so it comes first.
$node->safe_psql('dropme', 'CREATE EXTENSION pgcrypto');
my $before = $node->safe_psql('dropme', $snapshot_sql);
WaTest::psql_ok($node,
	"CREATE EXTENSION whatsapp;\n"
	  . "SELECT whatsapp.normalize_phone('+525512345678');",
	'CREATE EXTENSION in database dropme', dbname => 'dropme');
WaTest::psql_ok($node, 'DROP EXTENSION whatsapp',
	'DROP EXTENSION whatsapp', dbname => 'dropme');
WaTest::psql_is($node,
	q{SELECT count(*) FROM pg_namespace WHERE nspname = 'whatsapp'},
	'0', 'after DROP EXTENSION schema whatsapp is gone', dbname => 'dropme');
WaTest::psql_is($node, $snapshot_sql, $before,
	'after DROP EXTENSION the catalogs hold what they held before',
	dbname => 'dropme');
WaTest::psql_is($node,
	q{SELECT count(*) FROM pg_shdepend s JOIN pg_roles r ON r.oid = s.refobjid
	   WHERE s.dbid = (SELECT oid FROM pg_database
					    WHERE datname = current_database())
	     AND r.rolname LIKE 'whatsapp\_%'},
	'0', 'nothing in the database refers to the roles any more',
	dbname => 'dropme');
WaTest::psql_is($node,
	q{SELECT count(*) FROM pg_roles WHERE rolname IN
	   ('whatsapp_admin', 'whatsapp_sender', 'whatsapp_reader')},
	'3', 'the three roles remain', dbname => 'dropme');
WaTest::psql_ok($node, 'CREATE EXTENSION whatsapp',
	'CREATE EXTENSION again after DROP EXTENSION', dbname => 'dropme');

# ---------------------------------------------------------------------
# Upgrade path: 0.1, then ALTER EXTENSION UPDATE to the default version
# ---------------------------------------------------------------------
createdb('upgrade');
WaTest::psql_is($node,
	"CREATE EXTENSION whatsapp VERSION '0.1' CASCADE;\n"
	  . "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp';",
	'0.1', 'CREATE EXTENSION whatsapp VERSION 0.1', dbname => 'upgrade');
# The library of this release runs with the 0.1 objects until the update
# (the server restarted on the new library before ALTER EXTENSION UPDATE):
# wa_send writes the outbox without the 0.3 column queued_by.  One session
# sends before and after the update: its plans are made again.
$node->safe_psql('upgrade',
	"SELECT whatsapp.wa_account_set('main', '1099887766', '')");
# An Odoo database with events enabled at 0.1: triggers of the old form,
# "UPDATE OF state, ..." and WHEN clauses on the columns.
my $repo = WaTest::repo();
WaTest::psql_ok($node, qq{
	\\set ECHO none
	\\i $repo/test/odoo/odoo17.sql
	\\o /dev/null
	\\i $repo/test/odoo/data.sql
	\\o
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'main');
	SELECT whatsapp.wa_odoo_enable('invoice_sent', 'invoice_sent', 'es_MX', 'main');
}, 'Odoo events enabled at 0.1', dbname => 'upgrade');
is($node->safe_psql('upgrade', q{
	SELECT count(*) FROM pg_depend d JOIN pg_trigger t ON d.objid = t.oid
	 WHERE d.classid = 'pg_trigger'::regclass AND t.tgname LIKE 'whatsapp\_%'
	   AND d.refobjsubid <> 0}) > 0, 1, 'the 0.1 triggers depend on columns');
WaTest::psql_is($node,
	"SELECT whatsapp.wa_send('+525512345678', 'queued at 0.1', dedupe_key => 'legacy:1') > 0;",
	't', 'wa_send works with the 0.1 objects', dbname => 'upgrade');
# ... and the worker's hook applies a held status with them too (the
# webhook code reads the 0.3 account columns only where they exist).
WaTest::psql_is($node, q{
	SELECT whatsapp.wa_send('+525512345679', 'held at 0.1', dedupe_key => 'legacy:held') > 0;
	INSERT INTO whatsapp.status_held (phone_number_id, message_id, wamid, status)
	SELECT '1099887766', id, 'wamid.LEGACY-HELD',
		   '{"id": "wamid.LEGACY-HELD", "status": "delivered", "timestamp": "1749416400"}'
	  FROM whatsapp.message WHERE dedupe_key = 'legacy:held';
	UPDATE whatsapp.message SET state = 'sent', wamid = 'wamid.LEGACY-HELD', attempts = 1
	 WHERE dedupe_key = 'legacy:held';
	SELECT count(*) FROM (SELECT whatsapp._after_record(
		ARRAY(SELECT id FROM whatsapp.message WHERE dedupe_key = 'legacy:held'), ARRAY[NULL::integer])) x;
	SELECT state FROM whatsapp.message WHERE dedupe_key = 'legacy:held';
	DELETE FROM whatsapp.message WHERE dedupe_key = 'legacy:held';},
	"t\n1\ndelivered", "_after_record applies a held status with the 0.1 objects",
	dbname => 'upgrade');
WaTest::psql_is($node,
	"SELECT whatsapp.wa_send('+525512345678', 'just before', dedupe_key => 'legacy:2') > 0;\n"
	  . "ALTER EXTENSION whatsapp UPDATE;\n"
	  . "SELECT whatsapp.wa_send('+525512345678', 'just after', dedupe_key => 'new:1') > 0;\n"
	  . "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp';",
	"t\nt\n$version", "ALTER EXTENSION whatsapp UPDATE reaches $version",
	dbname => 'upgrade');
WaTest::psql_is($node,
	q{SELECT whatsapp.normalize_phone('+52 55 1234 5678')},
	'+525512345678', 'the updated extension works', dbname => 'upgrade');
# what 0.2 changed: the outbox's CHECK constraints call C functions
WaTest::psql_is($node,
	q{SELECT string_agg(pg_get_constraintdef(oid), '; ' ORDER BY conname)
	    FROM pg_constraint
	   WHERE conrelid = 'whatsapp.message'::regclass AND contype = 'c' AND convalidated},
	'CHECK (whatsapp._failure_type_valid(failure_type)); '
	  . 'CHECK (whatsapp._message_payload_valid(state, payload)); '
	  . 'CHECK (whatsapp._message_state_valid(state))',
	'after the update the CHECK constraints are the validated C-function ones, 0.3\'s payload check too',
	dbname => 'upgrade');
# what 0.3 changed: the Odoo triggers were made again without columns, so
# that Odoo's own ALTER TABLE is never blocked by them
WaTest::psql_is($node, q{
	SELECT count(*) FROM pg_trigger t
	 WHERE t.tgname LIKE 'whatsapp\_%' AND pg_get_triggerdef(t.oid) NOT LIKE '%UPDATE OF%'
	   AND pg_get_triggerdef(t.oid) NOT LIKE '%state%';
	SELECT count(*) FROM pg_depend d JOIN pg_trigger t ON d.objid = t.oid
	 WHERE d.classid = 'pg_trigger'::regclass AND t.tgname LIKE 'whatsapp\_%'
	   AND d.refobjsubid <> 0;
	ALTER TABLE public.account_move ALTER COLUMN is_move_sent TYPE text;
	ALTER TABLE public.sale_order DROP COLUMN state;
	SELECT 'altered';},
	"3\n0\naltered", 'after the update the three Odoo triggers name no column, and Odoo can alter them',
	dbname => 'upgrade');
# what 0.3 changed: invoice_sent fires on the mail that sends the invoice,
# so its one trigger is on mail_message, and none is left on account_move
WaTest::psql_is($node, q{
	SELECT string_agg(t.tgrelid::regclass || ':' || t.tgname, ',' ORDER BY t.tgname) FROM pg_trigger t
	 WHERE t.tgname LIKE 'whatsapp\_%';
	SELECT string_agg(event || ':' || triggers_installed, ',' ORDER BY event) FROM whatsapp.odoo_rules;},
	"mail_message:whatsapp_invoice_sent_insert,sale_order:whatsapp_sale_order_confirmed_insert,sale_order:whatsapp_sale_order_confirmed_update\n"
	  . 'invoice_sent:true,sale_order_confirmed:true',
	"after the update invoice_sent's trigger is on mail_message", dbname => 'upgrade');
# what 0.3 changed: wa_odoo_enable runs no SQL on Odoo's res_company
WaTest::psql_is($node,
	q{SELECT p.prosrc LIKE '%public.res_company%' OR p.prosrc NOT LIKE '%_odoo_company_exists%'
	    FROM pg_proc p WHERE p.oid = 'whatsapp.wa_odoo_enable'::regproc},
	'f', 'after the update wa_odoo_enable looks the company up in C',
	dbname => 'upgrade');
# what 0.3 changed: messages record the role that queued them; those
# queued before have none and are for admins only.
WaTest::psql_is($node,
	q{SELECT string_agg(dedupe_key || '=' || CASE WHEN queued_by IS NULL THEN 'none'
				WHEN queued_by = current_user THEN 'me' ELSE queued_by END, ',' ORDER BY id)
	    FROM whatsapp.messages},
	'legacy:1=none,legacy:2=none,new:1=me',
	'after the update older messages have no queued_by, newer ones their role',
	dbname => 'upgrade');
$node->safe_psql('postgres',
	'CREATE ROLE wa_up_sender IN ROLE whatsapp_sender;'
	  . ' CREATE ROLE wa_up_admin IN ROLE whatsapp_admin, whatsapp_sender;');
my $legacy_id = $node->safe_psql('upgrade',
	q{SELECT id FROM whatsapp.message WHERE dedupe_key = 'legacy:1'});
WaTest::psql_fails($node,
	"SET ROLE wa_up_sender; SELECT whatsapp.wa_cancel($legacy_id);",
	'42501', 'a sender may not cancel a message queued before 0.3',
	dbname => 'upgrade');
WaTest::psql_fails($node,
	"SET ROLE wa_up_sender; SELECT whatsapp.wa_send('+525512345678', 'again', dedupe_key => 'legacy:1');",
	'42501', 'nor learn its id through its dedupe_key', dbname => 'upgrade');
WaTest::psql_is($node,
	"SET ROLE wa_up_admin; SELECT whatsapp.wa_cancel($legacy_id);",
	't', 'an admin cancels a message queued before 0.3', dbname => 'upgrade');
WaTest::psql_is($node,
	"COPY whatsapp.account_input (name, phone_number_id, access_token) FROM STDIN;\n"
	  . "main\t1099887766\t\n\\.\n"
	  . "SELECT phone_number_id FROM whatsapp.accounts WHERE name = 'main';",
	'1099887766', 'after the update COPY into whatsapp.account_input works',
	dbname => 'upgrade');

# ---------------------------------------------------------------------
# The whatsapp.* prefix is reserved when the library is preloaded
# ---------------------------------------------------------------------
$err = WaTest::psql_fails($node, 'SET whatsapp.nonexistent = 1',
	'42602', 'SET whatsapp.nonexistent fails with the library preloaded');
like($err, qr/reserved/, 'the error says the prefix is reserved');
WaTest::psql_ok($node, q{SET whatsapp.default_country_code = '52'},
	'a real setting can be SET');

# ---------------------------------------------------------------------
# Dump and restore
# ---------------------------------------------------------------------
createdb('dumpsrc');
WaTest::psql_ok($node,
	"CREATE EXTENSION whatsapp CASCADE;\n"
	  . "SELECT whatsapp.wa_account_set('main', '1234567890', '$token');",
	'an account with a token', dbname => 'dumpsrc');
my $ids = WaTest::psql_ok($node,
	q{SELECT whatsapp.wa_send('+52 55 1234 5678', 'order ' || i,
							  dedupe_key => 'dump:' || i)
	    FROM generate_series(1, 3) i},
	'three messages queued', dbname => 'dumpsrc');
my @ids = grep { /^\d+$/ } split /\n/, $ids;
is(scalar @ids, 3, 'wa_send returned three ids');
my $max_id = $node->safe_psql('dumpsrc', 'SELECT max(id) FROM whatsapp.messages')
  || 0;

my $tmp = PostgreSQL::Test::Utils::tempdir('dump');
$node->command_ok(
	[ 'pg_dump', '-Fc', '-f', "$tmp/dump.fc", '-d', 'dumpsrc' ],
	'pg_dump -Fc');
$node->command_ok(
	[ 'pg_dump', '-Fp', '-f', "$tmp/dump.sql", '-d', 'dumpsrc' ],
	'pg_dump, plain format');
my $plain = -f "$tmp/dump.sql" ? slurp_file("$tmp/dump.sql") : '';
unlike($plain, qr/\Q$token\E/, 'the dump holds no token in clear');
unlike($plain, qr/dump-test/, 'not even part of it');
like($plain, qr/COPY whatsapp\.account\b/, 'the dump holds the account rows');
like($plain, qr/setval\('whatsapp\.message_id_seq'/,
	'the dump sets the message id sequence');

createdb('dumpdst');
my ($stdout, $stderr) = ('', '');
my $rc = IPC::Run::run(
	[ 'pg_restore', '-h', $node->host, '-p', $node->port, '-d', 'dumpdst',
	  "$tmp/dump.fc" ],
	'>', \$stdout, '2>', \$stderr);
ok($rc, 'pg_restore succeeds') or diag($stderr);
is($stderr, '', 'pg_restore reports no error');

WaTest::psql_is($node,
	q{SELECT name || ':' || phone_number_id || ':' || has_access_token
	    FROM whatsapp.accounts},
	'main:1234567890:true', 'the restored database shows the account',
	dbname => 'dumpdst');
WaTest::psql_is($node,
	q{SELECT string_agg(id::text, ',' ORDER BY id) FROM whatsapp.messages},
	join(',', sort { $a <=> $b } @ids), 'the messages are restored',
	dbname => 'dumpdst');
WaTest::psql_is($node,
	qq{SELECT last_value >= $max_id FROM whatsapp.message_id_seq},
	't', 'the message id sequence is restored', dbname => 'dumpdst');
my $next = WaTest::psql_ok($node,
	q{SELECT whatsapp.wa_send('+52 55 1234 5678', 'after restore')},
	'wa_send works in the restored database', dbname => 'dumpdst');
ok($next =~ /^\d+$/ && $next > $max_id,
	"the next id ($next) is greater than the highest restored id ($max_id)");
my $rebound = WaTest::psql_ok($node, q{SELECT whatsapp.wa_rebind()},
	'wa_rebind() in the restored database', dbname => 'dumpdst');
ok($rebound =~ /^\d+$/ && $rebound >= 1,
	"wa_rebind() counts the secrets it rebound ($rebound)");

# ---------------------------------------------------------------------
# Without shared_preload_libraries
# ---------------------------------------------------------------------
my $plain_node = WaTest::node('nopreload', preload => 0);
WaTest::psql_ok($plain_node, 'CREATE EXTENSION whatsapp CASCADE',
	'CREATE EXTENSION works without preloading');
WaTest::psql_is($plain_node,
	q{SELECT whatsapp.normalize_phone('+525512345678')},
	'+525512345678', 'the library loads on demand and works');
# Each psql call is a new session: load the library, then look.
WaTest::psql_is($plain_node,
	"SELECT whatsapp.normalize_phone('+525512345678') IS NOT NULL;\n"
	  . "SHOW whatsapp.api_version;",
	"t\nv24.0", 'its settings exist once it is loaded');
ok(!$plain_node->log_contains(qr/(?:ERROR|FATAL|PANIC):.*whatsapp/),
	'loading it put no error in the server log');
$plain_node->stop;

$node->stop;
ok(!$node->log_contains(qr/PANIC:|server process .* was terminated/),
	'the preloaded server never crashed');

done_testing();
