-- test/odoo/website.sql: what installing Odoo's website and website_sale
-- adds to the tables the whatsapp extension reads (16 to 19 alike):
-- the website table, whose domain Odoo stores with its scheme and without
-- a trailing "/" (website._handle_domain: "shop.example.mx" becomes
-- "https://shop.example.mx"); res_company.website_id, a stored compute (the
-- first website of the company); and website_id on sale_order (the
-- website the order came from) and on account_move (website_sale: the
-- website of its orders).  Load it after odoo1N.sql and data.sql.
CREATE TABLE public.website (
	id						serial PRIMARY KEY,
	name					varchar NOT NULL,
	sequence				integer,
	domain					varchar,				-- 'https://shop.example.mx', or NULL
	company_id				integer NOT NULL REFERENCES public.res_company (id) ON DELETE RESTRICT,
	default_lang_id			integer,
	create_uid				integer,
	create_date				timestamp without time zone,
	write_uid				integer,
	write_date				timestamp without time zone,
	CONSTRAINT website_domain_unique UNIQUE (domain)
);
ALTER TABLE public.res_company ADD COLUMN website_id integer REFERENCES public.website (id) ON DELETE SET NULL;
ALTER TABLE public.sale_order ADD COLUMN website_id integer REFERENCES public.website (id) ON DELETE RESTRICT;
ALTER TABLE public.account_move ADD COLUMN website_id integer REFERENCES public.website (id) ON DELETE SET NULL;
CREATE INDEX sale_order__website_id_index ON public.sale_order (website_id);
