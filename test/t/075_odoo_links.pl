# Links that work (issue 12, item 3).
#
# 1. The public base URL of a document's links, as Odoo's get_base_url
#    picks it (addons/website/models/ir_model.py): the document's
#    website_id and its domain, else its company's website (the stored
#    res_company.website_id), else web.base.url; a rule's own "base_url"
#    wins over all.  Fixtures with websites (test/odoo/website.sql) and
#    without.
# 2. wa_odoo_enable and wa_odoo_preview warn about the URL the links will
#    use: web.base.url not frozen, http, localhost, a private address, and
#    a website domain of that kind.
# 3. The missing access_token, written at commit as the table's owner:
#    when the owner may not update the table, or the update changes no row
#    (a trigger or a rule of the owner swallows it), the message fails with
#    the reason instead of carrying a dead link; and the write runs as the
#    owner even when a superuser commits.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use WaTest;

my $repo = WaTest::repo();
my $node = WaTest::node('links', 'whatsapp.poll_interval' => '60s');

WaTest::psql_ok($node, q{CREATE ROLE odoo LOGIN}, "Odoo's role");

sub odoo_db
{
	my ($db, $version, $website) = @_;
	WaTest::psql_ok($node, "CREATE DATABASE $db OWNER odoo", "database $db");
	my $web = $website ? "\\i $repo/test/odoo/website.sql" : '';
	WaTest::psql_ok($node, qq{
		CREATE EXTENSION whatsapp CASCADE;
		SELECT whatsapp.wa_account_set('mx', '1099887766', 'EAAlinks', max_mps => 1000);
		SET ROLE odoo;
		\\set ECHO none
		\\o /dev/null
		\\i $repo/test/odoo/odoo$version.sql
		\\i $repo/test/odoo/data.sql
		$web
		\\o
		RESET ROLE;
		GRANT whatsapp_sender, whatsapp_reader TO odoo;
	}, "$db: the Odoo $version fixture" . ($website ? ' with websites' : ''), dbname => $db);
	return $node->connstr($db) . ' user=odoo';
}

sub order_sql
{
	my ($id, $company, $website, $token) = @_;
	my $w = defined $website ? $website : 'NULL';
	my $t = defined $token ? "'$token'" : 'NULL';
	my $ws = defined $website ? ', website_id' : '';
	my $wv = defined $website ? ", $w" : '';
	return qq{
	INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
		currency_id, name, state, date_order, amount_total, access_token$ws)
	VALUES ($id, $company, 10, 10, 10, 3, 'S0' || $id, 'sale', now() AT TIME ZONE 'UTC', 100, $t$wv);};
}

sub link_of
{
	my ($db, $id) = @_;
	return qq{SELECT payload #>> '{template,components,0,parameters,1,text}'
	  FROM whatsapp.messages WHERE dedupe_key = 'sale.order:$id:sale_order_confirmed'};
}

# --- 1. Which base URL ------------------------------------------------------
my $as_odoo = odoo_db('web', 18, 1);
WaTest::psql_ok($node, q{
	INSERT INTO public.website (id, name, sequence, domain, company_id) VALUES
		(1, 'Tienda', 10, 'https://tienda.miempresa.example.mx', 1),
		(2, 'Mayoreo', 20, 'https://mayoreo.miempresa.example.mx', 1),
		(3, 'Intranet', 30, NULL, 1),
		(4, 'Tienda ES', 10, 'https://tienda.miempresa.example.es', 2);
	UPDATE public.res_company SET website_id = CASE id WHEN 1 THEN 1 END;
}, 'websites: two with domains and one without for the Mexican company, one for the Spanish', connstr => $as_odoo);
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "portal_url"]');
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'{"body": ["partner_name", "portal_url"], "base_url": "https://portal.miempresa.example.es"}',
		company_id => 2);
}, 'rules: one for all companies, one with its own base_url for company 2', dbname => 'web');
WaTest::psql_ok($node, join('',
		order_sql(1, 1, 2, 'a1a1a1a1-0000-4000-8000-000000000001'),
		order_sql(2, 1, undef, 'a1a1a1a1-0000-4000-8000-000000000002'),
		order_sql(3, 1, 3, 'a1a1a1a1-0000-4000-8000-000000000003'),
		order_sql(4, 2, 4, 'a1a1a1a1-0000-4000-8000-000000000004')),
	'four confirmed orders', connstr => $as_odoo);
WaTest::psql_is($node, link_of('web', 1),
	'https://mayoreo.miempresa.example.mx/my/orders/1?access_token=a1a1a1a1-0000-4000-8000-000000000001',
	"an order from a website: that website's domain", dbname => 'web');
WaTest::psql_is($node, link_of('web', 2),
	'https://tienda.miempresa.example.mx/my/orders/2?access_token=a1a1a1a1-0000-4000-8000-000000000002',
	"an order without website: its company's website", dbname => 'web');
WaTest::psql_is($node, link_of('web', 3),
	'https://tienda.miempresa.example.mx/my/orders/3?access_token=a1a1a1a1-0000-4000-8000-000000000003',
	"an order from a website without domain: its company's website", dbname => 'web');
WaTest::psql_is($node, link_of('web', 4),
	'https://portal.miempresa.example.es/my/orders/4?access_token=a1a1a1a1-0000-4000-8000-000000000004',
	"the rule's base_url wins over the website", dbname => 'web');
# A company without website, a document without: web.base.url.
WaTest::psql_ok($node, q{
	UPDATE public.res_company SET website_id = NULL;
} . order_sql(5, 1, undef, 'a1a1a1a1-0000-4000-8000-000000000005'),
	'an order of a company without website', connstr => $as_odoo);
WaTest::psql_is($node, link_of('web', 5),
	'https://erp.example.com/my/orders/5?access_token=a1a1a1a1-0000-4000-8000-000000000005',
	'no website: web.base.url', dbname => 'web');
# An invoice carries the website of its orders (website_sale).
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
		'["partner_name", "portal_url"]');
	INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id,
		currency_id, name, state, move_type, date, invoice_date, amount_total, amount_residual,
		access_token, website_id)
	VALUES (1, 1, 1, 10, 10, 3, 'INV/2025/00001', 'posted', 'out_invoice', current_date,
			current_date, 100, 100, 'b2b2b2b2-0000-4000-8000-000000000001', 2);
}, 'an invoice of a website order', dbname => 'web');
WaTest::psql_is($node, q{
	SELECT payload #>> '{template,components,0,parameters,1,text}'
	  FROM whatsapp.messages WHERE dedupe_key = 'account.move:1:invoice_posted'},
	'https://mayoreo.miempresa.example.mx/my/invoices/1?access_token=b2b2b2b2-0000-4000-8000-000000000001',
	"the invoice's link is on its website's domain", dbname => 'web');
WaTest::psql_is($node, q{
	SELECT p ->> 'base_url_source' || ' ' || (p #>> '{links,page}')
	  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 1) p},
	'website 2 https://mayoreo.miempresa.example.mx/my/orders/1?access_token=a1a1a1a1-0000-4000-8000-000000000001',
	'the preview says where the base URL comes from', dbname => 'web');

# Without the website module: web.base.url.
my $as_odoo_plain = odoo_db('plain', 17, 0);
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "portal_url"]');
}, 'a rule without base_url', dbname => 'plain');
WaTest::psql_ok($node, order_sql(1, 1, undef, 'c3c3c3c3-0000-4000-8000-000000000001'),
	'an order', connstr => $as_odoo_plain);
WaTest::psql_is($node, link_of('plain', 1),
	'https://erp.example.com/my/orders/1?access_token=c3c3c3c3-0000-4000-8000-000000000001',
	'without websites: web.base.url', dbname => 'plain');

# --- 2. Warnings -------------------------------------------------------------
my ($rc, $out, $err) = WaTest::run_psql($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "portal_url"]');
}, dbname => 'plain');
is($rc, 0, 'enable with a frozen public https web.base.url');
unlike($err, qr/WARNING/, '... warns of nothing');
WaTest::psql_ok($node, q{
	DELETE FROM public.ir_config_parameter WHERE key = 'web.base.url.freeze';
	UPDATE public.ir_config_parameter SET value = 'http://192.168.10.20:8069' WHERE key = 'web.base.url';
}, 'web.base.url unfrozen, rewritten to an internal http address', connstr => $as_odoo_plain);
($rc, $out, $err) = WaTest::run_psql($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "portal_url"]');
}, dbname => 'plain');
like($err, qr/WARNING:.*web\.base\.url\.freeze is not set.*not https.*host "192\.168\.10\.20" is not a public name/s,
	'enable warns: not frozen, http, private address');
WaTest::psql_like($node, q{SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 1) ->> 'link_warning'},
	qr/web\.base\.url\.freeze is not set.*not https.*192\.168\.10\.20/,
	'the preview warns the same', dbname => 'plain');
# A website whose domain is plain http: its documents' links warn, and
# enable names it; a frozen web.base.url does not matter for them.
WaTest::psql_ok($node, q{
	UPDATE public.website SET domain = 'http://localhost:8069' WHERE id = 2;
}, 'website 2 on http://localhost', connstr => $as_odoo);
($rc, $out, $err) = WaTest::run_psql($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "portal_url"]');
}, dbname => 'web');
like($err, qr/WARNING:.*website 2 \(http:\/\/localhost:8069\).*not https.*"localhost" is not a public name/s,
	'enable warns about the website domain');
WaTest::psql_like($node, q{SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 1) ->> 'link_warning'},
	qr/^the base URL is not https.*"localhost" is not a public name/,
	'the preview of its order warns about its domain, not about the freeze', dbname => 'web');
WaTest::psql_is($node, q{SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 4) ->> 'link_warning'},
	'', "an order on the rule's base_url: no warning", dbname => 'web');

# --- 3. The access_token write ----------------------------------------------
my $as_odoo_tok = odoo_db('tok', 19, 0);
WaTest::psql_ok($node, q{
	SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
		'["partner_name", "portal_url"]');
	CREATE TABLE public.token_spy (who text, super boolean, at_commit_of text);
	GRANT INSERT ON public.token_spy TO PUBLIC;
}, 'a rule with a link; a log of who writes tokens', dbname => 'tok');
# Odoo's role puts a trigger on its own table that logs every write of a
# token: who runs it, and whether that role is a superuser.
WaTest::psql_ok($node, q{
	CREATE FUNCTION public.log_token() RETURNS trigger LANGUAGE plpgsql AS $f$
	BEGIN
		IF NEW.access_token IS DISTINCT FROM OLD.access_token THEN
			INSERT INTO public.token_spy
			SELECT current_user, r.rolsuper, session_user FROM pg_catalog.pg_roles r
			 WHERE r.rolname = current_user;
		END IF;
		RETURN NEW;
	END $f$;
	CREATE TRIGGER log_token BEFORE UPDATE ON public.sale_order FOR EACH ROW
		EXECUTE FUNCTION public.log_token();
}, "the spy trigger of Odoo's role", connstr => $as_odoo_tok);
WaTest::psql_ok($node, order_sql(1, 1, undef, undef),
	'a superuser confirms an order without token', dbname => 'tok');
WaTest::psql_is($node, q{
	SELECT string_agg(who || ' ' || super || ' ' || (at_commit_of = session_user), ','),
		   (SELECT state FROM whatsapp.messages WHERE dedupe_key = 'sale.order:1:sale_order_confirmed'),
		   (SELECT (SELECT payload #>> '{template,components,0,parameters,1,text}' FROM whatsapp.messages
					 WHERE dedupe_key = 'sale.order:1:sale_order_confirmed')
				   = 'https://erp.example.com/my/orders/1?access_token=' || access_token
			  FROM public.sale_order WHERE id = 1)
	  FROM public.token_spy},
	'odoo false true|queued|t',
	'the token is written by the table owner, never the superuser who committed; the link carries it',
	dbname => 'tok');

# The owner may not update its table: the message fails, nothing is written.
WaTest::psql_ok($node, q{REVOKE UPDATE ON public.sale_order FROM odoo;}
	  . order_sql(2, 1, undef, undef),
	'the owner revokes its own UPDATE; an order without token', connstr => $as_odoo_tok);
WaTest::psql_is($node, q{
	SELECT state || ' | ' || failure_type || ' | ' || error_title FROM whatsapp.messages
	 WHERE dedupe_key = 'sale.order:2:sale_order_confirmed';
	SELECT count(*) FROM public.sale_order WHERE id = 2 AND access_token IS NOT NULL;},
	'failed | template | parameter portal_url: sale.order 2 has no access_token yet, and the whatsapp extension cannot create one: its owner odoo may not update sale_order.access_token'
	  . "\n0",
	'an owner without UPDATE: failed with the reason, no token', dbname => 'tok');
WaTest::psql_ok($node, q{GRANT UPDATE ON public.sale_order TO odoo}, 'UPDATE granted again',
	connstr => $as_odoo_tok);

# A trigger of the owner that swallows the update: no row changes.
WaTest::psql_ok($node, q{
	CREATE FUNCTION public.keep_token() RETURNS trigger LANGUAGE plpgsql AS $f$
	BEGIN
		IF NEW.access_token IS DISTINCT FROM OLD.access_token THEN
			RETURN NULL;
		END IF;
		RETURN NEW;
	END $f$;
	CREATE TRIGGER keep_token BEFORE UPDATE ON public.sale_order FOR EACH ROW
		EXECUTE FUNCTION public.keep_token();
} . order_sql(3, 1, undef, undef), 'a trigger that drops token writes; an order without token',
	connstr => $as_odoo_tok);
WaTest::psql_is($node, q{
	SELECT state || ' | ' || failure_type || ' | ' || error_title FROM whatsapp.messages
	 WHERE dedupe_key = 'sale.order:3:sale_order_confirmed';
	SELECT count(*) FROM public.sale_order WHERE id = 3 AND access_token IS NOT NULL;},
	'failed | template | sale.order 3 has no access_token, and writing the new one changed no row (a rule or trigger of the table\'s owner)'
	  . "\n0",
	'a swallowed update: failed with the reason, no dead link', dbname => 'tok');
WaTest::psql_ok($node, q{DROP TRIGGER keep_token ON public.sale_order}, 'trigger dropped',
	connstr => $as_odoo_tok);

# A rule of the owner that turns the update into nothing.
WaTest::psql_ok($node, q{
	CREATE RULE no_token AS ON UPDATE TO public.sale_order
		WHERE NEW.access_token IS DISTINCT FROM OLD.access_token DO INSTEAD NOTHING;
} . order_sql(4, 1, undef, undef), 'a rule that drops token writes; an order without token',
	connstr => $as_odoo_tok);
WaTest::psql_is($node, q{
	SELECT state || ' | ' || failure_type FROM whatsapp.messages
	 WHERE dedupe_key = 'sale.order:4:sale_order_confirmed';
	SELECT count(*) FROM public.sale_order WHERE id = 4 AND access_token IS NOT NULL;},
	"failed | template\n0", 'an update turned into nothing by a rule: failed, no token', dbname => 'tok');
WaTest::psql_ok($node, q{DROP RULE no_token ON public.sale_order}, 'rule dropped',
	connstr => $as_odoo_tok);

# Row security that applies to the owner too (FORCE), hiding the row from
# the write.
WaTest::psql_ok($node, q{
	ALTER TABLE public.sale_order ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
	CREATE POLICY see_all ON public.sale_order FOR SELECT USING (true);
	CREATE POLICY insert_all ON public.sale_order FOR INSERT WITH CHECK (true);
	CREATE POLICY update_tokenless_never ON public.sale_order FOR UPDATE USING (access_token IS NOT NULL);
} . order_sql(5, 1, undef, undef), 'forced row security that hides token-less rows from updates',
	connstr => $as_odoo_tok);
WaTest::psql_like($node, q{
	SELECT state || ' | ' || error_title FROM whatsapp.messages
	 WHERE dedupe_key = 'sale.order:5:sale_order_confirmed'},
	qr/^failed \| .*public\.sale_order forces row level security/,
	'forced row security: failed with the reason', dbname => 'tok');
WaTest::psql_is($node, q{SELECT count(*) FROM public.token_spy}, '1',
	'only the first, successful write ever reached the table', dbname => 'tok');

done_testing();
