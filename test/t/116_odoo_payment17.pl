# 116_odoo_payment17.pl: payment receipts on Odoo 17 (issue 12 leftovers).
#
# Odoo 17's account.payment still _inherits account.move (move_id): the
# _inherits and the related name, date and state of account.payment are
# dropped only in 18 (OpenUpgrade's analysis of account 18.0.1.3; its 17.0
# analysis lists no such change).  So on 17 the payment receipt rule is the
# 16 one, on account_move through payment_id (docs/odoo-rules.md), and the
# fixture is payment16.sql on top of the Odoo 17 tables.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $node = WaTest::node('pay17', 'whatsapp.poll_interval' => '60s');

WaTest::psql_ok($node, q{
	CREATE ROLE odoo LOGIN NOSUPERUSER;
	CREATE DATABASE odoo17 OWNER odoo;
}, "Odoo's role and its database");
WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('mx', '1099887766', 'EAApay17', max_mps => 1000);
	SET ROLE odoo;
	\\set ECHO none
	\\o /dev/null
	\\i $repo/test/odoo/odoo17.sql
	\\i $repo/test/odoo/data.sql
	\\i $repo/test/odoo/models.sql
	\\i $repo/test/odoo/payment16.sql
	\\o
	RESET ROLE;
	GRANT whatsapp_sender, whatsapp_reader TO odoo;
}, 'Odoo 17 fixture with the 16/17 account_payment, owned by odoo', dbname => 'odoo17');
is($node->safe_psql('odoo17', q{
	SELECT string_agg(attname, ',' ORDER BY attname) FROM pg_attribute
	 WHERE attrelid = 'public.account_payment'::regclass AND attname IN ('move_id', 'name', 'state')
	   AND NOT attisdropped}), 'move_id', 'account_payment has move_id, and no name or state of its own');

WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule('payment_received', 'account_move', 'payment_receipt',
		condition => $$state = 'posted' AND payment_id IS NOT NULL$$, account => 'mx',
		params => '["partner_id.name", "name", "payment_id.amount"]');
}, 'Odoo 17: the payment rule is on account_move, the payment through payment_id', dbname => 'odoo17');
WaTest::psql_ok($node, q{
	BEGIN;
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, amount_total)
	VALUES (80, 2, 1, 10, 10, 3, '/', 'draft', 'entry', '2025-03-14', 2320.00),
		   (81, 2, 1, 10, 10, 3, 'INV/2025/00081', 'draft', 'out_invoice', '2025-03-14', 99.00);
	INSERT INTO public.account_payment (id, move_id, payment_type, partner_type, amount, currency_id, partner_id)
	VALUES (8, 80, 'inbound', 'customer', 2320.00, 3, 10);
	UPDATE public.account_move SET payment_id = 8 WHERE id = 80;
	COMMIT;
	BEGIN;
	UPDATE public.account_move SET state = 'posted', name = 'PBNK1/2025/00008' WHERE id = 80;
	UPDATE public.account_move SET state = 'posted' WHERE id = 81;
	COMMIT;
}, "Odoo 17: a payment's move and an invoice posted", connstr => $node->connstr('odoo17') . ' user=odoo');
WaTest::psql_is($node, q{
	SELECT string_agg(dedupe_key || ' ' || state || ' ' ||
		(SELECT string_agg(p->>'text', ' | ') FROM jsonb_array_elements(payload #> '{template,components,0,parameters}') p),
		E'\n' ORDER BY id)
	  FROM whatsapp.messages;
}, 'account.move:80:payment_received queued Ana García | PBNK1/2025/00008 | 2320.00',
	'Odoo 17: the payment receipt, the invoice posted beside it sends nothing', dbname => 'odoo17');

done_testing();
