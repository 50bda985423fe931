-- test/odoo/data.sql: a small Odoo database for the tests, the same for
-- every version's schema (it writes no column that a version lacks).
-- Two companies, Mexico and Spain; customers in Mexico, Colombia, Brazil
-- and Spain; the res_lang rows and currencies their amounts need.

INSERT INTO public.res_currency (id, name, symbol, rounding, decimal_places, position, active) VALUES
	(1, 'USD', '$', 0.01, 2, 'before', true),
	(2, 'EUR', '€', 0.01, 2, 'after', true),
	(3, 'MXN', '$', 0.01, 2, 'before', true),
	(4, 'BRL', 'R$', 0.01, 2, 'before', true),
	(5, 'COP', '$', 0.01, 2, 'before', true),
	(6, 'CLP', '$', 1.0, 0, 'before', true);
SELECT setval('public.res_currency_id_seq', 100);

INSERT INTO public.res_country (id, name, code, phone_code, currency_id) VALUES
	(1, '{"en_US": "United States"}', 'US', 1, 1),
	(2, '{"en_US": "Spain", "es_ES": "España"}', 'ES', 34, 2),
	(3, '{"en_US": "Mexico", "es_MX": "México"}', 'MX', 52, 3),
	(4, '{"en_US": "Brazil", "pt_BR": "Brasil"}', 'BR', 55, 4),
	(5, '{"en_US": "Colombia"}', 'CO', 57, 5),
	(6, '{"en_US": "Italy"}', 'IT', 39, 2),
	(7, '{"en_US": "Argentina"}', 'AR', 54, NULL),
	(8, '{"en_US": "Chile"}', 'CL', 56, 6);
SELECT setval('public.res_country_id_seq', 100);

INSERT INTO public.res_lang (name, code, iso_code, url_code, active, direction, date_format,
							 time_format, week_start, "grouping", decimal_point, thousands_sep) VALUES
	('English (US)', 'en_US', 'en', 'en', true, 'ltr', '%m/%d/%Y', '%H:%M:%S', '7', '[3,0]', '.', ','),
	('Spanish (MX) / Español (MX)', 'es_MX', 'es_MX', 'es_MX', true, 'ltr', '%d/%m/%Y', '%H:%M:%S', '1', '[3,0]', '.', ','),
	('Spanish / Español', 'es_ES', 'es', 'es', true, 'ltr', '%d/%m/%Y', '%H:%M:%S', '1', '[3,0]', ',', '.'),
	('Spanish (CO) / Español (CO)', 'es_CO', 'es_CO', 'es_CO', true, 'ltr', '%d/%m/%Y', '%H:%M:%S', '7', '[3,0]', ',', '.'),
	('Portuguese (BR) / Português (BR)', 'pt_BR', 'pt_BR', 'pt_BR', true, 'ltr', '%d/%m/%Y', '%H:%M:%S', '7', '[3,0]', ',', '.'),
	('Serbian (Latin) / srpski', 'sr@latin', 'sr@latin', 'sr@latin', true, 'ltr', '%d.%m.%Y', '%H:%M:%S', '1', '[3,0]', ',', '.');

INSERT INTO public.ir_config_parameter (key, value) VALUES
	('web.base.url', 'https://erp.example.com/'),
	('web.base.url.freeze', 'True');

-- The companies' own partners, then the companies.
INSERT INTO public.res_partner (id, name, type, is_company, country_id, lang, active, commercial_partner_id) VALUES
	(1, 'Mi Empresa MX', 'contact', true, 3, 'es_MX', true, 1),
	(2, 'Mi Empresa ES', 'contact', true, 2, 'es_ES', true, 2);
INSERT INTO public.res_company (id, name, partner_id, currency_id, active) VALUES
	(1, 'Mi Empresa MX', 1, 3, true),
	(2, 'Mi Empresa ES', 2, 2, true);
SELECT setval('public.res_company_id_seq', 100);
UPDATE public.res_partner SET company_id = id;

-- Customers.  Numbers as people type them; phone_sanitized as Odoo
-- computes it (E.164) where the number can be read.
INSERT INTO public.res_partner (id, name, type, is_company, parent_id, commercial_partner_id,
								country_id, lang, phone, phone_sanitized, active) VALUES
	(10, 'Ana García', 'contact', false, NULL, 10, 3, 'es_MX', '55 1234 5678', '+525512345678', true),
	(11, 'Distribuidora del Norte S.A.S.', 'contact', true, NULL, 11, 5, 'es_CO', '+57 300 123 4567', '+573001234567', true),
	-- an invoice address of 11: no name, no phone, no lang (Odoo allows all three)
	(12, NULL, 'invoice', false, 11, 11, 5, NULL, NULL, NULL, true),
	(13, 'João Silva', 'contact', false, NULL, 13, 4, 'pt_BR', '(11) 91234-5678', '+5511912345678', true),
	(14, 'Lucía Pérez', 'contact', false, NULL, 14, 2, 'es_ES', '612 34 56 78', '+34612345678', true),
	(15, 'Sin Teléfono', 'contact', false, NULL, 15, 3, 'es_MX', NULL, NULL, true),
	(16, E'Roberto\n  Gómez\t(importado)', 'contact', false, NULL, 16, 3, 'es_MX', '+52 33 1234 5678', '+523312345678', true),
	(17, 'Cliente Bloqueado', 'contact', false, NULL, 17, 3, 'es_MX', '+52 55 9999 0000', '+525599990000', true),
	-- a delivery contact without name or country: the commercial partner's number counts
	(18, NULL, 'delivery', false, 11, 11, NULL, NULL, '555-0100', NULL, true),
	(19, 'Contact Sans Langue', 'contact', false, NULL, 19, NULL, NULL, '+39 06 1234 5678', '+390612345678', true);
SELECT setval('public.res_partner_id_seq', 1000);

INSERT INTO public.phone_blacklist (number, active) VALUES ('+525599990000', true);
