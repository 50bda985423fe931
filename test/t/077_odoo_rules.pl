# Rules on any Odoo model (issue 12, item 5; docs/odoo-rules.md):
# whatsapp.wa_odoo_rule on stock_picking (delivery done), account_payment
# (18's own state; 16's is its move's), calendar_attendee (an appointment
# booked) and helpdesk_ticket (a stage, through the many2one stage_id),
# with parameters from field paths.  Then what the rules must not do:
# name a column in their trigger (Odoo's ALTER TABLE works with them on),
# accept a condition that is not one expression, or run anything of Odoo's
# role with the extension's rights (a spy in the condition, a view in
# place of a table on a path).
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $node = WaTest::node('rules', 'whatsapp.poll_interval' => '60s');

WaTest::psql_ok($node, q{
	CREATE ROLE odoo LOGIN NOSUPERUSER;
	CREATE ROLE wa_admin LOGIN NOSUPERUSER;
	CREATE DATABASE odoo18 OWNER odoo;
	CREATE DATABASE odoo16 OWNER odoo;
}, "Odoo's role, an admin role, and a database per version");

sub fixture
{
	my ($db, $v, $payment) = @_;
	WaTest::psql_ok($node, qq{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('mx', '1099887766', 'EAArules$v', max_mps => 1000);
		GRANT whatsapp_admin TO wa_admin;
		SET ROLE odoo;
		\\set ECHO none
		\\o /dev/null
		\\i $repo/test/odoo/odoo$v.sql
		\\i $repo/test/odoo/data.sql
		\\i $repo/test/odoo/models.sql
		\\i $repo/test/odoo/$payment.sql
		\\o
		UPDATE public.res_partner SET tz = 'America/Mexico_City' WHERE id = 10;
		RESET ROLE;
		GRANT whatsapp_sender, whatsapp_reader TO odoo;
	}, "Odoo $v fixture with stock, calendar, helpdesk and $payment, owned by odoo",
		dbname => $db);
}
fixture('odoo18', 18, 'payment18');
fixture('odoo16', 16, 'payment16');

my $as_odoo = $node->connstr('odoo18') . ' user=odoo';
my $as_admin = $node->connstr('odoo18') . ' user=wa_admin';

# ---- the four examples, made by whatsapp_admin (not a superuser) ----
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule('delivery_done', 'stock_picking', 'delivery_done',
		state_value => 'done', account => 'mx', language => 'es_MX',
		params => '["partner_id.name", "name", "picking_type_id", "carrier_tracking_ref", "date_done"]');
	SELECT whatsapp.wa_odoo_rule('payment_received', 'account_payment', 'payment_receipt',
		condition => $$state IN ('in_process', 'paid') AND payment_type = 'inbound'$$,
		account => 'mx', language => 'es_MX',
		params => '{"customer": "partner_id.name", "amount": "amount", "currency": "currency_id.name", "ref": "name"}');
	SELECT whatsapp.wa_odoo_rule('appointment_booked', 'calendar_attendee', 'appointment_booked',
		state_value => 'accepted', account => 'mx',
		params => '["partner_id.name", "event_id.name", "event_id.start", "event_id.location"]');
	SELECT whatsapp.wa_odoo_rule('ticket_solved', 'helpdesk_ticket', 'ticket_solved',
		state_field => 'stage_id.name', state_value => 'Solved', account => 'mx',
		params => '["partner_id.name", "ticket_ref", "stage_id"]');
}, 'whatsapp_admin makes four rules', connstr => $as_admin);

WaTest::psql_is($node, q{
	SELECT string_agg(tgrelid::regclass || ' ' || tgname || ' cols=' || cardinality(tgattr::int2[])
		|| ' deferred=' || tgdeferrable, E'\n' ORDER BY tgname)
	  FROM pg_trigger WHERE tgname LIKE 'whatsapp_rule_%';
}, "calendar_attendee whatsapp_rule_appointment_booked cols=0 deferred=true
stock_picking whatsapp_rule_delivery_done cols=0 deferred=true
account_payment whatsapp_rule_payment_received cols=0 deferred=true
helpdesk_ticket whatsapp_rule_ticket_solved cols=0 deferred=true",
	'one deferred trigger per rule, on its table, naming no column', dbname => 'odoo18');

WaTest::psql_is($node, q{
	SELECT string_agg(name || ' ' || model || ' ' || trigger_installed, E'\n' ORDER BY name)
	  FROM whatsapp.odoo_model_rules;
}, "appointment_booked calendar_attendee true
delivery_done stock_picking true
payment_received account_payment true
ticket_solved helpdesk_ticket true", 'whatsapp_admin sees the rules and their triggers', connstr => $as_admin);

# ---- Odoo at work, as its own role ----
WaTest::psql_ok($node, q{
	-- two deliveries, validated in the ORM's way: the state first, then date_done
	INSERT INTO public.stock_picking (id, name, origin, state, move_type, partner_id, picking_type_id,
		company_id, scheduled_date, carrier_tracking_ref)
	VALUES (1, 'WH/OUT/00012', 'S00042', 'assigned', 'direct', 10, 2, 1, '2025-03-14 15:00', '1Z999AA10123456784'),
		   (2, 'WH/OUT/00013', 'S00043', 'assigned', 'direct', 10, 2, 1, '2025-03-14 15:00', NULL),
		   (3, 'WH/IN/00007', NULL, 'assigned', 'direct', NULL, 1, 1, '2025-03-14 15:00', NULL);
	BEGIN;
	UPDATE public.stock_picking SET state = 'done' WHERE id = 1;
	UPDATE public.stock_picking SET date_done = '2025-03-14 18:30:00' WHERE id = 1;
	COMMIT;
	-- done again (a re-validation writes the state again): no second message
	UPDATE public.stock_picking SET state = 'done' WHERE id = 1;
	-- a receipt without partner: recorded as failed
	UPDATE public.stock_picking SET state = 'done', date_done = '2025-03-14 18:30:00' WHERE id = 3;
	-- 2 stays assigned
	UPDATE public.stock_picking SET priority = '1' WHERE id = 2;
}, 'odoo validates two pickings and touches a third', connstr => $as_odoo);

WaTest::psql_ok($node, q{
	INSERT INTO public.account_payment (id, name, state, payment_type, partner_type, amount,
		currency_id, partner_id, company_id, date)
	VALUES (7, 'PBNK1/2025/00007', 'draft', 'inbound', 'customer', 1160.00, 3, 10, 1, '2025-03-14'),
		   (8, 'PBNK1/2025/00008', 'draft', 'outbound', 'supplier', 500.00, 3, 10, 1, '2025-03-14');
	UPDATE public.account_payment SET state = 'in_process' WHERE id IN (7, 8);
	UPDATE public.account_payment SET state = 'paid' WHERE id = 7;
}, 'odoo confirms an inbound and an outbound payment, then reconciles the first',
	connstr => $as_odoo);

WaTest::psql_ok($node, q{
	INSERT INTO public.calendar_event (id, name, start, stop, allday, location, active)
	VALUES (5, 'Consulta de seguimiento', '2025-03-20 16:00:00', '2025-03-20 16:30:00', false,
			'Av. Reforma 222, CDMX', true);
	INSERT INTO public.calendar_attendee (id, event_id, partner_id, state, common_name)
	VALUES (50, 5, 10, 'needsAction', 'Ana García'),
		   (51, 5, 13, 'accepted', 'João Silva');
	UPDATE public.calendar_attendee SET state = 'accepted' WHERE id = 50;
}, 'odoo books an appointment with two attendees', connstr => $as_odoo);

WaTest::psql_ok($node, q{
	INSERT INTO public.helpdesk_ticket (id, name, ticket_ref, partner_id, team_id, stage_id, company_id, active)
	VALUES (9, 'La factura no llegó', '00031', 10, 1, 1, 1, true);
	UPDATE public.helpdesk_ticket SET stage_id = 2 WHERE id = 9;
	UPDATE public.helpdesk_ticket SET stage_id = 3 WHERE id = 9;
}, 'odoo moves a ticket through In Progress to Solved', connstr => $as_odoo);

WaTest::psql_is($node, q{
	SELECT string_agg(m.dedupe_key || ' ' || m.state || ' ' || coalesce(m.recipient, '-') || ' '
		|| (m.payload #>> '{template,language,code}') || ' ' || CASE WHEN m.state = 'failed' THEN m.error_title ELSE coalesce((
			SELECT string_agg(coalesce(p->>'parameter_name', '') || '=' || (p->>'text'), ' | ' ORDER BY o)
			  FROM jsonb_array_elements(m.payload #> '{template,components,0,parameters}')
				   WITH ORDINALITY AS t(p, o)), '') END, E'\n' ORDER BY m.id)
	  FROM whatsapp.messages m;
}, "stock.picking:1:delivery_done queued +525512345678 es_MX =Ana García | =WH/OUT/00012 | =Órdenes de entrega | =1Z999AA10123456784 | =14/03/2025 12:30
stock.picking:3:delivery_done failed - es_MX stock.picking 3 has no partner (partner_id is empty)
account.payment:7:payment_received queued +525512345678 es_MX ref=PBNK1/2025/00007 | amount=1160.00 | currency=MXN | customer=Ana García
calendar.attendee:51:appointment_booked queued +5511912345678 pt_BR =João Silva | =Consulta de seguimiento | =20/03/2025 16:00 | =Av. Reforma 222, CDMX
calendar.attendee:50:appointment_booked queued +525512345678 es_MX =Ana García | =Consulta de seguimiento | =20/03/2025 10:00 | =Av. Reforma 222, CDMX
helpdesk.ticket:9:ticket_solved queued +525512345678 es_MX =Ana García | =00031 | =Resuelto",
	'one message per record entering the rule, with the values of its field paths', dbname => 'odoo18');

# ---- wa_odoo_rule_preview: what a rule would send for a record now ----
WaTest::psql_is($node, q{
	SELECT p->>'fires', p->>'why_not', p->>'recipient', p->'values'->>'stage_id'
	  FROM whatsapp.wa_odoo_rule_preview('ticket_solved', 9) p;
	SELECT p->>'fires', p->>'why_not', p->'values'->>'name'
	  FROM whatsapp.wa_odoo_rule_preview('delivery_done', 2) p;
	SELECT p->>'fires', p->>'why_not'
	  FROM whatsapp.wa_odoo_rule_preview('payment_received', 8) p;
}, "true||+525512345678|Resuelto
false|state of stock.picking 2 is not done|WH/OUT/00013
false|the condition does not hold for account.payment 8",
	'wa_odoo_rule_preview: a record that holds the rule, one that does not, a condition that does not',
	connstr => $as_admin);
WaTest::psql_is($node, q{SELECT count(*) FROM whatsapp.messages WHERE dedupe_key LIKE 'stock.picking:2:%'}, '0',
	'the preview records nothing', dbname => 'odoo18');

# ---- Odoo 16: the payment's state is its move's ----
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule('payment_received', 'account_move', 'payment_receipt',
		condition => $$state = 'posted' AND payment_id IS NOT NULL$$, account => 'mx',
		params => '["partner_id.name", "name", "payment_id.amount"]');
}, 'Odoo 16: the payment rule is on account_move, the payment through payment_id',
	dbname => 'odoo16');
WaTest::psql_ok($node, q{
	BEGIN;
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, amount_total)
	VALUES (70, 2, 1, 10, 10, 3, '/', 'draft', 'entry', '2025-03-14', 1160.00),
		   (71, 2, 1, 10, 10, 3, 'INV/2025/00071', 'draft', 'out_invoice', '2025-03-14', 99.00);
	INSERT INTO public.account_payment (id, move_id, payment_type, partner_type, amount, currency_id, partner_id)
	VALUES (7, 70, 'inbound', 'customer', 1160.00, 3, 10);
	UPDATE public.account_move SET payment_id = 7 WHERE id = 70;
	COMMIT;
	BEGIN;
	UPDATE public.account_move SET state = 'posted', name = 'PBNK1/2025/00007' WHERE id = 70;
	UPDATE public.account_move SET state = 'posted' WHERE id = 71;
	COMMIT;
}, "Odoo 16: a payment's move and an invoice posted", connstr => $node->connstr('odoo16') . ' user=odoo');
WaTest::psql_is($node, q{
	SELECT string_agg(dedupe_key || ' ' || state || ' ' ||
		(SELECT string_agg(p->>'text', ' | ') FROM jsonb_array_elements(payload #> '{template,components,0,parameters}') p),
		E'\n' ORDER BY id)
	  FROM whatsapp.messages;
}, 'account.move:70:payment_received queued Ana García | PBNK1/2025/00007 | 1160.00',
	'Odoo 16: the payment receipt, with the name the move got at posting', dbname => 'odoo16');

# ---- what wa_odoo_rule refuses ----
my @bad = (
	[ q{condition => $$state = 'done') FROM pg_authid WHERE (true$$}, 'must be one SQL expression' ],
	[ q{condition => $$state = 'done'; DROP TABLE public.res_partner$$}, 'syntax error at or near ";"' ],
	[ q{condition => $$EXISTS (SELECT 1 FROM pg_authid)$$}, 'may not contain a subquery' ],
	[ q{condition => $$no_such_column = 1$$}, 'no_such_column' ],
	[ q{state_value => 'done', params => '["partner_id.no_such_field"]'}, 'table public.res_partner has no column no_such_field' ],
	[ q{state_value => 'done', partner_field => 'picking_type_id'}, 'leads to stock_picking_type, not res_partner' ],
	[ q{state_value => 'done', params => '["name.foo"]'}, 'stock_picking.name is not a many2one' ],
	[ q{state_value => 'done', condition => 'true'}, 'exactly one of them' ],
);
for my $b (@bad)
{
	my ($rc, $out, $err) = WaTest::run_psql($node,
		"SELECT whatsapp.wa_odoo_rule('bad_rule', 'stock_picking', 'x', $b->[0], account => 'mx')",
		connstr => $as_admin);
	like($err, qr/\Q$b->[1]\E/, "wa_odoo_rule refuses $b->[0]");
}
WaTest::psql_is($node, q{SELECT count(*) FROM whatsapp.odoo_model_rule WHERE name = 'bad_rule'}, '0',
	'no rule was made of them', dbname => 'odoo18');
{
	my ($rc, $out, $err) = WaTest::run_psql($node,
		q{SELECT whatsapp.wa_odoo_rule('x', 'stock_picking', 'x', state_value => 'done', account => 'mx')},
		connstr => $as_odoo);
	like($err, qr/permission denied for function wa_odoo_rule/, "Odoo's role may not make a rule");
}

# ---- Odoo's upgrades are not blocked: ALTER and DROP COLUMN with the rules on ----
WaTest::psql_ok($node, q{
	ALTER TABLE public.stock_picking ALTER COLUMN state TYPE text;
	ALTER TABLE public.helpdesk_ticket ALTER COLUMN stage_id TYPE bigint;
	ALTER TABLE public.stock_picking DROP COLUMN carrier_tracking_ref;
	INSERT INTO public.stock_picking (id, name, state, move_type, partner_id, picking_type_id,
		company_id, scheduled_date)
	VALUES (4, 'WH/OUT/00014', 'assigned', 'direct', 10, 2, 1, '2025-03-14 15:00');
	UPDATE public.stock_picking SET state = 'done', date_done = '2025-03-14 19:00:00' WHERE id = 4;
}, "odoo retypes and drops columns the rules read, with the rules on", connstr => $as_odoo);
WaTest::psql_is($node, q{
	SELECT state || ' ' || error_title FROM whatsapp.messages WHERE dedupe_key = 'stock.picking:4:delivery_done';
}, 'failed parameter carrier_tracking_ref: table stock_picking has no column carrier_tracking_ref',
	'a parameter whose column was dropped: the message is recorded as failed, the commit goes through',
	dbname => 'odoo18');

# ---- the trust boundary ----
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
	-- an index expression on the rule's table
	CREATE INDEX stock_picking_spy ON public.stock_picking ((name || public.f('index on stock_picking')));
	-- a view in place of a table on a path (the foreign key still names the table)
	ALTER TABLE public.stock_picking_type RENAME TO stock_picking_type_real;
	CREATE VIEW public.stock_picking_type AS
		SELECT id, CASE WHEN public.spy('view stock_picking_type') IS NOT NULL THEN name END AS name,
			   code, sequence_code, company_id, active
		  FROM public.stock_picking_type_real;
	-- a trigger on the rule's table
	CREATE FUNCTION public.spy_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.spy('trigger on ' || TG_TABLE_NAME); RETURN NULL; END $$;
	CREATE TRIGGER spy AFTER UPDATE ON public.stock_picking
		FOR EACH ROW EXECUTE FUNCTION public.spy_trigger();
}, 'odoo plants the spy: an index expression, a view on a path, a trigger', connstr => $as_odoo);

# the admin's condition calls the spy: it must run as odoo, whoever commits
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule('ticket_urgent', 'helpdesk_ticket', 'ticket_urgent',
		condition => $$priority = '3' AND public.spy('condition') IS NOT NULL$$, account => 'mx',
		params => '["partner_id.name", "name"]');
	SELECT whatsapp.wa_odoo_rule('delivery_done', 'stock_picking', 'delivery_done',
		state_value => 'done', account => 'mx', language => 'es_MX',
		params => '["partner_id.name", "name", "picking_type_id"]');
}, 'a rule whose condition reaches code of Odoo\'s role; delivery_done without the dropped column',
	connstr => $as_admin);

my $log_offset = -s $node->logfile;
# a superuser commits (a migration script, a psql session): the extension
# must still run nothing of odoo's with a superuser's rights
WaTest::psql_ok($node, q{
	ALTER ROLE odoo NOSUPERUSER;
	UPDATE public.helpdesk_ticket SET priority = '3' WHERE id = 9;
}, 'the ticket becomes urgent, committed by a superuser', dbname => 'odoo18');
WaTest::psql_ok($node, q{
	INSERT INTO public.stock_picking (id, name, state, move_type, partner_id, picking_type_id,
		company_id, scheduled_date)
	VALUES (5, 'WH/OUT/00015', 'assigned', 'direct', 10, 2, 1, '2025-03-14 15:00');
	UPDATE public.stock_picking SET state = 'done' WHERE id = 5;
}, 'a delivery validated by odoo, through the planted view', connstr => $as_odoo);

my @spy = grep { /SPY / } split /\n/, slurp_file($node->logfile, $log_offset);
my @cond = grep { /SPY condition/ } @spy;
ok(@cond >= 1, 'the condition ran') or diag(join("\n", @spy));
is_deeply([ grep { !/ran as odoo \(superuser: f\)/ } @spy ], [],
	'every spy line shows odoo, not a superuser (the condition ran as the table\'s owner)')
	or diag(join("\n", @spy));
ok(!grep(/view stock_picking_type/, @spy),
	'the view in place of stock_picking_type was never read (the foreign key names the table)');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'odoo'}), 'f',
	'odoo is still not a superuser');
WaTest::psql_is($node, q{
	SELECT string_agg(dedupe_key || ' ' || state || ' ' || coalesce(error_title, '')
		|| (payload #>> '{template,components,0,parameters,-1,text}'), E'\n' ORDER BY id)
	  FROM whatsapp.messages WHERE dedupe_key IN ('helpdesk.ticket:9:ticket_urgent', 'stock.picking:5:delivery_done');
}, "helpdesk.ticket:9:ticket_urgent queued La factura no llegó
stock.picking:5:delivery_done queued Órdenes de entrega",
	'the urgent ticket and the delivery are queued',
	dbname => 'odoo18');

# ---- a condition that fails: false, with a warning; Odoo's commit goes through ----
{
	my ($rc, $out, $err) = WaTest::run_psql($node, q{
		ALTER TABLE public.helpdesk_ticket DROP COLUMN priority;
		INSERT INTO public.helpdesk_ticket (id, name, ticket_ref, partner_id, team_id, stage_id, company_id, active)
		VALUES (10, 'Cambio de domicilio', '00032', 10, 1, 1, 1, true);
		UPDATE public.helpdesk_ticket SET stage_id = 2 WHERE id = 10;
		SELECT count(*) FROM public.helpdesk_ticket WHERE id = 10 AND stage_id = 2;
	}, connstr => $as_odoo);
	is($out, '1', 'odoo drops the column the condition reads, and its writes commit');
	like($err, qr/the condition of an Odoo rule on helpdesk_ticket failed, so it counts as false: column "priority" does not exist/,
		'with a warning that says which condition failed and why');
}

# ---- wa_odoo_rule_drop ----
WaTest::psql_is($node, q{
	SELECT whatsapp.wa_odoo_rule_drop('delivery_done');
	SELECT count(*) FROM pg_trigger WHERE tgname = 'whatsapp_rule_delivery_done';
}, "t\n0", 'wa_odoo_rule_drop removes the rule and its trigger', connstr => $as_admin);
WaTest::psql_is($node, q{
	SELECT string_agg(function || ': ' || target, E'\n' ORDER BY id)
	  FROM whatsapp.audit WHERE function LIKE 'wa_odoo_rule%' AND target LIKE 'rule delivery_done%';
}, "wa_odoo_rule: rule delivery_done on stock_picking, every company, template delivery_done
wa_odoo_rule: rule delivery_done on stock_picking, every company, template delivery_done
wa_odoo_rule_drop: rule delivery_done", 'whatsapp.audit has a row for each wa_odoo_rule and wa_odoo_rule_drop',
	dbname => 'odoo18');

done_testing();
