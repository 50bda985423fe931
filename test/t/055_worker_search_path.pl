# 055_worker_search_path.pl: the worker runs as the bootstrap superuser, so
# nothing in the database may steer which operators or functions its SQL
# calls.
#
# The database's owner (Odoo's role, in an Odoo database) owns the public
# schema, may create operators in it and may ALTER DATABASE ... SET
# search_path.  Here such a role puts public before pg_catalog and creates
# public.=(text, text) and public.=(character varying, text), which record
# the process that called them.  The worker must still claim, send and
# record messages (Odoo's phone_blacklist included, which the worker reads
# in C since 0.3, never by SQL), and never call either operator.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $mock = WaTest::mock_start();
my $node = WaTest::node('search_path', mock => $mock,
	'whatsapp.poll_interval' => '60s');

WaTest::psql_ok($node, q{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('main', '1055055055', 'EAAsearchpathtoken', max_mps => 1000);
	CREATE ROLE odoo_owner LOGIN;
	ALTER DATABASE postgres OWNER TO odoo_owner;
	ALTER SCHEMA public OWNER TO odoo_owner;
}, 'extension, account, and a database owned by an ordinary role');

# What the database owner can do without any superuser help.
WaTest::psql_ok($node, q{
	SET ROLE odoo_owner;
	CREATE TABLE public.captured (pid integer, usr text, at timestamptz DEFAULT now());
	GRANT INSERT, SELECT ON public.captured TO PUBLIC;
	CREATE FUNCTION public.spy_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.captured (pid, usr) VALUES (pg_backend_pid(), current_user);
		RETURN $1 OPERATOR(pg_catalog.=) $2;
	END $$;
	CREATE FUNCTION public.spy_eq_vt(character varying, text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.captured (pid, usr) VALUES (pg_backend_pid(), current_user);
		RETURN $1::text OPERATOR(pg_catalog.=) $2;
	END $$;
	CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.spy_eq);
	CREATE OPERATOR public.= (LEFTARG = character varying, RIGHTARG = text,
							  FUNCTION = public.spy_eq_vt);
	CREATE TABLE public.phone_blacklist (id serial PRIMARY KEY, number varchar NOT NULL,
										 active boolean,
										 CONSTRAINT phone_blacklist_unique_number UNIQUE (number));
	INSERT INTO public.phone_blacklist (number, active) VALUES ('+34612055999', true);
	ALTER DATABASE postgres SET search_path = public, pg_catalog;
}, 'the owner creates spying = operators in public and puts public first');

# The operators do work as intended: an ordinary session with that
# search path calls them.
is($node->safe_psql('postgres', q{SELECT 'a'::text = 'a'::text}), 't',
	'a session with the database search path uses public.=');
is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM public.captured}), 't',
	'and the spy recorded that call');
$node->safe_psql('postgres', 'TRUNCATE public.captured');

# The worker reads database settings when it connects: restart it.
$node->restart;
ok(WaTest::wait_until(sub { WaTest::worker_pid($node) ne '' }, 60, 'the worker'),
	'a worker serves the database after the restart');
my $wpid = WaTest::worker_pid($node);

my $seq0 = $mock->last_seq;
my $id = $node->safe_psql('postgres',
	q{SELECT whatsapp.wa_send('+34 612 055 001', 'hola')});
ok(WaTest::wait_for($node,
		"SELECT state FROM whatsapp.messages WHERE id OPERATOR(pg_catalog.=) $id",
		'sent', 30),
	'the worker sends a message');
is(scalar(@{ $mock->requests($seq0) }), 1, 'the mock received it');

# A number blacklisted after enqueue: the claim checks the varchar column.
$mock->add_rule({ match => { to => '+34612055999' }, action => { latency_ms => 2000 } });
my $ids = $node->safe_psql('postgres', q{
	UPDATE public.phone_blacklist SET active = false;
	SELECT whatsapp.wa_send('+34 612 055 999', 'one') || ',' ||
		   whatsapp.wa_send('+34 612 055 999', 'two');
	});
my ($b1, $b2) = split /,/, (split /\n/, $ids)[-1];
ok(WaTest::wait_for($node,
		"SELECT state FROM whatsapp.messages WHERE id OPERATOR(pg_catalog.=) $b1",
		'sending', 30),
	'the first is in flight');
$node->safe_psql('postgres', 'UPDATE public.phone_blacklist SET active = true');
ok(WaTest::wait_for($node,
		"SELECT state FROM whatsapp.messages WHERE id OPERATOR(pg_catalog.=) $b2",
		'blocked', 30),
	'the second is blocked at the claim by the blacklist');
$mock->clear_rules;

is($node->safe_psql('postgres',
		"SELECT count(*) FROM public.captured WHERE pid OPERATOR(pg_catalog.=) $wpid"),
	'0', 'the worker never called an operator of public');
is($node->safe_psql('postgres', q{SELECT count(*) FROM public.captured WHERE usr OPERATOR(pg_catalog.=) 'wa_test'}),
	'0', 'no process called them as the superuser');

$node->stop;
$mock->stop;
done_testing();
