# 080_trust_boundary.pl: Odoo's role can shape every table in public, and
# must not become a superuser, or run its code as anyone but itself,
# through the extension.
#
# The database is owned by a login role "odoo" that is not a superuser,
# so it owns the public schema and every Odoo table in it, as in a real
# Odoo database.  It holds whatsapp_sender and whatsapp_reader.  A second
# login role, "wa_admin", is a member of whatsapp_admin and not a
# superuser either.  The odoo role plants code where the extension might
# run it:
#
#   1. an index expression on public.phone_blacklist (the planner folds it
#	   while planning any query on the table);
#   2. a view at public.ir_config_parameter (the worker checks whether the
#	   database is neutralized at every account reload);
#   3. a view at public.res_company (wa_odoo_enable(company_id => ...));
#   4. triggers and rules on every Odoo table, which would run if the
#	   extension ever wrote to one; and the attempt to put a trigger or a
#	   rule on the extension's own tables;
#   5. columns whose type has a user-defined equality operator and an
#	   implicit cast that runs the same code (res_company.id,
#	   phone_blacklist.number, ir_config_parameter.key).
#
# The planted code is public.spy(): it logs a WARNING with current_user and
# whether that role is a superuser, and tries ALTER ROLE odoo SUPERUSER.
# After each plant, every path of the extension runs: wa_send and its
# family, the Odoo triggers, wa_odoo_enable, wa_odoo_preview, the worker
# (claim, account reload, purge), wa_receive.  Then odoo must still not be
# a superuser, and the server log must show the spy only ever running as
# odoo itself.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use WaTest;

my $repo = WaTest::repo();
my $mock = WaTest::mock_start();
my $node = WaTest::node('trust', mock => $mock, database => 'odoo',
	'whatsapp.poll_interval' => '1s');

my $secret = 'c0ffee' . int(rand(1e9));
my $token = 'EAAtrust' . int(rand(1e9));

WaTest::psql_ok($node, q{
	CREATE ROLE odoo LOGIN NOSUPERUSER;
	CREATE ROLE wa_admin LOGIN NOSUPERUSER;
	CREATE DATABASE odoo OWNER odoo;
}, 'roles odoo and wa_admin (neither a superuser), and a database owned by odoo');
WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	GRANT whatsapp_sender, whatsapp_reader TO odoo;
	GRANT whatsapp_admin TO wa_admin;
}, 'a superuser installs the extension and grants the roles', dbname => 'odoo');

my $as_odoo = $node->connstr('odoo') . ' user=odoo';
my $as_admin = $node->connstr('odoo') . ' user=wa_admin';

WaTest::psql_ok($node, qq{
	\\set ECHO none
	\\i $repo/test/odoo/odoo18.sql
	\\o /dev/null
	\\i $repo/test/odoo/data.sql
	\\o
}, 'odoo creates its own tables (the Odoo 18 fixture)', connstr => $as_odoo);

is($node->safe_psql('odoo', q{
	SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'public' AND c.relkind = 'r'
	   AND pg_get_userbyid(c.relowner) <> 'odoo'}), '0',
	'every table in public belongs to odoo');

# The spy.  Everything here is what the owner of a database can do alone.
WaTest::psql_ok($node, q{
	CREATE FUNCTION public.spy(tag text) RETURNS text
	LANGUAGE plpgsql VOLATILE AS $$
	DECLARE
		s boolean;
	BEGIN
		SELECT r.rolsuper INTO s FROM pg_catalog.pg_roles r
		 WHERE r.rolname OPERATOR(pg_catalog.=) current_user;
		RAISE WARNING 'SPY % ran as % (superuser: %)', tag, current_user, s;
		BEGIN
			EXECUTE 'ALTER ROLE odoo SUPERUSER';
		EXCEPTION WHEN OTHERS THEN
			NULL;
		END;
		RETURN tag;
	END
	$$;
	-- Declared IMMUTABLE, so that an index may use it and the planner
	-- folds a call with a constant argument.
	CREATE FUNCTION public.f(tag text) RETURNS text
	LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN public.spy(tag); END $$;
}, 'odoo creates the spy', connstr => $as_odoo);

# Only a superuser can make odoo a superuser: check that the spy really
# would do it, and undo it.
my ($rc, $out, $err) = WaTest::run_psql($node, q{SELECT public.spy('calibration')},
	dbname => 'odoo');
ok($rc == 0 && $node->safe_psql('postgres',
		q{SELECT rolsuper FROM pg_roles WHERE rolname = 'odoo'}) eq 't',
	'calibration: the spy, run by a superuser, makes odoo a superuser');
$node->safe_psql('postgres', 'ALTER ROLE odoo NOSUPERUSER');

my $log_offset;

# Start a round: odoo is not a superuser, and the log is read from here.
sub mark_log
{
	$node->safe_psql('postgres', 'ALTER ROLE odoo NOSUPERUSER');
	$log_offset = -s $node->logfile;
	return;
}

# Every SPY line of the server log since mark_log.
sub spy_lines
{
	my $log = slurp_file($node->logfile, $log_offset);
	return grep { /SPY / } split /\n/, $log;
}

sub odoo_is_superuser
{
	return $node->safe_psql('postgres',
		q{SELECT rolsuper FROM pg_roles WHERE rolname = 'odoo'});
}

sub sign
{
	my ($p) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'openssl', 'dgst', '-sha256', '-hmac', $secret ],
		'<', \$p, '>', \$o, '2>', \$e)
	  or BAIL_OUT("openssl dgst failed: $e");
	$o =~ /([0-9a-f]{64})\s*$/ or BAIL_OUT("no digest in: $o");
	return "sha256=$1";
}

# The account, by the admin who is not a superuser.
WaTest::psql_ok($node, qq{
	SELECT whatsapp.wa_account_set('mx', '1080808080', '$token', '$secret',
								   waba_id => '2080808080', max_mps => 1000);
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "document_name", "amount_total"]');
	SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
		'["partner_name", "document_name", "portal_url"]');
}, 'wa_admin sets the account and enables two Odoo events', connstr => $as_admin);
# The invoices are posted without an access_token: at commit the extension
# writes one to account_move (the only write to an Odoo table), as odoo.

ok(WaTest::wait_until(sub { WaTest::worker_pid($node, 'odoo') ne '' }, 60, 'the worker'),
	'a worker serves the odoo database');

my $round = 0;
my $doc = 100;

# Every path of the extension, run as the role that runs it in real life.
# Returns nothing; the caller looks at the log and at odoo's attributes.
sub every_path
{
	my ($label) = @_;
	$round++;
	my $n = sprintf('%02d', $round);
	my $seq0 = $mock->last_seq;

	# wa_send and its family, by odoo; one to a blacklisted number.
	WaTest::run_psql($node, qq{
		SELECT whatsapp.wa_send('+52 55 1234 56$n', 'hola $label');
		SELECT whatsapp.wa_send_template('+52 55 1234 57$n', 'order_confirmed', 'es_MX',
										 '["Ana", "S000$n", "10.00"]');
		SELECT whatsapp.wa_send_message('+52 55 1234 58$n',
			'{"type": "text", "text": {"body": "hola"}}');
		SELECT whatsapp.wa_send('+52 55 9999 0000', 'blacklisted');
	}, connstr => $as_odoo);

	# The Odoo triggers: odoo confirms an order and posts an invoice.
	$doc++;
	WaTest::run_psql($node, qq{
		BEGIN ISOLATION LEVEL REPEATABLE READ;
		INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id,
			partner_shipping_id, currency_id, name, state, date_order, amount_total, access_token)
		VALUES ($doc, 1, 10, 10, 10, 3, 'S$doc', 'draft', now() AT TIME ZONE 'UTC', 12.5,
				'3f1c9a52-6a3e-4d39-9d0c-6c1d8d1f7b$doc');
		UPDATE public.sale_order SET state = 'sale' WHERE id = $doc;
		INSERT INTO public.account_move (id, journal_id, company_id, partner_id,
			commercial_partner_id, currency_id, name, state, move_type, date, amount_total)
		VALUES ($doc, 1, 1, 10, 10, 3, 'INV/$doc', 'draft', 'out_invoice', current_date, 99);
		UPDATE public.account_move SET state = 'posted' WHERE id = $doc;
		COMMIT;
	}, connstr => $as_odoo);

	# The admin's functions, by wa_admin: enable with a company, preview,
	# and set the account again (the worker reloads its accounts).
	WaTest::run_psql($node, qq{
		SELECT whatsapp.wa_odoo_enable('refund_posted', 'refund_posted', 'es_MX', 'mx',
			'["partner_name"]', company_id => 1);
		SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', $doc);
		SELECT whatsapp.wa_odoo_preview('invoice_posted', $doc);
		SELECT whatsapp.wa_account_set('mx', '1080808080', NULL, max_mps => 999);
	}, connstr => $as_admin);

	# wa_receive, by odoo: a reply that opts out, and a status.
	my $p = qq~{"object":"whatsapp_business_account","entry":[{"id":"2080808080","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550808080","phone_number_id":"1080808080"},"contacts":[{"profile":{"name":"Cliente"},"wa_id":"5215512345$n"}],"messages":[{"from":"5215512345$n","id":"wamid.HBgNNTIxNTUxMjM0NTY3FQIAEhgg$n","timestamp":"1749416383","type":"text","text":{"body":"STOP"}}]},"field":"messages"}]}]}~;
	my $sig = sign($p);
	WaTest::run_psql($node, "SELECT whatsapp.wa_receive(\$p\$$p\$p\$, '$sig')",
		connstr => $as_odoo);

	# The worker: claims (with the blacklist check), records, and after a
	# restart its purge and the in-doubt recovery.
	$mock->wait_requests(3, 20, since => $seq0);
	$node->safe_psql('odoo', q{
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		 WHERE backend_type LIKE 'whatsapp worker%'});
	WaTest::wait_until(sub { WaTest::worker_pid($node, 'odoo') ne '' }, 30, 'the worker again');
	WaTest::wait_for($node, q{
		SELECT count(*) FROM whatsapp.message WHERE state IN ('queued', 'sending')},
		'0', 30, dbname => 'odoo');
	return;
}

sub check_round
{
	my ($label) = @_;
	my @spy = spy_lines();
	my @foreign = grep { !/ran as odoo \(superuser: f\)/ } @spy;
	is(odoo_is_superuser(), 'f', "$label: odoo is still not a superuser");
	is(scalar(@foreign), 0, "$label: the planted code never ran as another role")
	  or diag(join("\n", @foreign[0 .. ($#foreign < 4 ? $#foreign : 4)]));
	$node->safe_psql('postgres', 'ALTER ROLE odoo NOSUPERUSER');
	return;
}

# A round of every path after a plant that spoils res_company, then
# wa_odoo_enable for a company, which must fail with $sqlstate.
sub plant_round
{
	my ($tag, $label, $sqlstate) = @_;
	mark_log();
	every_path($tag);
	check_round($label);
	WaTest::psql_fails($node, q{
		SELECT whatsapp.wa_odoo_enable('refund_posted', 'refund_posted', 'es_MX', 'mx', NULL,
									   company_id => 1)}, $sqlstate,
		"$label: wa_odoo_enable for a company fails with $sqlstate", connstr => $as_admin);
	check_round("$label, wa_odoo_enable");
	return;
}

# --- 0. Nothing planted: every path works --------------------------------
mark_log();
every_path('plain');
is($node->safe_psql('odoo', q{
	SELECT count(*) FROM whatsapp.message WHERE state = 'sent'}) >= 5 ? 'yes' : 'no',
	'yes', 'the paths send messages');
is($node->safe_psql('odoo', q{
	SELECT state || '/' || failure_type FROM whatsapp.message
	 WHERE recipient = '+525599990000'}), 'blocked/opted_out',
	'a number on Odoo\'s phone_blacklist is blocked');
check_round('no plant');

# --- 1. An index expression on phone_blacklist ----------------------------
WaTest::psql_ok($node, q{
	CREATE INDEX phone_blacklist_spy ON public.phone_blacklist ((number || public.f('blacklist index')));
}, 'odoo indexes phone_blacklist with an expression that calls the spy',
	connstr => $as_odoo);
mark_log();
every_path('index');
check_round('index expression on phone_blacklist');
is($node->safe_psql('odoo', q{
	SELECT count(*) FROM whatsapp.message
	 WHERE recipient = '+525599990000' AND state <> 'blocked'}), '0',
	'the blacklist still blocks');
$node->safe_psql('odoo', 'DROP INDEX public.phone_blacklist_spy');

# --- 2. A view at ir_config_parameter --------------------------------------
WaTest::psql_ok($node, q{
	ALTER TABLE public.ir_config_parameter RENAME TO ir_config_parameter_t;
	CREATE VIEW public.ir_config_parameter AS
		SELECT id, CASE WHEN public.spy('config view') IS NOT NULL THEN key END AS key,
			   CASE WHEN public.spy('config view') IS NOT NULL THEN value END AS value
		  FROM public.ir_config_parameter_t;
}, 'odoo puts a view at ir_config_parameter', connstr => $as_odoo);
mark_log();
every_path('config');
check_round('view at ir_config_parameter');
ok(slurp_file($node->logfile, $log_offset) =~ /public\.ir_config_parameter is a view/,
	'the server log says the view is not read');
$node->safe_psql('odoo', q{
	DROP VIEW public.ir_config_parameter;
	ALTER TABLE public.ir_config_parameter_t RENAME TO ir_config_parameter;
});

# --- 3. A view at res_company ------------------------------------------------
WaTest::psql_ok($node, q{
	ALTER TABLE public.res_company RENAME TO res_company_t;
	CREATE VIEW public.res_company AS
		SELECT CASE WHEN public.spy('company view') IS NOT NULL THEN id END AS id,
			   name, partner_id, currency_id
		  FROM public.res_company_t;
}, 'odoo puts a view at res_company', connstr => $as_odoo);
plant_round('company', 'view at res_company', '42809');
$node->safe_psql('odoo', q{
	DROP VIEW public.res_company;
	ALTER TABLE public.res_company_t RENAME TO res_company;
});

# --- 4. Triggers and rules --------------------------------------------------
for my $t (qw(message log account opt_out inbound_message webhook status_held templates odoo_rule))
{
	my ($trc, undef, $terr, $tstate) = WaTest::run_psql($node, qq{
		CREATE FUNCTION pg_temp.t() RETURNS trigger LANGUAGE plpgsql AS
			\$\$ BEGIN PERFORM public.spy('trigger'); RETURN NULL; END \$\$;
		CREATE TRIGGER spy AFTER INSERT OR UPDATE ON whatsapp.$t
			FOR EACH ROW EXECUTE FUNCTION pg_temp.t();
	}, connstr => $as_odoo);
	is($tstate, '42501', "odoo cannot put a trigger on whatsapp.$t");
	($trc, undef, $terr, $tstate) = WaTest::run_psql($node, qq{
		CREATE RULE spy AS ON UPDATE TO whatsapp.$t DO ALSO SELECT public.spy('rule');
	}, connstr => $as_odoo);
	is($tstate, '42501', "odoo cannot put a rule on whatsapp.$t");
}
WaTest::psql_ok($node, q{
	CREATE FUNCTION public.spy_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM public.spy('trigger on ' || TG_TABLE_NAME);
		RETURN NULL;
	END $$;
	DO $$
	DECLARE
		t text;
	BEGIN
		FOR t IN SELECT c.relname FROM pg_class c
				  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
		LOOP
			EXECUTE format('CREATE TRIGGER spy AFTER INSERT OR UPDATE OR DELETE ON public.%I'
						   ' FOR EACH ROW EXECUTE FUNCTION public.spy_trigger()', t);
			EXECUTE format('CREATE RULE spy_rule AS ON UPDATE TO public.%I'
						   ' DO ALSO SELECT public.spy(%L)', t, 'rule on ' || t);
		END LOOP;
	END $$;
}, 'odoo puts a trigger and a rule on every Odoo table', connstr => $as_odoo);
mark_log();
every_path('triggers');
check_round('triggers and rules on Odoo\'s tables');
my @ran = spy_lines();
ok(scalar(grep { /trigger on sale_order/ } @ran) > 0,
	'the triggers do fire on odoo\'s own writes (as odoo)');
# odoo's own UPDATE of the invoice fires the rule once; the extension's
# access_token write at commit fires it and the trigger again, as odoo
# (check_round above: never as anyone else).
ok(scalar(grep { /SPY rule on account_move ran as odoo \(superuser: f\)/ } @ran) >= 2,
	'the access_token write fires odoo\'s rule on account_move, as odoo');
ok(scalar(grep { /SPY trigger on account_move ran as odoo \(superuser: f\)/ } @ran) >= 3,
	'and odoo\'s trigger on account_move (insert, update, the token write), as odoo');
is($node->safe_psql('odoo', qq{
	SELECT m.state || ' ' || (m.payload::text LIKE '%' || mv.access_token || '%')
	  FROM public.account_move mv, whatsapp.message m
	 WHERE mv.id = $doc AND m.dedupe_key = 'account.move:$doc:invoice_posted'}),
	'sent true', 'the invoice got a token, and its message the link with it');
$node->safe_psql('odoo', q{
	DO $$
	DECLARE
		t text;
	BEGIN
		FOR t IN SELECT c.relname FROM pg_class c
				  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
		LOOP
			EXECUTE format('DROP TRIGGER spy ON public.%I', t);
			EXECUTE format('DROP RULE spy_rule ON public.%I', t);
		END LOOP;
	END $$;
});

# --- 5. Types with a user-defined equality and an implicit cast ----------
WaTest::psql_ok($node, q{
	CREATE TYPE public.spyint AS (v integer);
	CREATE FUNCTION public.spyint_int(public.spyint) RETURNS integer
		LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM public.spy('cast spyint'); RETURN $1.v; END $$;
	CREATE CAST (public.spyint AS integer) WITH FUNCTION public.spyint_int(public.spyint) AS IMPLICIT;
	CREATE FUNCTION public.spyint_eq(public.spyint, integer) RETURNS boolean
		LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM public.spy('= spyint'); RETURN $1.v = $2; END $$;
	CREATE OPERATOR public.= (LEFTARG = public.spyint, RIGHTARG = integer,
							  FUNCTION = public.spyint_eq);
	CREATE TYPE public.spytext AS (v text);
	CREATE FUNCTION public.spytext_text(public.spytext) RETURNS text
		LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM public.spy('cast spytext'); RETURN $1.v; END $$;
	CREATE CAST (public.spytext AS text) WITH FUNCTION public.spytext_text(public.spytext) AS IMPLICIT;
	CREATE FUNCTION public.spytext_eq(public.spytext, text) RETURNS boolean
		LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM public.spy('= spytext'); RETURN $1.v = $2; END $$;
	CREATE OPERATOR public.= (LEFTARG = public.spytext, RIGHTARG = text,
							  FUNCTION = public.spytext_eq);

	ALTER TABLE public.res_company RENAME TO res_company_t;
	CREATE TABLE public.res_company (id public.spyint, name varchar, partner_id integer,
									 currency_id integer);
	INSERT INTO public.res_company SELECT format('(%s)', id)::public.spyint, name, partner_id, currency_id
	  FROM public.res_company_t;

	ALTER TABLE public.phone_blacklist ALTER COLUMN number TYPE public.spytext
		USING format('("%s")', number)::public.spytext;
	ALTER TABLE public.ir_config_parameter ALTER COLUMN key TYPE public.spytext
		USING format('("%s")', key)::public.spytext;
}, 'odoo gives res_company.id, phone_blacklist.number and ir_config_parameter.key types with their own = and casts',
	connstr => $as_odoo);
plant_round('types', 'columns of types with a user-defined equality', '42804');

is($node->safe_psql('postgres',
		q{SELECT rolsuper FROM pg_roles WHERE rolname = 'odoo'}), 'f',
	'at the end, odoo is not a superuser');

$node->stop;
$mock->stop;
done_testing();
