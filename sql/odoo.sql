--
-- odoo: wa_odoo_enable, wa_odoo_disable, wa_odoo_preview and the triggers
-- on Odoo's sale_order and account_move, against the fixture of Odoo's
-- schema in test/odoo (17 first, then 16, 18 and 19).
--
-- The fixture lives in schema public of the regression database and is
-- dropped at the end; the last part drops the extension itself.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS whatsapp CASCADE;
CREATE EXTENSION whatsapp CASCADE;
\set ECHO none
\i test/odoo/drop.sql
\set ECHO all
RESET client_min_messages;

-- Run a statement; show "ok" or its SQLSTATE and message.
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- No-break spaces made visible.
CREATE FUNCTION pg_temp.vis(t text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT replace(replace(t, U&'\00A0', '{nbsp}'), U&'\FEFF', '{zwnbsp}')
$$;

SELECT whatsapp.wa_account_set('mx', '1000000001', 'EAAodoo-regress-mx');
SELECT whatsapp.wa_account_set('es', '1000000002', 'EAAodoo-regress-es');

-- Not an Odoo database: the error names the missing table.
SELECT pg_temp.try($$SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed')$$);
SELECT pg_temp.try($$SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice')$$);
SELECT pg_temp.try($$SELECT whatsapp.wa_odoo_preview('invoice_posted', 1)$$);

-- ---------------------------------------------------------------------
-- Odoo 17
-- ---------------------------------------------------------------------
\set ECHO none
\i test/odoo/odoo17.sql
\o /dev/null
\i test/odoo/data.sql
\o
\set ECHO all
INSERT INTO public.res_partner (id, name, type, commercial_partner_id, country_id, lang, phone, active)
VALUES (20, 'Sin País', 'contact', 20, NULL, 'es_MX', '300 123 4567', true);

-- The messages, compactly.
CREATE TEMP VIEW m AS
SELECT m.id, m.account, m.recipient, m.state, m.failure_type, m.error_title,
	   m.payload #>> '{template,name}' AS template,
	   m.payload #>> '{template,language,code}' AS lang,
	   (SELECT string_agg(coalesce((p ->> 'parameter_name') || '=', '') || pg_temp.vis(p ->> 'text'),
						  ' | ' ORDER BY o)
		  FROM jsonb_array_elements(m.payload #> '{template,components}') c,
			   jsonb_array_elements(c -> 'parameters') WITH ORDINALITY AS x(p, o)
		 WHERE c ->> 'type' = 'body') AS params,
	   m.dedupe_key
  FROM whatsapp.messages m;

-- Bad input to wa_odoo_enable: SQLSTATE and message.
CREATE TEMP TABLE bad_input (n serial, call text);
INSERT INTO bad_input (call) VALUES
	($$whatsapp.wa_odoo_enable('order_confirmed', 'order_confirmed')$$),
	($$whatsapp.wa_odoo_enable(NULL, 'order_confirmed')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', NULL)$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'Order Confirmed')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'spanish')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', account => 'nope')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', params => '"partner_name"')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', params => '["partner_name", "total"]')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', params => '["partner_name", 3]')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', params => '["amount_residual"]')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', params => '{"Customer Name": "partner_name"}')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', params => '{"header": "invoice_pdf"}')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', params => '{"body": "partner_name"}')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', params => '{"body": ["partner_name"], "name": "partner_name"}')$$),
	($$whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', company_id => 99)$$),
	($$whatsapp.wa_odoo_disable('order_confirmed')$$),
	($$whatsapp.wa_odoo_preview('order_confirmed', 1)$$),
	($$whatsapp.wa_odoo_preview('sale_order_confirmed', NULL)$$);
SELECT n, call, pg_temp.try('SELECT ' || call) AS result FROM bad_input ORDER BY n;
SELECT count(*) AS rules_after_bad_input FROM whatsapp.odoo_rule;

-- ---------------------------------------------------------------------
-- Amounts, text and dates the way Odoo prints them
-- ---------------------------------------------------------------------
SELECT label, pg_temp.vis(whatsapp._odoo_format_amount(amount, decimals, rounding, dp, ts, grp, symbol, pos)) AS formatted
  FROM (VALUES
	('es_MX, MXN', 1234.5, 2, 0.01, '.', ',', '[3,0]', '$', 'before'),
	('es_ES, EUR', 1234.5, 2, 0.01, ',', '.', '[3,0]', '€', 'after'),
	('pt_BR, BRL', 1234.5, 2, 0.01, ',', '.', '[3,0]', 'R$', 'before'),
	('es_CO, COP, millions', 12345678.901, 2, 0.01, ',', '.', '[3,0]', '$', 'before'),
	('es_CL, CLP (0 decimals, rounding 1)', 1234.5, 0, 1.0, ',', '.', '[3,0]', '$', 'before'),
	('decimals from rounding 0.001', 1234.5, NULL, 0.001, '.', ',', '[3,0]', 'KD', 'after'),
	('rounding 0.05', 12.34, 2, 0.05, '.', ',', '[3,0]', 'CHF', 'after'),
	('negative', -1234.5, 2, 0.01, '.', ',', '[3,0]', '$', 'before'),
	('minus zero', -0.001, 2, 0.01, '.', ',', '[3,0]', '$', 'before'),
	('India [3,2,-1]', 123456789, 2, 0.01, '.', ',', '[3,2,-1]', '₹', 'before'),
	('[3] once', 1234567, 0, 1.0, '.', ',', '[3]', '$', 'before'),
	('no grouping []', 1234567.5, 2, 0.01, ',', ' ', '[]', '€', 'after'),
	('space separator', 1234567.5, 2, 0.01, ',', ' ', '[3,0]', '€', 'after'),
	('unreadable grouping', 1234567.5, 2, 0.01, '.', ',', 'three', '$', 'before'),
	('no res_lang', 1234.5, 2, 0.01, NULL, NULL, NULL, 'US$', 'before'),
	('no symbol', 1234.5, 2, 0.01, '.', ',', '[3,0]', NULL, 'before'),
	('position NULL', 1234.5, 2, 0.01, '.', ',', '[3,0]', 'X', NULL),
	('small', 0.5, 2, 0.01, '.', ',', '[3,0]', '$', 'before'),
	-- odoo/addons/base/data/res.lang.csv: en_IN is [3,2,0] (lakhs, crores), de_CH [3,3]
	('en_IN [3,2,0]', 123456789.5, 2, 0.01, '.', ',', '[3,2,0]', '₹', 'before'),
	('en_IN [3,2,0], short', 12345, 2, 0.01, '.', ',', '[3,2,0]', '₹', 'before'),
	('en_IN [3,2,0], negative', -1234567, 2, 0.01, '.', ',', '[3,2,0]', '₹', 'before'),
	('de_CH [3,3]', 1234567890, 2, 0.01, '.', '''', '[3,3]', 'CHF', 'after'),
	-- a negative amount that rounds to zero: odoo/tools/float_utils.py's
	-- round() keeps the sign, "%.2f" prints -0.0 as "-0.00"
	('minus zero, rounding 0.05', -0.02, 2, 0.05, '.', ',', '[3,0]', '$', 'before'),
	('exactly zero', 0, 2, 0.01, '.', ',', '[3,0]', '$', 'before'),
	-- odoo/tools/misc.py format_amount: the no-break space stays without a symbol
	('empty symbol, before', 1234.5, 2, 0.01, '.', ',', '[3,0]', '', 'before'),
	('empty symbol, after', 1234.5, 2, 0.01, ',', '.', '[3,0]', '', 'after')
  ) AS c(label, amount, decimals, rounding, dp, ts, grp, symbol, pos);
SELECT whatsapp._odoo_format_amount('NaN', 2, 0.01, '.', ',', '[3,0]', '$', 'before') AS nan;

SELECT whatsapp._odoo_clean(E'  Roberto\n  Gómez\t(importado)  ') AS cleaned,
	   whatsapp._odoo_clean(E'a     b\r\nc') AS runs,
	   whatsapp._odoo_clean(E'\n\t ') = '' AS only_space;

SELECT f, whatsapp._odoo_format_date('2025-03-07', f) AS formatted
  FROM (VALUES ('%d/%m/%Y'), ('%m/%d/%Y'), ('%d.%m.%y'), ('%e de %B de %Y'), (NULL), ('%Y-%m-%d %%')) AS x(f);

-- ---------------------------------------------------------------------
-- sale_order_confirmed
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed');
SELECT event, company_id, template, language, account, params, triggers_installed
  FROM whatsapp.odoo_rules;
-- two constraint triggers, deferred to commit
SELECT tgname, tgenabled, tgdeferrable, tginitdeferred, tgconstraint <> 0 AS constraint_trigger
  FROM pg_trigger WHERE tgrelid = 'public.sale_order'::regclass AND NOT tgisinternal ORDER BY tgname;
-- enabling twice is harmless
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.sale_order'::regclass AND NOT tgisinternal;

-- A quotation.
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, access_token)
SELECT g, 1, p, p, p, 3, 'New', 'draft', now() AT TIME ZONE 'UTC', 'tok-' || g
  FROM (VALUES (1, 10), (2, 10), (3, 10), (4, 10), (5, 10), (6, 10), (7, 11), (8, 12), (9, 13),
			   (10, 15), (11, 16), (12, 17), (13, 18), (14, 19), (15, 20), (16, 14)) AS v(g, p);
SELECT count(*) AS messages_for_quotations FROM whatsapp.message;

-- The ORM confirms in several UPDATEs: the state first, then the name and
-- the amounts.  Nothing is recorded before commit; the message carries the
-- values as committed.
BEGIN;
UPDATE public.sale_order SET state = 'sale', date_order = now() AT TIME ZONE 'UTC' WHERE id = 1;
SELECT count(*) AS recorded_before_commit FROM whatsapp.message;
UPDATE public.sale_order SET name = 'S00001', amount_untaxed = 1064.22, amount_tax = 170.28,
	   amount_total = 1234.5 WHERE id = 1;
COMMIT;
SELECT account, recipient, state, template, lang, params, dedupe_key FROM m;
SELECT context FROM whatsapp.messages;

-- Confirm, cancel, confirm again: one message.
UPDATE public.sale_order SET state = 'sale', name = 'S00002', amount_total = 10 WHERE id = 2;
UPDATE public.sale_order SET state = 'cancel' WHERE id = 2;
UPDATE public.sale_order SET state = 'draft' WHERE id = 2;
UPDATE public.sale_order SET state = 'sale' WHERE id = 2;
SELECT count(*) AS messages_for_s00002 FROM whatsapp.message WHERE dedupe_key = 'sale.order:2:sale_order_confirmed';
-- The same after the rule moved to another account between the two
-- confirmations: at most once per document and event, whatever account.
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', account => 'es');
UPDATE public.sale_order SET state = 'cancel' WHERE id = 2;
UPDATE public.sale_order SET state = 'draft' WHERE id = 2;
UPDATE public.sale_order SET state = 'sale' WHERE id = 2;
SELECT account, count(*) AS messages_for_s00002_after_the_move FROM m
 WHERE dedupe_key = 'sale.order:2:sale_order_confirmed' GROUP BY account;
-- and the preview names that message, recorded under the other account
SELECT p ->> 'account' AS rule_account,
	   (p #>> '{already_recorded,id}')::bigint =
	   (SELECT id FROM whatsapp.message WHERE dedupe_key = 'sale.order:2:sale_order_confirmed')
	   AS preview_names_the_message
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 2) p;
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed');

-- A rolled-back confirmation and a rolled-back savepoint send nothing.
BEGIN;
UPDATE public.sale_order SET state = 'sale', name = 'S00003' WHERE id = 3;
ROLLBACK;
BEGIN;
SAVEPOINT confirm;
UPDATE public.sale_order SET state = 'sale', name = 'S00003' WHERE id = 3;
ROLLBACK TO SAVEPOINT confirm;
COMMIT;
-- Confirmed and set back to quotation before commit: nothing either.
BEGIN;
UPDATE public.sale_order SET state = 'sale', name = 'S00003' WHERE id = 3;
UPDATE public.sale_order SET state = 'draft' WHERE id = 3;
COMMIT;
-- A released savepoint commits with the transaction.
BEGIN;
SAVEPOINT confirm;
UPDATE public.sale_order SET state = 'sale', name = 'S00004', amount_total = 4 WHERE id = 4;
RELEASE SAVEPOINT confirm;
COMMIT;
SELECT dedupe_key, params FROM m WHERE dedupe_key LIKE 'sale.order:_:%' ORDER BY id;

-- A row inserted already confirmed (a connector, an import) sends too.
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (100, 1, 10, 10, 10, 3, 'S00100', 'sale', now() AT TIME ZONE 'UTC', 100);
SELECT dedupe_key, params FROM m WHERE dedupe_key = 'sale.order:100:sale_order_confirmed';

-- Imports: whatsapp.odoo_events = off when the row is written, or when the
-- transaction commits, sends nothing.
BEGIN;
SET LOCAL whatsapp.odoo_events = off;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (101, 1, 10, 10, 10, 3, 'S00101', 'sale', now() AT TIME ZONE 'UTC', 101);
COMMIT;
BEGIN;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (102, 1, 10, 10, 10, 3, 'S00102', 'sale', now() AT TIME ZONE 'UTC', 102);
SET LOCAL whatsapp.odoo_events = off;
COMMIT;
-- Documents older than whatsapp.odoo_max_age (7 days) send nothing; 0 means no limit.
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (103, 1, 10, 10, 10, 3, 'S00103', 'sale', now() AT TIME ZONE 'UTC' - interval '8 days', 103);
SET whatsapp.odoo_max_age = '10d';
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (104, 1, 10, 10, 10, 3, 'S00104', 'sale', now() AT TIME ZONE 'UTC' - interval '8 days', 104);
SET whatsapp.odoo_max_age = 0;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (105, 1, 10, 10, 10, 3, 'S00105', 'sale', '2019-01-01', 105);
RESET whatsapp.odoo_max_age;
SELECT o.id, o.name, m.id IS NOT NULL AS sent
  FROM public.sale_order o LEFT JOIN whatsapp.message m ON m.context ->> 'res_id' = o.id::text
 WHERE o.id BETWEEN 101 AND 105 ORDER BY o.id;

-- ---------------------------------------------------------------------
-- Recipients
-- ---------------------------------------------------------------------
UPDATE public.sale_order SET state = 'sale', name = 'S' || lpad(id::text, 5, '0'), amount_total = 100
 WHERE id BETWEEN 7 AND 15;
SELECT o.id, o.partner_id AS partner, p.name AS partner_name, m.recipient, m.state, m.failure_type,
	   m.error_title
  FROM public.sale_order o
  JOIN public.res_partner p ON p.id = o.partner_id
  JOIN m ON m.dedupe_key = 'sale.order:' || o.id || ':sale_order_confirmed'
 WHERE o.id BETWEEN 7 AND 15 ORDER BY o.id;
-- the order is confirmed whatever happened to its message
SELECT count(*) AS confirmed FROM public.sale_order WHERE id BETWEEN 7 AND 15 AND state = 'sale';
-- Partner 12 has no name: with the default params that fails.
SELECT params FROM m WHERE dedupe_key LIKE 'sale.order:8:%';
-- Newlines, tabs and runs of spaces are cleaned from parameters.
SELECT params FROM m WHERE dedupe_key LIKE 'sale.order:11:%';
-- Partner 20 has no country: the company's country counts (order 15,
-- company 1 in Mexico), then whatsapp.default_country_code.
SET whatsapp.default_country_code = '57';
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (150, 2, 20, 20, 20, 2, 'S00150', 'sale', now() AT TIME ZONE 'UTC', 1);	-- company 2, Spain
UPDATE public.res_country SET phone_code = NULL WHERE id = 3;	-- Mexico without a code
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (151, 1, 20, 20, 20, 3, 'S00151', 'sale', now() AT TIME ZONE 'UTC', 1);
UPDATE public.res_country SET phone_code = 52 WHERE id = 3;
RESET whatsapp.default_country_code;
SELECT dedupe_key, recipient, state, failure_type FROM m WHERE dedupe_key ~ '^sale\.order:15[01]?:' ORDER BY id;

-- ---------------------------------------------------------------------
-- Parameters, portal links, languages
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', NULL, 'mx',
	'{"header": "portal_pdf", "customer": "partner_name", "company": "commercial_partner_name",
	  "order": "document_name", "total": "amount_total", "ref": "client_order_ref",
	  "seller": "company_name", "link": "portal_url"}');
INSERT INTO whatsapp.templates (account, name, language, category, status) VALUES
	(NULL, 'order_confirmed', 'es', 'utility', 'APPROVED'),
	(NULL, 'order_confirmed', 'es_MX', 'utility', NULL),
	(NULL, 'order_confirmed', 'pt-BR', 'utility', 'APPROVED'),
	(NULL, 'order_confirmed', 'en_US', 'utility', 'REJECTED'),
	('es', 'order_confirmed', 'it', 'utility', 'APPROVED');
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total, access_token,
							   client_order_ref)
SELECT 200 + p, 1, p, p, p, c, 'S00' || (200 + p), 'sale', now() AT TIME ZONE 'UTC', 1234.5,
	   'tok/' || p, 'PO-' || p
  FROM (VALUES (10, 3), (11, 5), (13, 4), (14, 2), (19, 1)) AS v(p, c);
SELECT m.recipient, m.state, m.lang, m.params, m.error_title
  FROM m WHERE m.dedupe_key ~ '^sale\.order:2[01][0-9]:' ORDER BY m.id;
-- the document header: the PDF from Odoo's portal
SELECT payload #> '{template,components,0}' AS header
  FROM whatsapp.messages WHERE dedupe_key = 'sale.order:210:sale_order_confirmed';
-- Partner 19 has no language: the rule's language, when it has one.
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX');
DELETE FROM whatsapp.message WHERE dedupe_key = 'sale.order:219:sale_order_confirmed';
UPDATE public.sale_order SET state = 'draft' WHERE id = 219;
UPDATE public.sale_order SET state = 'sale' WHERE id = 219;
-- A template Meta paused (message_template_status_update) fails the Odoo
-- message at commit too, failure_type template, until it is approved.
SELECT lang FROM whatsapp.messages m, LATERAL (SELECT m.payload #>> '{template,language,code}' AS lang) l
 WHERE dedupe_key = 'sale.order:219:sale_order_confirmed';
UPDATE whatsapp.templates SET status = 'PAUSED' WHERE name = 'order_confirmed' AND language = 'es_MX';
DELETE FROM whatsapp.message WHERE dedupe_key = 'sale.order:219:sale_order_confirmed';
UPDATE public.sale_order SET state = 'draft' WHERE id = 219;
UPDATE public.sale_order SET state = 'sale' WHERE id = 219;
SELECT state, failure_type, regexp_replace(error_title, 'since .*;', 'since …;') AS error_title
  FROM whatsapp.messages WHERE dedupe_key = 'sale.order:219:sale_order_confirmed';
UPDATE whatsapp.templates SET status = NULL WHERE name = 'order_confirmed' AND language = 'es_MX';
DELETE FROM whatsapp.message WHERE dedupe_key = 'sale.order:219:sale_order_confirmed';
UPDATE public.sale_order SET state = 'draft' WHERE id = 219;
UPDATE public.sale_order SET state = 'sale' WHERE id = 219;
SELECT state FROM whatsapp.messages WHERE dedupe_key = 'sale.order:219:sale_order_confirmed';
-- sr@latin is not a template language: its base, else the rule's.
UPDATE public.res_partner SET lang = 'sr@latin' WHERE id = 10;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (220, 1, 10, 10, 10, 3, 'S00220', 'sale', now() AT TIME ZONE 'UTC', 1234.5);
UPDATE public.res_partner SET lang = 'es_MX' WHERE id = 10;
SELECT dedupe_key, state, lang, params FROM m WHERE dedupe_key ~ '^sale\.order:2(19|20):' ORDER BY id;
-- No access_token: the extension creates one as Odoo's portal.mixin
-- _portal_ensure_token does (addons/portal/models/portal_mixin.py: a
-- uuid4 written to the document), in the confirming transaction, as the
-- table's owner; the link carries it.
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
							   '{"header": "portal_pdf", "body": ["partner_name", "document_name"]}');
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (221, 1, 10, 10, 10, 3, 'S00221', 'draft', now() AT TIME ZONE 'UTC', 1);
SELECT p ->> 'access_token_created_at_commit' AS created_at_commit, p #>> '{links,pdf}' AS pdf,
	   p ->> 'link_warning' AS link_warning
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 221) p;
SELECT access_token IS NULL AS preview_wrote_nothing FROM public.sale_order WHERE id = 221;
UPDATE public.sale_order SET state = 'sale' WHERE id = 221;
SELECT state, failure_type, error_title FROM m WHERE dedupe_key LIKE 'sale.order:221:%';
SELECT o.access_token ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' AS uuid4,
	   mm.payload #>> '{template,components,0,parameters,0,document,link}'
		 = 'https://erp.example.com/my/orders/221?access_token=' || o.access_token
		   || '&report_type=pdf&download=true' AS link_has_it
  FROM public.sale_order o, whatsapp.message mm
 WHERE o.id = 221 AND mm.dedupe_key = 'sale.order:221:sale_order_confirmed';
-- The write cannot be caught if it fails, so what the catalog shows is
-- checked first (the owner's privileges, forced row security): then the
-- message fails with the reason and nothing is written.
ALTER TABLE public.sale_order ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY everything ON public.sale_order USING (true);
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (224, 1, 10, 10, 10, 3, 'S00224', 'sale', now() AT TIME ZONE 'UTC', 1);
DROP POLICY everything ON public.sale_order;
ALTER TABLE public.sale_order DISABLE ROW LEVEL SECURITY, NO FORCE ROW LEVEL SECURITY;
SELECT state, failure_type, error_title FROM m WHERE dedupe_key ~ '^sale\.order:224:' ORDER BY id;
SELECT count(*) AS tokens_written FROM public.sale_order WHERE id = 224 AND access_token IS NOT NULL;
-- The rule's own public address wins over web.base.url; links on a URL
-- that customers and Meta cannot reach, or an unfrozen web.base.url, get
-- a warning from wa_odoo_enable and wa_odoo_preview.
SELECT pg_temp.try($$SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
							   '{"header": "portal_pdf", "base_url": "http://shop.example.com"}')$$);
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
							   '{"header": "portal_pdf", "body": ["partner_name"], "base_url": "https://tienda.example.com.mx/"}');
SELECT regexp_replace(p #>> '{links,pdf}', 'access_token=[0-9a-f-]{36}&', 'access_token=<its token>&') AS pdf,
	   p ->> 'link_warning' AS link_warning
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 221) p;
SELECT whatsapp._odoo_link_warning(u) AS warning
  FROM unnest(ARRAY['https://erp.example.com', 'http://erp.example.com', 'https://localhost:8069',
					'https://192.168.1.20', 'http://10.0.0.5:8069/', 'https://odoo', 'https://erp.local']) u;
UPDATE public.ir_config_parameter SET value = 'http://localhost:8069' WHERE key = 'web.base.url';
DELETE FROM public.ir_config_parameter WHERE key = 'web.base.url.freeze';
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
							   '{"header": "portal_pdf", "body": ["partner_name", "document_name"]}');
SELECT p ->> 'link_warning' AS link_warning FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 221) p;
UPDATE public.ir_config_parameter SET value = 'https://erp.example.com/' WHERE key = 'web.base.url';
INSERT INTO public.ir_config_parameter (key, value) VALUES ('web.base.url.freeze', 'True');
-- No web.base.url either.
DELETE FROM public.ir_config_parameter WHERE key = 'web.base.url';
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total, access_token)
VALUES (222, 1, 10, 10, 10, 3, 'S00222', 'sale', now() AT TIME ZONE 'UTC', 1, 'tok');
INSERT INTO public.ir_config_parameter (key, value) VALUES ('web.base.url', 'https://erp.example.com');
SELECT state, failure_type, error_title FROM m WHERE dedupe_key LIKE 'sale.order:222:%';

-- ---------------------------------------------------------------------
-- Companies: a company's own rule wins over the rule for all
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX');
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'pedido_confirmado', 'es_ES', 'es',
							   '["partner_name", "amount_total"]', company_id => 2);
SELECT event, company_id, template, language, account, params, triggers_installed
  FROM whatsapp.odoo_rules ORDER BY company_id NULLS FIRST;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (300, 1, 14, 14, 14, 3, 'S00300', 'sale', now() AT TIME ZONE 'UTC', 1234.5),
	   (301, 2, 14, 14, 14, 2, 'S00301', 'sale', now() AT TIME ZONE 'UTC', 1234.5);
-- Disabling the company's rule leaves the one for all (and the triggers).
SELECT whatsapp.wa_odoo_disable('sale_order_confirmed', 2);
SELECT whatsapp.wa_odoo_disable('sale_order_confirmed', 2);
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (302, 2, 14, 14, 14, 2, 'S00302', 'sale', now() AT TIME ZONE 'UTC', 1234.5);
SELECT dedupe_key, account, template, lang, params FROM m WHERE dedupe_key ~ '^sale\.order:30[0-2]:' ORDER BY id;
-- Only a company's rule: other companies send nothing.
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'pedido_confirmado', 'es_ES', 'es', company_id => 2);
SELECT whatsapp.wa_odoo_disable('sale_order_confirmed');
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (303, 1, 14, 14, 14, 3, 'S00303', 'sale', now() AT TIME ZONE 'UTC', 1),
	   (304, 2, 14, 14, 14, 2, 'S00304', 'sale', now() AT TIME ZONE 'UTC', 1);
SELECT dedupe_key, account, template FROM m WHERE dedupe_key ~ '^sale\.order:30[34]:' ORDER BY id;
SELECT whatsapp.wa_odoo_disable('sale_order_confirmed', 2);
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'public.sale_order'::regclass AND NOT tgisinternal;
SELECT count(*) AS rules_left FROM whatsapp.odoo_rules;

-- ---------------------------------------------------------------------
-- Never in Odoo's way
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
							   '["partner_name", "document_name", "client_order_ref"]');
-- a column the rule needs is gone
ALTER TABLE public.sale_order DROP COLUMN client_order_ref;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (400, 1, 10, 10, 10, 3, 'S00400', 'sale', now() AT TIME ZONE 'UTC', 1);
ALTER TABLE public.sale_order ADD COLUMN client_order_ref varchar;
-- an empty customer reference
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total, client_order_ref)
VALUES (401, 1, 10, 10, 10, 3, 'S00401', 'sale', now() AT TIME ZONE 'UTC', 1, '');
-- a column of a type the trigger cannot read as an amount
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
ALTER TABLE public.sale_order ALTER COLUMN amount_total TYPE text;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (405, 1, 10, 10, 10, 3, 'S00405', 'sale', now() AT TIME ZONE 'UTC', '1');
ALTER TABLE public.sale_order ALTER COLUMN amount_total TYPE numeric USING amount_total::numeric;
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
							   '["partner_name", "document_name", "client_order_ref"]');
-- the account was dropped after enabling
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'es');
SELECT whatsapp.wa_account_drop('es');
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (402, 1, 10, 10, 10, 3, 'S00402', 'sale', now() AT TIME ZONE 'UTC', 1);
-- an account of that name again: the rule follows the name
SELECT whatsapp.wa_account_set('es', '1000000002', 'EAAodoo-regress-es-2');
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (403, 1, 10, 10, 10, 3, 'S00403', 'sale', now() AT TIME ZONE 'UTC', 1);
SELECT dedupe_key, account, state, failure_type, error_title FROM m
 WHERE dedupe_key ~ '^sale\.order:40[0-35]:' ORDER BY id;
SELECT count(*) AS all_confirmed FROM public.sale_order WHERE id BETWEEN 400 AND 403 AND state = 'sale';
-- a database Odoo neutralized (a copy for staging) sends nothing
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
INSERT INTO public.ir_config_parameter (key, value) VALUES ('database.is_neutralized', 'True');
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (404, 1, 10, 10, 10, 3, 'S00404', 'sale', now() AT TIME ZONE 'UTC', 1);
DELETE FROM public.ir_config_parameter WHERE key = 'database.is_neutralized';
SELECT state, failure_type, error_title FROM m WHERE dedupe_key LIKE 'sale.order:404:%';
-- the triggers write nothing to Odoo's tables, whoever confirms
CREATE ROLE wa_odoo_user LOGIN;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO wa_odoo_user;
SET ROLE wa_odoo_user;
UPDATE public.sale_order SET state = 'sale', name = 'S00005', amount_total = 5 WHERE id = 5;
SELECT pg_temp.try($$SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'x')$$);
RESET ROLE;
SELECT state, params FROM m WHERE dedupe_key LIKE 'sale.order:5:%';
-- The message belongs to the role that committed the confirmation; once
-- per document holds whoever confirms again.
SELECT queued_by FROM whatsapp.messages WHERE dedupe_key LIKE 'sale.order:5:%';
UPDATE public.sale_order SET state = 'cancel' WHERE id = 5;
UPDATE public.sale_order SET state = 'sale' WHERE id = 5;
SELECT count(*) AS messages_for_s00005 FROM whatsapp.message WHERE dedupe_key LIKE 'sale.order:5:%';

-- ---------------------------------------------------------------------
-- wa_odoo_preview: what a record would send, without queuing it
-- ---------------------------------------------------------------------
UPDATE public.sale_order SET amount_total = 60 WHERE id = 6;
SELECT count(*) AS before_preview FROM whatsapp.message \gset
SELECT p ->> 'fires' AS fires, p ->> 'why_not' AS why_not, p ->> 'outcome' AS outcome,
	   p ->> 'recipient' AS recipient, pg_temp.vis(p ->> 'values') AS "values",
	   p -> 'already_recorded' AS already_recorded
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 6) p;
SELECT p ->> 'fires' AS fires, p ->> 'outcome' AS outcome, p -> 'already_recorded' ->> 'state' AS recorded,
	   p ->> 'odoo_schema' AS odoo_schema, p ->> 'dedupe_key' AS dedupe_key
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 1) p;
SELECT p ->> 'outcome' AS outcome, p ->> 'failure_type' AS failure_type, p ->> 'reason' AS reason
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 10) p;
SELECT count(*) = :before_preview AS nothing_queued FROM whatsapp.message;
SELECT pg_temp.try($$SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 999)$$);

-- ---------------------------------------------------------------------
-- Invoices and refunds
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
							   '["partner_name", "document_name", "amount_residual", "invoice_date_due"]');
SELECT whatsapp.wa_odoo_enable('refund_posted', 'credit_note', 'es_MX', 'mx',
							   '{"customer": "partner_name", "note": "document_name", "total": "amount_total"}');
SELECT whatsapp.wa_odoo_enable('invoice_sent', 'invoice_sent', 'es_MX', 'mx',
							   '{"header": "portal_pdf", "body": ["partner_name", "document_name"]}');
SELECT tgrelid::regclass AS "table", tgname FROM pg_trigger
 WHERE tgrelid IN ('public.account_move'::regclass, 'public.mail_message'::regclass) AND NOT tgisinternal
 ORDER BY tgname;
INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id, currency_id,
								 name, state, move_type, date, invoice_date, invoice_date_due,
								 amount_total, amount_residual, access_token)
VALUES (1, 1, 1, 10, 10, 3, '/', 'draft', 'out_invoice', current_date, NULL, '2031-01-31', 0, 0, 'inv-tok-1'),
	   (2, 1, 1, 10, 10, 3, '/', 'draft', 'out_refund', current_date, NULL, NULL, 0, 0, NULL),
	   (3, 2, 1, 10, 10, 3, '/', 'draft', 'in_invoice', current_date, NULL, NULL, 0, 0, NULL),
	   (4, 3, 1, NULL, NULL, 3, '/', 'draft', 'entry', current_date, NULL, NULL, 0, 0, NULL),
	   (5, 1, 1, 10, 10, 3, '/', 'draft', 'out_invoice', current_date, NULL, NULL, 0, 0, NULL);
-- drafts send nothing; posting does, with the values as committed
BEGIN;
UPDATE public.account_move SET state = 'posted', invoice_date = current_date WHERE id BETWEEN 1 AND 4;
UPDATE public.account_move SET name = 'INV/2025/00001', amount_total = 2000, amount_residual = 1500.25 WHERE id = 1;
UPDATE public.account_move SET name = 'RINV/2025/00001', amount_total = 300 WHERE id = 2;
UPDATE public.account_move SET name = 'BILL/2025/00001', amount_total = 999 WHERE id = 3;
UPDATE public.account_move SET name = 'MISC/2025/00001' WHERE id = 4;
COMMIT;
SELECT dedupe_key, template, lang, params FROM m WHERE dedupe_key LIKE 'account.move:%' ORDER BY id;
-- sent: is_move_sent, which Print sets (16) and the official PDF (17+),
-- sends nothing since 0.3 ...
UPDATE public.account_move SET is_move_sent = true WHERE id IN (1, 3, 5);
SELECT count(*) AS sent_on_is_move_sent FROM m WHERE dedupe_key LIKE '%:invoice_sent';
-- ... the mail of the invoice to its customer does: the message that Send
-- posts on it (test/odoo/mail.sql), here on invoice 1 and on the vendor
-- bill 3, which sends nothing
INSERT INTO public.ir_attachment (id, name, res_model, res_id, type, mimetype) VALUES
	(1, 'INV_2025_00001.pdf', 'mail.message', 1, 'binary', 'application/pdf'),
	(3, 'BILL_2025_00001.pdf', 'mail.message', 3, 'binary', 'application/pdf'),
	(5, 'INV_2025_00005.pdf', 'mail.message', 5, 'binary', 'application/pdf');
BEGIN;
-- In 17, Send & Print stores the official PDF (invoice_pdf_report_file)
-- of invoice 1 before it mails it: the header is that attachment, not the
-- portal's report.
INSERT INTO public.ir_attachment (id, name, res_model, res_field, res_id, company_id, type,
								  access_token, db_datas, mimetype)
VALUES (71, 'INV_2025_00001.pdf', 'account.move', 'invoice_pdf_report_file', 1, 1, 'binary',
		'att-tok-71', convert_to('%PDF-1.7', 'UTF8'), 'application/pdf');
INSERT INTO public.mail_message (id, res_id, model, message_type, subtype_id, author_id, body, date)
VALUES (1, 1, 'account.move', 'comment', 1, 1, '<p>Invoice INV/2025/00001</p>', now() AT TIME ZONE 'UTC'),
	   (3, 3, 'account.move', 'comment', 1, 1, '<p>Bill BILL/2025/00001</p>', now() AT TIME ZONE 'UTC');
INSERT INTO public.mail_message_res_partner_rel (mail_message_id, res_partner_id) VALUES (1, 10), (3, 10);
INSERT INTO public.message_attachment_rel (message_id, attachment_id) VALUES (1, 1), (3, 3);
COMMIT;
-- a draft cannot be sent; once posted and mailed, it is
UPDATE public.account_move SET state = 'posted', name = 'INV/2025/00005', amount_total = 5, amount_residual = 5,
	   invoice_date_due = '2031-02-28', access_token = 'inv-tok-5' WHERE id = 5;
BEGIN;
INSERT INTO public.mail_message (id, res_id, model, message_type, subtype_id, author_id, body, date)
VALUES (5, 5, 'account.move', 'comment', 1, 1, '<p>Invoice INV/2025/00005</p>', now() AT TIME ZONE 'UTC');
INSERT INTO public.mail_message_res_partner_rel (mail_message_id, res_partner_id) VALUES (5, 10);
INSERT INTO public.message_attachment_rel (message_id, attachment_id) VALUES (5, 5);
COMMIT;
SELECT dedupe_key, template, params, state, error_title FROM m WHERE dedupe_key LIKE 'account.move:%' ORDER BY id;
SELECT payload #>> '{template,components,0,parameters,0,document,link}' AS link,
	   payload #>> '{template,components,0,parameters,0,document,filename}' AS filename
  FROM whatsapp.messages WHERE dedupe_key = 'account.move:1:invoice_sent';
-- an import of invoices already posted and marked sent: posted, not mailed
INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id, currency_id,
								 name, state, move_type, date, invoice_date, invoice_date_due,
								 amount_total, amount_residual, access_token, is_move_sent)
VALUES (6, 1, 1, 13, 13, 4, 'INV/2025/00006', 'posted', 'out_invoice', current_date, current_date,
		'2031-03-31', 1234.5, 1234.5, 'inv-tok-6', true);
SELECT dedupe_key, recipient, params FROM m WHERE dedupe_key LIKE 'account.move:6:%' ORDER BY id;
-- an invoice dated more than odoo_max_age ago sends nothing (invoice_date, else date)
INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id, currency_id,
								 name, state, move_type, date, invoice_date, invoice_date_due,
								 amount_total, amount_residual)
VALUES (7, 1, 1, 10, 10, 3, 'INV/2025/00007', 'posted', 'out_invoice', current_date, current_date - 9, NULL, 1, 1),
	   (8, 1, 1, 10, 10, 3, 'INV/2025/00008', 'posted', 'out_invoice', current_date - 30, current_date - 5, NULL, 1, 1),
	   (9, 1, 1, 10, 10, 3, 'INV/2025/00009', 'posted', 'out_invoice', current_date - 9, NULL, NULL, 1, 1);
SELECT dedupe_key FROM m WHERE dedupe_key ~ '^account\.move:[789]:' ORDER BY id;

-- Posting 1,000 invoices in one transaction, the way the ORM does: the
-- state first, then the names and amounts.  Each message has the name and
-- the amount as committed.
INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id, currency_id,
								 name, state, move_type, date, invoice_date_due, amount_total, amount_residual)
SELECT 1000 + g, 1, 1, (ARRAY[10, 16, 20])[1 + g % 3], (ARRAY[10, 16, 20])[1 + g % 3], 3,
	   '/', 'draft', 'out_invoice', current_date, current_date + 30, 0, 0
  FROM generate_series(1, 1000) g;
BEGIN;
UPDATE public.account_move SET state = 'posted', invoice_date = current_date WHERE id > 1000;
UPDATE public.account_move SET name = 'INV/2025/' || lpad(id::text, 5, '0'),
	   amount_total = id + 0.5, amount_residual = id + 0.5 WHERE id > 1000;
COMMIT;
SELECT count(*) AS messages,
	   count(*) FILTER (WHERE mm.payload #>> '{template,components,0,parameters,1,text}' = mv.name) AS with_committed_name,
	   count(*) FILTER (WHERE mm.payload #>> '{template,components,0,parameters,2,text}'
						= '$' || U&'\00A0' || to_char(mv.amount_residual, 'FM9,999.00')) AS with_committed_amount,
	   count(*) FILTER (WHERE mm.state = 'queued') AS queued
  FROM whatsapp.message mm
  JOIN public.account_move mv ON mm.dedupe_key = 'account.move:' || mv.id || ':invoice_posted'
 WHERE mv.id > 1000;

-- ---------------------------------------------------------------------
-- Odoo 16: sale_order has 'done', no locked
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_odoo_disable(e) FROM unnest(ARRAY['invoice_posted', 'refund_posted', 'invoice_sent']) e;
-- Every failure recorded so far for Odoo's data or configuration: none
-- carries a Meta error code, which tells them apart from Meta's 132xxx.
\set odoo_failures 'SELECT failure_type, count(*) > 0 AS some, bool_and(error_code IS NULL) AS no_meta_code FROM whatsapp.message WHERE state = ''failed'' AND (dedupe_key LIKE ''sale.order:%'' OR dedupe_key LIKE ''account.move:%'') GROUP BY failure_type ORDER BY failure_type;'
:odoo_failures
TRUNCATE whatsapp.message;
\set ECHO none
\i test/odoo/drop.sql
\i test/odoo/odoo16.sql
\o /dev/null
\i test/odoo/data.sql
\o
\set ECHO all
-- the rule survived its table; its triggers did not
SELECT event, triggers_installed FROM whatsapp.odoo_rules;
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (1, 1, 10, 10, 10, 3, 'New', 'draft', now() AT TIME ZONE 'UTC', 0),
	   (2, 1, 13, 13, 13, 4, 'S00002', 'done', now() AT TIME ZONE 'UTC', 2);
-- confirmed and locked in one transaction (Odoo 16's auto-lock): sent once
BEGIN;
UPDATE public.sale_order SET state = 'sale', name = 'S00001' WHERE id = 1;
UPDATE public.sale_order SET state = 'done', amount_total = 1 WHERE id = 1;
COMMIT;
-- unlocking is no confirmation
UPDATE public.sale_order SET state = 'sale' WHERE id = 1;
SELECT dedupe_key, recipient, params FROM m ORDER BY id;
SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 1) ->> 'odoo_schema' AS odoo_schema;

-- ---------------------------------------------------------------------
-- Odoo 18, upgraded to 19 under the triggers: res_partner.mobile goes
-- ---------------------------------------------------------------------
TRUNCATE whatsapp.message;
\set ECHO none
\i test/odoo/drop.sql
\i test/odoo/odoo18.sql
\o /dev/null
\i test/odoo/data.sql
\o
\set ECHO all
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
UPDATE public.res_partner SET phone = '12', mobile = '+52 55 1111 2222', phone_sanitized = NULL WHERE id = 10;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (1, 1, 10, 10, 10, 3, 'S00001', 'sale', now() AT TIME ZONE 'UTC', 1);
SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 1) ->> 'odoo_schema' AS odoo_schema;
-- the migration: mobile joins phone as 'phone | mobile', then the column goes
UPDATE public.res_partner SET phone = phone || ' | ' || mobile WHERE mobile IS NOT NULL;
ALTER TABLE public.res_partner DROP COLUMN mobile;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (2, 1, 10, 10, 10, 3, 'S00002', 'sale', now() AT TIME ZONE 'UTC', 2);
SELECT dedupe_key, recipient, state, params FROM m ORDER BY id;
SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 2) ->> 'odoo_schema' AS odoo_schema;
-- and without phone_sanitized (phone_validation not installed), and
-- without the indexes rows are looked up by (a sequential scan then)
ALTER TABLE public.res_partner DROP COLUMN phone_sanitized;
ALTER TABLE public.res_lang DROP CONSTRAINT res_lang_code_uniq;
ALTER TABLE public.res_country DROP CONSTRAINT res_country_pkey CASCADE;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (3, 1, 13, 13, 13, 4, 'S00003', 'sale', now() AT TIME ZONE 'UTC', 3);
SELECT dedupe_key, recipient, state, params FROM m WHERE dedupe_key LIKE 'sale.order:3:%';

-- ---------------------------------------------------------------------
-- Odoo 18 migrated to 19 with OpenUpgrade: res_partner keeps a stale
-- mobile, ir_module_module says 19
-- ---------------------------------------------------------------------
TRUNCATE whatsapp.message;
\set ECHO none
\i test/odoo/drop.sql
\i test/odoo/odoo19_migrated.sql
\o /dev/null
\i test/odoo/data.sql
\o
\set ECHO all
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
-- 19 reads phone only (addons/phone_validation/models/res_partner.py has no
-- mobile from 19 on): the number frozen in mobile is never used, not even
-- when phone_sanitized is empty or phone is missing.
UPDATE public.res_partner SET phone = '+52 55 3333 4444', mobile = '+52 55 1111 2222',
	   phone_sanitized = NULL WHERE id = 10;
UPDATE public.res_partner SET mobile = '+52 55 1111 2222' WHERE id = 15;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (1, 1, 10, 10, 10, 3, 'S00001', 'sale', now() AT TIME ZONE 'UTC', 1),
	   (2, 1, 15, 15, 15, 3, 'S00002', 'sale', now() AT TIME ZONE 'UTC', 2);
SELECT dedupe_key, recipient, state, error_title FROM m ORDER BY id;
SELECT p ->> 'odoo_version' AS odoo_version, p ->> 'odoo_version_source' AS source,
	   p ->> 'odoo_schema' AS odoo_schema, p ->> 'recipient' AS recipient
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 1) p;
-- The same tables as an 18 database (base 18.0): mobile comes before phone.
UPDATE public.ir_module_module SET latest_version = '18.0.1.3' WHERE name = 'base';
SELECT p ->> 'odoo_version' AS odoo_version, p ->> 'recipient' AS recipient
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 1) p;
UPDATE public.ir_module_module SET latest_version = 'saas~18.4.1.3' WHERE name = 'base';
SELECT p ->> 'odoo_version' AS odoo_version FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 1) p;
UPDATE public.ir_module_module SET latest_version = '19.0.1.3' WHERE name = 'base';

-- The language amounts and dates are written in, when the partner's is
-- not an active res_lang row: Odoo's get_lang (odoo/tools/misc.py) takes
-- the company's partner's language, then en_US, then the first active
-- language by name (res.lang get_installed sorts by name).
SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx',
							   '["partner_name", "amount_residual", "invoice_date_due"]');
INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id, currency_id,
								 name, state, move_type, date, invoice_date, invoice_date_due,
								 amount_total, amount_residual)
VALUES (1, 1, 1, 13, 13, 4, 'INV/2025/00001', 'draft', 'out_invoice', current_date, current_date,
		'2031-03-31', 1234.5, 1234.5);
CREATE TEMP VIEW lang_steps AS
SELECT p ->> 'format_language' AS format_language, pg_temp.vis(p #>> '{values,amount_residual}') AS amount,
	   p #>> '{values,invoice_date_due}' AS due
  FROM whatsapp.wa_odoo_preview('invoice_posted', 1) p;
SELECT 'pt_BR active' AS step, * FROM lang_steps;
UPDATE public.res_lang SET active = false WHERE code = 'pt_BR';
SELECT 'pt_BR inactive: the company''s es_MX' AS step, * FROM lang_steps;
UPDATE public.res_lang SET active = false WHERE code = 'es_MX';
SELECT 'es_MX inactive too: en_US' AS step, * FROM lang_steps;
UPDATE public.res_lang SET active = false WHERE code = 'en_US';
SELECT 'en_US inactive too: first by name' AS step, * FROM lang_steps;
DELETE FROM public.res_lang WHERE code = 'pt_BR';
SELECT 'pt_BR not in res_lang at all' AS step, * FROM lang_steps;
DROP VIEW lang_steps;

-- ---------------------------------------------------------------------
-- Odoo's upgrades under enabled events: no trigger depends on a column,
-- and wa_odoo_pause() silences bulk UPDATEs
-- ---------------------------------------------------------------------
TRUNCATE whatsapp.message;
\set ECHO none
\i test/odoo/drop.sql
\i test/odoo/odoo18.sql
\o /dev/null
\i test/odoo/data.sql
\o
\set ECHO all
SELECT whatsapp.wa_odoo_enable(e, 'odoo_event', 'es_MX', 'mx')
  FROM unnest(ARRAY['sale_order_confirmed', 'invoice_posted', 'refund_posted', 'invoice_sent']) e;
-- The triggers' definitions: no UPDATE OF, no column in WHEN.
SELECT tgname, regexp_replace(pg_get_triggerdef(oid), '^.* (AFTER .*) ON .*(WHEN .*)$', '\1 ... \2') AS def
  FROM pg_trigger WHERE tgname LIKE 'whatsapp\_%' ORDER BY tgname;
SELECT count(*) AS column_dependencies FROM pg_depend d JOIN pg_trigger t ON d.objid = t.oid
 WHERE d.classid = 'pg_trigger'::regclass AND t.tgname LIKE 'whatsapp\_%' AND d.refobjsubid <> 0;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (1, 1, 10, 10, 10, 3, 'S00001', 'draft', now() AT TIME ZONE 'UTC', 10);
INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id, currency_id,
								 name, state, move_type, date, invoice_date, amount_total, amount_residual)
VALUES (1, 1, 1, 10, 10, 3, 'INV/2025/00001', 'draft', 'out_invoice', current_date, current_date, 5, 5);
-- Writes that do not enter a state record nothing (the check is in C now).
UPDATE public.sale_order SET amount_total = 11 WHERE id = 1;
UPDATE public.account_move SET amount_total = 6 WHERE id = 1;
SELECT count(*) AS after_other_writes FROM whatsapp.message;
-- Every column the extension reads, of every table it reads: ALTER COLUMN
-- TYPE, then DROP COLUMN, with the events enabled (key columns that
-- Odoo's own constraints need are only retyped).
CREATE TEMP TABLE odoo_cols (n serial, tbl text, col text, newtype text, drop_it boolean);
INSERT INTO odoo_cols (tbl, col, newtype, drop_it) VALUES
	('sale_order', 'state', 'text', true), ('sale_order', 'name', 'text', true),
	('sale_order', 'client_order_ref', 'text', true), ('sale_order', 'access_token', 'text', true),
	('sale_order', 'amount_total', 'double precision', true), ('sale_order', 'date_order', 'timestamptz', true),
	('sale_order', 'currency_id', 'bigint', true), ('sale_order', 'company_id', 'bigint', false),
	('sale_order', 'partner_id', 'bigint', false), ('sale_order', 'id', 'bigint', false),
	('account_move', 'state', 'text', true), ('account_move', 'move_type', 'text', true),
	('account_move', 'is_move_sent', 'text', true), ('account_move', 'name', 'text', true),
	('account_move', 'ref', 'text', true), ('account_move', 'access_token', 'text', true),
	('account_move', 'amount_total', 'double precision', true), ('account_move', 'amount_residual', 'double precision', true),
	('account_move', 'invoice_date', 'timestamp', true), ('account_move', 'invoice_date_due', 'timestamp', true),
	('account_move', 'date', 'timestamp', true), ('account_move', 'partner_id', 'bigint', false),
	('account_move', 'company_id', 'bigint', false), ('account_move', 'currency_id', 'bigint', false),
	('account_move', 'id', 'bigint', false),
	('res_partner', 'name', 'text', true), ('res_partner', 'lang', 'text', true),
	('res_partner', 'phone', 'text', true), ('res_partner', 'mobile', 'text', true),
	('res_partner', 'phone_sanitized', 'text', true), ('res_partner', 'country_id', 'bigint', false),
	('res_partner', 'commercial_partner_id', 'bigint', false),
	('res_company', 'name', 'text', false), ('res_country', 'phone_code', 'bigint', true),
	('res_currency', 'symbol', 'text', true), ('res_currency', 'position', 'text', true),
	('res_currency', 'decimal_places', 'bigint', true), ('res_currency', 'rounding', 'double precision', true),
	('res_lang', 'decimal_point', 'text', true), ('res_lang', 'thousands_sep', 'text', true),
	('res_lang', 'grouping', 'text', true), ('res_lang', 'date_format', 'text', true),
	('res_lang', 'active', 'text', true),
	('ir_config_parameter', 'value', 'varchar', true), ('ir_module_module', 'latest_version', 'text', true),
	('phone_blacklist', 'active', 'text', true),
	('mail_message', 'model', 'text', true), ('mail_message', 'message_type', 'text', true),
	('mail_message', 'res_id', 'bigint', true), ('mail_message', 'subtype_id', 'bigint', true),
	('mail_message_subtype', 'internal', 'text', true),
	('mail_message_res_partner_rel', 'res_partner_id', 'bigint', false),
	('message_attachment_rel', 'attachment_id', 'bigint', false);
SELECT n, tbl, col,
	   pg_temp.try(format('ALTER TABLE public.%I ALTER COLUMN %I TYPE %s USING %I::%s', tbl, col, newtype, col, newtype)) AS retype,
	   CASE WHEN drop_it THEN pg_temp.try(format('ALTER TABLE public.%I DROP COLUMN %I', tbl, col)) END AS dropped
  FROM odoo_cols ORDER BY n;
DROP TABLE odoo_cols;
SELECT event, triggers_installed FROM whatsapp.odoo_rules ORDER BY event;
-- Odoo's writes go on; with its state gone, no order enters a state.
UPDATE public.sale_order SET partner_id = 13 WHERE id = 1;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id)
VALUES (2, 1, 10, 10, 10);
INSERT INTO public.mail_message (body) VALUES ('<p>a message after the columns went</p>');
SELECT count(*) AS messages FROM whatsapp.message;

-- wa_odoo_pause: documents committed while paused record nothing, then or
-- later.
\set ECHO none
\i test/odoo/drop.sql
\i test/odoo/odoo18.sql
\o /dev/null
\i test/odoo/data.sql
\o
\set ECHO all
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
SELECT g, 1, 10, 10, 10, 3, 'S0000' || g, 'draft', now() AT TIME ZONE 'UTC', g FROM generate_series(1, 4) g;
SELECT whatsapp.wa_odoo_pause('odoo -u sale');
SELECT paused_by = session_user AS by_me, reason FROM whatsapp.odoo_paused;
UPDATE public.sale_order SET state = 'sale' WHERE id IN (1, 2);
SELECT p ->> 'fires' AS fires, p ->> 'why_not' AS why_not
  FROM whatsapp.wa_odoo_preview('sale_order_confirmed', 1) p;
SELECT whatsapp.wa_odoo_resume();
SELECT whatsapp.wa_odoo_resume();
UPDATE public.sale_order SET state = 'sale' WHERE id = 3;
SELECT dedupe_key, state FROM m ORDER BY id;

-- ---------------------------------------------------------------------
-- Odoo 19
-- ---------------------------------------------------------------------
TRUNCATE whatsapp.message;
\set ECHO none
\i test/odoo/drop.sql
\i test/odoo/odoo19.sql
\o /dev/null
\i test/odoo/data.sql
\o
\set ECHO all
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
SELECT whatsapp.wa_odoo_enable('invoice_posted', 'invoice_posted', 'es_MX', 'mx');
UPDATE public.res_partner SET phone = '123 | +52 55 3333 4444', phone_sanitized = NULL WHERE id = 10;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (1, 1, 10, 10, 10, 3, 'S00001', 'sale', now() AT TIME ZONE 'UTC', 1);
INSERT INTO public.account_move (id, journal_id, company_id, partner_id, commercial_partner_id, currency_id,
								 name, state, move_type, date, invoice_date, amount_total, amount_residual)
VALUES (1, 1, 2, 14, 14, 2, 'INV/2025/00001', 'posted', 'out_invoice', current_date, current_date, 1234.5, 1234.5);
SELECT dedupe_key, recipient, state, params FROM m ORDER BY id;
SELECT whatsapp.wa_odoo_preview('sale_order_confirmed', 1) ->> 'odoo_schema' AS odoo_schema;
-- Tables that can go: without res_lang amounts use Odoo's defaults;
-- without ir_config_parameter there is no portal link; without
-- res_currency no amount at all.
DROP TABLE public.res_lang;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (2, 1, 14, 14, 14, 2, 'S00002', 'sale', now() AT TIME ZONE 'UTC', 1234.5);
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx',
							   '["partner_name", "portal_url"]');
DROP TABLE public.ir_config_parameter;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total, access_token)
VALUES (3, 1, 14, 14, 14, 2, 'S00003', 'sale', now() AT TIME ZONE 'UTC', 1, 'tok');
SELECT whatsapp.wa_odoo_enable('sale_order_confirmed', 'order_confirmed', 'es_MX', 'mx');
SET client_min_messages = warning;
DROP TABLE public.res_currency CASCADE;
RESET client_min_messages;
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (4, 1, 14, 14, 14, 2, 'S00004', 'sale', now() AT TIME ZONE 'UTC', 1);
SELECT dedupe_key, state, failure_type, params, error_title FROM m
 WHERE dedupe_key ~ '^sale\.order:[234]:' ORDER BY id;

-- The failures since the last TRUNCATE: none carries a Meta error code.
:odoo_failures

-- ---------------------------------------------------------------------
-- Disable, and DROP EXTENSION
-- ---------------------------------------------------------------------
SELECT whatsapp.wa_odoo_disable('invoice_posted');
SELECT whatsapp.wa_odoo_disable('invoice_posted');
SELECT pg_temp.try($$SELECT whatsapp.wa_odoo_preview('invoice_posted', 1)$$);
SELECT tgname FROM pg_trigger WHERE tgrelid IN ('public.sale_order'::regclass, 'public.account_move'::regclass)
   AND NOT tgisinternal ORDER BY tgname;
-- A plain DROP EXTENSION refuses while triggers use it, and names them.
DROP VIEW m;
DROP EXTENSION whatsapp;
-- DROP EXTENSION ... CASCADE removes the triggers and nothing of Odoo's.
SET client_min_messages = warning;
DROP EXTENSION whatsapp CASCADE;
RESET client_min_messages;
SELECT count(*) AS triggers_left FROM pg_trigger
 WHERE tgrelid IN ('public.sale_order'::regclass, 'public.account_move'::regclass) AND NOT tgisinternal;
-- Odoo's own writes still work.
INSERT INTO public.sale_order (id, company_id, partner_id, partner_invoice_id, partner_shipping_id,
							   currency_id, name, state, date_order, amount_total)
VALUES (10, 1, 10, 10, 10, 3, 'S00010', 'draft', now() AT TIME ZONE 'UTC', 2);
UPDATE public.sale_order SET state = 'sale' WHERE id = 10;
UPDATE public.account_move SET state = 'draft' WHERE id = 1;
UPDATE public.account_move SET state = 'posted' WHERE id = 1;
SELECT id, state FROM public.sale_order ORDER BY id;

SET client_min_messages = warning;
\set ECHO none
\i test/odoo/drop.sql
\set ECHO all
RESET client_min_messages;
DROP ROLE wa_odoo_user;
