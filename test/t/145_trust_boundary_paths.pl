# 145_trust_boundary_paths.pl: the trust boundary of 080_trust_boundary.pl,
# on the paths added since: rules on any model (wa_odoo_rule: conditions,
# field paths through foreign keys, money), their previews, invoice_sent
# (mail_message and its relation tables, Odoo 16's mass-mail copy read
# with SnapshotAny), the document header (ir_attachment, the PDF wait that
# the worker releases, the attachment's access_token written by the
# worker, the upload to Meta), the website's domain for portal links, and
# search_path: relations, functions and operators that Odoo's role plants
# in a schema of its own and in pg_temp, ahead of pg_catalog.
#
# As in 080: the database belongs to a login role "odoo" that is not a
# superuser, and so do the public schema and every Odoo table.  public.spy()
# logs current_user and tries ALTER ROLE odoo SUPERUSER.  After each plant,
# every path runs as the role that runs it in real life; then odoo must
# not be a superuser, and the server log must show the spy only ever
# running as odoo.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $mock = WaTest::mock_start();
my $node = WaTest::node('trustpaths', mock => $mock, database => 'odoo',
	'whatsapp.poll_interval' => '1s');

my $token = 'EAApaths' . int(rand(1e9));

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
	SET client_min_messages = warning;
	\\set ECHO none
	\\o /dev/null
	\\i $repo/test/odoo/odoo18.sql
	\\i $repo/test/odoo/data.sql
	\\i $repo/test/odoo/models.sql
	\\i $repo/test/odoo/payment18.sql
	\\i $repo/test/odoo/website.sql
	\\o
	INSERT INTO public.website (id, name, domain, company_id)
	VALUES (1, 'Tienda MX', 'https://tienda.example.mx', 1);
	UPDATE public.ir_module_module SET latest_version = '18.0.1.3' WHERE name = 'base';
}, 'odoo creates its tables (Odoo 18, stock, helpdesk, payments, website)', connstr => $as_odoo);

is($node->safe_psql('odoo', q{
	SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'public' AND c.relkind = 'r'
	   AND pg_get_userbyid(c.relowner) <> 'odoo'}), '0',
	'every table in public belongs to odoo');

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
	CREATE FUNCTION public.f(tag text) RETURNS text
	LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN public.spy(tag); END $$;
	CREATE FUNCTION public.spy_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM public.spy('trigger on ' || TG_TABLE_NAME);
		RETURN NULL;
	END $$;
}, 'odoo creates the spy', connstr => $as_odoo);

# A superuser's own queries in odoo's database pin search_path: odoo sets
# the database's (ALTER DATABASE ... SET search_path) below, and it applies
# to every session, a superuser's psql included (docs/security.md).
sub su
{
	my ($sql) = @_;
	return $node->safe_psql('odoo', "SET search_path = pg_catalog, pg_temp;\n$sql");
}

my $log_offset;

sub mark_log
{
	$node->safe_psql('postgres', 'ALTER ROLE odoo NOSUPERUSER');
	$log_offset = -s $node->logfile;
	return;
}

sub log_since { return slurp_file($node->logfile, $log_offset); }

sub spy_lines { return grep { /SPY / } split /\n/, log_since(); }

sub check_round
{
	my ($label) = @_;
	my @spy = spy_lines();
	my @foreign = grep { !/ran as odoo \(superuser: f\)/ } @spy;
	is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'odoo'}),
		'f', "$label: odoo is still not a superuser");
	is(scalar(@foreign), 0, "$label: the planted code never ran as another role")
	  or diag(join("\n", @foreign[0 .. ($#foreign < 9 ? $#foreign : 9)]));
	$node->safe_psql('postgres', 'ALTER ROLE odoo NOSUPERUSER');
	return @spy;
}

ok(WaTest::wait_until(sub { WaTest::worker_pid($node, 'odoo') ne '' }, 60, 'the worker'),
	'a worker serves the odoo database');

# --- The plants ---------------------------------------------------------------
# 1. On every Odoo table: an index expression that calls the spy (planning
#    any query on the table folds it), a trigger and a rule.
# 2. Schema evil, which the database's search_path puts ahead of pg_catalog
#    for every session (Odoo's, the admin's, the worker's): a table with
#    the name of every relation of public and whatsapp, indexed by the spy;
#    = on text and integers, now(), lower(), upper(), length() that call it.
# 3. In each of Odoo's sessions, before it calls the extension: a temporary
#    table with the name of every relation of public and whatsapp, indexed
#    by the spy (pg_temp is searched for relations even when last).
mark_log();
WaTest::psql_ok($node, q{
	SET client_min_messages = error;
	DO $$
	DECLARE
		t text;
	BEGIN
		FOR t IN SELECT c.relname FROM pg_class c
				  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
					AND EXISTS (SELECT 1 FROM pg_attribute a
								 WHERE a.attrelid = c.oid AND a.attname = 'id' AND NOT a.attisdropped)
		LOOP
			EXECUTE format('CREATE INDEX %I ON public.%I ((id::text || public.f(%L)))',
						   t || '_spy', t, 'index on ' || t);
		END LOOP;
		FOR t IN SELECT c.relname FROM pg_class c
				  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
		LOOP
			EXECUTE format('CREATE TRIGGER spy AFTER INSERT OR UPDATE OR DELETE ON public.%I'
						   ' FOR EACH ROW EXECUTE FUNCTION public.spy_trigger()', t);
			EXECUTE format('CREATE RULE spy_rule AS ON UPDATE TO public.%I'
						   ' DO ALSO SELECT public.spy(%L)', t, 'rule on ' || t);
		END LOOP;
	END $$;

	CREATE SCHEMA evil;
	DO $$
	DECLARE
		t text;
	BEGIN
		FOR t IN SELECT DISTINCT c.relname FROM pg_class c
				  WHERE c.relnamespace IN ('public'::regnamespace, 'whatsapp'::regnamespace)
					AND c.relkind IN ('r', 'v', 'p')
		LOOP
			EXECUTE format('CREATE TABLE evil.%I (id bigint)', t);
			EXECUTE format('INSERT INTO evil.%I VALUES (1)', t);
			EXECUTE format('CREATE INDEX ON evil.%I ((id::text || public.f(%L)))', t, 'evil.' || t);
		END LOOP;
	END $$;
	CREATE FUNCTION evil.eq(a text, b text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
		$$ BEGIN PERFORM public.spy('evil = text'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
	CREATE FUNCTION evil.eq(a integer, b integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
		$$ BEGIN PERFORM public.spy('evil = integer'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.eq);
	CREATE FUNCTION evil.eq(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
		$$ BEGIN PERFORM public.spy('evil = bigint'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.eq);
	CREATE FUNCTION evil.eq(a bigint, b integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
		$$ BEGIN PERFORM public.spy('evil = bigint integer'); RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = evil.eq);
	CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql STABLE AS
		$$ BEGIN PERFORM public.spy('evil now()'); RETURN pg_catalog.now(); END $$;
	CREATE FUNCTION evil.lower(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS
		$$ BEGIN PERFORM public.spy('evil lower()'); RETURN pg_catalog.lower(t); END $$;
	CREATE FUNCTION evil.upper(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS
		$$ BEGIN PERFORM public.spy('evil upper()'); RETURN pg_catalog.upper(t); END $$;
	CREATE FUNCTION evil.length(t text) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS
		$$ BEGIN PERFORM public.spy('evil length()'); RETURN pg_catalog.length(t); END $$;
	ALTER DATABASE odoo SET search_path = evil, pg_catalog, public;
}, 'odoo plants index expressions, triggers and rules on its tables, and schema evil ahead of pg_catalog',
	connstr => $as_odoo);
WaTest::psql_is($node, 'SHOW search_path', 'evil, pg_catalog, public',
	"the admin's sessions get odoo's search_path too", connstr => $as_admin);

# The temporary plant, run first in each of Odoo's sessions below.
my $temp_plant = q{
	SET client_min_messages = error;
	DO $$
	DECLARE
		t text;
	BEGIN
		FOR t IN SELECT DISTINCT c.relname FROM pg_catalog.pg_class c
				  WHERE c.relnamespace OPERATOR(pg_catalog.=) ANY (ARRAY['public'::regnamespace, 'whatsapp'::regnamespace])
					AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'v', 'p']::"char"[])
		LOOP
			EXECUTE pg_catalog.format('CREATE TEMP TABLE %I (id bigint)', t);
			EXECUTE pg_catalog.format('INSERT INTO pg_temp.%I VALUES (1)', t);
			EXECUTE pg_catalog.format('CREATE INDEX ON pg_temp.%I ((id::text || public.f(%L)))', t,
									  'pg_temp.' || t);
		END LOOP;
	END $$;
	RESET client_min_messages;
};

sub as_odoo
{
	my ($sql, $label) = @_;
	WaTest::psql_ok($node, $temp_plant . $sql, $label, connstr => $as_odoo);
	return;
}

my @planted = check_round('planting (odoo\'s own statements)');
ok(scalar(grep { /SPY index on res_partner ran as odoo/ } @planted) > 0,
	'the index expressions were evaluated as odoo when odoo made them (the spy works)');

# --- The admin's set-up, after the plants -----------------------------------
mark_log();
WaTest::psql_ok($node, qq{
	SET client_min_messages = error;
	SELECT whatsapp.wa_account_set('mx', '1145145145', '$token', max_mps => 1000);
	SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name", "document_name"], "pdf_wait": "60 seconds"}');
	SELECT whatsapp.wa_odoo_enable('refund_posted', 'invoice_posted', 'es_MX', 'mx',
		'{"header": "portal_pdf", "body": ["partner_name", "document_name"], "pdf_upload": true}');
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "document_name", "amount_total", "portal_url"]');
	SELECT whatsapp.wa_odoo_enable('invoice_sent', 'invoice_sent', 'es_MX', 'mx',
		'["partner_name", "document_name"]');
	SELECT whatsapp.wa_odoo_rule('payment_received', 'account_payment', 'payment_receipt',
		condition => \$\$state IN ('in_process', 'paid') AND payment_type = 'inbound' AND lower(name) <> ''\$\$,
		account => 'mx', language => 'es_MX',
		params => '{"customer": "partner_id.name", "total": {"amount": "amount"}, "currency": "currency_id.name", "ref": "name"}');
	SELECT whatsapp.wa_odoo_rule('ticket_solved', 'helpdesk_ticket', 'ticket_solved',
		state_field => 'stage_id.name', state_value => 'Solved', account => 'mx',
		params => '["partner_id.name", "ticket_ref", "stage_id"]');
	SELECT whatsapp.wa_odoo_rule('delivery_done', 'stock_picking', 'delivery_done',
		state_value => 'done', account => 'mx', language => 'es_MX',
		params => '["partner_id.name", "name", "picking_type_id", "date_done"]');
	SELECT whatsapp.wa_odoo_rule('invoice_link', 'account_move', 'invoice_link',
		condition => \$\$state = 'posted' AND move_type = 'out_invoice' AND amount_total > 5000\$\$,
		account => 'mx', language => 'es_MX',
		params => '{"header": "portal_pdf", "customer": {"word": "partner_name"}, "total": {"word": "amount_total"}, "link": {"word": "portal_url"}}');
}, 'wa_admin sets the account, four events and four rules (conditions, paths, money, words)',
	connstr => $as_admin);
check_round('wa_odoo_enable and wa_odoo_rule (the checks of paths and conditions)');

# A rule's table must be an ordinary table of public.
WaTest::psql_ok($node, q{
	CREATE VIEW public.spy_view AS SELECT id, partner_id, state, public.spy('rule view') AS s
	  FROM public.stock_picking;
	CREATE TABLE public.spy_parted (id integer, partner_id integer REFERENCES public.res_partner (id),
		state varchar) PARTITION BY RANGE (id);
	CREATE TABLE public.spy_part1 PARTITION OF public.spy_parted FOR VALUES FROM (0) TO (1000);
}, 'odoo makes a view and a partitioned table in public', connstr => $as_odoo);
mark_log();
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_rule('on_view', 'spy_view', 'x',
	state_value => 'done', account => 'mx')}, '42809',
	'a rule on a view is refused', connstr => $as_admin);
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_rule('on_parted', 'spy_parted', 'x',
	state_value => 'done', account => 'mx')}, '42809',
	'a rule on a partitioned table is refused', connstr => $as_admin);
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_rule('on_evil', 'evil.stock_picking', 'x',
	state_value => 'done', account => 'mx')}, '22023',
	'a rule names a table of public only, never one that search_path finds', connstr => $as_admin);
WaTest::psql_fails($node, q{SELECT whatsapp.wa_odoo_rule('on_evil', 'stock_picking', 'x',
	state_value => 'done', account => 'mx', params => '["picking_type_id.spy_col"]')}, '42703',
	'a path is read in public\'s tables only', connstr => $as_admin);
check_round('rules refused on a view, a partitioned table, another schema');

# --- Every new path --------------------------------------------------------------
sub message_state
{
	my ($key) = @_;
	return su("SELECT coalesce(string_agg(state, ','), 'none') FROM whatsapp.message WHERE dedupe_key = '$key'");
}

mark_log();
my $seq0 = $mock->last_seq;
as_odoo(q{
	BEGIN;
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, invoice_date_due, amount_total)
	VALUES (201, 1, 1, 10, 10, 3, '/', 'draft', 'out_invoice', current_date, current_date + 30, 1160),
		   (202, 1, 1, 10, 10, 3, '/', 'draft', 'out_refund', current_date, current_date + 30, 200),
		   (204, 1, 1, 10, 10, 3, 'INV/2025/00204', 'posted', 'out_invoice', current_date,
			current_date + 30, 300),
		   (205, 1, 1, 10, 10, 3, 'INV/2025/00205', 'posted', 'out_invoice', current_date,
			current_date + 30, 400);
	UPDATE public.account_move SET state = 'posted', name = 'INV/2025/00201', amount_total = 6100
	 WHERE id = 201;
	UPDATE public.account_move SET state = 'posted', name = 'RINV/2025/00202' WHERE id = 202;
	INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
		db_datas, file_size, mimetype, public)
	VALUES (602, 'RINV_2025_00202.pdf', 'account.move', 'invoice_pdf_report_file', 202, 1, 'binary',
		convert_to('%PDF-1.7 credit note RINV/2025/00202', 'UTF8'), 35, 'application/pdf', false);
	COMMIT;
}, 'odoo posts an invoice without its PDF (it waits) and a credit note with its PDF (uploaded)');
is(message_state('account.move:201:invoice_posted'), 'queued', 'the invoice\'s message waits for its PDF');

as_odoo(q{
	INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
		db_datas, file_size, mimetype, public)
	VALUES (601, 'INV_2025_00201.pdf', 'account.move', 'invoice_pdf_report_file', 201, 1, 'binary',
		convert_to('%PDF-1.7 invoice INV/2025/00201', 'UTF8'), 31, 'application/pdf', false);
}, 'odoo stores the invoice\'s PDF, without an access_token: the worker releases the wait');

as_odoo(q{
	BEGIN;
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
		currency_id, name, state, date_order, amount_total, website_id)
	VALUES (203, 1, 10, 10, 10, 3, 'S00203', 'draft', now() AT TIME ZONE 'UTC', 812.5, 1);
	UPDATE public.sale_order SET state = 'sale' WHERE id = 203;
	COMMIT;
}, 'odoo confirms an order of its website (the link on the website\'s domain, a new access_token)');

as_odoo(q{
	BEGIN;
	-- Send (17+): the message on the invoice, to the customer, with the PDF
	INSERT INTO public.mail_message (id, res_id, model, message_type, subtype_id, author_id, body,
		date, create_date)
	VALUES (1204, 204, 'account.move', 'comment', 1, 1, '<p>Su factura INV/2025/00204</p>',
		now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');
	INSERT INTO public.mail_message_res_partner_rel (mail_message_id, res_partner_id) VALUES (1204, 10);
	INSERT INTO public.ir_attachment (id, name, res_model, res_id, company_id, type, db_datas, mimetype)
	VALUES (1204, 'INV_2025_00204.pdf', 'mail.message', 1204, 1, 'binary',
		convert_to('%PDF-1.7 INV/2025/00204', 'UTF8'), 'application/pdf');
	INSERT INTO public.message_attachment_rel (message_id, attachment_id) VALUES (1204, 1204);
	COMMIT;
	BEGIN;
	-- Odoo 16's mass mail: the copy (an e-mail without subtype) and its
	-- mail_mail, sent and deleted (auto_delete) before the commit
	INSERT INTO public.mail_message (id, res_id, model, message_type, subtype_id, author_id, body,
		date, create_date)
	VALUES (1205, 205, 'account.move', 'email', NULL, 1, '<p>Su factura INV/2025/00205</p>',
		now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');
	INSERT INTO public.ir_attachment (id, name, res_model, res_id, company_id, type, db_datas, mimetype)
	VALUES (1205, 'INV_2025_00205.pdf', 'mail.message', 1205, 1, 'binary',
		convert_to('%PDF-1.7 INV/2025/00205', 'UTF8'), 'application/pdf');
	INSERT INTO public.message_attachment_rel (message_id, attachment_id) VALUES (1205, 1205);
	INSERT INTO public.mail_mail (id, mail_message_id, state, auto_delete, is_notification, create_date)
	VALUES (1205, 1205, 'outgoing', true, false, now() AT TIME ZONE 'UTC');
	INSERT INTO public.mail_mail_res_partner_rel (mail_mail_id, res_partner_id) VALUES (1205, 10);
	UPDATE public.mail_mail SET state = 'sent' WHERE id = 1205;
	DELETE FROM public.mail_mail_res_partner_rel WHERE mail_mail_id = 1205;
	DELETE FROM public.mail_mail WHERE id = 1205;
	COMMIT;
}, 'odoo sends two invoices by mail: Send (17+), and the mass-mail copy of 16 (read with SnapshotAny)');

as_odoo(q{
	BEGIN;
	INSERT INTO public.account_payment (id, name, state, payment_type, partner_type, amount,
		currency_id, partner_id, company_id, date)
	VALUES (207, 'PBNK1/2025/00207', 'draft', 'inbound', 'customer', 1160.00, 3, 10, 1, current_date);
	UPDATE public.account_payment SET state = 'in_process' WHERE id = 207;
	COMMIT;
	BEGIN;
	INSERT INTO public.helpdesk_ticket (id, name, ticket_ref, partner_id, team_id, stage_id, company_id, active)
	VALUES (209, 'La factura no llegó', '00209', 10, 1, 1, 1, true);
	UPDATE public.helpdesk_ticket SET stage_id = 3 WHERE id = 209;
	COMMIT;
}, 'odoo receives a payment (a rule\'s condition, as odoo) and solves a ticket (a field path)');

WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule_preview('payment_received', 207);
	SELECT whatsapp.wa_odoo_rule_preview('ticket_solved', 209);
	SELECT whatsapp.wa_odoo_rule_preview('invoice_link', 201);
	SELECT whatsapp.wa_odoo_preview('invoice_posted', 201);
	SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 203);
	SELECT whatsapp.wa_odoo_preview('invoice_sent', 204);
}, 'wa_admin previews the rules and the events', connstr => $as_admin);

my %want = (
	'account.move:201:invoice_posted' => 'sent',
	'account.move:202:refund_posted' => 'sent',
	'sale.order:203:sale_order_confirmed' => 'sent',
	'account.move:204:invoice_sent' => 'sent',
	'account.move:205:invoice_sent' => 'sent',
	'account.payment:207:payment_received' => 'sent',
	'helpdesk.ticket:209:ticket_solved' => 'sent',
	'account.move:201:invoice_link' => 'sent');
ok(WaTest::wait_until(sub {
			!grep { message_state($_) ne $want{$_} } keys %want }, 150, 'every message sent'),
	'every path delivered its message');
for my $k (sort keys %want)
{
	is(message_state($k), $want{$k}, "$k: $want{$k}");
}
my $reqs = $mock->requests($seq0);
my @up = grep { ($_->{path} // '') =~ m{/media$} } @$reqs;
is(scalar(@up), 1, 'the credit note\'s PDF was uploaded to Meta by the worker');
# read as odoo: a superuser's query on an Odoo table would plan it, and
# fold odoo's index expression with a superuser's rights
WaTest::psql_like($node, 'SELECT access_token FROM public.ir_attachment WHERE id = 601',
	qr/^[0-9a-f]{8}-[0-9a-f]{4}-4/, 'the worker wrote the attachment\'s access_token (as its owner)',
	connstr => $as_odoo);
my @payloads = map { ref $_->{body} ? JSON::PP->new->encode($_->{body}) : ($_->{body} // '') } @$reqs;
ok(scalar(grep { m{https://erp\.example\.com/web/content/601\?access_token=} } @payloads) > 0,
	'the invoice\'s header is its PDF by /web/content');
ok(scalar(grep { m{https://tienda\.example\.mx/my/orders/203} } @payloads) > 0,
	'the order\'s link is on its website\'s domain');

my @ran = check_round('every new path, with everything planted');
ok(scalar(grep { /SPY trigger on ir_attachment ran as odoo/ } @ran) > 0,
	'odoo\'s trigger on ir_attachment fired on the worker\'s token write, as odoo');
ok(scalar(grep { /SPY evil = / } @ran) > 0,
	'the operators of schema evil did run in odoo\'s own statements (the plant works)');

# --- Views in place of the tables of the new paths -----------------------------
sub views_at
{
	my ($tables, $label) = @_;
	my $list = join(', ', map { "'$_'" } @$tables);
	WaTest::psql_ok($node, qq{
		SET client_min_messages = error;
		DO \$\$
		DECLARE
			t text;
		BEGIN
			FOREACH t IN ARRAY ARRAY[$list]
			LOOP
				EXECUTE format('ALTER TABLE public.%I RENAME TO %I', t, t || '_t');
				EXECUTE format('CREATE VIEW public.%I AS SELECT * FROM public.%I'
							   ' WHERE public.spy(%L) IS NOT NULL', t, t || '_t', 'view ' || t);
			END LOOP;
		END \$\$;
	}, "odoo puts views at $label", connstr => $as_odoo);
	return;
}

sub tables_back
{
	my ($tables) = @_;
	for my $t (@$tables)
	{
		$node->safe_psql('odoo', "DROP VIEW public.$t; ALTER TABLE public.${t}_t RENAME TO $t;");
	}
	return;
}

my @views1 = qw(ir_attachment website mail_message_subtype mail_message_res_partner_rel
  message_attachment_rel mail_mail ir_module_module);
views_at(\@views1, 'ir_attachment, website, the mail tables and ir_module_module');
mark_log();
as_odoo(q{
	BEGIN;
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, invoice_date_due, amount_total)
	VALUES (301, 1, 1, 10, 10, 3, 'INV/2025/00301', 'draft', 'out_invoice', current_date, current_date + 30, 9000),
		   (304, 1, 1, 10, 10, 3, 'INV/2025/00304', 'posted', 'out_invoice', current_date, current_date + 30, 90);
	UPDATE public.account_move SET state = 'posted' WHERE id = 301;
	INSERT INTO public.mail_message (id, res_id, model, message_type, subtype_id, author_id, body,
		date, create_date)
	VALUES (1304, 304, 'account.move', 'comment', 1, 1, '<p>INV/2025/00304</p>',
		now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'),
		   (1305, 304, 'account.move', 'email', NULL, 1, '<p>INV/2025/00304</p>',
		now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
		currency_id, name, state, date_order, amount_total, website_id)
	VALUES (303, 1, 10, 10, 10, 3, 'S00303', 'draft', now() AT TIME ZONE 'UTC', 10, 1);
	UPDATE public.sale_order SET state = 'sale' WHERE id = 303;
	COMMIT;
}, 'odoo posts, mails and confirms with the views in place');
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule_preview('invoice_link', 301);
	SELECT whatsapp.wa_odoo_preview('invoice_posted', 301);
	SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 303);
	SELECT whatsapp.wa_odoo_preview('invoice_sent', 304);
}, 'wa_admin previews with the views in place', connstr => $as_admin);
# a few turns of the worker over the waiting invoice (it looks at ir_attachment)
sleep(4);
is(message_state('account.move:301:invoice_posted'), 'queued',
	'the invoice still waits for its PDF: a view at ir_attachment is not read');
is(message_state('account.move:304:invoice_sent'), 'none',
	'a mail whose subtype, recipients and attachments are behind views is not a Send');
ok(su(q{SELECT payload::text FROM whatsapp.message WHERE dedupe_key = 'sale.order:303:sale_order_confirmed'})
	  =~ m{https://erp\.example\.com/my/orders/303}, 'the order\'s link falls back to web.base.url');
check_round('views at ir_attachment, website, the mail tables, ir_module_module');
my $log = log_since();
for my $t (qw(ir_attachment website mail_message_subtype ir_module_module))
{
	like($log, qr/public\.$t is a view, not a table, so the whatsapp extension does not read it/,
		"the server log says the view at $t is not read");
}
tables_back(\@views1);

my @views2 = qw(res_currency res_lang);
views_at(\@views2, 'res_currency and res_lang');
mark_log();
as_odoo(q{
	BEGIN;
	INSERT INTO public.account_payment (id, name, state, payment_type, partner_type, amount,
		currency_id, partner_id, company_id, date)
	VALUES (307, 'PBNK1/2025/00307', 'draft', 'inbound', 'customer', 70.00, 3, 10, 1, current_date);
	UPDATE public.account_payment SET state = 'paid' WHERE id = 307;
	COMMIT;
}, 'odoo is paid with views at res_currency and res_lang');
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule_preview('payment_received', 307);
	SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 303);
}, 'wa_admin previews with views at res_currency and res_lang', connstr => $as_admin);
check_round('views at res_currency and res_lang');
$log = log_since();
for my $t (qw(res_currency res_lang))
{
	like($log, qr/public\.$t is a view, not a table, so the whatsapp extension does not read it/,
		"the server log says the view at $t is not read");
}
tables_back(\@views2);

# --- The install and upgrade scripts in a database that odoo prepared ----------
# CREATE EXTENSION and ALTER EXTENSION UPDATE run as a superuser with
# search_path = pg_catalog, public (pgcrypto's schema), pg_temp: a function
# or operator of odoo's in public that matches better than pg_catalog's
# would be called by the scripts, or bound into a view, default or check.
$node->safe_psql('postgres', 'CREATE DATABASE odoo_install OWNER odoo');
WaTest::psql_ok($node, q{
	CREATE FUNCTION public.spy(tag text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
	BEGIN
		RAISE WARNING 'SPY % ran as % (superuser: %)', tag, current_user,
			(SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user);
		BEGIN
			EXECUTE 'ALTER ROLE odoo SUPERUSER';
		EXCEPTION WHEN OTHERS THEN
			NULL;
		END;
		RETURN tag;
	END $$;
	CREATE FUNCTION public.format(a text, b text) RETURNS text LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('format(text, text)'); RETURN pg_catalog.format(a, b); END $$;
	CREATE FUNCTION public.format(a text, b text, c text) RETURNS text LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('format(text, text, text)'); RETURN pg_catalog.format(a, b, c); END $$;
	CREATE FUNCTION public.format(a text, b integer) RETURNS text LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('format(text, integer)'); RETURN pg_catalog.format(a, b); END $$;
	CREATE FUNCTION public.jsonb_build_object(a text, b text) RETURNS jsonb LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('jsonb_build_object'); RETURN pg_catalog.jsonb_build_object(a, b); END $$;
	CREATE FUNCTION public.jsonb_build_array(a text) RETURNS jsonb LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('jsonb_build_array'); RETURN pg_catalog.jsonb_build_array(a); END $$;
	CREATE FUNCTION public.to_jsonb(a text) RETURNS jsonb LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('to_jsonb'); RETURN pg_catalog.to_jsonb(a); END $$;
	CREATE FUNCTION public.length(a varchar) RETURNS integer LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('length(varchar)'); RETURN pg_catalog.length(a); END $$;
	CREATE FUNCTION public.btrim(a varchar) RETURNS text LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('btrim(varchar)'); RETURN pg_catalog.btrim(a); END $$;
	CREATE FUNCTION public.now(a integer DEFAULT 0) RETURNS timestamptz LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('now(integer)'); RETURN pg_catalog.now(); END $$;
	CREATE FUNCTION public.eqv(a varchar, b varchar) RETURNS boolean LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('= varchar'); RETURN a::text OPERATOR(pg_catalog.=) b::text; END $$;
	CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.eqv);
	CREATE FUNCTION public.eqj(a jsonb, b text) RETURNS boolean LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.spy('= jsonb text'); RETURN a::text OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR public.= (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = public.eqj);
}, 'odoo plants overloads of format, jsonb_build_object, now, =, ... in public of a new database',
	dbname => 'odoo_install', connstr => $node->connstr('odoo_install') . ' user=odoo');
mark_log();
WaTest::psql_ok($node, q{
	SET client_min_messages = error;
	CREATE EXTENSION whatsapp VERSION '0.1' CASCADE;
	ALTER EXTENSION whatsapp UPDATE;
}, 'a superuser installs 0.1 there and updates it', dbname => 'odoo_install');
check_round('CREATE EXTENSION and ALTER EXTENSION UPDATE in a database odoo prepared');
is($node->safe_psql('odoo_install', q{
	SET search_path = pg_catalog, pg_temp;
	SELECT count(*) FROM pg_depend d
	 WHERE ((d.refclassid = 'pg_proc'::regclass AND d.refobjid IN
			 (SELECT p.oid FROM pg_proc p WHERE p.proowner = 'odoo'::regrole))
		 OR (d.refclassid = 'pg_operator'::regclass AND d.refobjid IN
			 (SELECT o.oid FROM pg_operator o WHERE o.oprowner = 'odoo'::regrole)))
	   AND NOT (d.classid = 'pg_operator'::regclass AND d.objid IN
			 (SELECT o.oid FROM pg_operator o WHERE o.oprowner = 'odoo'::regrole))}), '0',
	'no object of the extension calls a function or operator of odoo\'s');

is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'odoo'}), 'f',
	'at the end, odoo is not a superuser');

$node->stop;
$mock->stop;
done_testing();
