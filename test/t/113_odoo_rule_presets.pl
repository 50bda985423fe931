# The four Odoo events are presets of the rules on any model (issue 12,
# item 5; docs/odoo-rules.md, "Parameter kinds and the events' options"):
# a rule of wa_odoo_rule has what the events have.  Money in the record's
# currency ({"amount": path}) on any model; on sale_order and account_move
# the events' words ({"word": ...}), the portal link with the access_token
# created at commit as the table's owner, the document header and
# base_url.  A rule on sale_order with the words of sale_order_confirmed
# sends the very message the event sends.  Then what wa_odoo_rule refuses.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $node = WaTest::node('presets', 'whatsapp.poll_interval' => '60s');

WaTest::psql_ok($node, q{
	CREATE ROLE odoo LOGIN NOSUPERUSER;
	CREATE ROLE wa_admin LOGIN NOSUPERUSER;
	CREATE DATABASE odoo18 OWNER odoo;
}, "Odoo's role, an admin role, an Odoo 18 database");
WaTest::psql_ok($node, qq{
	CREATE EXTENSION whatsapp CASCADE;
	SELECT whatsapp.wa_account_set('mx', '1099887766', 'EAApresets18', max_mps => 1000);
	GRANT whatsapp_admin TO wa_admin;
	SET ROLE odoo;
	\\set ECHO none
	\\o /dev/null
	\\i $repo/test/odoo/odoo18.sql
	\\i $repo/test/odoo/data.sql
	\\i $repo/test/odoo/models.sql
	\\i $repo/test/odoo/payment18.sql
	\\o
	RESET ROLE;
	GRANT whatsapp_sender, whatsapp_reader TO odoo;
}, 'Odoo 18 fixture with payments, owned by odoo', dbname => 'odoo18');

my $as_odoo = $node->connstr('odoo18') . ' user=odoo';
my $as_admin = $node->connstr('odoo18') . ' user=wa_admin';

# ---- money on any model: the payment receipt with its amount as Odoo prints it ----
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule('payment_received', 'account_payment', 'payment_receipt',
		condition => $$state IN ('in_process', 'paid') AND payment_type = 'inbound'$$,
		account => 'mx', language => 'es_MX',
		params => '{"customer": "partner_id.name", "amount": {"amount": "amount"}, "ref": "name"}');
}, 'a payment rule whose amount is money in the payment currency', connstr => $as_admin);
WaTest::psql_ok($node, q{
	INSERT INTO public.account_payment (id, name, state, payment_type, partner_type, amount,
		currency_id, partner_id, company_id, date)
	VALUES (7, 'PBNK1/2025/00007', 'draft', 'inbound', 'customer', 12345.5, 3, 10, 1, '2025-03-14'),
		   (8, 'PBNK1/2025/00008', 'draft', 'inbound', 'customer', 980, 2, 14, 1, '2025-03-14'),
		   (9, 'PBNK1/2025/00009', 'draft', 'inbound', 'customer', 15, NULL, 10, 1, '2025-03-14');
	UPDATE public.account_payment SET state = 'in_process' WHERE id IN (7, 8, 9);
}, 'odoo confirms three customer payments: in MXN, in EUR, and one without currency',
	connstr => $as_odoo);
WaTest::psql_is($node, q{
	SELECT string_agg(dedupe_key || ' ' || state || ' ' || CASE WHEN state = 'failed' THEN error_title ELSE
		(SELECT string_agg((p->>'parameter_name') || '=' || (p->>'text'), ' | ' ORDER BY o)
		   FROM jsonb_array_elements(payload #> '{template,components,0,parameters}')
				WITH ORDINALITY AS t(p, o)) END, E'\n' ORDER BY id)
	  FROM whatsapp.messages;
}, "account.payment:7:payment_received queued ref=PBNK1/2025/00007 | amount=\$\xc2\xa012,345.50 | customer=Ana García
account.payment:8:payment_received queued ref=PBNK1/2025/00008 | amount=980,00\xc2\xa0€ | customer=Lucía Pérez
account.payment:9:payment_received failed parameter amount amount: account.payment 9 has no currency (currency_id is empty or names no res_currency row)",
	"amounts in each payment's currency and its partner's language; no currency is a failure",
	dbname => 'odoo18');

# ---- a rule on sale_order with the words of sale_order_confirmed: the same message ----
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'{"body": ["partner_name", "document_name", "amount_total", "portal_url"], "header": "portal_pdf"}');
}, 'the preset sale_order_confirmed, with a header and a portal link', dbname => 'odoo18');
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule('order_ready', 'sale_order', 'order_confirmed',
		state_value => 'sale', account => 'mx', language => 'es_MX',
		params => '{"header": "portal_pdf", "c": {"word": "partner_name"}, "d": {"word": "document_name"},
					"t": {"word": "amount_total"}, "u": {"word": "portal_url"}}');
}, 'a rule on sale_order with the same words, the header and a portal link', connstr => $as_admin);
WaTest::psql_ok($node, q{
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
		currency_id, name, state, date_order, amount_total, access_token)
	VALUES (41, 1, 10, 10, 10, 3, 'S00041', 'draft', now() AT TIME ZONE 'UTC', 1160.16, NULL);
	BEGIN;
	UPDATE public.sale_order SET state = 'sale' WHERE id = 41;
	UPDATE public.sale_order SET amount_total = 2320.32 WHERE id = 41;
	COMMIT;
}, 'odoo confirms an order that has no access_token yet', connstr => $as_odoo);
WaTest::psql_is($node, q{
	SELECT string_agg(dedupe_key || ' ' || state, E'\n' ORDER BY dedupe_key)
	  FROM whatsapp.messages WHERE dedupe_key LIKE 'sale.order:41:%';
}, "sale.order:41:order_ready queued
sale.order:41:sale_order_confirmed queued", 'the event and the rule each queue a message', dbname => 'odoo18');
my $token = $node->safe_psql('odoo18', q{SELECT access_token FROM public.sale_order WHERE id = 41});
like($token, qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
	'the order got one uuid4 access_token at commit');
WaTest::psql_is($node, q{
	SELECT (SELECT payload #> '{template,components}' FROM whatsapp.messages
			 WHERE dedupe_key = 'sale.order:41:sale_order_confirmed')
		 = jsonb_set((SELECT payload #> '{template,components}' FROM whatsapp.messages
					   WHERE dedupe_key = 'sale.order:41:order_ready'),
					 '{1,parameters}',
					 (SELECT jsonb_agg(p - 'parameter_name' ORDER BY o)
						FROM whatsapp.messages m,
							 jsonb_array_elements(m.payload #> '{template,components,1,parameters}')
							 WITH ORDINALITY AS t(p, o)
					   WHERE m.dedupe_key = 'sale.order:41:order_ready'));
}, 't', "the rule's header and body are the event's (named instead of positional)", dbname => 'odoo18');
WaTest::psql_is($node, qq{
	SELECT (payload #>> '{template,components,0,type}') || ' ' ||
		   (payload #>> '{template,components,0,parameters,0,document,link}') || ' ' ||
		   string_agg(p->>'text', ' | ' ORDER BY o)
	  FROM whatsapp.messages m,
		   jsonb_array_elements(m.payload #> '{template,components,1,parameters}') WITH ORDINALITY AS t(p, o)
	 WHERE dedupe_key = 'sale.order:41:order_ready'
	 GROUP BY payload;
}, "header https://erp.example.com/my/orders/41?access_token=$token&report_type=pdf&download=true "
	. "Ana García | S00041 | \$\xc2\xa02,320.32 | https://erp.example.com/my/orders/41?access_token=$token",
	"the rule's message: the committed total, the links with the token written at commit",
	dbname => 'odoo18');

# ---- the preview of a rule shows its links and the token it would create ----
WaTest::psql_ok($node, q{
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
		currency_id, name, state, date_order, amount_total, access_token)
	VALUES (42, 1, 10, 10, 10, 3, 'S00042', 'draft', now() AT TIME ZONE 'UTC', 99, NULL);
}, 'a draft order without access_token', connstr => $as_odoo);
WaTest::psql_is($node, q{
	SELECT p->>'fires', p->>'why_not', p #>> '{links,page}', p->>'access_token_created_at_commit'
	  FROM whatsapp.wa_odoo_rule_preview('order_ready', 42) p;
}, 'false|state of sale.order 42 is not sale|https://erp.example.com/my/orders/42?access_token=NEW-ACCESS-TOKEN-CREATED-AT-COMMIT|true',
	'the preview: not confirmed yet, the link it would send, the token it would create',
	connstr => $as_admin);
WaTest::psql_is($node, q{SELECT coalesce(access_token, 'none') FROM public.sale_order WHERE id = 42},
	'none', 'the preview writes no token', dbname => 'odoo18');

# ---- what wa_odoo_rule refuses ----
my @bad = (
	[ 'stock_picking', q{'["partner_id.name", {"word": "portal_url"}]'},
	  'the word "portal_url" is for rules on sale_order and account_move' ],
	[ 'stock_picking', q{'{"header": "portal_pdf", "n": "name"}'},
	  '"header" of params is for rules on sale_order and account_move' ],
	[ 'sale_order', q{'[{"word": "invoice_date_due"}]'},
	  '"invoice_date_due" is not available for sale orders' ],
	[ 'sale_order', q{'[{"word": "partner_phone"}]'}, '"partner_phone" is not a parameter word' ],
	[ 'sale_order', q{'[{"amount": "amount_total", "word": "amount_total"}]'},
	  'is neither a field path nor a parameter kind' ],
	[ 'sale_order', q{'[{"money": "amount_total"}]'}, 'is neither a field path nor a parameter kind' ],
	[ 'sale_order', q{'[{"amount": "amount_total.name"}]'}, 'is not a many2one' ],
	[ 'sale_order', q{'{"pdf_wait": "1 hour", "n": "name"}'}, 'need "header": "portal_pdf"' ],
	[ 'sale_order', q{'{"base_url": "http://erp.example.mx", "n": "name"}'}, 'must be an https URL' ],
);
for my $b (@bad)
{
	my ($model, $params, $msg) = @$b;
	my ($rc, $out, $err) = WaTest::run_psql($node, qq{
		SELECT whatsapp.wa_odoo_rule('bad_rule', '$model', 'some_template', state_value => 'done',
			account => 'mx', params => $params)}, connstr => $as_admin);
	like($err, qr/\Q$msg\E/, "wa_odoo_rule refuses $params on $model: $msg");
}

# ---- a kind that cannot be read at commit: a failure, never an error in Odoo's transaction ----
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule('payment_named', 'account_payment', 'payment_receipt',
		state_value => 'paid', account => 'mx', params => '[{"amount": "name"}]');
}, 'an amount on a text column is accepted (the column exists)', connstr => $as_admin);
WaTest::psql_ok($node, q{UPDATE public.account_payment SET state = 'paid' WHERE id = 7},
	'odoo reconciles the payment', connstr => $as_odoo);
WaTest::psql_is($node, q{
	SELECT state || ' ' || error_title FROM whatsapp.messages WHERE dedupe_key = 'account.payment:7:payment_named'},
	'failed parameter amount name: name is not a number (PBNK1/2025/00007)',
	'a path that is not a number: the message is failed, the commit went through', dbname => 'odoo18');

# ---- params edited behind wa_odoo_rule's back: words off sale_order and account_move fail cleanly ----
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_rule('picking_words', 'stock_picking', 'delivery_done',
		state_value => 'done', account => 'mx', params => '["name"]');
	UPDATE whatsapp.odoo_model_rule SET params = '{"header": "portal_pdf", "n": {"word": "portal_url"}}'
	 WHERE name = 'picking_words';
}, 'a superuser puts a word and a header into a rule on stock_picking', dbname => 'odoo18');
WaTest::psql_ok($node, q{
	INSERT INTO public.stock_picking (id, name, state, move_type, partner_id, picking_type_id,
		company_id, scheduled_date)
	VALUES (1, 'WH/OUT/00012', 'done', 'direct', 10, 2, 1, '2025-03-14 15:00');
}, 'odoo validates a picking', connstr => $as_odoo);
WaTest::psql_is($node, q{
	SELECT state || ' ' || error_title FROM whatsapp.messages WHERE dedupe_key = 'stock.picking:1:picking_words'},
	'failed parameter portal_url: the words are for rules on sale_order and account_move',
	'the message is failed with the reason; no link to a page that does not exist', dbname => 'odoo18');

done_testing();
